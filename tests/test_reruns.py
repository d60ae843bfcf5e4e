"""Re-running a job for the same inputs gives the same rows, exactly (run_id and scored_at aside); every run is on
record.

The spark tier: real jobs on a tiny lake, the run records read back with Spark SQL as `runs`.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
from conftest import START, TINY_DETECTOR, committed_by, read_rows

from anomalake.pipelines.errors import JobError
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
    frame = read_rows(ctx.spark, root)
    frame = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
    for column in frame.columns:  # arrays and maps compare as text
        if frame[column].map(lambda v: isinstance(v, (list, dict, np.ndarray))).any():
            frame[column] = frame[column].map(lambda v: repr(v.tolist() if isinstance(v, np.ndarray) else v))
    return frame.sort_values(list(frame.columns), ignore_index=True)


def assert_exactly_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every value equal, floats bit for bit (assert_frame_equal's default tolerance is 1e-5 relative)."""
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_every_job_rerun_gives_identical_rows_and_runs_are_queryable(ctx, tiny_table):
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(DAYS), 2, 4))
    run_windows(ctx, tiny_table, DAYS)
    features, quarantine = (
        table_rows(ctx, ctx.lake.features("telemetry")),
        table_rows(ctx, ctx.lake.quarantine("telemetry")),
    )
    rerun = ctx.with_new_run()
    run_windows(rerun, tiny_table, DAYS)
    assert_exactly_equal(table_rows(ctx, ctx.lake.features("telemetry")), features)
    assert_exactly_equal(table_rows(ctx, ctx.lake.quarantine("telemetry")), quarantine)
    assert committed_by(ctx.lake.features("telemetry")) == {d.isoformat(): rerun.run_id for d in DAYS}, (
        "the rerun replaced every day in one commit"
    )

    first = run_train(
        ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[0], DAYS[1], spec=TINY_DETECTOR, verbose=0
    )
    run_score_days(ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[2:])
    scores = table_rows(ctx, ctx.lake.scores("telemetry"))
    rerun = ctx.with_new_run()
    run_score_days(rerun, tiny_table, "dense_autoencoder", DAYS[2:])
    assert_exactly_equal(table_rows(ctx, ctx.lake.scores("telemetry")), scores)
    assert set(read_rows(ctx.spark, ctx.lake.scores("telemetry"))["run_id"]) == {rerun.run_id}
    assert committed_by(ctx.lake.scores("telemetry"), detector="dense_autoencoder") == {
        d.isoformat(): rerun.run_id for d in DAYS[2:]
    }

    # Training again on the same windows with the same seed gives the same model, so the same scores.
    second = run_train(
        ctx.with_new_run(), tiny_table, "dense_autoencoder", DAYS[0], DAYS[1], spec=TINY_DETECTOR, verbose=0
    )
    assert second.version != first.version and second.threshold == first.threshold
    after_retraining = ctx.with_new_run()
    run_score_days(after_retraining, tiny_table, "dense_autoencoder", DAYS[2:])
    again = table_rows(ctx, ctx.lake.scores("telemetry"))
    assert committed_by(ctx.lake.scores("telemetry"), detector="dense_autoencoder") == {
        d.isoformat(): after_retraining.run_id for d in DAYS[2:]
    }
    assert set(again["model_version"]) == {second.version}, "the days were rescored by the new model"
    assert_exactly_equal(again.drop(columns="model_version"), scores.drop(columns="model_version"))

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
    timing = run_sql(ctx, [tiny_table], "SELECT started_at, finished_at, seconds FROM runs")
    elapsed = pd.to_datetime(timing["finished_at"]) - pd.to_datetime(timing["started_at"])
    assert np.allclose(elapsed.dt.total_seconds(), timing["seconds"], atol=1e-3) and (timing["seconds"] > 0).all()
    assert (runs["code_version"] == version("anomalake")).all()
    # A query Spark refuses is one line naming what is wrong, not a Java or Python trace.
    for query, cause in (("SELEC 1", "[PARSE_SYNTAX_ERROR]"), ("SELECT * FROM runz", "[TABLE_OR_VIEW_NOT_FOUND]")):
        with pytest.raises(JobError) as refused:
            run_sql(ctx, [tiny_table], query)
        assert str(refused.value).startswith(f"query: {cause}") and "\n" not in str(refused.value), refused.value
