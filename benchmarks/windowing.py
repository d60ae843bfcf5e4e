"""Windowing throughput: the Spark windows job beside one Python process building the same windows; the nightly path.

    .venv/bin/python -m benchmarks.windowing --rows 2000000 --out /tmp/windowing.json
    .venv/bin/python -m benchmarks.windowing --rows 10000000        # the issue's full size

--rows raw rows of one feature on a 1-minute grid over --entities entities: each entity's rows are consecutive
minutes from the first target day on (as many days as the rows need), plus a lookback day before them (the
windows job reads the previous day for the first windows). anomalake.pipelines.features.job.run_windows builds windows
of 64 steps (stride 1) for all target days in one job (local[2]); the baseline reads the same raw Parquet with
pyarrow, sorts by entity and time, cuts the same windows with numpy (sliding_window_view, skipping windows
over gaps, duplicates or non-finite values) and writes the same features Parquet, one file per day.
windowing_ratio = Spark raw rows/s over baseline raw rows/s. The nightly path is `anomalake windows` then
`anomalake score` (dense_autoencoder, trained on a small separate day) over all the target days' raw rows,
each in its own process as the nightly DAG runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from benchmarks import common
from benchmarks.scoring import Clock

FEATURE = common.FEATURE
FIRST_DAY = date(2026, 2, 1)
NIGHTLY_DETECTOR = "dense_autoencoder"
ROWS_PER_SHUFFLE_PARTITION = 250_000  # 8 partitions (the default) up to 2M rows; 10M rows in 8 overflow a 4g driver


@dataclass(frozen=True)
class RawPlan:
    """What was written: target days, the lookback day, raw rows per target day."""

    days: list[date]
    lookback_day: date
    rows_by_day: dict[str, int]
    lookback_rows: int

    @property
    def rows_in(self) -> int:
        """Raw rows of the target days (what the job accounts for)."""
        return sum(self.rows_by_day.values())


def parse_args(argv: list[str] | None = None):
    """Command-line options."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=2_000_000, help="raw rows of the target days (the issue's full size: 10000000)"
    )
    parser.add_argument(
        "--entities", type=int, default=200, help="entities (each gets rows/entities consecutive minutes)"
    )
    parser.add_argument("--train-windows", type=int, default=5000, help="windows of the nightly model's training day")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the nightly model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the raw days, run the baseline, the Spark job and the nightly path; print the JSON."""
    args = parse_args(argv)
    with common.temporary_lake(args.work) as lake:
        plan = write_raw(lake, args.rows, args.entities, args.seed)
        common.write_training_day(lake, args.train_windows, args.entities, args.seed)
        with common.PeakRss() as base_rss:
            baseline = baseline_windows(lake, plan)
        spark = spark_windows(lake, plan, args.epochs, shuffle_partitions(plan.rows_in))
        if spark["windows"] != baseline["windows"]:
            raise RuntimeError(f"Spark wrote {spark['windows']} windows, the baseline {baseline['windows']}")
        nightly = nightly_path(lake, plan, shuffle_partitions(plan.rows_in))
        if nightly["scored_windows"] != spark["windows"]:
            raise RuntimeError(
                f"the nightly path scored {nightly['scored_windows']} windows, the windows job wrote {spark['windows']}"
            )
    spark_rps, base_rps = common.rate(plan.rows_in, spark["seconds"]), common.rate(plan.rows_in, baseline["total_s"])
    common.emit(
        {
            "windowing_ratio": round(spark_rps / base_rps, 4),
            "spark_rows_per_s": spark_rps,
            "baseline_rows_per_s": base_rps,
            "nightly_path_s": nightly["seconds"],
            "nightly_rows": nightly["rows"],
            "peak_rss_mb": {"spark": spark.pop("peak_rss_mb"), "baseline": base_rss.peak_mb},
            "absolute": {"spark": spark, "baseline": baseline, "nightly": nightly},
            "sizes": {
                "rows": plan.rows_in,
                "entities": args.entities,
                "days": len(plan.days),
                "lookback_rows": plan.lookback_rows,
            },
        },
        args.out,
    )


def raw_folder(lake: Path, day: date) -> Path:
    """The raw partition of the benchmark table for `day`."""
    return lake / "raw" / common.TABLE / f"dt={day.isoformat()}"


def write_raw(lake: Path, rows: int, entities: int, seed: int) -> RawPlan:
    """Each entity: rows/entities consecutive minutes from FIRST_DAY, after a lookback of up to a day (one file per
    day)."""
    per_entity = max(1, rows // entities)
    lookback = min(common.DAY_STEPS, max(common.WINDOW, per_entity))
    rng = np.random.default_rng(seed)
    minutes = np.tile(np.arange(-lookback, per_entity), entities)
    values = np.concatenate([common.series(rng, e, lookback + per_entity) for e in range(entities)]).astype(np.float64)
    entity = np.repeat(np.asarray(common.entity_names(entities), dtype=object), lookback + per_entity)
    day_index = np.floor_divide(minutes, common.DAY_STEPS)
    order = np.argsort(day_index, kind="stable")
    counts = np.bincount(day_index - day_index.min())
    start_us = common.day_start_us(FIRST_DAY)
    rows_by_day, lookback_day, at = {}, common.day_after(FIRST_DAY, -1), 0
    for offset, count in zip(range(int(day_index.min()), int(day_index.max()) + 1), counts):
        take, at = order[at : at + count], at + count
        day = common.day_after(FIRST_DAY, offset)
        write_raw_day(
            raw_folder(lake, day), entity[take], start_us + minutes[take].astype(np.int64) * 60_000_000, values[take]
        )
        if offset >= 0:
            rows_by_day[day.isoformat()] = int(count)
    days = [common.day_after(FIRST_DAY, n) for n in range(len(rows_by_day))]
    return RawPlan(days, lookback_day, rows_by_day, lookback * entities)


def write_raw_day(folder: Path, entity: np.ndarray, ts_us: np.ndarray, values: np.ndarray) -> None:
    """One upstream raw partition: entity_id, ts (microseconds, UTC), value."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "entity_id": pa.array(entity, pa.string()),
            "ts": pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            FEATURE: pa.array(values, pa.float64()),
        }
    )
    pq.write_table(table, folder / "part-00000.parquet")


def baseline_windows(lake: Path, plan: RawPlan) -> dict[str, Any]:
    """One process: read the raw days (lookback included) with pyarrow, sort, cut windows with numpy, write per day."""
    phases: dict[str, float] = {}
    clock = Clock(phases)
    table = pa.concat_tables([pq.read_table(raw_folder(lake, d)) for d in [plan.lookback_day, *plan.days]])
    clock.lap("read")
    table = table.take(pc.sort_indices(table, sort_keys=[("entity_id", "ascending"), ("ts", "ascending")]))
    clock.lap("sort")
    ends, x = cut(table, common.day_start_us(plan.days[0]))
    clock.lap("window")
    written = write_baseline_features(lake, table, ends, x)
    clock.lap("write")
    return {
        "windows": written,
        "total_s": round(sum(phases.values()), 3),
        "phases": {k: round(v, 3) for k, v in phases.items()},
    }


def cut(table: pa.Table, first_target_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the window ends (target rows after 63 finite, consecutive steps of their entity) and the
    windows."""
    length = common.WINDOW
    codes = pc.dictionary_encode(table.column("entity_id")).combine_chunks().indices.to_numpy()
    ts_us = table.column("ts").cast(pa.int64()).to_numpy()
    steps = np.round(ts_us / (common.STEP_SECONDS * 1e6)).astype(np.int64)
    values = table.column(FEATURE).to_numpy()
    breaks = np.concatenate(
        [[1], ((np.diff(steps) != 1) | (codes[1:] != codes[:-1])).astype(np.int64)]
    )  # gap, duplicate, new entity
    bad = np.concatenate([[0], np.cumsum(~np.isfinite(values))])
    broken = np.concatenate([[0], np.cumsum(breaks)])
    i = np.arange(length - 1, len(values))
    ok = (
        (broken[i + 1] - broken[i - length + 2] == 0)
        & (bad[i + 1] - bad[i - length + 1] == 0)
        & (ts_us[i] >= first_target_us)
    )
    ends = i[ok]
    windows = np.lib.stride_tricks.sliding_window_view(values.astype(np.float32), length)[ends - length + 1]
    return ends, windows


def write_baseline_features(lake: Path, table: pa.Table, ends: np.ndarray, x: np.ndarray) -> int:
    """The windows as features Parquet, one file per day (entity_id, ts, x)."""
    ts_us = table.column("ts").cast(pa.int64()).to_numpy()[ends]
    day = ts_us // 86_400_000_000
    order = np.argsort(day, kind="stable")
    bounds = np.searchsorted(day[order], np.unique(day), side="right")
    entity = table.column("entity_id").take(pa.array(ends))
    for d, lo, hi in zip(np.unique(day), [0, *bounds[:-1]], bounds):
        rows = order[lo:hi]
        folder = (
            lake / "baseline_features" / common.TABLE / f"dt={common.day_after(date(1970, 1, 1), int(d)).isoformat()}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        out = common.features_arrow(entity.take(pa.array(rows)), ts_us[rows], x[rows])
        pq.write_table(out, folder / "part-00000.parquet")
    return len(ends)


def shuffle_partitions(rows: int) -> int:
    """The settings' shuffle partitions (ANOMALAKE_SHUFFLE_PARTITIONS, 8), raised to one per 250,000 raw rows.

    One windows job over 10M rows in 8 partitions caches blocks of 1.25M windows, and reading one back fails
    with a Java heap OutOfMemoryError at the default driver memory (4g); a user would raise the partitions.
    """
    return max(common.bench_settings(Path(".")).shuffle_partitions, -(-rows // ROWS_PER_SHUFFLE_PARTITION))


def spark_windows(lake: Path, plan: RawPlan, epochs: int, partitions: int) -> dict[str, Any]:
    """Train the nightly model (untimed), then the windows job over every target day in one run (timed)."""
    from anomalake.pipelines.features.job import run_windows

    with common.PeakRss() as rss:
        ctx = common.job_context(lake, shuffle_partitions=partitions)
        _, train_s = common.timed(common.train_model, ctx, NIGHTLY_DETECTOR, epochs)
        result, seconds = common.timed(run_windows, ctx.with_new_run(), common.bench_table(), plan.days)
        ctx.spark.stop()
    if result.rows_in != plan.rows_in:
        raise RuntimeError(f"the windows job read {result.rows_in} rows, {plan.rows_in} were written")
    return {
        "seconds": round(seconds, 3),
        "rows_in": result.rows_in,
        "windows": result.windows,
        "context": result.context,
        "quarantined": result.quarantined,
        "train_s": round(train_s, 3),
        "shuffle_partitions": partitions,
        "peak_rss_mb": rss.peak_mb,
    }


def nightly_path(lake: Path, plan: RawPlan, partitions: int) -> dict[str, Any]:
    """`anomalake windows` then `anomalake score` over every target day, each a fresh process (local[2]); wall seconds.

    The issue's nightly goal is features + score over 10,000,000 raw rows: the CLI as the DAG calls it, over the
    same raw rows the windowing ratio measures, with the windowing job's shuffle partitions.
    """
    tables = lake.parent / "tables.yml"
    tables.write_text(yaml.safe_dump({common.TABLE: common.table_entry()}))
    env = {**os.environ, "ANOMALAKE_TABLES": str(tables), "ANOMALAKE_SHUFFLE_PARTITIONS": str(partitions)}
    cli = [sys.executable, "-m", "anomalake.pipelines.jobs.cli", "--lake", str(lake), "--master", "local[2]"]
    days = ["--start", plan.days[0].isoformat(), "--end", plan.days[-1].isoformat()]
    seconds = {}
    for job, extra in (("windows", []), ("score", ["--detector", NIGHTLY_DETECTOR])):
        command = [*cli, job, "--table", common.TABLE, *days, *extra]
        _, seconds[job] = common.timed(
            subprocess.run, command, cwd=common.REPO, env=env, check=True, stdout=subprocess.DEVNULL
        )
    from anomalake.pipelines.lake.delta import read_snapshot

    scored = len(read_snapshot(lake / "scores" / common.TABLE, {"detector": NIGHTLY_DETECTOR}, ["score"]))
    return {
        "seconds": round(sum(seconds.values()), 3),
        "rows": plan.rows_in,
        "scored_windows": scored,
        "days": len(plan.days),
        "jobs_s": {k: round(v, 3) for k, v in seconds.items()},
    }


if __name__ == "__main__":
    main()
