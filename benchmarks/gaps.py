"""Gappy tables: how much of a series the windows job keeps under the default gap policy, beside a short fill.

    PYTHONPATH=. .venv/bin/python -m benchmarks.gaps [--nab ../shared/datasets/nab]

For every NAB series whose sampling is irregular (a spacing other than its most common one), and for a
generated table sampled with gaps (`anomalake generate --gaps`), the windowing of the windows job (the same code
its tasks run, in-process here) with (a) the table config's defaults (fill up to a window length, readings in one
step averaged) and (b) a fill of 3 steps with second readings quarantined (the policy before the gaps block):
the share of rows windowed, quarantined as gaps and quarantined in all, and whether the job would stop at its
quarantine limit (20 %). Event F1 on the generated gappy table is measured by `anomalake demo --gaps` beside
`anomalake demo` (the README's figures).
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pandas as pd

from anomalake.pipelines.config import parse_table
from anomalake.pipelines.evaluation.cases import WINDOWS, _step
from anomalake.pipelines.evaluation.datasets import load_nab
from anomalake.pipelines.features import windowing
from anomalake.pipelines.ingest.generate import FEATURES, GenerateSpec, generate_frames

LIMIT = 0.2  # max_quarantine_share's default


def policies(features: list[str], step: str, window: int) -> dict[str, object]:
    entry = {"features": features, "step": step, "window": {"length": window}}
    return {
        "default": parse_table("t", entry),
        "fill 3, no resampling": parse_table("t", {**entry, "gaps": {"fill_limit": 3, "aggregate": "none"}}),
    }


def outcome_shares(raw: pd.DataFrame, table) -> dict[str, float]:
    """Shares of rows by outcome over all days of `raw` (entity_id, ts, features), lookback included."""
    raw = raw.assign(dt=raw["ts"].dt.strftime("%Y-%m-%d"))
    days = frozenset(raw["dt"])
    out = pd.concat([windowing.cut_windows(rows, table, days) for _, rows in raw.groupby("entity_id")])
    problems = out["reason"].notna() & ~out["reason"].isin(windowing.NOT_A_DATA_PROBLEM)
    return {
        "rows": len(out),
        "windowed": (out["outcome"] == windowing.WINDOW).mean(),
        "gaps": out["reason"].isin(windowing.GAP_REASONS).mean(),
        "quarantined": (out["outcome"] == windowing.QUARANTINE).mean(),
        "stops": problems.mean() > LIMIT,
    }


def irregular(stamps: pd.Series) -> float:
    spacing = stamps.sort_values().diff().dropna()
    return float((spacing != spacing.mode().iloc[0]).mean())


def report(name: str, raw: pd.DataFrame, features: list[str], step: str, window: int) -> None:
    for policy, table in policies(features, step, window).items():
        s = outcome_shares(raw, table)
        print(
            f"{name:58s} {policy:22s} rows {s['rows']:6d}  windowed {s['windowed']:6.1%}  gaps {s['gaps']:6.1%}  "
            f"quarantined {s['quarantined']:6.1%}  {'STOPS' if s['stops'] else 'runs'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", default="../shared/datasets/nab", help="NAB's folder (data/, labels/)")
    args = parser.parse_args()
    for series in load_nab(Path(args.nab)):
        stamps = series.frame["timestamp"]
        if irregular(stamps) <= 0.001:
            continue
        raw = pd.DataFrame({"entity_id": series.group, "ts": stamps, "value": series.frame["value"]})
        name = f"NAB {series.group} ({irregular(stamps):.1%} irregular)"
        report(name, raw, ["value"], _step(stamps), WINDOWS["nab"])
    raw, _ = generate_frames(GenerateSpec("gappy", date(2026, 1, 5), 14, 20, 42, gaps=True))
    report("generated, --gaps (demo --gaps's table)", raw, list(FEATURES), "5min", 64)


if __name__ == "__main__":
    main()
