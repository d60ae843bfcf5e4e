"""Would an ensemble of two families rank anomalies better? VUS-PR of combined scores on the `--quick` subset.

Runs the quick subset (pipelines/evaluation/quick.py) through the same jobs as `anomalake evaluate --quick`
for the given detectors (and the baselines), keeps every series' scored rows, and measures per benchmark the
mean VUS-PR of each detector alone and of each pair combined: the mean of the two calibrated scores (`score`,
-log10 of the tail probability, one scale for every family) and the mean of the two raw scores' ranks within the
series. It only measures whether building an ensemble detector is worth it; it builds none.

    .venv/bin/python -m benchmarks.ensemble_quick --detector dense_autoencoder,lstm_forecaster --out /tmp/ens.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from anomalake.pipelines.evaluation import vus
from anomalake.pipelines.evaluation.cases import load_cases
from anomalake.pipelines.evaluation.quick import QUICK_GROUPS
from anomalake.pipelines.evaluation.run import EvaluateSpec, _run_cases, temporary_lake
from anomalake.pipelines.jobs.cli import BENCHMARK_FOLDERS
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.settings import load_settings
from anomalake.pipelines.spark import get_spark


def combined(frames: dict[str, pd.DataFrame], names: tuple[str, ...], how: str) -> np.ndarray:
    """Per row of the series: the mean of the detectors' calibrated scores, or of their raw scores' ranks."""
    if how == "score":
        return np.mean([frames[n]["score"].to_numpy(dtype=float) for n in names], axis=0)
    return np.mean([frames[n]["raw_score"].rank(pct=True).to_numpy() for n in names], axis=0)


def vus_pr(frame: pd.DataFrame, scores: np.ndarray, length: int) -> float:
    """VUS-PR on the rows some window ends on, as `evaluate` measures it."""
    scored = frame["score"].notna().to_numpy()
    return vus.volumes(frame["label"].to_numpy()[scored].astype(int), scores[scored], length).pr


def measure(run, detectors: tuple[str, ...]) -> dict[str, float]:
    """Mean VUS-PR over the series of one benchmark: each detector, each pair by both combinations."""
    out: dict[str, list[float]] = {}
    groups = sorted(set.intersection(*(set(run.frames[d]) for d in detectors)))
    for group in groups:
        frames = {d: run.frames[d][group] for d in detectors}
        length = run.sliding_lengths[group]
        for name in detectors:
            out.setdefault(name, []).append(vus_pr(frames[name], frames[name]["raw_score"].to_numpy(), length))
        for pair in itertools.combinations([d for d in detectors if not d.startswith("baseline_")], 2):
            for how in ("score", "rank"):
                key = f"{'+'.join(pair)} ({how})"
                out.setdefault(key, []).append(vus_pr(frames[pair[0]], combined(frames, pair, how), length))
    return {k: round(float(np.nanmean(v)), 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", required=True, help="NAME,NAME[,...]")
    parser.add_argument("--out", required=True, help="the JSON of the figures")
    args = parser.parse_args(argv)
    detectors = tuple(n.strip() for n in args.detector.split(",") if n.strip())
    settings = load_settings()
    lake, cleanup = temporary_lake()
    ctx = JobContext(dataclasses.replace(settings, lake=str(lake)), get_spark(settings, "anomalake-ensemble"))
    figures = {}
    try:
        for benchmark, groups in QUICK_GROUPS.items():
            data = Path(settings.datasets) / BENCHMARK_FOLDERS[benchmark]
            spec = EvaluateSpec(benchmark, data, detectors, Path(lake) / "out", groups, plots=False)
            run = _run_cases(ctx, load_cases(benchmark, data, list(groups)), spec, time.monotonic())
            names = (*detectors, *sorted(d for d in run.frames if d.startswith("baseline_")))
            figures[benchmark] = measure(run, names)
            print(benchmark, json.dumps(figures[benchmark], indent=1), flush=True)
    finally:
        cleanup()
    keys = sorted({k for f in figures.values() for k in f})
    figures["mean"] = {k: round(float(np.mean([figures[b][k] for b in QUICK_GROUPS])), 4) for k in keys}
    Path(args.out).write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures["mean"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
