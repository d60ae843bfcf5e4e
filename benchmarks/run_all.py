"""`make bench`: every performance benchmark on generated data, each in its own process, into
benchmarks/results/perf.json.

    .venv/bin/python -m benchmarks.run_all                       # the defaults: about 4 minutes on 2 cores
    .venv/bin/python -m benchmarks.run_all --scoring-rows 1000000 --windowing-rows 10000000   # the issue's full size

Runs benchmarks.scoring, .windowing, .feed and .scaling (see benchmarks/README.md), then, when TensorFlow sees
a GPU, scoring and feed again on it (the CPU runs then hide the GPU); perf.json holds the ratios, the absolute
numbers behind them, the sizes and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import common

GPU_HINT = "no GPU visible to TensorFlow (install the gpu extra on a GPU machine)"
GPU_PROBE = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: the size of each benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scoring-rows", type=int, default=1_000_000, help="windows scored per family (the issue's size)"
    )
    parser.add_argument("--families", default=",".join(common.FAMILIES), help="families of the scoring benchmark")
    parser.add_argument(
        "--windowing-rows", type=int, default=10_000_000, help="raw rows of the windowing benchmark (the issue's size)"
    )
    parser.add_argument("--windowing-entities", type=int, default=200, help="entities of the windowing benchmark")
    parser.add_argument("--feed-rows", type=int, default=200_000, help="training windows of the feed benchmark")
    parser.add_argument("--scaling-rows", type=int, default=100_000, help="windows of the scaling benchmark's 1x day")
    parser.add_argument("--work", help="folder for the temporary lakes (default: a temp folder)")
    parser.add_argument("--results", help="keep each benchmark's JSON here (default: a temp folder, deleted)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a benchmark's JSON from --results when it is there instead of running it",
    )
    parser.add_argument("--out", default=str(common.PERF_FILE), help="the perf.json to write")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU variant even when a GPU is visible")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark, write perf.json, print it."""
    args = parse_args(argv)
    started = time.perf_counter()
    gpus = 0 if args.no_gpu else gpu_count()
    cpu_env = {"CUDA_VISIBLE_DEVICES": "-1"} if gpus else {}
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anomalake-bench-", dir=args.work) as scratch:
        folder = Path(args.results or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = {name: run(name, flags, folder, cpu_env, "", args.reuse) for name, flags in plan(args).items()}
        gpu = gpu_variant(args, folder, gpus) if gpus else skip_gpu("--no-gpu was given" if args.no_gpu else GPU_HINT)
    perf = compose(results, gpu, args, time.perf_counter() - started)
    common.merge_perf(Path(args.out), perf)
    common.emit(perf, None)


def plan(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each benchmark module and its flags."""
    work = ["--work", args.work] if args.work else []
    return {
        "scoring": ["--rows", str(args.scoring_rows), "--families", args.families, *work],
        "windowing": ["--rows", str(args.windowing_rows), "--entities", str(args.windowing_entities), *work],
        "feed": ["--rows", str(args.feed_rows), *work],
        "scaling": ["--rows", str(args.scaling_rows), "--factor", "4", *work],
    }


def run(
    name: str, flags: list[str], folder: Path, env: dict[str, str], suffix: str, reuse: bool = False
) -> dict[str, Any]:
    """One benchmark in its own process (or its earlier JSON in `folder` with `reuse`); its JSON result."""
    out = folder / f"{name}{suffix}.json"
    if reuse and out.exists():
        print(f"benchmark {name}{suffix}: reusing {out}", file=sys.stderr, flush=True)
        return json.loads(out.read_text())
    print(f"benchmark {name}{suffix}: {' '.join(flags)}", file=sys.stderr, flush=True)
    result = common.run_module(f"benchmarks.{name}", flags, out, env)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"benchmark {name}{suffix}: done in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def gpu_count() -> int:
    """GPUs TensorFlow sees, asked in a child process (TensorFlow stays out of this one)."""
    done = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True, cwd=common.REPO)
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0


def skip_gpu(reason: str) -> dict[str, Any]:
    """The record of a skipped GPU variant (and the line that says so)."""
    print(f"GPU variant skipped: {reason}", flush=True)
    return {"skipped": reason}


def gpu_variant(args: argparse.Namespace, scratch: Path, gpus: int) -> dict[str, Any]:
    """Scoring and feed again with the GPU visible (memory grown on demand, so the Spark workers can share it)."""
    env = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    flags = plan(args)
    scoring = run("scoring", flags["scoring"], scratch, env, "-gpu", args.reuse)
    feed = run("feed", [*flags["feed"], "--device", "gpu"], scratch, env, "-gpu", args.reuse)
    return {
        **scoring_keys(scoring),
        "feed_ratio": feed["feed_ratio"],
        "gpus": gpus,
        "peak_rss_mb": {"scoring": scoring["peak_rss_mb"], "feed": feed["peak_rss_mb"]},
        "absolute": {"scoring": scoring["absolute"], "feed": feed["absolute"]},
    }


def scoring_keys(scoring: dict[str, Any]) -> dict[str, Any]:
    """scoring_ratio, scoring_ratio_cold, scoring_vs_predict_batch_udf, model_only_rps and model_load_s of a scoring
    result."""
    first = next(iter(scoring["model_load_s"]))
    by_family = {
        f: {
            "seconds": scoring["model_load_s"][f],
            "loads_per_worker": scoring["loads_per_worker"][f],
            "python_workers": scoring["python_workers"][f],
        }
        for f in scoring["model_load_s"]
    }
    return {
        "scoring_ratio": scoring["scoring_ratio"],
        "scoring_ratio_cold": scoring["scoring_ratio_cold"],
        "scoring_vs_predict_batch_udf": scoring["scoring_vs_predict_batch_udf"],
        "model_only_rps": scoring["model_only_rps"],
        "model_load_s": {**by_family[first], "family": first, "by_family": by_family},
    }


def compose(
    results: dict[str, dict[str, Any]], gpu: dict[str, Any], args: argparse.Namespace, wall_s: float
) -> dict[str, Any]:
    """perf.json: the ratios, the absolute numbers behind them, sizes, machine, GPU variant."""
    scoring, windowing, feed, scaling = (results[k] for k in ("scoring", "windowing", "feed", "scaling"))
    return {
        **scoring_keys(scoring),
        "windowing_ratio": windowing["windowing_ratio"],
        "feed_ratio": feed["feed_ratio"],
        "scaling_4x": scaling["scaling_4x"],
        "nightly_path": {
            "seconds": windowing["nightly_path_s"],
            "rows": windowing["nightly_rows"],
            "jobs_s": windowing["absolute"]["nightly"]["jobs_s"],
        },
        "peak_rss_mb": {name: r["peak_rss_mb"] for name, r in results.items()},
        "absolute": {name: absolute(name, r) for name, r in results.items()},
        "sizes": {name: r["sizes"] for name, r in results.items()},
        "machine": common.machine(),
        "gpu": gpu,
        "wall_s": round(wall_s, 1),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def absolute(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """A benchmark's raw numbers (rows/s, seconds) with its process wall time."""
    extra = {k: result[k] for k in ("spark_rows_per_s", "baseline_rows_per_s") if k in result}
    return {**result["absolute"], **extra, "process_wall_s": result.get("wall_s")}


if __name__ == "__main__":
    main()
