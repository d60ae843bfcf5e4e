"""The demo: generate two weeks of telemetry, window it, train on 10 days, score the rest, report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.evaluation import event_matching
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.lake.query import register_tables
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.training.job import run_train


@dataclass(frozen=True)
class DemoSpec:
    """The demo's sizes (the defaults are what `anomalake demo` runs)."""

    start: date = date(2026, 1, 5)
    days: int = 14
    train_days: int = 10
    entities: int = 20
    seed: int = 42
    detector: str = "dense_autoencoder"


class Progress:
    """Prints which step of how many is running, and how long each took."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {what}  (t+{time.monotonic() - self.started:.0f}s)", flush=True)


# One row per anomaly event (a run of consecutive flagged windows of an entity), at its strongest window.
TOP_ANOMALIES = """
WITH flagged AS (
  SELECT *, ts - make_dt_interval(0, 0, 0, {step} * row_number() OVER (PARTITION BY entity_id ORDER BY ts)) AS run
  FROM scores_{table} WHERE is_anomaly AND detector = '{detector}'
), events AS (
  SELECT *, min(ts) OVER (PARTITION BY entity_id, run) AS first_window,
         max(ts) OVER (PARTITION BY entity_id, run) AS last_window,
         row_number() OVER (PARTITION BY entity_id, run ORDER BY score DESC) AS rank
  FROM flagged
)
SELECT entity_id, first_window, last_window, round(score, 2) AS peak_score, top_feature,
       round(feature_contributions[top_feature], 2) AS share, top_steps[0] AS top_step
FROM events WHERE rank = 1 ORDER BY peak_score DESC LIMIT 10
"""

EXAMPLES = [
    'anomalake sql "SELECT dt, count(*) AS windows, sum(int(is_anomaly)) AS anomalies FROM scores_{t} GROUP BY dt '
    'ORDER BY dt"',
    'anomalake sql "SELECT entity_id, ts, score, top_feature FROM scores_{t} WHERE is_anomaly ORDER BY score DESC '
    'LIMIT 20"',
    'anomalake sql "SELECT job, dt, reason, count(*) AS n FROM quarantine_{t} GROUP BY job, dt, reason ORDER BY dt"',
]


def run_demo(
    ctx: JobContext, table: TableConfig, spec: DemoSpec = DemoSpec(), verbose: int = 2
) -> event_matching.EventScore:
    """Run every stage on generated data and print counts, the top anomalies and the event-level F1."""
    progress = Progress(5)
    days = day_range(spec.start, spec.start + timedelta(days=spec.days - 1))
    train_days, score_days = days[: spec.train_days], days[spec.train_days :]
    print(f"anomalake demo: synthetic telemetry (seed {spec.seed}, no external data) in {ctx.settings.lake}")

    progress.step(f"generate {spec.days} days x {spec.entities} entities -> raw/{table.name}")
    counts = write_generated(ctx.lake.root, GenerateSpec(table.name, spec.start, spec.days, spec.entities, spec.seed))
    print(f"  raw rows: {sum(v for k, v in counts.items() if k != 'labels'):,}; injected anomalies: {counts['labels']}")

    progress.step(f"windows {days[0]} .. {days[-1]} -> features/{table.name}")
    windows = run_windows(ctx.with_new_run(), table, days)
    print(
        f"  rows in {windows.rows_in:,} = windows {windows.windows:,} + context {windows.context:,} + quarantined "
        f"{windows.quarantined_total:,} {windows.quarantined}"
    )

    progress.step(f"train {spec.detector} on {train_days[0]} .. {train_days[-1]}")
    trained = run_train(ctx.with_new_run(), table, spec.detector, train_days[0], train_days[-1], verbose=verbose)
    print(
        f"  model {trained.version}: {trained.rows_train:,} training windows, {trained.rows_holdout:,} held out, "
        f"threshold score > {trained.threshold:.2f} (-log10 of the tail probability)"
    )

    progress.step(f"score {score_days[0]} .. {score_days[-1]}, day by day")
    for day in score_days:
        scored = run_score(ctx.with_new_run(), table, spec.detector, day)
        print(
            f"  {day}: {scored.rows_in:,} windows in, {scored.scored:,} scored, {scored.anomalies:,} flagged, "
            f"quarantined {scored.quarantined or 0}"
        )

    progress.step("report")
    return _report(ctx, table, spec, [d.isoformat() for d in score_days])


def _report(ctx: JobContext, table: TableConfig, spec: DemoSpec, score_days: list[str]) -> event_matching.EventScore:
    register_tables(ctx.spark, ctx.lake, [table])
    query = TOP_ANOMALIES.format(
        table=table.name, detector=spec.detector, step=table.window.stride * table.step_seconds
    )
    top = ctx.spark.sql(query).toPandas()
    with pd.option_context("display.width", 200):
        print("\nThe 10 strongest anomalies, one per event (top_feature: the metric with the largest share of the")
        print("error; share: its share; top_step: the time step with the largest error):")
        print(top.to_string(index=False))
    scores = ctx.spark.sql(
        f"SELECT entity_id, ts, is_anomaly FROM scores_{table.name} WHERE detector = '{spec.detector}' "
        f"AND dt IN ({', '.join(repr(d) for d in score_days)})"
    ).toPandas()
    labels = ctx.spark.sql(f"SELECT * FROM labels_{table.name}").toPandas()
    window_seconds = (table.window.length - 1) * table.step_seconds
    in_scope = event_matching.labels_in_scope(labels, scores, window_seconds)
    found = event_matching.detections(scores, window_seconds, table.window.stride * table.step_seconds)
    result = event_matching.event_score(found, in_scope)
    print(
        f"\nEvent level, injected anomalies in the scored days: {result.anomalies}; found {result.found}; "
        f"detections {result.detections}, of which true {result.true_detections}"
    )
    print(f"F1: {result.f1:.3f}\nprecision: {result.precision:.3f}\nrecall: {result.recall:.3f}")
    print("\nTry next:")
    for example in EXAMPLES:
        print("  " + example.format(t=table.name))
    return result
