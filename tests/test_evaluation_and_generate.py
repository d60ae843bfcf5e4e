"""Event-level metrics, the synthetic generator and the configuration loader."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pytest

from anomalake.pipelines.config import ConfigError, load_detector, load_tables, parse_table
from anomalake.pipelines.evaluation import event_matching
from anomalake.pipelines.ingest.generate import (
    ANOMALY_KINDS,
    SHORT_OUTAGE_STEPS,
    GenerateSpec,
    generate_frames,
    write_generated,
)
from anomalake.pipelines.settings import load_settings


def flagged(entity: str, times: list[str], flags: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": entity, "ts": pd.to_datetime(times), "is_anomaly": flags})


def test_runs_of_flagged_windows_are_one_detection_each():
    times = [f"2026-01-01 00:{m:02d}" for m in range(0, 40, 5)]
    scores = flagged("a", times, [True, True, False, False, True, True, True, False])
    found = event_matching.detections(scores, window_seconds=600, stride_seconds=300)
    assert len(found) == 2
    assert found.iloc[0]["start"] == pd.Timestamp("2025-12-31 23:50") and found.iloc[1]["end"] == pd.Timestamp(
        "2026-01-01 00:30"
    )


def test_event_score_counts_found_anomalies_and_false_detections():
    found = pd.DataFrame(
        {
            "entity_id": ["a", "a", "b"],
            "start": pd.to_datetime(["2026-01-01 01:00", "2026-01-01 05:00", "2026-01-01 01:00"]),
            "end": pd.to_datetime(["2026-01-01 02:00", "2026-01-01 06:00", "2026-01-01 02:00"]),
        }
    )
    labels = pd.DataFrame(
        {
            "entity_id": ["a", "a"],
            "start": pd.to_datetime(["2026-01-01 01:30", "2026-01-01 09:00"]),
            "end": pd.to_datetime(["2026-01-01 01:40", "2026-01-01 09:10"]),
            "kind": ["spike", "spike"],
        }
    )
    result = event_matching.event_score(found, labels)
    assert (result.found, result.detections, result.true_detections) == (1, 3, 1)
    assert result.precision == pytest.approx(1 / 3) and result.recall == 0.5 and result.f1 == pytest.approx(0.4)


def test_generator_is_deterministic_to_the_byte(tmp_path):
    spec = GenerateSpec("t", date(2026, 1, 1), 2, 3, seed=11)
    write_generated(tmp_path / "a", spec)
    write_generated(tmp_path / "b", spec)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


def test_generator_injects_every_kind_and_seasonality():
    raw, labels = generate_frames(GenerateSpec("t", date(2026, 1, 5), 14, 20, seed=1))
    assert set(labels["kind"]) == set(ANOMALY_KINDS)
    assert (labels["end"] >= labels["start"]).all()
    hourly = raw.groupby(raw["ts"].dt.hour)["requests"].mean()
    assert hourly.max() > 1.5 * hourly.min()  # a daily cycle
    assert raw[["cpu", "memory", "latency", "requests"]].ge(0).all().all()


def test_shipped_configuration_loads():
    tables = load_tables(load_settings().tables_file)
    assert tables["telemetry"].window.length == 64
    assert load_detector("dense_autoencoder").family == "dense_autoencoder"


def test_bad_configuration_names_the_table():
    with pytest.raises(ConfigError, match="table t: kind 'video'"):
        parse_table("t", {"kind": "video", "features": ["a"], "window": {"length": 4}})
    with pytest.raises(ConfigError, match="table t: missing key 'window'"):
        parse_table("t", {"features": ["a"]})


def test_gappy_generation_samples_the_same_series_and_never_hides_a_label(tmp_path):
    spec = GenerateSpec("t", date(2026, 1, 5), 14, 6, seed=3)
    regular, labels = generate_frames(spec)
    gappy, gappy_labels = generate_frames(dataclasses.replace(spec, gaps=True))
    pd.testing.assert_frame_equal(labels, gappy_labels)  # the same anomalies, where they were
    assert len(gappy) < 0.97 * len(regular)
    assert gappy["ts"].between(regular["ts"].min(), regular["ts"].max() + pd.Timedelta("5min")).all()
    step = gappy["ts"].dt.round("5min")
    assert (gappy["ts"] - step).abs().max() <= pd.Timedelta("150s")  # jittered, and still on its step
    assert gappy.assign(step=step).duplicated(["entity_id", "step"]).any()  # some steps read twice
    gaps = gappy.sort_values(["entity_id", "ts"]).groupby("entity_id")["ts"].diff()
    assert (gaps > pd.Timedelta("6h")).any()  # outages of hours
    for label in labels.itertuples():  # no outage inside a labelled span: only single lost readings
        present = set(step[gappy["entity_id"] == label.entity_id])
        wanted = pd.date_range(label.start, label.end, freq="5min")
        missing = np.array([t not in present for t in wanted])
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, missing.astype(int), 0])))[::2]
        assert runs.max(initial=0) < SHORT_OUTAGE_STEPS[0], (label, runs)
    write_generated(tmp_path / "a", dataclasses.replace(spec, gaps=True))
    write_generated(tmp_path / "b", dataclasses.replace(spec, gaps=True))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_generate_and_demo_take_gaps():
    from anomalake.pipelines.jobs.cli import build_parser

    argv = ["generate", "--table", "t", "--start", "2026-01-05", "--days", "2", "--entities", "1"]
    assert build_parser().parse_args([*argv, "--gaps"]).gaps and not build_parser().parse_args(argv).gaps
    assert build_parser().parse_args(["demo", "--gaps"]).gaps
