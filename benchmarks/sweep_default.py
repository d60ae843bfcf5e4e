"""Sweep settings of one detector with `anomalake evaluate --quick` and print one table of the aggregates.

Each variant is one `anomalake evaluate --quick --no-baselines --set ...` in its own process (its full output
under OUT/<variant>/); the table gives per variant the aggregate (mean VUS-PR over NAB, ASD and SKAB) and each
benchmark's VUS-PR, overlap-segment F1, events per entity-day and flagged share, beside the baselines of a
run with them (`--baselines`, once). It compares settings; claims are confirmed on the full runs.

    .venv/bin/python -m benchmarks.sweep_default --detector dense_autoencoder --out /tmp/sweep \\
        --variant base --variant "long: epochs=100 patience=5" --variant "val: training.validation_fraction=0.1"

A variant is `NAME` (the detector's own settings) or `NAME: KEY=VALUE ...` (each an `evaluate --set`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FIGURES = ("vus_pr", "overlap_segment_f1", "events_per_entity_day", "flagged_share", "seconds_per_series")
BENCHMARKS = ("nab", "asd", "skab")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`name: k=v k=v` -> (name, ["k=v", "k=v"])."""
    name, _, settings = text.partition(":")
    return name.strip(), settings.split()


def run_variant(detector: str, name: str, settings: list[str], out: Path, baselines: bool) -> dict:
    """One quick evaluation in its own process; its summary (quick.json) with the wall seconds."""
    folder = out / name
    command = [str(Path(sys.executable).parent / "anomalake"), "evaluate", "--quick", "--detector", detector]
    command += ["--out", str(folder)] + [a for s in settings for a in ("--set", s)]
    if not baselines:
        command.append("--no-baselines")
    began = time.monotonic()
    with open(out / f"{name}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}, see {out / f'{name}.log'}"}
    summary = json.loads((folder / "quick.json").read_text())
    summary["wall_seconds"] = round(time.monotonic() - began, 1)
    return summary


def table(rows: list[tuple[str, str, dict]]) -> str:
    """Markdown: a row per (variant, detector)."""
    columns = [(b, f) for b in BENCHMARKS for f in FIGURES]
    lines = [
        "| variant | settings | detector | mean vus_pr | " + " | ".join(f"{b} {f}" for b, f in columns) + " |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for variant, settings, summary in rows:
        if "error" in summary:
            lines.append(f"| {variant} | {settings} | {summary['error']} |")
            continue
        for detector, aggregate in summary["aggregate"].items():
            cells = [summary["figures"].get(b, {}).get(detector, {}).get(f) for b, f in columns]
            text = " | ".join("–" if v is None else f"{v:.3f}" for v in [aggregate, *cells])
            lines.append(f"| {variant} | {settings} | {detector} | {text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", required=True)
    parser.add_argument("--variant", action="append", required=True, help="NAME or 'NAME: KEY=VALUE ...'")
    parser.add_argument("--out", required=True, help="a folder for each variant's output and sweep.md")
    parser.add_argument("--baselines", action="store_true", help="run the baselines with the first variant")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(args.variant):
        name, settings = parse_variant(text)
        summary = run_variant(args.detector, name, settings, out, args.baselines and i == 0)
        rows.append((name, " ".join(settings) or "(its yml)", summary))
        (out / "sweep.md").write_text(table(rows))  # after each variant: a cut-off sweep keeps what it measured
        print(f"{name}: {summary.get('aggregate', summary)} ({summary.get('wall_seconds', '?')} s)", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
