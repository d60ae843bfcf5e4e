"""Shared pieces of the performance benchmarks: a temporary lake, generated data, a local[2] session, peak RSS, JSON.

Nothing here imports Spark or TensorFlow at module level, so an orchestrating process stays light and a
timed child process pays for its own imports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PERF_FILE = RESULTS / "perf.json"
TABLE = "bench"
FEATURE = "value"
WINDOW = 64
STEP_SECONDS = 60
DAY_STEPS = 86400 // STEP_SECONDS
TRAIN_DAY = date(2026, 1, 1)  # a small day of windows every model is trained on
SCORE_DAY = date(2026, 1, 2)  # the day the scoring benchmarks score
BIG_DAY = date(2026, 1, 3)  # the scaling benchmark's 4x day
FAMILIES = ("dense_autoencoder", "lstm_forecaster")
ARROW_BATCH = 10_000  # Spark's spark.sql.execution.arrow.maxRecordsPerBatch: the baselines score in chunks this size


def table_entry() -> dict[str, Any]:
    """The benchmark table's catalog entry: one feature, 1-minute steps, windows of 64 steps with stride 1."""
    return {
        "kind": "timeseries",
        "path": f"raw/{TABLE}",
        "entity": "entity_id",
        "time": "ts",
        "features": [FEATURE],
        "step": "1min",
        "gaps": {"fill_limit": 0},
        "window": {"length": WINDOW, "stride": 1},
        "detectors": list(FAMILIES),
        "max_quarantine_share": 0.2,
    }


def bench_table():
    """The benchmark table as a TableConfig."""
    from anomalake.pipelines.config import parse_table

    return parse_table(TABLE, table_entry())


def detector_spec(family: str, epochs: int):
    """The family's configured detector (conf/detectors/<family>.yml) with its epochs cut to `epochs`."""
    from anomalake.pipelines.config import load_detector

    spec = load_detector(family)
    return dataclasses.replace(spec, params={**spec.params, "epochs": epochs})


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (--work, --out, --seed)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--work", help="folder for the temporary lake (default: a fresh temp folder, deleted at the end)"
    )
    parser.add_argument("--out", help="also write the JSON result to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    return parser


@contextlib.contextmanager
def temporary_lake(work: str | None) -> Iterator[Path]:
    """A fresh lake folder under `work` (or a temp folder), deleted at the end."""
    parent = Path(work) if work else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="anomalake-bench-", dir=parent))
    try:
        yield root / "lake"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def entities_for(rows: int, minimum: int) -> int:
    """At least `minimum` entities, and enough that no entity has more windows than a day has steps."""
    return max(minimum, math.ceil(rows / DAY_STEPS))


def entity_names(n: int) -> list[str]:
    """host-00000, host-00001, ..."""
    return [f"host-{i:05d}" for i in range(n)]


def series(rng: np.random.Generator, entity: int, steps: int) -> np.ndarray:
    """One entity's metric: its own level and daily cycle plus noise (float32)."""
    t = np.arange(steps)
    level, amplitude = 10.0 + 7.0 * (entity % 13), 1.0 + (entity % 5)
    phase = rng.uniform(0, DAY_STEPS)
    return (level + amplitude * np.sin(2 * np.pi * (t + phase) / DAY_STEPS) + rng.normal(0, 0.3, steps)).astype(
        np.float32
    )


def split_rows(rows: int, parts: int) -> list[int]:
    """`rows` split into `parts` counts that differ by at most one."""
    return [rows // parts + (i < rows % parts) for i in range(parts)]


def day_start_us(day: date) -> int:
    """Microseconds since the epoch of the day's midnight (UTC)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()) * 1_000_000


def feature_windows(rows: int, entities: int, day: date, seed: int, spacing: int = 1) -> pa.Table:
    """`rows` windows of 64 steps over `entities` entities ending on `day` (entity_id, ts, x), every `spacing`
    minutes."""
    rng = np.random.default_rng(seed)
    names, ids, ends, blocks = entity_names(entities), [], [], []
    for e, n in enumerate(split_rows(rows, entities)):
        if n == 0:
            continue
        end_minutes = np.arange(n) * spacing
        if end_minutes[-1] >= DAY_STEPS:
            raise ValueError(f"{n} windows every {spacing} min do not fit one day: use more entities")
        values = series(rng, e, WINDOW - 1 + int(end_minutes[-1]) + 1)
        blocks.append(np.lib.stride_tricks.sliding_window_view(values, WINDOW)[end_minutes])
        ids.append(np.full(n, e))
        ends.append(end_minutes)
    x = np.concatenate(blocks).astype(np.float32)
    ts = day_start_us(day) + np.concatenate(ends).astype(np.int64) * STEP_SECONDS * 1_000_000
    return features_arrow(np.asarray(names, dtype=object)[np.concatenate(ids)], ts, x)


def features_arrow(entity: Any, ts_us: np.ndarray, x: np.ndarray) -> pa.Table:
    """An Arrow table in the features table's schema (entity_id string, ts timestamp, x array<float>)."""
    offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
    return pa.table(
        {
            "entity_id": entity if isinstance(entity, (pa.Array, pa.ChunkedArray)) else pa.array(entity, pa.string()),
            "ts": pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "x": pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), pa.float32())),
        }
    )


def write_partition(table: pa.Table, folder: Path, files: int = 8) -> Path:
    """Write `table` as `files` Parquet files into one partition folder (as the windows job's 8 tasks would)."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.cumsum([0, *split_rows(table.num_rows, files)])
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i:05d}.parquet")
    return folder


def features_folder(lake: Path, day: date) -> Path:
    """The features partition of the benchmark table for `day`."""
    return lake / "features" / TABLE / f"dt={day.isoformat()}"


def features_files(lake: Path, day: date) -> list[str]:
    """The data files of one day of the benchmark table's features, as its Delta snapshot names them."""
    from anomalake.pipelines.lake.delta import snapshot_files

    return snapshot_files(lake / "features" / TABLE, {"dt": day.isoformat()})


def write_features(lake: Path, day: date, rows: int, entities: int, seed: int, spacing: int = 1) -> list[str]:
    """Generate one day of windows and add it to the lake's features table as the windows job leaves it (a Delta
    table; the day's 8 files added in one commit); the day's files."""
    from anomalake.pipelines.lake.delta import DataFile, commit_files
    from anomalake.pipelines.lake.layout import is_delta

    folder = write_partition(feature_windows(rows, entities, day, seed, spacing), features_folder(lake, day))
    root = lake / "features" / TABLE
    if is_delta(root):
        files = [DataFile(path, pq.read_metadata(path).num_rows) for path in sorted(folder.glob("part-*.parquet"))]
        commit_files(root, {}, {day.isoformat(): files}, "benchmark", "benchmark")
    else:  # the first day: the folder becomes the table
        from deltalake import Field, Schema, convert_to_deltalake

        convert_to_deltalake(str(root), partition_by=Schema([Field("dt", "string")]), partition_strategy="hive")
    return features_files(lake, day)


def write_training_day(lake: Path, windows: int, entities: int, seed: int) -> Path:
    """A small day of windows spread over the whole day (so the time-ordered holdout is not empty)."""
    per_entity = max(1, windows // entities)
    spacing = max(1, (DAY_STEPS - 1) // max(per_entity - 1, 1))
    return write_features(lake, TRAIN_DAY, per_entity * entities, entities, seed + 1, spacing)


def bench_settings(lake: Path, **overrides: Any):
    """The environment's settings with the benchmark lake, master local[2], no progress bars (and `overrides`)."""
    from anomalake.pipelines.settings import load_settings

    return dataclasses.replace(load_settings(), lake=str(lake), master="local[2]", interactive=False, **overrides)


def job_context(lake: Path, **overrides: Any):
    """A JobContext on a local[2] SparkSession over `lake` (settings `overrides`, e.g. shuffle_partitions)."""
    from anomalake.pipelines.lake.context import JobContext
    from anomalake.pipelines.spark import get_spark

    settings = bench_settings(lake, **overrides)
    return JobContext(settings, get_spark(settings, "anomalake-bench"))


def train_model(ctx, family: str, epochs: int) -> str:
    """Train `family` on the training day (configured params, `epochs` epochs) and promote it; its folder."""
    from anomalake.pipelines.training.job import run_train

    result = run_train(
        ctx.with_new_run(), bench_table(), family, TRAIN_DAY, TRAIN_DAY, verbose=0, spec=detector_spec(family, epochs)
    )
    return result.path


def process_seconds() -> float:
    """Seconds since this process started (interpreter start-up and imports included)."""
    return time.time() - psutil.Process().create_time()


class PeakRss:
    """Peak resident memory (MB) of this process and all its descendants, sampled every 0.2 s in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakRss":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        """The sampling thread's loop."""
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Add up the RSS of the tree now and keep the largest sum seen."""
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak = max(self.peak, total)

    @property
    def peak_mb(self) -> float:
        """The largest sum seen, in MiB."""
        return round(self.peak / 2**20, 1)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """(fn's result, wall seconds it took)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def rate(rows: float, seconds: float) -> float:
    """Rows (or steps) per second, rounded."""
    return round(rows / seconds, 1) if seconds > 0 else float("inf")


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print the result as JSON on stdout and write it to `out` when given."""
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def run_module(module: str, args: Sequence[str], out: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m <module> ARGS --out OUT` from the repository root; its JSON result (and its wall seconds)."""
    command = [sys.executable, "-m", module, *map(str, args), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {done.returncode} (its stderr is above)")
    result = json.loads(out.read_text())
    result["wall_s"] = round(time.perf_counter() - started, 3)
    return result


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def merge_perf(path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge `updates` into the JSON object at `path` (created if missing) and write it back."""
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


def day_after(day: date, n: int = 1) -> date:
    """`day` plus n days."""
    return day + timedelta(days=n)
