"""The score job: features/<table>/dt=D + the CURRENT model -> scores/<table>/detector=<name>/dt=D."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import partial
from pathlib import Path
from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.artifacts import META_FILE, ArtifactError, check_signature, read_current, verify_artifact
from models.scaling import EntityBaseline
from pipelines.baselines import fit_baseline
from pipelines import schemas
from pipelines.config import TableConfig
from pipelines.errors import JobError
from pipelines.io import parquet_rows, partition_dir, read_partitions
from pipelines.jobs.context import JobContext
from pipelines.publish import check_staged, end_staging, partition_path
from pipelines.scoring import TALLY, ScoreFiles, write_scores_arrow

@dataclass(frozen=True)
class ScoreResult:
    """Row accounting of one score run: rows_in = scored + quarantined."""

    rows_in: int
    scored: int
    anomalies: int
    quarantined: dict[str, int]
    model_version: str


def _check_model_fits_table(artifact_path: Path, table: TableConfig, detector: str) -> None:
    """Refuse a model whose files changed since training or whose inputs are not this table's samples."""
    try:
        verify_artifact(artifact_path)
        check_signature(json.loads((artifact_path / META_FILE).read_text()), table.signature(), artifact_path)
    except ArtifactError as error:
        raise JobError(f"table {table.name}, detector {detector}: {error}") from None


def run_score(ctx: JobContext, table: TableConfig, detector: str, day: date, version: str | None = None) -> ScoreResult:
    """Score one day's windows with the CURRENT (or the given) model version and replace its partition."""
    return run_score_days(ctx, table, detector, [day], version)


def run_score_days(ctx: JobContext, table: TableConfig, detector: str, days: Sequence[date], version: str | None = None) -> ScoreResult:
    """Score several days in one Spark job (a backfill): the model loads once per worker, not once per day.

    Each day's partition is replaced and gets its own run record, as if it had been scored alone.
    """
    root = ctx.lake.models(detector, table.name)
    version = version or read_current(root)
    artifact_path = root / version
    _check_model_fits_table(artifact_path, table, detector)
    features = read_partitions(ctx.spark, ctx.lake.features(table.name), days, "features", table.name)
    where = f"table {table.name}, partition{'s' if len(days) > 1 else ''} dt={days[0].isoformat()}" + (f"..{days[-1].isoformat()}" if len(days) > 1 else "")
    unseen = _unseen_baselines(features, table, artifact_path)
    scores_root, keys = ctx.lake.scores(table.name), {"detector": detector}
    stage = ctx.stage(scores_root, keys)
    try:
        tally, rows_by_day = _score_to_stage(ctx, table, detector, days, features, artifact_path, version, unseen, stage, where)
    finally:
        end_staging(stage)  # a failed run's files and its lock (a committed run has moved the files)
    for day in days:
        of_day = _accounting([r for r in tally if r["dt"] == day.isoformat()], rows_by_day.get(day.isoformat(), 0), version)
        partition = f"dt={day.isoformat()}"
        record = {"rows_in": of_day.rows_in, "rows_out": of_day.scored, "anomalies": of_day.anomalies,
                  "quarantined": of_day.quarantined, "model_version": version, "detector": detector,
                  "inputs": [{"table": f"features_{table.name}", "partition": partition, "rows": of_day.rows_in}],
                  "outputs": [{"table": f"scores_{table.name}", "partition": f"detector={detector}/{partition}", "rows": of_day.scored},
                              {"table": f"quarantine_{table.name}", "partition": f"job=score_{detector}/{partition}", "rows": sum(of_day.quarantined.values())}]}
        ctx.record(table.name, f"score_{detector}", day, record)
    return _accounting(tally, sum(rows_by_day.values()), version)


def _score_to_stage(ctx: JobContext, table: TableConfig, detector: str, days, features: DataFrame, artifact_path: Path,
                    version: str, unseen: str, stage: Path, where: str) -> tuple[list, dict[str, int]]:
    """Score in the tasks, which write the scored rows under `stage`; check the counts; publish; (tally, rows in by day)."""
    keys = {"detector": detector}
    files = ScoreFiles(str(partition_path(stage, keys, "").parent), table.kind, version, ctx.run_id, datetime.now(timezone.utc), table.step_seconds)
    score = partial(write_scores_arrow, path=str(artifact_path), kind=table.kind, unseen=unseen, files=files)
    outcome = features.select("entity_id", "ts", "x", "dt").mapInArrow(score, TALLY).persist()
    try:
        tally = outcome.groupBy("dt", "error").agg(F.sum("rows").alias("n"), F.sum("anomalies").alias("a")).collect()
        # Rows in, counted apart from the scoring: from the features partitions' Parquet footers (no Spark job).
        rows_by_day = {d.isoformat(): parquet_rows(table, d, partition_dir(ctx.lake.features(table.name), dt=d.isoformat())) for d in days}
        result = _accounting(tally, sum(rows_by_day.values()), version)
        if result.scored + sum(result.quarantined.values()) != result.rows_in:
            raise JobError(f"{where}: row accounting does not balance")
        if result.rows_in and sum(result.quarantined.values()) / result.rows_in > table.max_quarantine_share:
            raise JobError(f"{where}: {result.quarantined} of {result.rows_in} windows could not be scored")
        good_days = {r["dt"] for r in tally if r["error"] is None}
        check_staged(table, stage, keys, {r["dt"]: r["n"] for r in tally if r["error"] is None}, "scored rows")
        ctx.commit(ctx.lake.scores(table.name), keys, days, good_days)
        bad = outcome.where(F.col("error").isNotNull()).select(
            "entity_id", "ts", F.lit(ctx.run_id).alias("run_id"), "dt", F.col("error").alias("reason"), F.lit(f"model {detector} {version}").alias("detail")
        )
        bad_days = {r["dt"] for r in tally if r["error"] is not None}
        ctx.publish(bad, schemas.QUARANTINE, ctx.lake.quarantine(table.name), {"job": f"score_{detector}"}, days, bad_days)
    finally:
        outcome.unpersist()
    return tally, rows_by_day


def _unseen_baselines(features: DataFrame, table: TableConfig, artifact_path: Path) -> str:
    """Baselines (JSON) of the entities the model never saw, as `unseen_entities` says ("" = quarantine them).

    own_baseline: each new entity in its own units (median and IQR of its windows being scored; a new host at
    another level). training_baseline: the median baseline of the training entities (a new run of the same
    machine, whose level itself may be the anomaly). No labels either way.
    """
    if table.kind != "timeseries" or table.unseen_entities == "quarantine":
        return ""
    known = EntityBaseline.load(artifact_path)
    entities = [r["entity_id"] for r in features.select("entity_id").distinct().collect()]
    new = [e for e in entities if e not in known.centers]
    if not new:
        return ""
    if table.unseen_entities == "training_baseline":
        return known.pooled(new).to_json()
    return fit_baseline(features.where(F.col("entity_id").isin(new)), table).to_json()


def _accounting(tally: list, rows_in: int, version: str) -> ScoreResult:
    """Scored, flagged and quarantined counts from (dt, error, n, a) rows."""
    quarantined: dict[str, int] = {}
    for r in tally:
        if r["error"] is not None:
            quarantined[r["error"]] = quarantined.get(r["error"], 0) + r["n"]
    good = sum(r["n"] for r in tally if r["error"] is None)
    anomalies = sum(r["a"] or 0 for r in tally if r["error"] is None)
    return ScoreResult(rows_in, good, anomalies, quarantined, version)
