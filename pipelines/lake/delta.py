"""Delta Lake tables: a job replaces the partitions it owns in one commit, and readers go through the snapshot.

A table is a folder with a `_delta_log`, partitioned by its fixed keys (e.g. `job`) and `dt`, as the Parquet
folders were. `replace_days` is one transaction: the rows of the given days under the given keys are replaced by
the run's rows (a day with none is emptied), with `replaceWhere`, so readers see the old rows of a partition or
the new ones, never a mix, and no other partition is touched (Delta refuses a row outside the condition). The
commit's user metadata names the run and the job, so `DESCRIBE HISTORY` tells who wrote each version; an older
version stays readable (`VERSION AS OF`) until vacuumed. Files that a commit removed stay in the folder until
then: only the snapshot says which files hold the table, so nothing lists a Delta folder's Parquet files.
Processes without Spark (the nightly check) read a snapshot with `read_snapshot` (the `deltalake` package lists
the snapshot's files; pyarrow reads them).

Jobs whose tasks write their own Parquet files (the score job: pyarrow in the tasks, no shuffle to Spark's
writer) write them straight into the table's partition folders, named with the run id, and `commit_files` then
adds exactly those files and removes the replaced days' old ones in one commit. Until that commit no reader sees
them; a run killed before it leaves orphan files that no snapshot names, which VACUUM deletes.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote, urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.lake.layout import is_delta


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def partition_condition(keys: dict[str, str], days: Iterable[str]) -> str:
    """The SQL condition that selects the given days under the given keys (`replaceWhere`'s and readers')."""
    days = sorted(days)
    parts = [f"`{key}` = {_literal(value)}" for key, value in keys.items()]
    parts.append(f"`dt` IN ({', '.join(_literal(d) for d in days)})")
    return " AND ".join(parts)


def replace_days(
    df: DataFrame,
    schema: T.StructType,
    root: Path,
    keys: dict[str, str],
    days: Iterable[str],
    written: set[str],
    run_id: str,
    job: str,
) -> bool:
    """Replace the rows of `days` under `keys` by df's rows in one Delta commit (a day without rows is emptied);
    True when it committed.

    df holds the schema's columns except the keys (set here); its rows must fall on `days`, and `written` names the
    days that have any. With none, and none in the table either, there is nothing to replace and no commit. The
    commit's user metadata is {"run_id", "job", "partition": keys, "days"}.
    """
    days = sorted(days)
    condition = partition_condition(keys, days)
    spark = df.sparkSession
    convert_parquet_folder(spark, root, [*keys, "dt"])
    if not days or (not written and (not is_delta(root) or read_delta(spark, root).where(condition).isEmpty())):
        return False
    out = with_keys(df, schema, keys)
    metadata = {"run_id": run_id, "job": job, "partition": keys, "days": days}
    (
        out.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", condition)
        .option("userMetadata", json.dumps(metadata, sort_keys=True))
        .partitionBy(*keys, "dt")
        .save(str(root))
    )
    return True


def with_keys(df: DataFrame, schema: T.StructType, keys: dict[str, str]) -> DataFrame:
    """df with the partition keys set to their values, in the table schema's column order and types."""
    for key, value in keys.items():
        df = df.withColumn(key, F.lit(value))
    return df.select(*[F.col(field.name).cast(field.dataType) for field in schema.fields])


def convert_parquet_folder(spark: SparkSession, root: Path, partition_columns: list[str]) -> None:
    """A lake written before its tables were Delta tables: the table's Parquet folder becomes a Delta table in place
    (CONVERT TO DELTA; its files stay, the log starts listing them), so no row written before is lost from view."""
    root = Path(root)
    if is_delta(root) or not root.is_dir() or not any(root.rglob("*.parquet")):
        return
    columns = ", ".join(f"`{c}` STRING" for c in partition_columns)
    spark.sql(f"CONVERT TO DELTA parquet.`{root.resolve()}` PARTITIONED BY ({columns})")


def read_delta(spark: SparkSession, root: Path, version: int | None = None) -> DataFrame:
    """The table's current snapshot (or the given version)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(root))


def read_table(spark: SparkSession, root: Path) -> DataFrame:
    """A lake table as Spark reads it: a Delta table through its snapshot, a Parquet folder (raw input, labels, a
    lake written before its tables were Delta tables) as it is."""
    return read_delta(spark, root) if is_delta(root) else spark.read.parquet(str(root))


def history(spark: SparkSession, root: Path) -> list[dict]:
    """The table's commits, oldest first: version, timestamp, operation, its parameters and the user metadata."""
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{Path(root).resolve()}`").orderBy("version").collect()
    return [
        {
            "version": r["version"],
            "timestamp": r["timestamp"],
            "operation": r["operation"],
            "parameters": dict(r["operationParameters"] or {}),
            "metadata": json.loads(r["userMetadata"]) if r["userMetadata"] else {},
        }
        for r in rows
    ]


def read_snapshot(
    root: Path, partition: dict[str, str], columns: list[str] | None = None, where: ds.Expression | None = None
) -> pd.DataFrame | None:
    """The rows of the Delta table at root under `partition` (e.g. {"detector": d, "dt": day}), only those that
    `where` selects when given, as pandas, read without Spark; None when there is no table or no file.

    The `deltalake` package names the snapshot's files and pyarrow reads them: its own pyarrow reader would need a
    newer pyarrow, and a process that read through it aborts at exit (delta-rs#2184). Reading the files is exact
    while the tables use no deletion vectors or column mapping, which anomalake never turns on.
    """
    from deltalake import DeltaTable  # here: only the processes that read without Spark load delta-rs

    if not is_delta(root):
        return None
    files = snapshot_files(root, partition)
    if not files:
        return None
    keys = DeltaTable(str(Path(root).resolve())).metadata().partition_columns
    partitioning = ds.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive")
    data = ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=str(Path(root).resolve()))
    return data.to_table(columns=columns, filter=where).to_pandas()


def snapshot_files(root: Path, partition: dict[str, str], days: list[str] | None = None) -> list[str]:
    """The data files of the Delta table at root under `partition` (and of `days` when given) that its current
    snapshot names (local paths); a removed or orphan file in the same folder is not among them."""
    from deltalake import DeltaTable

    table = DeltaTable(str(Path(root).resolve()))
    filters = [(k, "=", v) for k, v in partition.items()] + ([("dt", "in", days)] if days is not None else [])
    return sorted(_local_path(uri) for uri in table.file_uris(filters))


def _local_path(uri: str) -> str:
    """A local file's path from the URI delta-rs gives (file:///..., percent-encoded)."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def maintain(spark: SparkSession, root: Path, retention_days: int, run_id: str) -> dict[str, int]:
    """Compact each partition's small files into one (OPTIMIZE, a commit that names the run) and delete the files
    that commits removed more than `retention_days` ago (VACUUM); the rows stay as they are. Returns the data files
    of the snapshot and on disk, before and after."""
    path = Path(root).resolve()
    before = {"snapshot_files": _snapshot_files(spark, path), "disk_files": _disk_files(path)}
    spark.conf.set(_COMMIT_METADATA, json.dumps({"run_id": run_id, "job": "maintain"}, sort_keys=True))
    try:
        spark.sql(f"OPTIMIZE delta.`{path}`")
    finally:
        spark.conf.unset(_COMMIT_METADATA)
    # Delta refuses a retention under 7 days unless told: the setting is the team's choice, stated in one place.
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    spark.sql(f"VACUUM delta.`{path}` RETAIN {retention_days * 24} HOURS")
    after = {"snapshot_files": _snapshot_files(spark, path), "disk_files": _disk_files(path)}
    return {**{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}


_COMMIT_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


def _snapshot_files(spark: SparkSession, path: Path) -> int:
    return int(spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["numFiles"])


def _disk_files(path: Path) -> int:
    return sum(1 for f in path.rglob("*.parquet") if "_delta_log" not in f.parts)


def _sql_string(value: str) -> str:
    """A string literal for delta-rs's SQL (DataFusion: a quote is doubled)."""
    return "'" + value.replace("'", "''") + "'"


def replace_partition_without_spark(
    rows: pa.Table, root: Path, keys: dict[str, str], day: str, run_id: str, job: str
) -> None:
    """Replace the rows of `day` under `keys` of the Delta table at root by `rows` in one commit, from a process
    without Spark (delta-rs); the user metadata is as `replace_days` writes it. A Parquet folder written before is
    converted in place first (its files stay and the log lists them)."""
    from deltalake import CommitProperties, DeltaTable, Field, Schema, convert_to_deltalake, write_deltalake

    partition = {**keys, "dt": day}
    root = Path(root).resolve()
    if not is_delta(root) and root.is_dir() and any(root.rglob("*.parquet")):
        schema = Schema([Field(key, "string") for key in partition])
        convert_to_deltalake(str(root), partition_by=schema, partition_strategy="hive")
    for key, value in partition.items():
        rows = rows.append_column(key, pa.array([value] * rows.num_rows, pa.string()))
    metadata = {"run_id": run_id, "job": job, "partition": keys, "days": [day]}
    write_deltalake(
        str(root),
        rows,
        mode="overwrite",
        # The table's own order (a converted folder's may differ; delta-rs refuses another).
        partition_by=DeltaTable(str(root)).metadata().partition_columns if is_delta(root) else list(partition),
        predicate=" AND ".join(f'"{key}" = {_sql_string(value)}' for key, value in partition.items()),
        commit_properties=CommitProperties(custom_metadata={"userMetadata": json.dumps(metadata, sort_keys=True)}),
    )


def crash_if(crash_at: str, point: str) -> None:
    """Kill this process without any clean-up when fault injection asks for this point (tests only)."""
    if crash_at == point:
        os._exit(137)


def create_table(
    spark: SparkSession, root: Path, schema: T.StructType, partition_columns: list[str], run_id: str, job: str
) -> None:
    """Make root a Delta table before a run's tasks write into it: an old Parquet folder is converted in place (its
    files only: a run's files must not be in it yet), and where there is nothing an empty table is created (a
    CREATE TABLE commit that names the run and job)."""
    from delta.tables import DeltaTable

    convert_parquet_folder(spark, root, partition_columns)
    spark.conf.set(_COMMIT_METADATA, json.dumps({"run_id": run_id, "job": job}, sort_keys=True))
    try:
        if is_delta(root):
            _add_missing_columns(spark, root, schema)
            return
        table = DeltaTable.createIfNotExists(spark).location(str(Path(root).resolve())).addColumns(schema)
        table.partitionedBy(*partition_columns).execute()
    finally:
        spark.conf.unset(_COMMIT_METADATA)


def _add_missing_columns(spark: SparkSession, root: Path, schema: T.StructType) -> None:
    """Columns of `schema` that an older table lacks are added (nullable; its rows read them as null), in one
    commit, so a run's files that hold them are read whole."""
    present = set(read_delta(spark, root).columns)
    missing = [f for f in schema.fields if f.name not in present]
    if missing:
        columns = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE delta.`{Path(root).resolve()}` ADD COLUMNS ({columns})")


@dataclass(frozen=True)
class DataFile:
    """A Parquet file a run's task wrote into a table's partition folder, and its rows (from its footer)."""

    path: Path
    rows: int


def run_files(root: Path, keys: dict[str, str], days: Iterable[str], tag: str) -> dict[str, list[DataFile]]:
    """The finished files named with `tag` (the run id) in each day's partition folder under `keys`, by day.

    A task writes one file per day under a name fixed by its partition, so a retried task replaced its own file
    and each file is listed once. Called when every task has ended: a hidden temp file of this run left now is
    an attempt's that was killed (its retry wrote the file), and is deleted."""
    files = {}
    for day in sorted(days):
        folder = Path(root) / Path(*[f"{k}={v}" for k, v in keys.items()]) / f"dt={day}"
        for temp in folder.glob(f".part-*{tag}-*.tmp"):
            temp.unlink(missing_ok=True)
        paths = sorted(folder.glob(f"part-*{tag}.parquet")) if folder.is_dir() else []
        files[day] = [DataFile(path, pq.read_metadata(path).num_rows) for path in paths]
    return files


def check_written(table: str, written: dict[str, list[DataFile]], counted: dict[str, int], noun: str) -> None:
    """Each day's files hold (by their footers) the rows the tasks counted for it; else the job stops before its
    commit (a file lost or half written by a task would otherwise become the table's)."""
    for day, files in written.items():
        on_disk = sum(file.rows for file in files)
        if on_disk != counted.get(day, 0):
            raise JobError(
                f"table {table}, partition dt={day}: {counted.get(day, 0)} {noun} counted but {on_disk} written"
            )


COMMIT_ATTEMPTS = 20


def commit_files(root: Path, keys: dict[str, str], files: dict[str, list[DataFile]], run_id: str, job: str) -> None:
    """One commit that replaces the rows of the days in `files` under `keys` by exactly those files (a day with
    none is emptied); the user metadata is as `replace_days` writes it. The files lie in the table's folder.

    delta-rs refuses the commit when another writer committed since the table was read (another detector's score
    run beside this one, a backfill of other days), even where the two touch different partitions. The commit
    reads no rows (it replaces whole partitions by files of its own), so it is tried again on the new version;
    two runs of the same days end as Delta's writers do: the later commit wins, each day whole."""
    from deltalake import CommitProperties, DeltaTable
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction

    root = Path(root).resolve()
    actions = [
        AddAction(
            quote(file.path.resolve().relative_to(root).as_posix(), safe="/="),
            file.path.stat().st_size,
            {**keys, "dt": day},
            int(file.path.stat().st_mtime * 1000),
            True,
            json.dumps({"numRecords": file.rows}),
        )
        for day, day_files in sorted(files.items())
        for file in day_files
    ]
    days = sorted(files)
    metadata = {"run_id": run_id, "job": job, "partition": keys, "days": days}
    for attempt in range(COMMIT_ATTEMPTS):
        table = DeltaTable(str(root))
        try:
            table.create_write_transaction(
                actions,
                mode="overwrite",
                schema=table.schema(),
                partition_by=table.metadata().partition_columns,
                partition_filters=[*[(key, "=", value) for key, value in keys.items()], ("dt", "in", days)],
                commit_properties=CommitProperties(
                    custom_metadata={"userMetadata": json.dumps(metadata, sort_keys=True)}
                ),
            )
            return
        except CommitFailedError:
            time.sleep(random.uniform(0.05, 0.5) * (attempt + 1))  # writers that collided do not collide again
    raise JobError(
        f"table {root.name}, partitions {keys} dt={days[0]}..{days[-1]}: the Delta commit failed {COMMIT_ATTEMPTS} "
        "times against other writers; run the job again"
    )


def remove_uncommitted(files: dict[str, list[DataFile]]) -> None:
    """Delete a failed run's files before anything committed them (orphans would only wait for VACUUM)."""
    for day_files in files.values():
        for file in day_files:
            file.path.unlink(missing_ok=True)


def snapshot_days(root: Path, keys: dict[str, str]) -> set[str]:
    """The days (dt) under `keys` that the table's current snapshot holds files of, from its log (no data read)."""
    from deltalake import DeltaTable

    if not is_delta(root):
        return set()
    table = DeltaTable(str(Path(root).resolve()))
    return {p["dt"] for p in table.partitions([(key, "=", value) for key, value in keys.items()])}
