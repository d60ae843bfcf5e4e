"""Re-running a job for the same inputs gives the same rows (run_id and scored_at aside); every run is on record.

The spark tier: real jobs on a tiny lake, the run records read back with Spark SQL as `runs`.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from conftest import START, TINY_DETECTOR

from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.lake.query import run_sql
from anomalake.pipelines.scoring.job import run_score_days
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.spark
DAYS = day_range(START, START + timedelta(days=2))
VOLATILE = ["run_id", "scored_at"]


def table_rows(ctx, root) -> pd.DataFrame:
    """A table's rows in a fixed order, without the columns that name the run."""
    frame = ctx.spark.read.parquet(str(root)).toPandas()
    frame = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
    for column in frame.columns:  # arrays and maps compare as text
        if frame[column].map(lambda v: isinstance(v, (list, dict, np.ndarray))).any():
            frame[column] = frame[column].map(lambda v: repr(v.tolist() if isinstance(v, np.ndarray) else v))
    return frame.sort_values(list(frame.columns), ignore_index=True)


def test_every_job_rerun_gives_identical_rows_and_runs_are_queryable(ctx, tiny_table):
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(DAYS), 2, 4))
    run_windows(ctx, tiny_table, DAYS)
    features, quarantine = (
        table_rows(ctx, ctx.lake.features("telemetry")),
        table_rows(ctx, ctx.lake.quarantine("telemetry")),
    )
    run_windows(ctx.with_new_run(), tiny_table, DAYS)
    pd.testing.assert_frame_equal(table_rows(ctx, ctx.lake.features("telemetry")), features)
    pd.testing.assert_frame_equal(table_rows(ctx, ctx.lake.quarantine("telemetry")), quarantine)

    first = run_train(
        ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[0], DAYS[1], spec=TINY_DETECTOR, verbose=0
    )
    run_score_days(ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[2:])
    scores = table_rows(ctx, ctx.lake.scores("telemetry"))
    run_score_days(ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[2:])
    pd.testing.assert_frame_equal(table_rows(ctx, ctx.lake.scores("telemetry")), scores)

    # Training again on the same windows with the same seed gives the same model, so the same scores.
    second = run_train(
        ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[0], DAYS[1], spec=TINY_DETECTOR, verbose=0
    )
    assert second.version != first.version and second.threshold == first.threshold
    run_score_days(ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[2:])
    again = table_rows(ctx, ctx.lake.scores("telemetry"))
    pd.testing.assert_frame_equal(again.drop(columns="model_version"), scores.drop(columns="model_version"))

    runs = run_sql(
        ctx,
        [tiny_table],
        "SELECT job, dt, rows_in, rows_out, context, quarantined, inputs, outputs, model_version, "
        "code_version, seconds FROM runs ORDER BY job, dt, finished_at",
    )
    assert sorted(runs["job"].unique()) == ["score_dense_autoencoder", "train_dense_autoencoder", "windows"]
    windows = runs[runs["job"] == "windows"]
    assert len(windows) == 2 * len(DAYS)
    for r in windows.itertuples():
        assert r.rows_in == r.rows_out + r.context + sum(dict(r.quarantined).values())
        assert r.inputs[0]["rows"] == r.rows_in and r.outputs[0]["rows"] == r.rows_out
    scored = runs[runs["job"] == "score_dense_autoencoder"]
    assert len(scored) == 3 and set(scored["model_version"]) == {first.version, second.version}
    assert (runs["seconds"] >= 0).all() and runs["code_version"].notna().all()
