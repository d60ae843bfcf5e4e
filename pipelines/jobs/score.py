"""The score job: features/<table>/dt=D + the CURRENT model -> scores/<table>/detector=<name>/dt=D."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from pyspark.sql import functions as F

from models.artifacts import META_FILE, read_current
from pipelines import schemas
from pipelines.config import TableConfig
from pipelines.errors import JobError
from pipelines.io import read_partitions, replace_partitions
from pipelines.jobs.context import JobContext
from pipelines.runs import write_run_record
from pipelines.scoring import score_column

@dataclass(frozen=True)
class ScoreResult:
    """Row accounting of one score run: rows_in = scored + quarantined."""

    rows_in: int
    scored: int
    anomalies: int
    quarantined: dict[str, int]
    model_version: str


def _check_model_fits_table(meta: dict, table: TableConfig, detector: str) -> None:
    kind, shape = meta.get("kind", "timeseries"), tuple(meta.get("sample_shape", (table.window.length, len(table.features))))
    if kind != table.kind or shape != table.sample_shape:
        raise JobError(f"table {table.name}: model {detector} was trained on {kind} samples of shape {shape}, the table has {table.kind} samples of shape {table.sample_shape}; retrain it")
    if meta["features"] != list(table.features) or meta["window"]["length"] != table.window.length:
        raise JobError(
            f"table {table.name}: model {detector} was trained on features {meta['features']} with window "
            f"{meta['window']['length']}, the table config has {list(table.features)} and {table.window.length}; retrain it"
        )


def run_score(ctx: JobContext, table: TableConfig, detector: str, day: date, version: str | None = None) -> ScoreResult:
    """Score one day's windows with the CURRENT (or the given) model version and replace its partition."""
    root = ctx.lake.models(detector, table.name)
    version = version or read_current(root)
    artifact_path = root / version
    _check_model_fits_table(json.loads((artifact_path / META_FILE).read_text()), table, detector)
    features = read_partitions(ctx.spark, ctx.lake.features(table.name), [day], "features", table.name)
    step = table.step_seconds
    scored = features.withColumn("s", score_column(str(artifact_path), F.col("entity_id"), F.col("x"), table.kind))
    scored = scored.select("entity_id", "ts", "dt", "s.*")
    if table.kind == "timeseries":
        scored = scored.withColumn("top_steps", F.expr(f"transform(top_step_offsets, o -> ts - make_dt_interval(0, 0, 0, o * {step}))"))
    scored = (
        scored.withColumn("model_version", F.lit(version))
        .withColumn("run_id", F.lit(ctx.run_id))
        .withColumn("scored_at", F.current_timestamp())
        .persist()
    )
    try:
        tally = scored.groupBy("error").agg(F.count("*").alias("n"), F.sum(F.col("is_anomaly").cast("int")).alias("a")).collect()
        quarantined = {r["error"]: r["n"] for r in tally if r["error"] is not None}
        good = sum(r["n"] for r in tally if r["error"] is None)
        rows_in = features.count()
        if good + sum(quarantined.values()) != rows_in:
            raise JobError(f"table {table.name}, partition dt={day.isoformat()}: row accounting does not balance")
        anomalies = sum(r["a"] or 0 for r in tally if r["error"] is None)
        if rows_in and sum(quarantined.values()) / rows_in > table.max_quarantine_share:
            raise JobError(f"table {table.name}, partition dt={day.isoformat()}: {quarantined} of {rows_in} windows could not be scored")
        days_written = {day.isoformat()} if good else set()
        ok = scored.where(F.col("error").isNull())
        replace_partitions(ok, schemas.scores_schema(table.kind), ctx.lake.scores(table.name), {"detector": detector}, [day], days_written)
        bad = scored.where(F.col("error").isNotNull()).select(
            "entity_id", "ts", "run_id", "dt", F.col("error").alias("reason"), F.lit(f"model {detector} {version}").alias("detail")
        )
        job = {"job": f"score_{detector}"}
        replace_partitions(bad, schemas.QUARANTINE, ctx.lake.quarantine(table.name), job, [day], {day.isoformat()} if quarantined else set())
    finally:
        scored.unpersist()
    result = ScoreResult(rows_in, good, anomalies, quarantined, version)
    record = {"run_id": ctx.run_id, "rows_in": rows_in, "rows_out": good, "anomalies": anomalies,
              "quarantined": quarantined, "model_version": version, "detector": detector}
    write_run_record(ctx.lake.root, table.name, f"score_{detector}", day, record)
    return result
