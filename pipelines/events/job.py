"""The events job: day D's scores and their history -> events/<table>/detector=<name>/dt=D, and D's is_anomaly.

For each entity, the raw scores of the trailing days (scores of the same model version from the lake; a day
whose scores are missing or of another version is scored on the fly from its features, or left out) and of D
give D's threshold and its events (pipelines.events.detection). The events are written as D's partition of the
events table, each with the explanation of its strongest window that day, and D's scores partition is written
again with is_anomaly true exactly for the windows inside an event. Row accounting: D's windows = windows in
events + windows outside them. A range of days is one Spark job, each day written and recorded as if alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial, reduce
from typing import Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from anomalake.models.artifacts import CALIBRATION_FILE, read_current
from anomalake.models.calibration import Calibration
from anomalake.pipelines.config import EventSettings, TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.events.detection import entity_events, sample_events
from anomalake.pipelines.lake import schemas
from anomalake.pipelines.lake.accounting import RowAccount
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import partition_condition, read_delta, snapshot_days
from anomalake.pipelines.lake.reading import days_with_data, read_partitions
from anomalake.pipelines.lake.runs import latest_run_record
from anomalake.pipelines.scoring.udf import model_inputs, score_arrow_batches

SCORE_COLUMNS = ["entity_id", "ts", "raw_score", "score", "dt"]


@dataclass(frozen=True)
class EventsResult(RowAccount):
    """One events run: rows_in windows scored = rows_out windows in events + context windows outside them."""

    events: int = 0
    new_events: int = 0
    history: tuple[str, ...] = ()  # where each history day's scores came from: "D: scores|rescored|missing"


def run_events(
    ctx: JobContext, table: TableConfig, detector: str, day: date, version: str | None = None
) -> EventsResult:
    """The events of one day (see run_events_days)."""
    return run_events_days(ctx, table, detector, [day], version)


def run_events_days(
    ctx: JobContext, table: TableConfig, detector: str, days: Sequence[date], version: str | None = None
) -> EventsResult:
    """The events of `days` with the CURRENT (or the given) model version's scores; each day replaced and recorded."""
    days = sorted(days)
    root = ctx.lake.models(detector, table.name)
    version = version or read_current(root)
    calibration = Calibration.from_dict(json.loads((root / version / CALIBRATION_FILE).read_text()))
    settings = table.events
    scores, sources = _scores_with_history(ctx, table, detector, version, days, settings)
    events = _events(scores, table, detector, days, settings, calibration.threshold).persist()
    try:
        rows = events.collect()
        flagged = _flagged_windows(events)
        day_scores = _day_scores(ctx, table, detector, days)
        _publish(ctx, table, detector, version, days, events, day_scores, flagged, rows)
        total = _record_days(ctx, table, detector, version, days, day_scores, rows, sources)
    finally:
        events.unpersist()
    return total


def _scores_with_history(
    ctx: JobContext, table: TableConfig, detector: str, version: str, days: list[date], settings: EventSettings
) -> tuple[DataFrame, tuple[str, ...]]:
    """(entity_id, ts, raw_score, score, dt) of `days` and the history days before them; where each came from.

    The days whose scores are of this version are read in one go, and the days to score on the fly too: a
    backfill of many days plans one scan of each kind, not one per day."""
    reach = settings.history_days + settings.max_chain_days
    wanted = [days[0] - timedelta(days=n) for n in range(reach, 0, -1)] + days
    by_source: dict[str, list[date]] = {"scores": [], "rescored": [], "missing": []}
    scored = snapshot_days(ctx.lake.scores(table.name), {"detector": detector})
    for day in wanted:
        by_source[_day_source(ctx, table, detector, version, day, scored, required=day in days)].append(day)
    parts = []
    if by_source["scores"]:
        parts.append(_read_scores(ctx, table, detector, by_source["scores"]).select(*SCORE_COLUMNS))
    if by_source["rescored"]:
        parts.append(_rescored(ctx, table, detector, version, by_source["rescored"]))
    sources = sorted(f"{d.isoformat()}: {source}" for source, of in by_source.items() for d in of if d not in days)
    return reduce(DataFrame.unionByName, parts), tuple(sources)


def _read_scores(ctx: JobContext, table: TableConfig, detector: str, days: list[date]) -> DataFrame:
    """The scores of `days` under the detector, from the scores table's current snapshot."""
    condition = partition_condition({"detector": detector}, [d.isoformat() for d in days])
    return read_delta(ctx.spark, ctx.lake.scores(table.name)).where(condition)


def _day_source(
    ctx: JobContext, table: TableConfig, detector: str, version: str, day: date, scored: set[str], required: bool
) -> str:
    """Where one day's scores of this model version come from: "scores" (the scores table, whose snapshot holds
    the `scored` days), "rescored" (its features, scored on the fly) or "missing"."""
    record = latest_run_record(ctx.lake.root, table.name, f"score_{detector}", day)
    if day.isoformat() in scored and record is not None and record.get("model_version") == version:
        return "scores"
    if required:
        raise JobError(
            f"table {table.name}, partition dt={day.isoformat()}: no scores of detector {detector} version {version}; "
            "run `anomalake score` first"
        )
    return "rescored" if days_with_data(ctx.lake.features(table.name), [day]) else "missing"


def _rescored(ctx: JobContext, table: TableConfig, detector: str, version: str, days: list[date]) -> DataFrame:
    """History days' windows scored with this version in the tasks (not written anywhere): keys and scores."""
    path = str(ctx.lake.models(detector, table.name) / version)
    keys = [*schemas.SCORE_KEYS, T.StructField("dt", T.StringType(), False)]
    features = read_partitions(ctx.spark, ctx.lake.features(table.name), days, "features", table.name)
    scored = model_inputs(features).mapInArrow(
        partial(score_arrow_batches, path=path, kind=table.kind), schemas.scored_batch_schema(table.kind, keys)
    )
    return scored.where(F.col("error").isNull()).select(*SCORE_COLUMNS)


def _events(scores: DataFrame, table: TableConfig, detector: str, days: list[date], settings, threshold: float):
    """EVENT_ROWS of `days`: one group per entity (windows), or the whole table (images and texts)."""
    if table.kind == "timeseries":
        body = partial(_entity_events, days=days, settings=settings, threshold=threshold, detector=detector)
        return scores.groupBy("entity_id").applyInPandas(body, schemas.EVENT_ROWS)
    body = partial(_table_events, days=days, settings=settings, threshold=threshold, detector=detector)
    return scores.withColumn("_table", F.lit(0)).groupBy("_table").applyInPandas(body, schemas.EVENT_ROWS)


def _entity_events(frame: pd.DataFrame, days, settings, threshold, detector) -> pd.DataFrame:
    rows = entity_events(str(frame["entity_id"].iloc[0]), frame, days, settings, threshold, detector)
    return pd.DataFrame(rows, columns=schemas.EVENT_ROWS.fieldNames())


def _table_events(frame: pd.DataFrame, days, settings, threshold, detector) -> pd.DataFrame:
    return pd.DataFrame(
        sample_events(frame, days, settings, threshold, detector), columns=schemas.EVENT_ROWS.fieldNames()
    )


def _flagged_windows(events: DataFrame) -> DataFrame:
    """(entity_id, ts, dt) of every window inside an event."""
    return events.select("entity_id", "dt", F.explode("window_ends").alias("ts")).distinct()


def _day_scores(ctx: JobContext, table: TableConfig, detector: str, days: list[date]) -> DataFrame:
    """The scored windows of `days` as they are before this run replaces them."""
    scores = _read_scores(ctx, table, detector, days)
    # Held in the executors: these partitions are replaced below, and a later read of the listed files would miss.
    return scores.localCheckpoint(eager=True)


def _publish(ctx, table, detector, version, days, events: DataFrame, day_scores: DataFrame, flagged, rows) -> None:
    """The events partitions (with the explanation of each event's strongest window) and the scores again."""
    explanation = [f.name for f in schemas.EXPLANATIONS[table.kind]]
    strongest = day_scores.select("entity_id", F.col("ts").alias("strongest_ts"), "dt", *explanation)
    described = (
        events.join(strongest, ["entity_id", "strongest_ts", "dt"], "left")
        .withColumn("model_version", F.lit(version))
        .withColumn("run_id", F.lit(ctx.run_id))
    )
    written = {r["dt"] for r in rows}
    events_root, keys = ctx.lake.events(table.name), {"detector": detector}
    ctx.replace(described, schemas.events_schema(table.kind), events_root, keys, days, written, f"events_{detector}")
    in_event = flagged.withColumn("_in_event", F.lit(True))
    # The partition is written again by this run, so its rows name this run (as its commit does).
    rescored = (
        day_scores.join(in_event, ["entity_id", "ts", "dt"], "left")
        .withColumn("is_anomaly", F.coalesce(F.col("_in_event"), F.lit(False)))
        .withColumn("run_id", F.lit(ctx.run_id))
    )
    scored_days = {d.isoformat() for d in days}
    scores_schema, scores_root = schemas.scores_schema(table.kind), ctx.lake.scores(table.name)
    job = f"events_{detector}"
    ctx.replace(rescored, scores_schema, scores_root, {"detector": detector}, days, scored_days, job)


def _record_days(ctx, table, detector, version, days, day_scores: DataFrame, rows, sources) -> EventsResult:
    """One run record per day: windows in = windows in events + windows outside them; the events and new events."""
    counts = day_scores.groupBy("dt").agg(F.count("*").alias("n"), F.countDistinct("entity_id").alias("entities"))
    counted = {r["dt"]: r for r in counts.collect()}
    windows = {day: r["n"] for day, r in counted.items()}
    total = EventsResult(0, 0, 0, {}, 0, 0, sources)
    records = {}
    for day in days:
        key = day.isoformat()
        of_day = [r for r in rows if r["dt"] == key]
        inside = len({(r["entity_id"], t) for r in of_day for t in r["window_ends"]})
        result = EventsResult(
            windows.get(key, 0),
            inside,
            windows.get(key, 0) - inside,
            {},
            len(of_day),
            sum(bool(r["new"]) for r in of_day),
            sources,
        )
        partition = f"detector={detector}/dt={key}"
        records[day] = {
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
            "context": result.context,
            "quarantined": {},
            "anomalies": result.new_events,
            "detector": detector,
            "model_version": version,
            "events": result.events,
            "new_events": result.new_events,
            "history": list(sources),
            "entities": counted[key]["entities"] if key in counted else 0,
            "fallback_entities": sorted({r["entity_id"] for r in of_day if r["threshold_source"] == "calibration"}),
            "inputs": [{"table": f"scores_{table.name}", "partition": partition, "rows": result.rows_in}],
            "outputs": [{"table": f"events_{table.name}", "partition": partition, "rows": result.events}],
        }
        total = EventsResult(
            total.rows_in + result.rows_in,
            total.rows_out + result.rows_out,
            total.context + result.context,
            {},
            total.events + result.events,
            total.new_events + result.new_events,
            sources,
        )
    ctx.record(table.name, f"events_{detector}", records)
    return total
