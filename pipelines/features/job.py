"""The windows job: raw partitions (+ lookback) -> features/<table>/dt=D and quarantine/<table>/job=windows.

Both are Delta tables; each run replaces the days it owns in one commit per table that names the run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import partial, reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import input_error
from anomalake.pipelines.features import windowing
from anomalake.pipelines.features.media_samples import media_outcomes, read_media_day
from anomalake.pipelines.lake import schemas
from anomalake.pipelines.lake.accounting import RowAccount, add_counts
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import check_written, crash_if, create_table, remove_uncommitted, run_files
from anomalake.pipelines.lake.reading import (
    days_with_data,
    footer_counts,
    partition_rows,
    raw_files,
    read_raw_days,
    require_raw_days,
)


@dataclass(frozen=True)
class WindowsResult(RowAccount):
    """Row accounting of one windows run: rows_in = windows + context + quarantined."""

    @property
    def windows(self) -> int:
        return self.rows_out

    @property
    def gap_share(self) -> float:
        """The share of raw rows quarantined because their window spans a gap that was not filled."""
        return windowing.gap_share(self.quarantined, self.rows_in)


# Grouped windowing holds a task's rows and their windows in memory: 10M raw rows in the default 8 tasks ran out
# of a 4g heap (benchmarks/windowing.py); a quarter of a million rows per task did not, and kept 2 cores busy.
ROWS_PER_TASK = 250_000


def _read_inputs(ctx: JobContext, table: TableConfig, days: list[date]) -> DataFrame:
    """Target and lookback rows, hash-partitioned by entity into tasks of at most about ROWS_PER_TASK rows."""
    require_raw_days(ctx.lake, table, days)
    present = days_with_data(ctx.lake.raw(table), windowing.days_to_read(table, days))
    rows = sum(partition_rows(table, ctx.lake.raw(table), present).values())
    tasks = max(ctx.settings.shuffle_partitions, math.ceil(rows / ROWS_PER_TASK))
    raw = read_raw_days(ctx.spark, ctx.lake, table, present)
    return raw.repartition(tasks, "entity_id").sortWithinPartitions("entity_id")  # each entity's rows together


def _outcomes(ctx: JobContext, table: TableConfig, days: list[date], tag: str) -> tuple[DataFrame, DataFrame]:
    """(raw rows of the target days, outcome rows with the raw rows each stands for).

    Metrics: the tasks write the windows into the features table's folder themselves (pyarrow, no JVM round trip
    for the arrays; files named with `tag`, the run id, and committed by the driver) and return the other rows and
    their counts (schemas.WINDOWS_TALLY). Images and texts: one row per raw row, the decoded sample in x.
    """
    target = frozenset(d.isoformat() for d in days)
    if table.kind == "timeseries":
        raw = _read_inputs(ctx, table, days)
        folder = str(ctx.lake.features(table.name))
        write = partial(windowing.write_windows_arrow, table=table, target_days=target, folder=folder, tag=tag)
        return raw.where(F.col("dt").isin(*target)), raw.mapInArrow(write, schemas.WINDOWS_TALLY)
    require_raw_days(ctx.lake, table, days)
    raw = reduce(DataFrame.unionByName, [read_media_day(ctx.spark, ctx.lake, table, d) for d in days])
    return raw, raw.mapInPandas(
        partial(media_outcomes, table=table), schemas.media_outcomes_schema(table.kind)
    ).withColumn("rows", F.lit(1).cast("long"))


def _rows_by_day(ctx: JobContext, table: TableConfig, raw: DataFrame, days: list[date]) -> dict[str, int]:
    """Raw rows per target day; a configured column with no value at all in a day stops the job (a broken contract).

    Single nulls are row problems (quarantined); a column that is null throughout means the upstream schema or
    export broke, and windows of it would all be quarantined under a misleading reason. The counts come from the
    Parquet footers where they hold null counts, else from a pass over the rows.
    """
    configured = {"entity_id": table.entity, "ts": table.time, **{f: f for f in table.features}}
    if table.kind != "timeseries":
        configured = {"entity_id": table.entity, "value": table.path_column or table.value_column}
    counts = _footer_counts(ctx, table, days, configured)
    if counts is None:
        counts = raw.groupBy("dt").agg(F.count("*").alias("rows"), *[F.count(c).alias(c) for c in configured]).collect()
    for r in counts:
        for column, name in configured.items():
            if r["rows"] and r[column] == 0:
                raise input_error(
                    table.name, f"dt={r['dt']}", name, f"all {r['rows']} values are null (expected values)"
                )
    return {r["dt"]: r["rows"] for r in counts}


def _footer_counts(
    ctx: JobContext, table: TableConfig, days: list[date], configured: dict[str, str]
) -> list[dict] | None:
    """Per day: {"dt", "rows", <column>: values} from the raw files' footers, as the aggregation gives; None if
    unknown."""
    counts = []
    for day in days:
        found = footer_counts(raw_files(ctx.lake, table, day), list(configured.values()))
        if found is None:
            return None
        rows, values = found
        counts.append({"dt": day.isoformat(), "rows": rows, **{key: values[name] for key, name in configured.items()}})
    return [c for c in counts if c["rows"]]


def run_windows(ctx: JobContext, table: TableConfig, days: list[date]) -> WindowsResult:
    """Build the model inputs of `days`: windows of metrics, or decoded images or texts (one run = day by day)."""
    root, tag, day_names = ctx.lake.features(table.name), f"-{ctx.run_id}", [d.isoformat() for d in days]
    # Before any task writes into it: an old Parquet folder is converted with its own files only.
    create_table(ctx.spark, root, schemas.features_schema(table.kind), ["dt"], ctx.run_id, "windows")
    raw, out = _outcomes(ctx, table, days, tag)
    rows_by_day = _rows_by_day(ctx, table, raw, days)
    out, committed = out.persist(), False
    try:
        tally = out.groupBy("dt", "outcome", "reason").agg(F.sum("rows").alias("count")).collect()
        result = _accounting(table, tally, sum(rows_by_day.values()))
        days_with = lambda o: {r["dt"] for r in tally if r["outcome"] == o}  # noqa: E731
        if table.kind == "timeseries":
            written = run_files(root, {}, day_names, tag)
            counted = {r["dt"]: r["count"] for r in tally if r["outcome"] == windowing.WINDOW}
            check_written(table.name, written, counted, "windows")
            crash_if(ctx.settings.crash_at, "written")
            ctx.commit_files(root, {}, written, "windows")
        else:
            features = out.where(F.col("outcome") == windowing.WINDOW)
            schema = schemas.features_schema(table.kind)
            ctx.replace(features, schema, root, {}, days, days_with(windowing.WINDOW), "windows")
        committed = True
        crash_if(ctx.settings.crash_at, "committed")
        quarantine = out.where(F.col("outcome") == windowing.QUARANTINE).withColumn("run_id", F.lit(ctx.run_id))
        ctx.replace(
            quarantine,
            schemas.QUARANTINE,
            ctx.lake.quarantine(table.name),
            {"job": "windows"},
            days,
            days_with(windowing.QUARANTINE),
            "windows",
        )
        records = {day: _day_record(table, day, rows_by_day.get(day.isoformat(), 0), tally) for day in days}
        ctx.record(table.name, "windows", records)
    finally:
        out.unpersist()
        if not committed and table.kind == "timeseries":  # a failed run's files (a committed run's are the table's)
            remove_uncommitted(run_files(root, {}, day_names, tag))
    return result


def _accounting(table: TableConfig, tally: list, rows_in: int) -> WindowsResult:
    """The run's accounting from (dt, outcome, reason, count) rows; it must balance and stay under the quarantine
    limit, else the job stops before anything is committed."""
    outcomes = {o: sum(r["count"] for r in tally if r["outcome"] == o) for o in (windowing.WINDOW, windowing.CONTEXT)}
    quarantined: dict[str, int] = {}
    for r in tally:
        if r["outcome"] == windowing.QUARANTINE:
            add_counts(quarantined, r["reason"], r["count"])
    result = WindowsResult(rows_in, outcomes[windowing.WINDOW], outcomes[windowing.CONTEXT], quarantined)
    result.check(f"table {table.name}", "windows")
    result.check_quarantine(f"table {table.name}", table.max_quarantine_share, windowing.NOT_A_DATA_PROBLEM, "raw rows")
    return result


def _day_record(table: TableConfig, day: date, rows_in: int, tally: list) -> dict:
    """The run record of one day, so a nightly check reads exactly its partition's accounting."""
    rows = [r for r in tally if r["dt"] == day.isoformat()]
    count = lambda o: sum(r["count"] for r in rows if r["outcome"] == o)  # noqa: E731
    quarantined = {r["reason"]: r["count"] for r in rows if r["outcome"] == windowing.QUARANTINE}
    partition = f"dt={day.isoformat()}"
    record = {
        "rows_in": rows_in,
        "rows_out": count(windowing.WINDOW),
        "context": count(windowing.CONTEXT),
        "quarantined": quarantined,
        # The share of the day's rows lost to gaps too long to fill (the table's gaps block decides how long).
        "gap_share": round(windowing.gap_share(quarantined, rows_in), 6),
        "inputs": [{"table": f"raw_{table.name}", "partition": partition, "rows": rows_in}],
        "outputs": [
            {"table": f"features_{table.name}", "partition": partition, "rows": count(windowing.WINDOW)},
            {
                "table": f"quarantine_{table.name}",
                "partition": f"job=windows/{partition}",
                "rows": sum(quarantined.values()),
            },
        ],
    }
    return record
