"""Delta Lake in every job's session: the JARs pinned in infra/jars.txt, Delta's SQL extension and catalog.

What later steps build on (../shared/DESIGN.md): a partitioned write, replacing one day with replaceWhere, reading
an older version, and the commit history with the run id in the commit's user metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import START, read_rows, snapshot_rows

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.delta import (
    history,
    maintain,
    read_delta,
    replace_days,
    replace_partition_without_spark,
)
from anomalake.pipelines.lake.layout import day_range, is_delta, partition_path
from anomalake.pipelines.settings import REPO_ROOT, load_settings
from anomalake.pipelines.spark import installed_jars


@pytest.mark.unit
def test_the_jars_are_the_pinned_ones_and_a_missing_folder_says_how_to_fetch_them(tmp_path):
    pinned = {}
    for line in (REPO_ROOT / "infra" / "jars.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            coordinates, sha256 = line.split()
            _, artifact, version = coordinates.split(":")
            pinned[f"{artifact}-{version}.jar"] = sha256
    jars = installed_jars(load_settings())
    assert {Path(j).name for j in jars} == set(pinned)
    for jar in jars:
        assert hashlib.sha256(Path(jar).read_bytes()).hexdigest() == pinned[Path(jar).name]
    with pytest.raises(JobError, match=rf"ANOMALAKE_JARS={tmp_path}: no delta-spark_2.13 or delta-storage JAR; "):
        installed_jars(dataclasses.replace(load_settings(), jars=str(tmp_path)))


@pytest.mark.spark
def test_a_partitioned_delta_table_replaces_one_day_and_keeps_its_history(spark, tmp_path):
    path = str(tmp_path / "scores")
    rows = [("a", "2026-01-01", 1.0), ("a", "2026-01-02", 2.0), ("b", "2026-01-02", 3.0)]
    df = spark.createDataFrame(rows, "entity_id string, dt string, score double")
    df.write.format("delta").partitionBy("dt").option("userMetadata", '{"run_id": "run1"}').save(path)
    rerun = spark.createDataFrame([("a", "2026-01-02", 20.0)], "entity_id string, dt string, score double")
    (
        rerun.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", "dt = '2026-01-02'")
        .option("userMetadata", '{"run_id": "run2"}')
        .save(path)
    )
    now = sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())
    assert now == [("a", "2026-01-01", 1.0), ("a", "2026-01-02", 20.0)]  # the other day untouched
    before = sorted(tuple(r) for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect())
    assert before == sorted(rows)
    assert sorted(tuple(r) for r in spark.sql(f"SELECT * FROM delta.`{path}` VERSION AS OF 0").collect()) == before
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [(h["version"], h["operation"], h["userMetadata"]) for h in history] == [
        (0, "WRITE", '{"run_id": "run1"}'),
        (1, "WRITE", '{"run_id": "run2"}'),
    ]
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "2"


def _break_rows(ctx, table, day, rows: list[int]) -> None:
    """Non-finite cpu values at the given rows of the day's raw partition (each a quarantined row)."""
    folder = partition_path(ctx.lake.raw(table), dt=day.isoformat())
    frame = pd.read_parquet(folder)
    frame.loc[rows, "cpu"] = np.inf
    for old in folder.glob("*.parquet"):
        old.unlink()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / "part-00000.parquet", coerce_timestamps="us"
    )


def _bad_values(ctx, **keys) -> dict:
    """The count of quarantined non-finite values per day (the first day's windows lack history, too)."""
    rows = read_rows(ctx.spark, ctx.lake.quarantine("telemetry"), **keys)
    return rows[rows["reason"] == "non_finite_value"].groupby("dt")["reason"].count().to_dict()


@pytest.mark.spark
def test_the_quarantine_is_a_delta_table_whose_runs_replace_only_their_own_days(ctx, tiny_table):
    days = day_range(START, START + timedelta(days=2))
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(days), 1, 4))
    _break_rows(ctx, tiny_table, days[1], [20, 40])
    _break_rows(ctx, tiny_table, days[2], [30])
    first = ctx.with_new_run()
    run_windows(first, tiny_table, days)
    root = ctx.lake.quarantine("telemetry")
    assert is_delta(root)
    assert _bad_values(ctx, job="windows") == {days[1].isoformat(): 2, days[2].isoformat(): 1}
    # A re-run of one day after its source was mended: that day's rows go, the other day's stay, in one commit.
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(days), 1, 4))  # every day clean again ...
    _break_rows(ctx, tiny_table, days[2], [30])  # ... but the last, which is not re-run
    second = ctx.with_new_run()
    run_windows(second, tiny_table, [days[1]])
    assert _bad_values(ctx, job="windows") == {days[2].isoformat(): 1}
    # Read without Spark (the nightly check's way): the snapshot's rows, not the removed file still in the folder.
    assert any(partition_path(root, job="windows", dt=days[1].isoformat()).glob("*.parquet"))
    without_spark = snapshot_rows(root, job="windows")
    assert without_spark.query("reason == 'non_finite_value'").groupby("dt")["reason"].count().to_dict() == {
        days[2].isoformat(): 1
    }
    assert len(without_spark) == len(read_rows(ctx.spark, root, job="windows"))
    commits = history(ctx.spark, root)
    assert [(c["metadata"]["run_id"], c["metadata"]["job"]) for c in commits] == [
        (first.run_id, "windows"),
        (second.run_id, "windows"),
    ]
    assert "2026-02-03" in commits[1]["parameters"]["predicate"]
    # Time travel: the version before the re-run still holds the mended day's rows.
    before = read_delta(ctx.spark, root, version=commits[0]["version"]).where(f"dt = '{days[1].isoformat()}'")
    assert before.count() == 2


@pytest.mark.spark
def test_a_quarantine_folder_from_before_delta_becomes_a_delta_table_and_keeps_its_rows(ctx, tiny_table):
    days = day_range(START, START + timedelta(days=1))
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(days), 1, 4))
    root = ctx.lake.quarantine("telemetry")
    old = partition_path(root, job="score_dense_autoencoder", dt=days[0].isoformat())
    old.mkdir(parents=True)
    pd.DataFrame(
        {"entity_id": ["host-000"], "ts": [pd.Timestamp("2026-02-02 01:00", tz="UTC")], "reason": ["unknown_entity"]}
        | {"detail": ["x"], "run_id": ["old"]}
    ).to_parquet(old / "part-00000.parquet", coerce_timestamps="us")
    _break_rows(ctx, tiny_table, days[1], [20])
    run_windows(ctx, tiny_table, days)
    assert is_delta(root)
    got = read_rows(ctx.spark, root).query("reason != 'insufficient_history'").sort_values("job")
    assert list(zip(got["job"], got["dt"], got["reason"])) == [
        ("score_dense_autoencoder", days[0].isoformat(), "unknown_entity"),
        ("windows", days[1].isoformat(), "non_finite_value"),
    ]


@pytest.mark.spark
def test_maintain_compacts_and_deletes_removed_files_and_keeps_every_row(spark, tmp_path):
    from pyspark.sql import types as T

    root = tmp_path / "events"
    fields = [("entity_id", T.StringType()), ("value", T.DoubleType()), ("detector", T.StringType())]
    schema = T.StructType([T.StructField(n, t) for n, t in [*fields, ("dt", T.StringType())]])
    keys = {"detector": "d"}

    def replace(day: str, values: list[float], run_id: str) -> None:
        rows = [(f"e{i}", v, day) for i, v in enumerate(values)]
        frame = spark.createDataFrame(rows, "entity_id string, value double, dt string").repartition(len(rows))
        replace_days(frame, schema, root, keys, [day], {day}, run_id, "events_d")

    replace("2026-02-01", [1.0, 2.0, 3.0], "r1")
    replace("2026-02-02", [4.0, 5.0, 6.0], "r2")
    replace("2026-02-01", [7.0, 8.0, 9.0], "r3")  # the day's first three files are removed, and stay on disk
    rows = sorted(tuple(r) for r in read_delta(spark, root).collect())
    counts = maintain(spark, root, retention_days=0, run_id="m1")
    assert counts == {"snapshot_files_before": 6, "disk_files_before": 9, "snapshot_files_after": 2} | {
        "disk_files_after": 2
    }
    assert sorted(tuple(r) for r in read_delta(spark, root).collect()) == rows
    assert snapshot_rows(root, detector="d", dt="2026-02-01")["value"].sort_values().tolist() == [7.0, 8.0, 9.0]
    optimize = [c for c in history(spark, root) if c["operation"] == "OPTIMIZE"]
    assert [c["metadata"] for c in optimize] == [{"job": "maintain", "run_id": "m1"}]


def test_a_table_written_without_spark_replaces_one_day_and_keeps_an_old_parquet_folders_rows(tmp_path):
    """The nightly check's way (delta-rs, no JVM): an old lake keeps its rows; a day written again is replaced."""
    root = tmp_path / "detection_metrics"
    old = partition_path(root, table="t", detector="d", dt="2026-02-01")
    old.mkdir(parents=True)
    pq.write_table(pa.table({"metric": ["f1"], "value": [0.25]}), old / "part-00000.parquet")

    def figures(value: float) -> pa.Table:
        return pa.table({"metric": ["f1"], "value": [value]})

    replace_partition_without_spark(figures(0.5), root, {"table": "t", "detector": "d"}, "2026-02-02", "r1", "check")
    assert is_delta(root)
    got = snapshot_rows(root, table="t", detector="d").sort_values("dt")
    assert list(zip(got["dt"], got["value"])) == [("2026-02-01", 0.25), ("2026-02-02", 0.5)]
    replace_partition_without_spark(figures(0.75), root, {"table": "t", "detector": "d"}, "2026-02-01", "r2", "check")
    got = snapshot_rows(root, table="t", detector="d").sort_values("dt")
    assert list(zip(got["dt"], got["value"])) == [("2026-02-01", 0.75), ("2026-02-02", 0.5)]


COMMITTER = """
import sys, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from anomalake.pipelines.lake.delta import commit_files, run_files
root, detector, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for n in range(rounds):
    run = f"{detector}{n:03d}"
    folder = root / f"detector={detector}" / "dt=2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": pa.array([n], pa.int64())}), folder / f"part-00000-{run}.parquet")
    commit_files(root, {"detector": detector}, run_files(root, {"detector": detector}, ["2026-01-01"], f"-{run}"),
                 run, f"score_{detector}")
"""


@pytest.mark.unit
def test_two_runs_committing_other_detectors_files_at_once_both_commit_whole(tmp_path):
    import subprocess
    import sys

    from deltalake import DeltaTable, write_deltalake

    root = tmp_path / "scores"
    first = pa.table({"x": pa.array([-1], pa.int64()), "detector": ["other"], "dt": ["2026-01-01"]})
    write_deltalake(str(root), first, partition_by=["detector", "dt"])
    rounds = 15
    runs = [
        subprocess.Popen([sys.executable, "-c", COMMITTER, str(root), detector, str(rounds)], stderr=subprocess.PIPE)
        for detector in ("a", "b")
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read().decode()[-2000:]
    table = DeltaTable(str(root))
    assert table.version() == 2 * rounds, "every run made exactly one commit"
    rows = snapshot_rows(root).sort_values("detector", ignore_index=True)
    assert rows.to_dict("list") == {
        "x": [rounds - 1, rounds - 1, -1],
        "detector": ["a", "b", "other"],
        "dt": ["2026-01-01"] * 3,
    }
