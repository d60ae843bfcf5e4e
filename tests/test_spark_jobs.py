"""The jobs on a real local[2] SparkSession and real Parquet under tmp_path (the `spark` tier)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    START,
    TINY_DETECTOR,
    TINY_TABLE,
    append_features,
    committed_by,
    copy_lake,
    read_rows,
    snapshot_rows,
    template_context,
)

from anomalake.models.artifacts import load_artifact, read_current
from anomalake.models.scaling import EntityScaling
from anomalake.pipelines.config import parse_table
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.delta import snapshot_days, snapshot_files
from anomalake.pipelines.lake.layout import day_range, partition_path
from anomalake.pipelines.lake.query import run_sql
from anomalake.pipelines.lake.reading import read_raw_day, read_raw_days
from anomalake.pipelines.lake.runs import latest_run_record
from anomalake.pipelines.scoring.job import run_score, run_score_days
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.spark
DAYS = day_range(START, START + timedelta(days=2))


def generate(ctx, days: int = 3, entities: int = 2, seed: int = 5) -> None:
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, days, entities, seed))


def features(ctx, day=None) -> pd.DataFrame:
    """The features table's rows (of one day), through its snapshot."""
    frame = read_rows(ctx.spark, ctx.lake.features("telemetry"), **({"dt": day.isoformat()} if day else {}))
    return frame.sort_values(["entity_id", "ts"], ignore_index=True)


def assert_no_partition(root, day) -> None:
    """A refused run committed nothing for the day and left no file of its own in the table's folder."""
    assert day.isoformat() not in snapshot_days(root, {}), f"dt={day} was committed"
    assert not list(partition_path(root, dt=day.isoformat()).rglob("*.parquet")), f"dt={day} has files"


def raw_partition(ctx, table, day) -> pd.DataFrame:
    return pd.read_parquet(partition_path(ctx.lake.raw(table), dt=day.isoformat()))


def write_raw_partition(ctx, table, day, frame: pd.DataFrame) -> None:
    folder = partition_path(ctx.lake.raw(table), dt=day.isoformat())
    for old in folder.glob("*.parquet"):
        old.unlink()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / "part-00000.parquet", coerce_timestamps="us"
    )


def test_day_by_day_windows_equal_one_run_over_the_range(ctx, tiny_table):
    generate(ctx)
    run_windows(ctx, tiny_table, DAYS)
    whole = features(ctx)
    for day in DAYS:
        run_windows(ctx.with_new_run(), tiny_table, [day])
    daily = features(ctx)
    assert len(whole) == len(daily) > 0
    pd.testing.assert_frame_equal(whole.drop(columns="x"), daily.drop(columns="x"))
    np.testing.assert_array_equal(np.stack(whole["x"]), np.stack(daily["x"]))


def test_raw_days_of_one_layout_read_in_one_scan_as_each_day_reads_alone(ctx, tiny_table):
    """Consecutive days of one file layout are one scan; a drifted day (an extra column, pandas' nanosecond
    timestamps) is read under its own schema; rows and dt equal the day-by-day reads exactly."""
    generate(ctx, days=5)
    days = day_range(START, START + timedelta(days=4))
    write_raw_partition(ctx, tiny_table, days[3], raw_partition(ctx, tiny_table, days[3]).assign(note="drift"))
    nanos = raw_partition(ctx, tiny_table, days[4])
    folder = partition_path(ctx.lake.raw(tiny_table), dt=days[4].isoformat())
    (folder / "part-00000.parquet").unlink()
    nanos.assign(ts=nanos["ts"].astype("datetime64[ns, UTC]")).to_parquet(folder / "part-00000.parquet", index=False)
    combined = read_raw_days(ctx.spark, ctx.lake, tiny_table, days)
    plan = combined._jdf.queryExecution().executedPlan().toString()
    assert plan.count("FileScan parquet") == 3  # days 0-2 together, day 3, day 4
    by_day = [read_raw_day(ctx.spark, ctx.lake, tiny_table, d) for d in days]
    expected = pd.concat([d.toPandas() for d in by_day]).sort_values(["entity_id", "ts"], ignore_index=True)
    got = combined.toPandas().sort_values(["entity_id", "ts"], ignore_index=True)
    assert sorted(got["dt"].unique()) == [d.isoformat() for d in days]
    pd.testing.assert_frame_equal(got, expected)


def test_windows_rerun_replaces_only_its_partition(ctx, tiny_table):
    generate(ctx)
    run_windows(ctx, tiny_table, DAYS)
    before = features(ctx)
    root = ctx.lake.features("telemetry")
    others = {d: snapshot_files(root, {"dt": d.isoformat()}) for d in (DAYS[0], DAYS[2])}
    rerun = ctx.with_new_run()
    run_windows(rerun, tiny_table, [DAYS[1]])
    after = features(ctx)
    assert len(after) == len(before) and not after.duplicated(["entity_id", "ts"]).any()
    pd.testing.assert_frame_equal(after.drop(columns="x"), before.drop(columns="x"))
    runs = committed_by(root)
    assert runs[DAYS[1].isoformat()] == rerun.run_id
    assert runs[DAYS[0].isoformat()] == runs[DAYS[2].isoformat()] == ctx.run_id != rerun.run_id
    assert {d: snapshot_files(root, {"dt": d.isoformat()}) for d in others} == others, "other days untouched"


def test_windows_accounting_balances_with_bad_rows(ctx, tiny_table):
    generate(ctx)
    day = DAYS[1]
    frame = raw_partition(ctx, tiny_table, day)
    frame.loc[5, "cpu"] = np.nan
    frame.loc[7, "latency"] = np.inf
    frame = pd.concat([frame, frame.iloc[[10]]], ignore_index=True)  # a duplicate key
    frame = frame.drop(index=range(100, 104))  # a gap of 4 steps > fill_limit 2
    write_raw_partition(ctx, tiny_table, day, frame)
    result = run_windows(ctx, tiny_table, [day])
    quarantine = read_rows(ctx.spark, ctx.lake.quarantine("telemetry"), job="windows", dt=day.isoformat())
    written = len(features(ctx, day))
    assert result.rows_in == len(frame) == written + result.context + len(quarantine)
    # Single bad points are interpolated inside windows; the 4-step gap breaks the 7 windows reaching over it.
    expected = {"non_finite_value": 2, "duplicate_key": 1, "gap_exceeds_fill_limit": tiny_table.window.length - 1}
    assert quarantine["reason"].value_counts().to_dict() == expected == result.quarantined


def test_missing_column_stops_with_one_line_and_no_partition(ctx, tiny_table):
    generate(ctx)
    day = DAYS[1]
    write_raw_partition(ctx, tiny_table, day, raw_partition(ctx, tiny_table, day).drop(columns="memory"))
    with pytest.raises(JobError) as error:
        run_windows(ctx, tiny_table, [day])
    message = str(error.value)
    assert "table telemetry" in message and f"partition dt={day}" in message and "column memory" in message
    assert "\n" not in message
    assert_no_partition(ctx.lake.features("telemetry"), day)


def test_text_in_a_numeric_column_stops_the_job(ctx, tiny_table):
    generate(ctx)
    day = DAYS[1]
    frame = raw_partition(ctx, tiny_table, day)
    write_raw_partition(ctx, tiny_table, day, frame.assign(cpu=frame["cpu"].round(1).astype(str)))
    with pytest.raises(
        JobError, match=rf"table telemetry, partition dt={day}, column cpu: expected a numeric type, found string"
    ):
        run_windows(ctx, tiny_table, [day])
    assert_no_partition(ctx.lake.features("telemetry"), day)


def test_a_raw_delta_table_gives_exactly_the_windows_of_the_same_parquet_folder(ctx, tiny_table):
    """`format: delta`: the raw input is read through its snapshot; a file in its folder that no commit added (an
    upstream writer killed before its commit) is not read."""
    generate(ctx)
    run_windows(ctx, tiny_table, DAYS)
    from_parquet = features(ctx)
    delta_table = dataclasses.replace(tiny_table, path="raw_delta/telemetry", format="delta")
    raw = ctx.spark.read.parquet(str(ctx.lake.raw(tiny_table)))
    raw.write.format("delta").partitionBy("dt").save(str(ctx.lake.raw(delta_table)))
    orphan = partition_path(ctx.lake.raw(delta_table), dt=DAYS[1].isoformat()) / "part-uncommitted.parquet"
    raw_partition(ctx, tiny_table, DAYS[1]).head(50).to_parquet(orphan, index=False, coerce_timestamps="us")
    result = run_windows(ctx.with_new_run(), delta_table, DAYS)
    assert result.rows_in == raw.count()
    from_delta = features(ctx)
    pd.testing.assert_frame_equal(from_delta.drop(columns="x"), from_parquet.drop(columns="x"), check_exact=True)
    np.testing.assert_array_equal(np.stack(from_delta["x"]), np.stack(from_parquet["x"]))

    later = DAYS[-1] + timedelta(days=1)
    with pytest.raises(JobError, match=f"table telemetry, partition dt={later}: no raw data"):
        run_windows(ctx.with_new_run(), delta_table, [later])
    with pytest.raises(JobError, match=r"table telemetry, partition dt=.*: no raw data \(format: delta, but"):
        run_windows(ctx.with_new_run(), dataclasses.replace(tiny_table, format="delta"), DAYS[1:2])


def test_a_date_without_raw_data_is_an_error(ctx, tiny_table):
    generate(ctx)
    missing = DAYS[-1] + timedelta(days=5)
    with pytest.raises(JobError, match=f"partition dt={missing}: no raw data"):
        run_windows(ctx, tiny_table, [missing])


@pytest.fixture(scope="module")
def trained_lake(spark, tmp_path_factory):
    """A tiny lake with windows for three days and a model trained on the first two, built once for the module."""
    template = template_context(spark, tmp_path_factory, "trained")
    table = parse_table("telemetry", TINY_TABLE)
    generate(template, days=3, entities=3)
    run_windows(template, table, DAYS)
    result = run_train(
        template.with_new_run(), table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=TINY_DETECTOR
    )
    return template, result


@pytest.fixture
def trained(ctx, tiny_table, trained_lake):
    """This test's own copy of the trained lake."""
    template, result = trained_lake
    copy_lake(template, ctx)
    return ctx, tiny_table, result


def test_train_writes_a_complete_artifact_and_current_last(trained):
    ctx, table, result = trained
    root = ctx.lake.models("dense_autoencoder", "telemetry")
    assert read_current(root) == result.version
    files = {p.name for p in (root / result.version).iterdir()}
    assert files == {"model.keras", "config.json", "baseline.json", "calibration.json", "meta.json", "checksums.json"}
    artifact = load_artifact(root / result.version)
    assert set(artifact.scaling.centers) == {"host-000", "host-001", "host-002"}
    assert result.rows_train > 0 and result.rows_holdout > 0


def test_spark_scores_equal_one_process_scores(trained):
    ctx, table, result = trained
    day = DAYS[2]
    outcome = run_score(ctx, table, "dense_autoencoder", day)
    scores = read_rows(ctx.spark, ctx.lake.scores("telemetry"))
    windows = features(ctx, day)
    assert outcome.rows_in == len(windows) == outcome.scored + sum(outcome.quarantined.values()) == len(scores)
    merged = windows.merge(scores, on=["entity_id", "ts"]).sort_values(["entity_id", "ts"])
    artifact = load_artifact(ctx.lake.models("dense_autoencoder", "telemetry") / result.version)
    x = np.stack(merged["x"]).astype(np.float64).reshape(-1, table.window.length, len(table.features))
    expected = artifact.detector.score_samples(artifact.scaling.transform(merged["entity_id"].tolist(), x))
    np.testing.assert_allclose(merged["raw_score"].to_numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(merged["score"], artifact.calibration.transform(expected), rtol=1e-5, atol=1e-9)
    assert (merged["is_anomaly"] == (merged["score"] > merged["threshold"])).all()
    assert set(merged["top_feature"]) <= set(table.features)
    shares = merged["feature_contributions"].map(lambda m: sum(dict(m).values()))
    np.testing.assert_allclose(shares, 1.0, atol=1e-4)
    assert merged["top_steps"].map(len).eq(3).all()
    assert ((merged["ts"] - merged["top_steps"].map(min)) <= pd.Timedelta(minutes=5 * (table.window.length - 1))).all()


def test_windows_over_a_filled_gap_carry_its_steps_and_scores_never_name_them(trained):
    ctx, table, _ = trained
    day = DAYS[2]
    frame = raw_partition(ctx, table, day)
    host = frame.index[frame["entity_id"] == "host-000"]
    lost = frame.loc[host[40:42], "ts"]  # two steps: within the tiny table's fill limit
    write_raw_partition(ctx, table, day, frame.drop(index=host[40:42]))
    run_windows(ctx.with_new_run(), table, [day])
    windows = features(ctx, day)
    spanning = windows[windows["imputed_step_offsets"].map(lambda v: v is not None and len(v) > 0)]
    assert len(spanning) == table.window.length - 1  # the 7 window ends after the gap that reach back over it
    run_score(ctx.with_new_run(), table, "dense_autoencoder", day)
    scores = read_rows(ctx.spark, ctx.lake.scores("telemetry"))
    named = scores.merge(spanning[["entity_id", "ts"]], on=["entity_id", "ts"])
    assert len(named) == len(spanning)
    lost_steps = set(pd.to_datetime(lost, utc=True))
    for steps in named["top_steps"]:
        assert not lost_steps & set(pd.to_datetime(list(steps), utc=True)), "an imputed step was named"


def test_a_table_with_a_mask_channel_trains_and_scores_and_never_names_the_mask(ctx):
    table = parse_table("telemetry", {**TINY_TABLE, "gaps": {**TINY_TABLE["gaps"], "mask": True}})
    generate(ctx, days=3, entities=2)
    for day in DAYS:  # a two-step gap on every day, so the model sees the channel set in training too
        write_raw_partition(ctx, table, day, raw_partition(ctx, table, day).drop(index=[60, 61]))
    run_windows(ctx, table, DAYS)
    trained = run_train(ctx.with_new_run(), table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=TINY_DETECTOR)
    artifact = load_artifact(ctx.lake.models("dense_autoencoder", "telemetry") / trained.version)
    assert artifact.meta["signature"]["features"] == [*table.features, "imputed"]
    assert artifact.scaling.features[-1] == "imputed" and {s[-1] for s in artifact.scaling.scales.values()} == {1.0}
    run_score(ctx.with_new_run(), table, "dense_autoencoder", DAYS[2])
    scores = read_rows(ctx.spark, ctx.lake.scores("telemetry"))
    assert len(scores) == len(features(ctx, DAYS[2])) > 0
    assert set(scores["top_feature"]) <= set(table.features)
    assert scores["feature_contributions"].map(lambda m: set(dict(m)) == set(table.features)).all()


def test_score_rerun_replaces_the_partition(trained):
    ctx, table, _ = trained
    run_score(ctx, table, "dense_autoencoder", DAYS[1])
    run_score(ctx.with_new_run(), table, "dense_autoencoder", DAYS[2])
    first = read_rows(ctx.spark, ctx.lake.scores("telemetry"))
    rerun = ctx.with_new_run()
    run_score(rerun, table, "dense_autoencoder", DAYS[2])
    second = read_rows(ctx.spark, ctx.lake.scores("telemetry"))
    assert len(first) == len(second) and not second.duplicated(["entity_id", "ts"]).any()
    assert set(second.loc[second["dt"] == DAYS[2].isoformat(), "run_id"]) == {rerun.run_id}, "the day was rewritten"
    other_day = second[second["dt"] == DAYS[1].isoformat()]
    assert (
        other_day["run_id"].nunique() == 1
        and other_day["run_id"].iloc[0] == first.loc[first["dt"] == DAYS[1].isoformat(), "run_id"].iloc[0]
    )


def comparable(scores: pd.DataFrame) -> pd.DataFrame:
    """Scored rows in a fixed order without the columns that name the run; lists and maps as their exact repr."""
    frame = scores.drop(columns=["run_id", "scored_at"]).sort_values(["entity_id", "ts"], ignore_index=True)
    for column in ("feature_contributions", "top_steps"):
        frame[column] = frame[column].map(lambda v: repr(list(v)))
    return frame


def test_a_range_scored_in_one_job_equals_the_days_scored_one_by_one(trained):
    ctx, table, _ = trained
    days = DAYS[1:]
    by_range = ctx.with_new_run()
    run_score_days(by_range, table, "dense_autoencoder", days)
    scores_root = ctx.lake.scores("telemetry")
    ranged = {d: snapshot_rows(scores_root, detector="dense_autoencoder", dt=d.isoformat()) for d in days}
    assert all(set(ranged[d]["run_id"]) == {by_range.run_id} for d in days)
    for day in days:
        alone = ctx.with_new_run()
        run_score(alone, table, "dense_autoencoder", day)
        daily = snapshot_rows(scores_root, detector="dense_autoencoder", dt=day.isoformat())
        assert set(daily["run_id"]) == {alone.run_id}, "the day was rewritten by its own run"
        pd.testing.assert_frame_equal(comparable(daily), comparable(ranged[day]), check_exact=True)
        record = latest_run_record(ctx.lake.root, "telemetry", "score_dense_autoencoder", day)
        assert record["run_id"] == alone.run_id and record["rows_out"] == len(daily)


def test_unknown_entities_go_to_quarantine_not_to_scores(trained):
    ctx, table, _ = trained
    day = DAYS[2]
    windows = features(ctx, day)
    append_features(ctx, "telemetry", windows.head(5).assign(entity_id="host-new"))
    outcome = run_score(ctx, table, "dense_autoencoder", day)
    assert outcome.quarantined == {"unknown_entity": 5}
    scores = read_rows(ctx.spark, ctx.lake.scores("telemetry"))
    assert "host-new" not in set(scores["entity_id"]) and outcome.rows_in == outcome.scored + 5


def add_level_shifted_host(ctx, day, shift: float) -> None:
    """host-new: a copy of host-000's windows of `day`, every value `shift` higher (another host at another level)."""
    rows = features(ctx, day)
    copy = rows[rows["entity_id"] == "host-000"].assign(entity_id="host-new")
    copy["x"] = copy["x"].map(lambda x: (np.asarray(x, dtype=np.float64) + shift).astype(np.float32))
    append_features(ctx, "telemetry", copy)


@pytest.mark.parametrize("policy", ["own_baseline", "training_baseline"])
def test_unseen_entities_are_scored_in_the_units_the_table_asks_for(trained, policy):
    ctx, table, result = trained
    day = DAYS[2]
    add_level_shifted_host(ctx, day, shift=100.0)
    outcome = run_score(ctx, dataclasses.replace(table, unseen_entities=policy), "dense_autoencoder", day)
    assert outcome.quarantined == {} and outcome.scored == outcome.rows_in
    scores = snapshot_rows(ctx.lake.scores("telemetry"), detector="dense_autoencoder", dt=day.isoformat())
    new = scores[scores["entity_id"] == "host-new"].sort_values("ts")
    windows = features(ctx, day).query("entity_id == 'host-new'").sort_values("ts")
    x = np.stack(windows["x"]).astype(np.float64).reshape(-1, table.window.length, len(table.features))
    artifact = load_artifact(ctx.lake.models("dense_autoencoder", "telemetry") / result.version)
    if policy == "own_baseline":  # the median and IQR of its own windows' last steps (Spark's percentile_approx)
        last = x[:, -1, :]
        quartiles = np.percentile(last, [25, 50, 75], axis=0, method="inverted_cdf").T
        scaling = EntityScaling.from_quartiles(table.features, {"host-new": quartiles})
    else:  # the median centre and scale of the training hosts
        scaling = artifact.scaling.pooled(["host-new"])
    expected = artifact.detector.score_samples(scaling.transform(["host-new"] * len(x), x))
    np.testing.assert_allclose(new["raw_score"], expected, rtol=1e-5)
    if policy == "training_baseline":  # in the training hosts' units, a level 100 higher is itself the anomaly
        assert new["is_anomaly"].all()


def test_score_without_a_model_or_features_says_what_to_run(ctx, tiny_table):
    generate(ctx)
    with pytest.raises(FileNotFoundError, match="run `anomalake train` first"):
        run_score(ctx, tiny_table, "dense_autoencoder", DAYS[0])


@pytest.mark.check
def test_sql_sees_every_table_under_its_stable_name(trained):
    ctx, table, _ = trained
    run_score(ctx, table, "dense_autoencoder", DAYS[2])
    tables = run_sql(ctx, [table], "SHOW VIEWS")["viewName"].tolist()
    assert {
        "raw_telemetry",
        "features_telemetry",
        "scores_telemetry",
        "quarantine_telemetry",
        "labels_telemetry",
    } <= set(tables)
    counts = run_sql(ctx, [table], "SELECT dt, count(*) AS n FROM scores_telemetry GROUP BY dt")
    assert counts["dt"].tolist() == [DAYS[2].isoformat()] and counts["n"].iloc[0] > 0


def test_training_leaves_tensorboard_logs_beside_the_artifact(trained):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ctx, table, result = trained
    logs = ctx.lake.models("dense_autoencoder", "telemetry") / "_tensorboard" / result.version
    assert list((logs / "train").glob("events.out.tfevents.*")) and list(
        (logs / "validation").glob("events.out.tfevents.*")
    )
    calibration = EventAccumulator(str(logs / "calibration")).Reload()
    assert {"holdout/raw_score", "holdout/score", "calibration/threshold"} <= set(calibration.Tags()["tensors"])
    (threshold,) = calibration.Tensors("calibration/threshold")
    assert float(tf.make_ndarray(threshold.tensor_proto)) == pytest.approx(result.threshold)
