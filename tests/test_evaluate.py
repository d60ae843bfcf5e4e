"""`anomalake evaluate` through the real jobs on tiny folders in the benchmarks' formats (the `spark` tier)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from conftest import snapshot_rows

from anomalake.models.artifacts import load_artifact, read_current
from anomalake.pipelines.evaluation.datasets import SKAB_FEATURES
from anomalake.pipelines.evaluation.run import EvaluateSpec, resolve_detectors, run_evaluate

pytestmark = pytest.mark.spark

METRIC_NAMES = {
    "overlap_segment_f1",
    "overlap_segment_precision",
    "overlap_segment_recall",
    "pointwise_f1",
    "pointwise_precision",
    "pointwise_recall",
    "roc_auc",
    "pr_auc",
    "vus_roc",
    "vus_pr",
    "nab_standard",
    "nab_low_fp",
    "nab_low_fn",
    "events_per_series",
    "events_per_entity_day",
    "flagged_share",
    "seconds_per_series",
}


def tiny_nab(root, days: int = 4) -> None:
    """Two 5-minute series with a daily cycle: one with a spike, one with a level shift, NAB's layout."""
    rng = np.random.default_rng(0)
    ts = pd.date_range("2024-03-01", periods=days * 288, freq="5min")
    windows = {}
    for name, bump in (("spiky", "spike"), ("shifty", "shift")):
        value = 10 + 3 * np.sin(2 * np.pi * np.arange(len(ts)) / 288) + rng.normal(0, 0.3, len(ts))
        at = 3 * 288 + 144
        if bump == "spike":
            value[at : at + 3] += 15
        else:
            value[at : at + 40] += 6
        key = f"synthetic/{name}.csv"
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": value.round(3)}).to_csv(path, index=False)
        windows[key] = [[str(ts[at - 24]), str(ts[at + 48])]]
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def spec(benchmark, data, out, epochs: int = 1, **kw) -> EvaluateSpec:
    return EvaluateSpec(benchmark, data, resolve_detectors(["default"], benchmark), out, epochs=epochs, **kw)


def by_key(records):
    return {(r["detector"], r["group"], r["metric"]): r["value"] for r in records}


def test_nab_format_folder_is_evaluated_per_series_category_and_overall(ctx, tmp_path):
    tiny_nab(tmp_path / "nab")
    records = run_evaluate(ctx, spec("nab", tmp_path / "nab", tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == records
    got = by_key(records)
    detectors = {r["detector"] for r in records}
    assert detectors == {"dense_autoencoder", "baseline_isolation_forest", "baseline_pca", "baseline_rolling_z"}
    assert {r["group"] for r in records} == {"synthetic/spiky.csv", "synthetic/shifty.csv", "synthetic", "overall"}
    assert {r["metric"] for r in records} == METRIC_NAMES
    for (detector, group, metric), value in got.items():
        if value is not None and not metric.startswith(("nab_", "events_", "seconds_")):
            assert 0.0 <= value <= 1.0, (detector, group, metric, value)
    # a 15-sigma spike on a clean cycle: the rolling z-score must catch it, whatever the detector does
    assert got[("baseline_rolling_z", "synthetic/spiky.csv", "overlap_segment_recall")] == 1.0
    # VUS (tests/test_vus.py holds it to TSB-AD) is defined for every detector on both labelled series
    assert all(
        got[(d, g, m)] is not None
        for d in detectors
        for g in ("synthetic/spiky.csv", "synthetic/shifty.csv")
        for m in ("vus_roc", "vus_pr")
    )
    # the detector's events are the events stage's, written to the lake as the nightly path writes them
    written = snapshot_rows(ctx.lake.events("nab_synthetic_spiky"), detector="dense_autoencoder")
    assert got[("dense_autoencoder", "synthetic/spiky.csv", "events_per_series")] == written["event_id"].nunique()
    plots = sorted((tmp_path / "out" / "plots").rglob("*.png"))
    assert len(plots) == 4 * 2 and all(p.stat().st_size > 5000 for p in plots)
    assert "| dense_autoencoder |" in (tmp_path / "out" / "results.md").read_text()


def test_skab_format_runs_are_scored_by_the_anomaly_free_model(ctx, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "skab" / "data"

    def run(n, start, level, anomaly=None):
        ts = pd.date_range(start, periods=n, freq="1s")
        frame = pd.DataFrame({"datetime": ts.strftime("%Y-%m-%d %H:%M:%S")})
        for i, name in enumerate(SKAB_FEATURES):
            frame[name] = level * (1 + i) + np.sin(np.arange(n) / 7 + i) + rng.normal(0, 0.1, n)
        if anomaly is not None:
            frame.loc[anomaly, SKAB_FEATURES[2]] += 8
            frame["anomaly"] = 0.0
            frame.loc[anomaly, "anomaly"] = 1.0
            frame["changepoint"] = 0.0
        return frame

    (data / "anomaly-free").mkdir(parents=True)
    (data / "valve1").mkdir()
    run(900, "2020-02-08 10:00:00", 1.0).to_csv(data / "anomaly-free" / "anomaly-free.csv", sep=";", index=False)
    run(700, "2020-03-09 10:00:00", 1.0, anomaly=slice(450, 520)).to_csv(
        data / "valve1" / "0.csv", sep=";", index=False
    )
    records = run_evaluate(ctx, spec("skab", tmp_path / "skab", tmp_path / "out", plots=False))
    got = by_key(records)
    assert {r["group"] for r in records} == {"valve1/0.csv", "valve1", "overall"}
    # the run is an entity the model never saw: scored in the training entity's units, not quarantined
    assert not (ctx.lake.quarantine("skab") / "job=score_dense_autoencoder").exists()
    # Every window of the valve run was scored, by the one model that saw only the anomaly-free run.
    root = ctx.lake.models("dense_autoencoder", "skab")
    artifact = load_artifact(root / read_current(root))
    assert set(artifact.scaling.centers) == {"anomaly-free/anomaly-free.csv"}
    features = snapshot_rows(ctx.lake.features("skab"))
    scores = snapshot_rows(ctx.lake.scores("skab"), detector="dense_autoencoder")
    valve = features["entity_id"] == "valve1/0.csv"
    assert len(scores) == valve.sum() > 0 and set(scores["model_version"]) == {artifact.version}
    assert np.isfinite(scores["raw_score"]).all()
    # the product detector ranks the anomaly better than the IsolationForest baseline of the same run
    auc = {d: got[(d, "valve1/0.csv", "roc_auc")] for d in ("dense_autoencoder", "baseline_isolation_forest")}
    assert auc["dense_autoencoder"] > auc["baseline_isolation_forest"], auc
    assert got[("baseline_pca", "valve1/0.csv", "roc_auc")] > 0.8
    assert got[("baseline_pca", "valve1/0.csv", "overlap_segment_recall")] == 1.0

    # The SKAB leaderboard's protocol on the same folder: the run's first 400 rows train its own model.
    runs = by_key(run_evaluate(ctx, spec("skab_runs", tmp_path / "skab", tmp_path / "runs", plots=False)))
    root = ctx.lake.models("dense_autoencoder", "skab_valve1_0")
    assert load_artifact(root / read_current(root)).scaling.centers.keys() == {"valve1/0.csv"}
    assert runs[("baseline_pca", "valve1/0.csv", "skab_f1")] > 0.5
    assert {m for d, g, m in runs if g == "overall"} >= {"skab_f1", "skab_far", "skab_mar", "vus_pr"}


def test_mnist_format_gives_per_class_aucs_beside_baselines(ctx, tmp_path):
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:28, 0:28]
    rows = []
    for digit in (0, 1):
        for _ in range(300):
            image = np.where(digit == 0, np.hypot(yy - 14, xx - 14) < 8, np.abs(xx - 14) < 3) * 200 + rng.integers(
                0, 40, (28, 28)
            )
            rows.append(np.append(np.clip(image, 0, 255).ravel(), digit))
    folder = tmp_path / "mnist"
    folder.mkdir()
    with gzip.open(folder / "mnist_5k.csv.gz", "wt") as handle:
        pd.DataFrame(rows).to_csv(handle, header=False, index=False)
    # eight epochs: one leaves the autoencoder untrained (it ranked the anomalies below chance, ROC-AUC 0.35)
    records = run_evaluate(ctx, spec("mnist", folder, tmp_path / "out", groups=("0",), epochs=8))
    got = by_key(records)
    assert {r["detector"] for r in records} == {"conv_autoencoder", "baseline_isolation_forest", "baseline_pca"}
    assert {(r["group"], r["metric"]) for r in records if r["detector"] == "conv_autoencoder"} == {
        ("0", "roc_auc"),
        ("0", "pr_auc"),
    }
    assert got[("baseline_pca", "0", "roc_auc")] > 0.9
    # the product detector ranks at least as well as the IsolationForest baseline of the same run
    assert got[("conv_autoencoder", "0", "roc_auc")] >= got[("baseline_isolation_forest", "0", "roc_auc")], got
    assert (tmp_path / "out" / "plots" / "conv_autoencoder" / "0.png").stat().st_size > 5000
