"""The sql job: Spark SQL over the lake's tables, registered under stable names."""
from __future__ import annotations

import pandas as pd

from pipelines.config import TableConfig
from pipelines.io import register_tables
from pipelines.jobs.context import JobContext
from pipelines.runs import read_runs

FORMATS = ("table", "csv", "json")


def run_sql(ctx: JobContext, tables: list[TableConfig], query: str, limit: int = 1000) -> pd.DataFrame:
    """Register every existing table of the catalog and `runs`, run `query`, return at most `limit` rows."""
    register_tables(ctx.spark, ctx.lake, tables)
    runs = read_runs(ctx.spark, ctx.lake.root)
    if runs is not None:
        runs.createOrReplaceTempView("runs")
    return ctx.spark.sql(query).limit(limit).toPandas()


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
