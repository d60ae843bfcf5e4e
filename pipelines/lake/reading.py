"""Reading the lake: raw partitions checked against their table config, footers, any table's dt partitions."""

from __future__ import annotations

import logging
from datetime import date
from functools import reduce
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import input_error
from anomalake.pipelines.lake.delta import partition_condition, read_delta, snapshot_days, snapshot_files
from anomalake.pipelines.lake.layout import Lake, has_data, is_delta, partition_path

LOG = logging.getLogger("anomalake")
NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
TIME_TYPES = (T.TimestampType, T.TimestampNTZType)


def parquet_rows(table: TableConfig, day: date, folder: Path) -> int:
    """Rows in a partition folder's Parquet files, from their footers; a file that is not Parquet stops the job
    naming it."""
    return _footer_rows(table, day, sorted(folder.glob("*.parquet")))


def partition_rows(table: TableConfig, root: Path, days: Iterable[date], **keys: str) -> dict[str, int]:
    """Rows of each day (under optional fixed keys) of a lake table, from its files' footers: the files a Delta
    table's snapshot names (never a removed or orphan file in the folder; the log is read once), or a Parquet
    folder's files."""
    if not is_delta(root):
        return {d.isoformat(): parquet_rows(table, d, partition_path(root, **keys, dt=d.isoformat())) for d in days}
    files: dict[str, list[Path]] = {d.isoformat(): [] for d in days}
    for file in map(Path, snapshot_files(root, keys, list(files))):
        files[file.parent.name.removeprefix("dt=")].append(file)
    return {day: _footer_rows(table, date.fromisoformat(day), paths) for day, paths in files.items()}


def days_with_data(root: Path, days: Iterable[date], **keys: str) -> list[date]:
    """The days among `days` of which a lake table holds rows (under optional fixed keys): a Delta table's snapshot
    partitions (from its log), or a Parquet folder's partition folders with files."""
    if is_delta(root):
        present = snapshot_days(root, keys)
        return [d for d in days if d.isoformat() in present]
    return [d for d in days if has_data(partition_path(root, **keys, dt=d.isoformat()))]


def _footer_rows(table: TableConfig, day: date, paths: list[Path]) -> int:
    rows = 0
    for path in paths:
        try:
            rows += pq.read_metadata(path).num_rows
        except (OSError, ValueError) as error:  # pyarrow raises ArrowInvalid (a ValueError) for a bad footer
            problem = str(error).splitlines()[0][:160]
            raise input_error(
                table.name, f"dt={day.isoformat()}", None, f"file {path.name} is not readable Parquet ({problem})"
            ) from None
    return rows


def raw_files(lake: Lake, table: TableConfig, day: date) -> list[Path]:
    """The data files of one raw partition: those a Delta table's snapshot names (`format: delta`; none where the
    folder is no Delta table), or the files of the partition folder."""
    root = lake.raw(table)
    if table.format == "delta":
        return [Path(f) for f in snapshot_files(root, {"dt": day.isoformat()})] if is_delta(root) else []
    return sorted(partition_path(root, dt=day.isoformat()).glob("*.parquet"))


def footer_counts(paths: list[Path], columns: list[str]) -> tuple[int, dict[str, int]] | None:
    """(rows, values per column) of a partition's files from their Parquet footers' statistics; None where a file
    has none.

    Saves a pass over the data for the row accounting and the all-null check (Spark and pyarrow write null counts).
    """
    rows, values = 0, dict.fromkeys(columns, 0)
    try:
        for path in paths:
            meta = pq.read_metadata(path)
            names = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
            rows += meta.num_rows
            for group in (meta.row_group(g) for g in range(meta.num_row_groups)):
                for column in columns:
                    stats = group.column(names[column]).statistics if column in names else None
                    if stats is None or not stats.has_null_count:
                        return None
                    values[column] += group.num_rows - stats.null_count
    except (OSError, ValueError):
        return None
    return rows, values


def footer_schema(folder: Path) -> T.StructType | None:
    """The Spark schema of a partition's first file, from its footer (no schema-inference job); None when unsure.

    Timestamps without a time zone (INT96 and local timestamps read differently) and all-null columns (typed by
    Spark's reader) are left to Spark's own inference. Nanosecond timestamps are read as the integers they are
    (spark.sql.legacy.parquet.nanosAsLong) and converted by `read_raw_files`.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    try:
        arrow = pq.read_schema(min(folder.glob("*.parquet")))
        if any((pa.types.is_timestamp(f.type) and f.type.tz is None) or pa.types.is_null(f.type) for f in arrow):
            return None
        as_read = [pa.field(f.name, pa.int64(), f.nullable) if _is_nanoseconds(f.type) else f for f in arrow]
        return from_arrow_schema(pa.schema(as_read))
    except (OSError, ValueError, TypeError):
        return None


def _is_nanoseconds(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) and kind.unit == "ns"


def nanosecond_columns(folder: Path) -> set[str]:
    """Columns that a partition's files hold as nanosecond timestamps (what pandas writes by default)."""
    names: set[str] = set()
    for path in sorted(folder.glob("*.parquet")):
        try:
            names |= {f.name for f in pq.read_schema(path) if _is_nanoseconds(f.type)}
        except (OSError, ValueError):
            continue  # parquet_rows names a file that is not Parquet
    return names


def read_raw_files(spark: SparkSession, table: TableConfig, day: date, folder: Path) -> DataFrame:
    """A raw partition's files as Spark reads them, with nanosecond timestamps cut to microseconds (Spark's unit).

    pandas writes nanosecond timestamps unless told otherwise, and Spark 4 refuses them; they are read as integers
    and converted here, so the most common way to write Parquet in Python just works. An unreadable partition is
    one line naming it.
    """
    try:
        schema = footer_schema(folder)
        df = (spark.read.schema(schema) if schema is not None else spark.read).parquet(str(folder))
    except AnalysisException as error:
        raise input_error(
            table.name, f"dt={day.isoformat()}", None, f"unreadable: {error.getMessage().splitlines()[0]}"
        ) from None
    return _nanoseconds_to_micros(df, nanosecond_columns(folder))


def _nanoseconds_to_micros(df: DataFrame, columns: set[str]) -> DataFrame:
    """Nanosecond timestamp columns (read as integers) as Spark timestamps in microseconds."""
    for column in sorted(columns & set(df.columns)):
        if isinstance(df.schema[column].dataType, T.LongType):
            df = df.withColumn(column, F.expr(f"timestamp_micros(`{column}` div 1000)"))
    return df


def _as_raw_rows(df: DataFrame, table: TableConfig, dt) -> DataFrame:
    """The configured columns under the names the jobs use: (entity_id, ts, features..., dt)."""
    return df.select(
        F.col(table.entity).cast("string").alias("entity_id"),
        F.col(table.time).cast("timestamp").alias("ts"),
        *[F.col(f).cast("double").alias(f) for f in table.features],
        dt.alias("dt"),
    )


def check_raw_schema(table: TableConfig, day: date, schema: T.StructType) -> None:
    """Stop with one line when a configured column is missing or has the wrong type; log extra columns (safe drift)."""
    fields = {f.name: f.dataType for f in schema.fields}
    partition = f"dt={day.isoformat()}"
    expected = [(table.entity, None), (table.time, TIME_TYPES)] + [(f, NUMERIC_TYPES) for f in table.features]
    # dt is the partition column Spark adds from the folder name, not drift of the table's files.
    extra = sorted(set(fields) - {column for column, _ in expected} - {"dt"})
    if extra:
        LOG.warning(
            "table %s, partition %s: columns not in the config are ignored: %s", table.name, partition, ", ".join(extra)
        )
    for column, types in expected:
        if column not in fields:
            raise input_error(table.name, partition, column, f"missing (found columns: {', '.join(fields)})")
        if types and not isinstance(fields[column], types):
            wanted = "a timestamp" if types is TIME_TYPES else "a numeric type"
            raise input_error(
                table.name, partition, column, f"expected {wanted}, found {fields[column].simpleString()}"
            )


def read_raw_day(spark: SparkSession, lake: Lake, table: TableConfig, day: date) -> DataFrame:
    """One raw partition, checked against the table config, as (entity_id, ts, features..., dt)."""
    if table.format == "delta":
        return _read_raw_delta(spark, lake, table, [day])
    folder = partition_path(lake.raw(table), dt=day.isoformat())
    parquet_rows(table, day, folder)
    df = read_raw_files(spark, table, day, folder)
    check_raw_schema(table, day, df.schema)
    return _as_raw_rows(df, table, F.lit(day.isoformat()))


def read_raw_days(spark: SparkSession, lake: Lake, table: TableConfig, days: list[date]) -> DataFrame:
    """Raw partitions of `days`, each checked as `read_raw_day` checks it, as (entity_id, ts, features..., dt).

    Consecutive days whose files share one layout (the usual case) are read in one scan: a read per day cost
    0.18 s of planning each, 10 s for a 55-day series before any window was cut. A day with another layout
    (schema drift) starts a read of its own, so each is read under its own schema as before. A Delta table
    (`format: delta`) is read in one scan of its snapshot.
    """
    if table.format == "delta":
        return _read_raw_delta(spark, lake, table, days)
    runs: list[tuple[object, list[date]]] = []
    for day in days:  # a file that is not Parquet has no layout: read_raw_day names it
        layout = _file_layout(partition_path(lake.raw(table), dt=day.isoformat()))
        if layout is not None and runs and runs[-1][0] == layout:
            runs[-1][1].append(day)
        else:
            runs.append((layout, [day]))
    return reduce(DataFrame.unionByName, [_read_raw_run(spark, lake, table, run) for _, run in runs])


def raw_delta_rows(spark: SparkSession, lake: Lake, table: TableConfig, days: list[date]) -> DataFrame:
    """The rows of `days` of a raw Delta table (`format: delta`) as stored, through its snapshot; dt is its
    partition column."""
    root = lake.raw(table)
    if not is_delta(root):
        raise _not_delta(table, days[0], root)
    df = read_delta(spark, root)
    if not isinstance(df.schema["dt"].dataType if "dt" in df.columns else None, T.StringType):
        raise input_error(table.name, f"dt={days[0].isoformat()}", "dt", f"the Delta table at {root} has no string dt")
    return df.where(partition_condition({}, [d.isoformat() for d in days]))


def _read_raw_delta(spark: SparkSession, lake: Lake, table: TableConfig, days: list[date]) -> DataFrame:
    df = raw_delta_rows(spark, lake, table, days)
    check_raw_schema(table, days[0], T.StructType([f for f in df.schema.fields if f.name != "dt"]))
    return _as_raw_rows(df, table, F.col("dt"))


def _not_delta(table: TableConfig, day: date, root: Path):
    return input_error(
        table.name, f"dt={day.isoformat()}", None, f"no raw data (format: delta, but {root} is not a Delta table)"
    )


def _file_layout(folder: Path) -> tuple | None:
    """What decides how a partition's files read: every file's Arrow schema; None when a footer is unreadable or
    a file has its own `dt` column (the partition folder's would shadow it)."""
    try:
        schemas = {pq.read_schema(path).remove_metadata() for path in sorted(folder.glob("*.parquet"))}
    except (OSError, ValueError):
        return None
    if len(schemas) != 1 or "dt" in {name.lower() for name in next(iter(schemas)).names}:
        return None
    return tuple(schemas)


def _read_raw_run(spark: SparkSession, lake: Lake, table: TableConfig, run: list[date]) -> DataFrame:
    """Days of one layout in one scan, dt from the partition folders; a single day as `read_raw_day` reads it."""
    if len(run) == 1:
        return read_raw_day(spark, lake, table, run[0])
    root = lake.raw(table)
    folders = [partition_path(root, dt=d.isoformat()) for d in run]
    try:
        schema = footer_schema(folders[0])
        reader = spark.read.schema(schema) if schema is not None else spark.read
        df = reader.option("basePath", str(root)).parquet(*map(str, folders))
    except AnalysisException:  # one day at a time names the partition that cannot be read
        return reduce(DataFrame.unionByName, [read_raw_day(spark, lake, table, d) for d in run])
    check_raw_schema(table, run[0], df.schema)
    # dt is the folder's value, a string: partition type inference is off (pipelines/spark.py).
    return _as_raw_rows(_nanoseconds_to_micros(df, nanosecond_columns(folders[0])), table, F.col("dt"))


def require_raw_days(lake: Lake, table: TableConfig, days: Iterable[date]) -> None:
    """A day with no raw data, or only empty or unreadable files, is an error that says so, not an empty success."""
    if table.format == "delta":
        _require_raw_delta(lake, table, list(days))
        return
    for day in days:
        folder = partition_path(lake.raw(table), dt=day.isoformat())
        if not has_data(folder):
            raise input_error(table.name, f"dt={day.isoformat()}", None, f"no raw data ({folder} is missing or empty)")
        if parquet_rows(table, day, folder) == 0:
            raise input_error(
                table.name, f"dt={day.isoformat()}", None, "the partition holds no rows (did the upstream write fail?)"
            )


def _require_raw_delta(lake: Lake, table: TableConfig, days: list[date]) -> None:
    root = lake.raw(table)
    if not is_delta(root):
        raise _not_delta(table, days[0], root)
    present, rows = snapshot_days(root, {}), partition_rows(table, root, days)
    for day in days:
        if day.isoformat() not in present:
            raise input_error(table.name, f"dt={day.isoformat()}", None, f"no raw data (no such partition in {root})")
        if rows[day.isoformat()] == 0:
            raise input_error(
                table.name, f"dt={day.isoformat()}", None, "the partition holds no rows (did the upstream write fail?)"
            )


def read_partitions(
    spark: SparkSession, root: Path, days: Iterable[date], what: str, table: str, **keys: str
) -> DataFrame:
    """Read the dt partitions of one table (under optional fixed keys); each must exist. A Delta table is read
    through its snapshot, a Parquet folder as it is."""
    if is_delta(root):
        present = snapshot_days(root, keys)
        for day in days:
            if day.isoformat() not in present:
                raise input_error(table, f"dt={day.isoformat()}", None, f"no {what} partition in {root}")
        return read_delta(spark, root).where(partition_condition(keys, [d.isoformat() for d in days]))
    paths = []
    for day in days:
        folder = partition_path(root, **keys, dt=day.isoformat())
        if not has_data(folder):
            raise input_error(table, f"dt={day.isoformat()}", None, f"no {what} partition at {folder}")
        paths.append(str(folder))
    return spark.read.option("basePath", str(partition_path(root, **keys))).parquet(*paths)
