"""Raw rows of one entity -> fixed-length windows on a regular grid, or quarantine rows with a reason.

Every raw row of a target day gets exactly one outcome, so rows in = windows + context + quarantined:
- window: the row is the last step of a window that was written;
- context: the row is on the grid but not a window end (stride above 1; ends are aligned to the epoch);
- quarantine: the row or its window cannot be used (see REASONS).
Rows of lookback days only feed the grid; they were accounted for by their own day's run.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from anomalake.pipelines.config import GapFill, TableConfig
from anomalake.pipelines.lake.schemas import FEATURE_FILE, IMPUTED, WINDOWS_TALLY_ARROW
from anomalake.pipelines.lake.task_files import TaskFiles

WINDOW, CONTEXT, QUARANTINE = "window", "context", "quarantine"
REASONS = {
    "null_key": "entity or time is null",
    "non_finite_value": "a feature is NaN, infinite or null",
    "out_of_bounds": "a feature is outside the range the table config's bounds allow",
    "outside_partition": "neither the timestamp nor its grid step is in the row's dt partition",
    "duplicate_key": "another row of the entity has the same grid timestamp",
    "insufficient_history": "fewer than window-1 earlier grid steps exist in the lake",
    "gap_exceeds_fill_limit": "the window spans a gap longer than the gaps block's fill_limit steps",
    "after_long_gap": "the window reaches back into a gap longer than a window: the entity starts again after it",
}
GAP_REASONS = ("gap_exceeds_fill_limit", "after_long_gap")


def gap_share(quarantined: Mapping[str, int], rows_in: int) -> float:
    """The share of `rows_in` raw rows quarantined because their window spans a gap that was not filled."""
    return sum(quarantined.get(reason, 0) for reason in GAP_REASONS) / rows_in if rows_in else 0.0


# Expected at the start of every table and after every outage longer than a window (the entity starts again as
# a new table would), so they do not count towards the quarantine limit; they are counted and recorded.
NOT_A_DATA_PROBLEM = ("insufficient_history", "after_long_gap")


def lookback_days(table: TableConfig) -> int:
    """Whole days before a target day whose rows a window (and its gap filling) can reach."""
    return math.ceil(table.lookback_steps * table.step_seconds / 86400)


def days_to_read(table: TableConfig, days: list[date]) -> list[date]:
    """Target days plus the lookback days before the first one."""
    first = days[0]
    return [first - timedelta(days=n) for n in range(lookback_days(table), 0, -1)] + days


def missing_runs(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) grid row of each run of `missing` rows."""
    edges = np.diff(np.r_[0, missing.astype(np.int8), 0])
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def fill_short_gaps(
    grid: np.ndarray, fills: tuple[GapFill, ...], runs: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Fill runs of missing grid rows that have both neighbours, per feature: at most `limit` steps, linearly between
    the neighbours or with the previous reading (`fills[j]` for column j). Longer runs stay missing. `runs`: the
    grid's missing_runs, where the caller has them."""
    starts, ends = runs if runs is not None else missing_runs(np.isnan(grid).any(axis=1))
    if starts.size == 0 or not any(f.limit for f in fills):
        return grid
    inside = (starts > 0) & (ends < len(grid) - 1)
    for start, end in zip(starts[inside], ends[inside]):
        run = end - start + 1
        weights = (np.arange(1, run + 1) / (run + 1))[:, None]
        for column, fill in enumerate(fills):
            if run > fill.limit:
                continue
            before, after = grid[start - 1, column], grid[end + 1, column]
            share = 0.0 if fill.method == "previous" else weights[:, 0]
            grid[start : end + 1, column] = before + share * (after - before)
    return grid


def _epoch_days(dt: pd.Series) -> np.ndarray:
    """Each 'YYYY-MM-DD' partition value as days since 1970-01-01 (parsed once per distinct value)."""
    codes, values = pd.factorize(dt)
    days = np.array([(date.fromisoformat(v) - date(1970, 1, 1)).days for v in values], dtype=np.int64)
    return days[codes]


def _grid_steps(nanoseconds: np.ndarray, step_seconds: int) -> np.ndarray:
    """Each timestamp's (ns since the epoch) index on the epoch-aligned grid (rounded to the nearest step)."""
    return np.round(nanoseconds / 1e9 / step_seconds).astype(np.int64)


def _result(rows: pd.DataFrame, outcome: np.ndarray, reason: np.ndarray, x: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": rows["entity_id"].to_numpy(),
            "ts": rows["ts"].to_numpy(),
            "x": x,
            "outcome": outcome,
            "reason": reason,
            "detail": [REASONS.get(r) if r else None for r in reason],
            "dt": rows["dt"].to_numpy(),
        }
    )


def _out_of_bounds(values: np.ndarray, table: TableConfig) -> np.ndarray:
    """Rows with a feature outside its configured [low, high]."""
    low = np.full(values.shape[1], -np.inf)
    high = np.full(values.shape[1], np.inf)
    for feature, lo, hi in table.bounds:
        low[table.features.index(feature)], high[table.features.index(feature)] = lo, hi
    with np.errstate(invalid="ignore"):
        return ((values < low) | (values > high)).any(axis=1)


def cut_windows(rows: pd.DataFrame, table: TableConfig, target_days: frozenset[str]) -> pd.DataFrame:
    """One entity's raw rows (target and lookback days) -> one outcome row per target-day raw row."""
    kept, outcome, reason, has_window, flat, imputed = _cut(rows.reset_index(drop=True), table, target_days)
    x: list = [None] * len(kept)
    offsets: list = [None] * len(kept)
    for i, row, steps in zip(np.flatnonzero(has_window), flat, imputed):
        x[i], offsets[i] = row, imputed_offsets(steps)
    return _result(kept, outcome, reason, x).assign(**{IMPUTED: offsets})


def write_windows_arrow(
    batches: Iterator[pa.RecordBatch], table: TableConfig, target_days: frozenset[str], folder: str, tag: str
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body over one task's raw rows, sorted by entity: windows -> Parquet files, the rest -> WINDOWS_TALLY
    rows.

    Each entity's rows (target and lookback days) are cut as `_cut` does; its windows go straight to this task's
    file of their day in the features table's `folder`, named with `tag` (written by pyarrow, so the window arrays
    never pass through the JVM; the driver commits the files), and out come the quarantined rows one by one and,
    at the end, this task's windows and context rows counted per day.
    """
    counts: dict[tuple[str, str], int] = {}
    # Dictionaries and min/max statistics of window floats cost time and help no reader.
    with TaskFiles(
        Path(folder), FEATURE_FILE, tag=tag, use_dictionary=["entity_id"], write_statistics=["entity_id", "ts"]
    ) as files:
        for rows in _entities(batches, ["entity_id", "ts", "dt", *table.features]):
            kept, outcome, reason, has_window, flat, imputed = _cut(rows, table, target_days)
            _add_windows(files, kept[has_window], flat, imputed)
            for (day, kind), count in pd.Series(outcome).groupby([kept["dt"].to_numpy(), outcome]).size().items():
                if kind != QUARANTINE:
                    counts[(day, kind)] = counts.get((day, kind), 0) + int(count)
            bad = outcome == QUARANTINE
            if bad.any():
                yield _tally(kept[bad], outcome[bad], reason[bad])
    if counts:
        (days, kinds), n = zip(*counts.keys()), list(counts.values())
        keys = pd.DataFrame({"entity_id": [None] * len(n), "ts": pd.NaT, "dt": list(days)})
        yield _tally(
            keys, np.array(kinds, dtype=object), np.full(len(n), None, dtype=object), np.array(n, dtype=np.int64)
        )


def _entities(batches: Iterator[pa.RecordBatch], columns: list[str]) -> Iterator[pd.DataFrame]:
    """The rows of each entity in turn (the input is sorted by entity, and an entity may span batches)."""
    carry = None
    for batch in batches:
        rows = batch.select(columns).to_pandas(coerce_temporal_nanoseconds=True)  # the grid arithmetic is in ns
        rows = rows if carry is None else pd.concat([carry, rows], ignore_index=True)
        key = rows["entity_id"].fillna("\x00").to_numpy(dtype=object)  # null entities form one group (quarantined)
        starts = np.r_[0, np.flatnonzero(key[1:] != key[:-1]) + 1, len(rows)]
        for start, end in zip(starts[:-2], starts[1:-1]):
            yield rows.iloc[start:end].reset_index(drop=True)
        carry = rows.iloc[starts[-2] :].reset_index(drop=True)  # the last entity may go on in the next batch
    if carry is not None and len(carry):
        yield carry


def _tally(
    rows: pd.DataFrame, outcome: np.ndarray, reason: np.ndarray, counts: np.ndarray | None = None
) -> pa.RecordBatch:
    """WINDOWS_TALLY rows: keys, outcome, reason and its text, day, and how many raw rows each stands for."""
    details = [REASONS.get(r) if r else None for r in reason]
    columns = [
        pa.array(rows["entity_id"].to_numpy(dtype=object), pa.string()),
        _timestamps(pd.to_datetime(rows["ts"], utc=True)),
        pa.array(outcome, pa.string()),
        pa.array(reason, pa.string()),
        pa.array(details, pa.string()),
        pa.array(rows["dt"].to_numpy(dtype=object), pa.string()),
        pa.array(np.ones(len(rows), dtype=np.int64) if counts is None else counts, pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=WINDOWS_TALLY_ARROW)


def _add_windows(files: TaskFiles, rows: pd.DataFrame, flat: np.ndarray, imputed: np.ndarray) -> None:
    """Hand the windows `flat` of `rows` (entity_id, ts, dt) to this task's file of each one's day."""
    days = rows["dt"].to_numpy(dtype=object)
    for day in pd.unique(days):
        pick = days == day
        files.add(day, _feature_rows(rows[pick], flat[pick], imputed[pick]))


def imputed_offsets(steps: np.ndarray) -> list[int]:
    """The offsets back from a window's last step of its imputed steps (a (length,) bool row), nearest first."""
    return (len(steps) - 1 - np.flatnonzero(steps))[::-1].tolist()


def _feature_rows(rows: pd.DataFrame, flat: np.ndarray, imputed: np.ndarray) -> pa.Table:
    """FEATURE_FILE rows of windows `flat` and their imputed steps (one row each, row order as `rows`)."""
    size = flat.shape[1]
    offsets = pa.array(np.arange(0, (len(rows) + 1) * size, size, dtype=np.int32))
    x = pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1), pa.float32()), type=FEATURE_FILE.field("x").type)
    window, step = np.nonzero(imputed[:, ::-1])  # column k of the reversed rows is offset k
    counts = np.bincount(window, minlength=len(rows)).astype(np.int32)
    steps = pa.ListArray.from_arrays(
        pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32)),
        pa.array(step.astype(np.int32), pa.int32()),
        type=FEATURE_FILE.field(IMPUTED).type,
    )
    return pa.Table.from_arrays(
        [pa.array(rows["entity_id"].to_numpy(dtype=object), pa.string()), _timestamps(rows["ts"]), x, steps],
        schema=FEATURE_FILE,
    )


def _timestamps(ts: pd.Series) -> pa.Array:
    """Timestamps (UTC, ns in pandas) as Arrow microseconds, without a Python object per value."""
    nanoseconds = (
        ts.to_numpy(dtype="datetime64[ns]")
        if ts.dt.tz is None
        else ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    )
    return pa.array(nanoseconds.astype("datetime64[us]"), pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))


def _cut(rows: pd.DataFrame, table: TableConfig, target_days: frozenset[str]):
    """(target-day rows, outcome, reason, which of them got a window, the windows (m, length * features) float32)."""
    features = list(table.features)
    is_target = rows["dt"].isin(target_days).to_numpy()
    n = len(rows)
    outcome = np.full(n, QUARANTINE, dtype=object)
    reason = np.full(n, None, dtype=object)
    usable = np.ones(n, dtype=bool)

    null_key = rows["entity_id"].isna().to_numpy() | rows["ts"].isna().to_numpy()
    reason[null_key], usable[null_key] = "null_key", False
    values = rows[features].to_numpy(dtype=np.float64)
    bad_value = usable & ~np.isfinite(values).all(axis=1)
    reason[bad_value], usable[bad_value] = "non_finite_value", False
    if table.bounds:
        outside_bounds = usable & _out_of_bounds(values, table)
        reason[outside_bounds], usable[outside_bounds] = "out_of_bounds", False

    nanoseconds = rows["ts"].astype("int64").to_numpy()
    steps = np.zeros(n, dtype=np.int64)
    steps[usable] = _grid_steps(nanoseconds[usable], table.step_seconds)
    # Either its own time or its grid step puts a reading in its day: one at 23:58 of D belongs to D although it
    # snaps to 00:00 of D+1 (partitioned by its time), as one at 23:58 of D-1 written to D (partitioned by step).
    day = _epoch_days(rows["dt"])
    own_day = np.where(usable, nanoseconds // (86400 * 10**9), day)
    outside = usable & (own_day != day) & (steps * table.step_seconds // 86400 != day)
    reason[outside], usable[outside] = "outside_partition", False

    order = np.lexsort((nanoseconds, steps))
    order = order[usable[order]]
    same_step = np.diff(steps[order]) == 0
    if table.gaps.aggregate != "none":  # readings at distinct times within one step are resampled, not duplicates
        same_step &= np.diff(nanoseconds[order]) == 0
    duplicate = np.zeros(n, dtype=bool)
    duplicate[order[1:][same_step]] = True
    reason[duplicate], usable[duplicate] = "duplicate_key", False

    has_window = np.zeros(n, dtype=bool)
    flat = np.zeros((0, table.n_inputs), dtype=np.float32)
    imputed = np.zeros((0, table.window.length), dtype=bool)
    if usable.any():
        owner, values = _resample(steps, values, order[usable[order]], table.gaps.aggregate)
        outcome[usable & ~owner] = CONTEXT  # folded into the step's reading, whose row owns the window
        flat, imputed = _cut_usable(steps, values, owner, is_target, table, outcome, reason, has_window)
    keep = is_target
    return rows[keep], outcome[keep], reason[keep], has_window[keep], flat, imputed


def _long_runs(runs: tuple[np.ndarray, np.ndarray], size: int, length: int) -> np.ndarray:
    """The grid steps (of `size`) in missing `runs` of at least `length` steps (outages no window can bridge)."""
    starts, ends = runs
    long = np.zeros(size, dtype=bool)
    for start, end in zip(starts, ends):
        if end - start + 1 >= length:
            long[start : end + 1] = True
    return long


def _resample(steps, values, order, aggregate: str) -> tuple[np.ndarray, np.ndarray]:
    """(the row that stands for each grid step, values with each such row holding its step's aggregate).

    `order`: the usable rows by (step, time). The latest reading of a step stands for it (its time is the window's);
    a regular table has one reading per step, so nothing changes for it.
    """
    last = np.r_[np.diff(steps[order]) != 0, True]
    owner = np.zeros(len(steps), dtype=bool)
    owner[order[last]] = True
    if last.all() or aggregate in ("last", "none"):
        return owner, values
    starts = np.r_[0, np.flatnonzero(last)[:-1] + 1]
    ordered = values[order]
    combined = {
        "mean": lambda: np.add.reduceat(ordered, starts) / np.diff(np.r_[starts, len(order)])[:, None],
        "sum": lambda: np.add.reduceat(ordered, starts),
        "min": lambda: np.minimum.reduceat(ordered, starts),
        "max": lambda: np.maximum.reduceat(ordered, starts),
    }[aggregate]()
    values = values.copy()
    values[order[last]] = combined
    return owner, values


def _cut_usable(steps, values, usable, is_target, table: TableConfig, outcome, reason, has_window) -> np.ndarray:
    """Place usable rows on the grid, fill short gaps, and cut a window at each aligned target row (in row order)."""
    length = table.window.length
    first = steps[usable].min()
    grid = np.full((steps[usable].max() - first + 1, values.shape[1]), np.nan)
    grid[steps[usable] - first] = values[usable]
    missing = np.isnan(grid).any(axis=1)
    runs = missing_runs(missing)
    outage = _long_runs(runs, len(grid), length)
    grid = fill_short_gaps(grid, table.gaps.fill, runs)

    candidates = np.flatnonzero(usable & is_target)
    aligned = steps[candidates] % table.window.stride == 0
    outcome[candidates[~aligned]] = CONTEXT
    ends = candidates[aligned]
    position = steps[ends] - first
    short = position < length - 1
    reason[ends[short]] = "insufficient_history"
    ends, position = ends[~short], position[~short]
    if ends.size == 0:
        return np.zeros((0, table.n_inputs), dtype=np.float32), np.zeros((0, length), dtype=bool)
    windows = np.lib.stride_tricks.sliding_window_view(grid, (length, grid.shape[1]))[:, 0]
    cut = windows[position - length + 1]
    gap = np.isnan(cut).any(axis=(1, 2))
    reaches_outage = np.lib.stride_tricks.sliding_window_view(outage, length)[position - length + 1].any(axis=1)
    reason[ends[gap]] = np.where(reaches_outage[gap], "after_long_gap", "gap_exceeds_fill_limit")
    outcome[ends[~gap]] = WINDOW
    has_window[ends[~gap]] = True
    imputed = np.lib.stride_tricks.sliding_window_view(missing, length)[(position - length + 1)[~gap]]
    kept = cut[~gap]
    if table.gaps.mask:  # the model sees which steps were imputed: one more channel, 1 where a step was
        kept = np.concatenate([kept, imputed[:, :, None].astype(kept.dtype)], axis=2)
    # `ends` ascend, so the windows are in row order, as the rows that own them.
    return kept.reshape(len(kept), table.n_inputs).astype(np.float32), imputed
