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

from anomalake.models.artifacts import META_FILE, ArtifactError, check_signature, read_current, verify_artifact
from anomalake.models.scaling import EntityScaling
from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.entity_scaling import unseen_scaling
from anomalake.pipelines.lake import schemas
from anomalake.pipelines.lake.accounting import RowAccount, add_counts
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import check_written, crash_if, create_table, remove_uncommitted, run_files
from anomalake.pipelines.lake.layout import partition_path
from anomalake.pipelines.lake.reading import partition_rows, read_partitions
from anomalake.pipelines.scoring.udf import REASONS, ScoreFiles, model_inputs, write_scores_arrow


@dataclass(frozen=True)
class ScoreResult(RowAccount):
    """Row accounting of one score run: rows_in = scored + quarantined."""

    anomalies: int = 0
    model_version: str = ""

    @property
    def scored(self) -> int:
        return self.rows_out


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


def run_score_days(
    ctx: JobContext, table: TableConfig, detector: str, days: Sequence[date], version: str | None = None
) -> ScoreResult:
    """Score several days in one Spark job (a backfill): the model loads once per worker, not once per day.

    Each day's partition is replaced and gets its own run record, as if it had been scored alone.
    """
    root = ctx.lake.models(detector, table.name)
    version = version or read_current(root)
    artifact_path = root / version
    _check_model_fits_table(artifact_path, table, detector)
    features = read_partitions(ctx.spark, ctx.lake.features(table.name), days, "features", table.name)
    where = f"table {table.name}, partition{'s' if len(days) > 1 else ''} dt={days[0].isoformat()}" + (
        f"..{days[-1].isoformat()}" if len(days) > 1 else ""
    )
    unseen = _unseen_scaling(features, table, artifact_path)
    # Before any task writes into it: an old Parquet folder is converted with its own files only.
    schema, job = schemas.scores_schema(table.kind), f"score_{detector}"
    create_table(ctx.spark, ctx.lake.scores(table.name), schema, ["detector", "dt"], ctx.run_id, job)
    tally, rows_by_day = _score_into_table(ctx, table, detector, days, features, artifact_path, version, unseen, where)
    records = {}
    for day in days:
        of_day = _accounting(
            [r for r in tally if r["dt"] == day.isoformat()], rows_by_day.get(day.isoformat(), 0), version
        )
        partition = f"dt={day.isoformat()}"
        record = {
            "rows_in": of_day.rows_in,
            "rows_out": of_day.scored,
            "anomalies": of_day.anomalies,
            "quarantined": of_day.quarantined,
            "model_version": version,
            "detector": detector,
            "inputs": [{"table": f"features_{table.name}", "partition": partition, "rows": of_day.rows_in}],
            "outputs": [
                {
                    "table": f"scores_{table.name}",
                    "partition": f"detector={detector}/{partition}",
                    "rows": of_day.scored,
                },
                {
                    "table": f"quarantine_{table.name}",
                    "partition": f"job=score_{detector}/{partition}",
                    "rows": sum(of_day.quarantined.values()),
                },
            ],
        }
        records[day] = record
    ctx.record(table.name, f"score_{detector}", records)
    return _accounting(tally, sum(rows_by_day.values()), version)


def _score_into_table(
    ctx: JobContext,
    table: TableConfig,
    detector: str,
    days,
    features: DataFrame,
    artifact_path: Path,
    version: str,
    unseen: str,
    where: str,
) -> tuple[list, dict[str, int]]:
    """Score in the tasks, which write the scored rows into the scores table's folder; check the counts; commit
    the run's files in one Delta commit; (tally, rows in by day)."""
    keys, root = {"detector": detector}, ctx.lake.scores(table.name)
    files = ScoreFiles(
        str(partition_path(root, **keys)),
        table.kind,
        version,
        ctx.run_id,
        datetime.now(timezone.utc),
        table.step_seconds,
    )
    score = partial(write_scores_arrow, path=str(artifact_path), kind=table.kind, unseen=unseen, files=files)
    outcome = model_inputs(features).mapInArrow(score, schemas.SCORE_TALLY).persist()
    day_names, committed = [d.isoformat() for d in days], False
    try:
        tally = outcome.groupBy("dt", "error").agg(F.sum("rows").alias("n"), F.sum("anomalies").alias("a")).collect()
        written = run_files(root, keys, day_names, f"-{ctx.run_id}")
        # Rows in, counted apart from the scoring: from the features partitions' Parquet footers (no Spark job).
        rows_by_day = partition_rows(table, ctx.lake.features(table.name), days)
        result = _accounting(tally, sum(rows_by_day.values()), version)
        result.check(where, f"score_{detector}")
        result.check_quarantine(where, table.max_quarantine_share, noun="windows")
        check_written(table.name, written, {r["dt"]: r["n"] for r in tally if r["error"] is None}, "scored rows")
        crash_if(ctx.settings.crash_at, "written")
        ctx.commit_files(root, keys, written, f"score_{detector}")
        committed = True
        crash_if(ctx.settings.crash_at, "committed")
        explain = F.create_map(*[F.lit(x) for pair in REASONS.items() for x in pair])
        bad = outcome.where(F.col("error").isNotNull()).select(
            "entity_id",
            "ts",
            F.lit(ctx.run_id).alias("run_id"),
            "dt",
            F.col("error").alias("reason"),
            F.concat_ws("; ", explain[F.col("error")], F.lit(f"model {detector} {version}")).alias("detail"),
        )
        bad_days = {r["dt"] for r in tally if r["error"] is not None}
        job = f"score_{detector}"
        ctx.replace(bad, schemas.QUARANTINE, ctx.lake.quarantine(table.name), {"job": job}, days, bad_days, job)
    finally:
        if not committed:  # a failed run's files (a committed run's are the table's now)
            remove_uncommitted(run_files(root, keys, day_names, f"-{ctx.run_id}"))
        outcome.unpersist()
    return tally, rows_by_day


def _unseen_scaling(features: DataFrame, table: TableConfig, artifact_path: Path) -> str:
    """The scaling (JSON) of entities the model never saw, as `unseen_entities` says ("": none, or quarantine them)."""
    if table.kind != "timeseries" or table.unseen_entities == "quarantine":
        return ""
    unseen = unseen_scaling(features, table, EntityScaling.load(artifact_path))
    return unseen.to_json() if unseen is not None else ""


def _accounting(tally: list, rows_in: int, version: str) -> ScoreResult:
    """Scored, flagged and quarantined counts from (dt, error, n, a) rows."""
    quarantined: dict[str, int] = {}
    for r in tally:
        if r["error"] is not None:
            add_counts(quarantined, r["error"], r["n"])
    good = sum(r["n"] for r in tally if r["error"] is None)
    anomalies = sum(r["a"] or 0 for r in tally if r["error"] is None)
    return ScoreResult(rows_in, good, 0, quarantined, anomalies, version)
