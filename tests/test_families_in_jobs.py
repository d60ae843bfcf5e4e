"""Every registered family trains through the train job: a feature table, Petastorm feed, artifact, CURRENT.

Time-series families are also scored by the score job; image and text tables are written here directly in
the feature-table layout (their windows job is the images-and-text work), so their check ends at the artifact.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pytest
from conftest import START, TINY_TABLE, read_rows
from samples import KINDS

from anomalake.models.artifacts import load_artifact, read_current
from anomalake.models.registry import discover
from anomalake.pipelines.config import DetectorSpec, parse_table
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import read_table
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.settings import load_settings
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.spark
FAMILIES = discover()
DAYS = day_range(START, START + timedelta(days=2))
TABLES = {
    "timeseries": parse_table("telemetry", TINY_TABLE),
    "image": parse_table("pictures", {"kind": "image", "image": {"height": 8, "width": 8, "channels": 1}}),
    "text": parse_table("messages", {"kind": "text"}),
}
CASES = sorted((name, kind) for name, family in FAMILIES.items() for kind in family.input_kinds)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """One lake with a feature table of each kind: generated telemetry windows, tiny images, short texts."""
    settings = dataclasses.replace(
        load_settings(), lake=str(tmp_path_factory.mktemp("families") / "lake"), master="local[2]"
    )
    ctx = JobContext(settings, spark)
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, 3, 2, 5))
    run_windows(ctx, TABLES["timeseries"], DAYS)
    for kind in ("image", "text"):
        write_samples(ctx, TABLES[kind].name, KINDS[kind].normal(400, 0), kind)
    return ctx


def write_samples(ctx: JobContext, table: str, samples: np.ndarray, kind: str) -> None:
    """Samples spread over the first two days, one 'entity' each, in the feature-table layout."""
    rows = []
    for i, sample in enumerate(samples):
        ts = datetime.combine(DAYS[i % 2], datetime.min.time()) + timedelta(minutes=i)
        x = str(sample) if kind == "text" else [float(v) for v in np.ravel(sample)]
        rows.append((f"id-{i:04d}", ts, x, ts.date().isoformat()))
    x_type = "string" if kind == "text" else "array<float>"
    frame = ctx.spark.createDataFrame(rows, f"entity_id string, ts timestamp, x {x_type}, dt string")
    frame.write.format("delta").mode("overwrite").partitionBy("dt").save(str(ctx.lake.features(table)))


def tiny_spec(name: str) -> DetectorSpec:
    params = {"epochs": 2, "batch_size": 64, "seed": 3, **FAMILIES[name].tiny_params}
    return DetectorSpec(name, name, params, {"method": "pot", "risk": 0.01, "holdout_fraction": 0.3})


@pytest.mark.parametrize("name, kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_family_trains_from_the_feature_table(lake, name, kind):
    table = TABLES[kind]
    ctx = lake.with_new_run()
    result = run_train(ctx, table, name, DAYS[0], DAYS[1], verbose=0, spec=tiny_spec(name))
    root = ctx.lake.models(name, table.name)
    assert read_current(root) == result.version and result.rows_train > 0 and result.rows_holdout > 0
    artifact = load_artifact(root / result.version)
    assert artifact.meta["kind"] == kind and tuple(artifact.meta["sample_shape"]) == table.sample_shape
    if kind == "timeseries":
        outcome = run_score(ctx, table, name, DAYS[2])
        assert outcome.scored > 0 and outcome.scored + sum(outcome.quarantined.values()) == outcome.rows_in
        scores = read_rows(ctx.spark, ctx.lake.scores(table.name), detector=name)
        assert len(scores) == outcome.scored and np.isfinite(scores["score"]).all()
    else:
        normal = KINDS[kind].normal(50, 9)
        odd = KINDS[kind].anomalous(normal[:10])
        assert np.median(artifact.detector.score_samples(odd)) > np.median(artifact.detector.score_samples(normal))


def test_a_holdout_with_no_windows_fails_in_one_line_naming_the_table_and_the_setting(lake):
    spec = dataclasses.replace(tiny_spec("dense_autoencoder"), calibration={"method": "pot", "holdout_fraction": 0.001})
    with pytest.raises(
        JobError,
        match=r"^table telemetry: detector dense_autoencoder: no held-out windows in .*"
        r"raise calibration.holdout_fraction$",
    ):
        run_train(
            lake.with_new_run(), TABLES["timeseries"], "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=spec
        )


def test_early_stopping_watches_the_latest_training_days_and_never_the_calibration_holdout(lake):
    table = TABLES["timeseries"]
    spec = dataclasses.replace(tiny_spec("dense_autoencoder"), training={"validation_fraction": 0.25})
    ctx = lake.with_new_run()
    result = run_train(ctx, table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=spec)
    meta = load_artifact(ctx.lake.models("dense_autoencoder", table.name) / result.version).meta
    ts = read_table(ctx.spark, ctx.lake.features(table.name)).where("dt <= '%s'" % DAYS[1]).select("ts")
    ts = ts.toPandas()["ts"]
    holdout_from = datetime.fromisoformat(meta["holdout_from"])
    validation_from = datetime.fromisoformat(meta["validation"]["from"])
    embargo = timedelta(seconds=(table.window.length - 1) * table.step_seconds)
    # the windows between the validation cut and the hold-out cut, each side's overlapping windows left out
    expected = int(((ts >= validation_from + embargo) & (ts < holdout_from)).sum())
    assert validation_from < holdout_from and meta["validation"]["rows"] == expected > 0
    assert result.rows_train == int((ts < validation_from).sum())
    assert len(meta["history"]["val_loss"]) > 0


def test_images_get_a_validation_share_of_their_own_beside_the_holdout(lake):
    table = TABLES["image"]
    spec = dataclasses.replace(tiny_spec("dense_autoencoder"), training={"validation_fraction": 0.25})
    ctx = lake.with_new_run()
    result = run_train(ctx, table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=spec)
    rows = load_artifact(ctx.lake.models("dense_autoencoder", table.name) / result.version).meta["validation"]["rows"]
    # 400 images: 30 % held out by one hash, a quarter of the rest by another (about 70 of them)
    assert 40 < rows < 100 and result.rows_train + rows + result.rows_holdout == 400
