"""The demo: generate two weeks of telemetry, window it, train on 10 days, score the rest, report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.evaluation import event_matching
from anomalake.pipelines.evaluation.cases import Case
from anomalake.pipelines.evaluation.run import baseline_rows
from anomalake.pipelines.events.job import run_events
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, generate_frames, write_generated
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
    gaps: bool = False  # sample the telemetry with jitter, second readings, lost readings and outages


class Progress:
    """Prints which step of how many is running, and how long each took."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {what}  (t+{time.monotonic() - self.started:.0f}s)", flush=True)


# The strongest events of the scored days, one row each (an event that goes on past midnight has a row per day).
TOP_EVENTS = """
SELECT entity_id, first_start AS start, last_end AS `end`, round(peak, 2) AS severity,
       strongest.top_feature AS top_feature,
       round(strongest.feature_contributions[strongest.top_feature], 2) AS share,
       strongest.top_steps[0] AS top_step
FROM (SELECT entity_id, event_id, min(start) AS first_start, max(`end`) AS last_end, max(severity) AS peak,
             max_by(struct(top_feature, feature_contributions, top_steps), severity) AS strongest
      FROM events_{table} WHERE detector = '{detector}' GROUP BY entity_id, event_id)
ORDER BY severity DESC LIMIT 10
"""

EXAMPLES = [
    'anomalake sql "SELECT dt, count(DISTINCT event_id) AS events, sum(int(new)) AS new FROM events_{t} GROUP BY dt '
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
    generated = GenerateSpec(table.name, spec.start, spec.days, spec.entities, spec.seed, gaps=spec.gaps)
    counts = write_generated(ctx.lake.root, generated)
    print(f"  raw rows: {sum(v for k, v in counts.items() if k != 'labels'):,}; injected anomalies: {counts['labels']}")

    progress.step(f"windows {days[0]} .. {days[-1]} -> features/{table.name}")
    windows = run_windows(ctx.with_new_run(), table, days)
    print(
        f"  rows in {windows.rows_in:,} = windows {windows.windows:,} + context {windows.context:,} + quarantined "
        f"{windows.quarantined_total:,} {windows.quarantined}; {windows.gap_share:.1%} of rows lost to gaps"
    )

    progress.step(f"train {spec.detector} on {train_days[0]} .. {train_days[-1]}")
    trained = run_train(ctx.with_new_run(), table, spec.detector, train_days[0], train_days[-1], verbose=verbose)
    print(
        f"  model {trained.version}: {trained.rows_train:,} training windows, {trained.rows_holdout:,} held out, "
        f"threshold score > {trained.threshold:.2f} (-log10 of the tail probability)"
    )

    progress.step(f"score and events {score_days[0]} .. {score_days[-1]}, day by day (the nightly way)")
    for day in score_days:
        scored = run_score(ctx.with_new_run(), table, spec.detector, day)
        found = run_events(ctx.with_new_run(), table, spec.detector, day)
        print(
            f"  {day}: {scored.rows_in:,} windows scored, quarantined {scored.quarantined or 0}; {found.events} events "
            f"({found.new_events} new), {found.rows_out:,} windows in events"
        )

    progress.step("report")
    result = _report(ctx, table, spec, [d.isoformat() for d in score_days])
    _report_baselines(ctx, table, spec, train_days, score_days)
    _print_examples(table)
    return result


def _report(ctx: JobContext, table: TableConfig, spec: DemoSpec, score_days: list[str]) -> event_matching.EventScore:
    register_tables(ctx.spark, ctx.lake, [table])
    top = ctx.spark.sql(TOP_EVENTS.format(table=table.name, detector=spec.detector)).toPandas()
    with pd.option_context("display.width", 200):
        print("\nThe 10 strongest anomaly events (severity: -log10 of the tail probability of the strongest window;")
        print("top_feature: the metric with the largest share of its error; share: that share; top_step: the time step")
        print("with the largest error):")
        print(top.to_string(index=False))
    events = ctx.spark.sql(
        f"SELECT entity_id, event_id, start, `end`, new FROM events_{table.name} WHERE detector = '{spec.detector}' "
        f"AND dt IN ({', '.join(repr(d) for d in score_days)})"
    ).toPandas()
    scores = ctx.spark.sql(
        f"SELECT entity_id, ts, is_anomaly FROM scores_{table.name} WHERE detector = '{spec.detector}' "
        f"AND dt IN ({', '.join(repr(d) for d in score_days)})"
    ).toPandas()
    labels = ctx.spark.sql(f"SELECT * FROM labels_{table.name}").toPandas()
    window_seconds = (table.window.length - 1) * table.step_seconds
    in_scope = event_matching.labels_in_scope(labels, scores, window_seconds)
    result = event_matching.event_score(event_matching.event_spans(events, window_seconds), in_scope)
    per_host_day = int(events["new"].sum()) / (scores["entity_id"].nunique() * len(score_days))
    print(
        f"\nEvent level, injected anomalies in the scored days: {result.anomalies}; found {result.found}; "
        f"events {result.detections}, of which true {result.true_detections}"
    )
    print(f"F1: {result.f1:.3f}\nprecision: {result.precision:.3f}\nrecall: {result.recall:.3f}")
    print(f"alerts per host-day: {per_host_day:.2f} (new events per host and scored day)")
    print(f"windows flagged: {scores['is_anomaly'].mean():.1%} (the windows inside events)")
    return result


BASELINE_NAMES = {"rolling_z": "rolling z-score", "pca": "PCA", "isolation_forest": "IsolationForest"}


def _report_baselines(ctx: JobContext, table: TableConfig, spec: DemoSpec, train_days: list, score_days: list) -> None:
    """Event F1 of the baselines of `anomalake evaluate` on the same windows, through the same events stage, so
    the demo shows what the detector adds over simple methods (and a test compares with them)."""
    raw, labels = generate_frames(
        GenerateSpec(table.name, spec.start, spec.days, spec.entities, spec.seed, gaps=spec.gaps)
    )
    raw["ts"] = raw["ts"].dt.tz_localize(None)  # the evaluation's frames are naive UTC, as the features are
    labels[["start", "end"]] = labels[["start", "end"]].apply(lambda c: c.dt.tz_localize(None))
    case = Case(
        table.name,
        (table.name,),
        {},
        table,
        {d: rows for d, rows in raw.groupby(raw["ts"].dt.date)},
        tuple(train_days),
        tuple(score_days),
        pd.DataFrame(),  # no truth: the demo matches the baselines' events with the labels itself
    )
    rows, _ = baseline_rows(ctx, case, list(score_days), spec.detector)
    window_seconds = (table.window.length - 1) * table.step_seconds
    print("\nBaselines of the same run (fitted on the same training windows, through the same events stage):")
    for name, scored in rows.items():
        scored = scored.assign(ts=pd.to_datetime(scored["ts"], utc=True).dt.tz_localize(None))
        found_by = event_matching.detections(scored, window_seconds, table.step_seconds)
        got = event_matching.event_score(found_by, event_matching.labels_in_scope(labels, scored, window_seconds))
        label = BASELINE_NAMES.get(name.removeprefix("baseline_"), name)
        print(
            f"  {label}: F1 {got.f1:.3f}, precision {got.precision:.3f}, recall {got.recall:.3f}; "
            f"windows flagged {scored['is_anomaly'].mean():.1%}"
        )


def _print_examples(table: TableConfig) -> None:
    print("\nTry next:")
    for example in EXAMPLES:
        print("  " + example.format(t=table.name))
