"""`anomalake evaluate --quick`: a fixed subset of every time-series benchmark, to compare settings in minutes.

The subset (QUICK_GROUPS) takes one labelled NAB series per category, one ASD server and two SKAB runs (a
valve run and an `other` run; with two servers and four runs it took 351 s on 2 cores, over its 5 minutes),
each run exactly as the full `evaluate` runs it (windows, train, score, events; the baselines beside). It
prints each benchmark's summary figures and one aggregate per detector: the mean VUS-PR over the three
benchmarks (VUS-PR is the threshold-free ranking TSB-AD uses; the summary shows the events' F1 and alert
volume beside it). It exists to compare settings quickly; claims are confirmed on the full runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomalake.pipelines.evaluation.cases import load_cases
from anomalake.pipelines.evaluation.run import EvaluateSpec, resolve_detectors, run_evaluate
from anomalake.pipelines.lake.context import JobContext

QUICK_GROUPS = {
    "nab": (
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realAdExchange/exchange-2_cpc_results.csv",
        "realKnownCause/ec2_request_latency_system_failure.csv",
        "realTweets/Twitter_volume_FB.csv",
    ),
    "asd": ("omi-1",),
    "skab": ("valve1/0.csv", "other/9.csv"),
}
SUMMARY_GROUP = {"nab": "overall", "asd": "asd", "skab": "overall"}
SUMMARY_METRICS = (
    "vus_pr",
    "vus_roc",
    "overlap_segment_f1",
    "pointwise_f1",
    "events_per_entity_day",
    "flagged_share",
    "seconds_per_series",
)
AGGREGATE = "vus_pr"


def run_quick(
    ctx: JobContext,
    data: dict[str, Path],
    detectors: list[str],
    out: Path,
    epochs: int | None,
    settings: tuple[tuple[str, Any], ...] = (),
    baselines: bool = True,
) -> dict:
    """Each benchmark's subset through `evaluate` (results under out/<benchmark>/), then quick.md and quick.json
    under `out`: the summary figures per benchmark and detector, and the aggregate. Returns the summary.
    `settings` replace detector settings by name (EvaluateSpec.settings), for sweeps."""
    started = time.monotonic()
    records = []
    for benchmark, groups in QUICK_GROUPS.items():
        cases = load_cases(benchmark, data[benchmark], list(groups))
        spec = EvaluateSpec(
            benchmark, data[benchmark], resolve_detectors(detectors, benchmark), out / benchmark, groups, epochs
        )
        spec = replace(spec, plots=False, settings=settings, baselines=baselines)
        records += run_evaluate(ctx, spec, cases)
    summary = quick_summary(records)
    summary["seconds"] = round(time.monotonic() - started, 1)
    (out / "quick.json").write_text(json.dumps(summary, indent=1))
    table = quick_table(summary)
    (out / "quick.md").write_text(table)
    print(table)
    print(f"quick evaluation: {summary['seconds']:.0f}s -> {out / 'quick.md'}")
    return summary


def quick_summary(records: list[dict]) -> dict:
    """{"figures": {benchmark: {detector: {metric: value}}}, "aggregate": {detector: mean VUS-PR}}."""
    frame = pd.DataFrame(records)
    chosen = frame[frame["group"] == frame["benchmark"].map(SUMMARY_GROUP)]
    figures: dict = {}
    for row in chosen[chosen["metric"].isin(SUMMARY_METRICS)].itertuples():
        value = None if pd.isna(row.value) else float(row.value)  # JSON has no NaN
        figures.setdefault(row.benchmark, {}).setdefault(row.detector, {})[row.metric] = value
    detectors = sorted({d for per in figures.values() for d in per})
    aggregate = {d: _mean([figures[b].get(d, {}).get(AGGREGATE) for b in figures]) for d in detectors}
    return {"figures": figures, "aggregate": aggregate}


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(finite)), 6) if len(finite) == len(values) and finite else None


def quick_table(summary: dict) -> str:
    """One Markdown table: a row per detector, the aggregate then each benchmark's summary figures."""
    benchmarks = list(summary["figures"])
    columns = [(b, m) for b in benchmarks for m in SUMMARY_METRICS]
    lines = [
        f"| detector | mean {AGGREGATE} | " + " | ".join(f"{b} {m}" for b, m in columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    order = sorted(summary["aggregate"], key=lambda d: (d.startswith("baseline_"), d))
    for detector in order:
        cells = [_cell(summary["figures"][b].get(detector, {}).get(m)) for b, m in columns]
        lines.append(f"| {detector} | {_cell(summary['aggregate'][detector])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "–" if value is None else f"{value:.3f}"
