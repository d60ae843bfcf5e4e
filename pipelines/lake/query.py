"""Spark SQL over the lake's tables: session views under stable names (raw_/features_/scores_/..., `runs` and
`detection_metrics`)."""

from __future__ import annotations

from typing import Iterable

import pandas as pd
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import history, read_table
from anomalake.pipelines.lake.layout import Lake, delta_locations, lake_locations, table_locations

FORMATS = ("table", "csv", "json")


def register_tables(spark: SparkSession, lake: Lake, tables: Iterable[TableConfig]) -> list[str]:
    """Register the session views raw_/features_/scores_/quarantine_/labels_<table> for folders with data."""
    names = []
    for table in tables:
        for view, root in table_locations(lake, table).items():
            read_table(spark, root).createOrReplaceTempView(view)
            names.append(view)
    return names


def run_sql(ctx: JobContext, tables: list[TableConfig], query: str, limit: int = 1000) -> pd.DataFrame:
    """Register every existing table of the catalog, `runs` and `detection_metrics`, run `query`, return at most
    `limit` rows; a query Spark refuses (syntax, unknown table or column) is a JobError of one line."""
    register_tables(ctx.spark, ctx.lake, tables)
    for view, root in lake_locations(ctx.lake).items():  # runs, and detection_metrics of labelled tables
        read_table(ctx.spark, root).createOrReplaceTempView(view)
    try:
        return ctx.spark.sql(query).limit(limit).toPandas()
    except AnalysisException as error:  # a syntax error, an unknown table or column: the user's query, one line
        raise JobError(f"query: {str(error).strip().splitlines()[0]}") from None


HISTORY_COLUMNS = ["table", "version", "time", "run_id", "job", "operation", "partitions"]


def table_history(spark: SparkSession, lake: Lake, table: TableConfig, detector: str | None = None) -> pd.DataFrame:
    """Every commit of the table's Delta tables (events_<t>, quarantine_<t>, ...), oldest first per table: version,
    time, the run and job that wrote it, the operation and the partitions it replaced; with `detector`, only the
    commits of that detector's jobs."""
    rows = []
    for name, root in delta_locations(lake, table).items():
        for commit in history(spark, root):
            meta = commit["metadata"]
            if detector and meta.get("job") not in {f"{job}_{detector}" for job in ("score", "events", "train")}:
                continue
            partition = [f"{k}={v}" for k, v in meta.get("partition", {}).items()]
            if meta.get("days"):
                partition.append(f"dt={','.join(meta['days'])}")
            rows.append(
                [name, commit["version"], commit["timestamp"], meta.get("run_id", ""), meta.get("job", "")]
                + [commit["operation"], " ".join(partition)]
            )
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def render(frame: pd.DataFrame, fmt: str = "table") -> str:
    """The result as an aligned text table, CSV or JSON lines."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", lines=True, date_format="iso")
    if frame.empty:
        return "(no rows)\n"
    with pd.option_context("display.max_colwidth", 80, "display.width", 250):
        return frame.to_string(index=False) + f"\n({len(frame)} rows)\n"
