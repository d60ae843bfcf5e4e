"""Synthetic multi-entity server telemetry with injected, labelled anomalies (the demo's upstream table).

Every entity has requests with daily and weekly seasonality and a trend; cpu follows requests, latency
follows cpu, memory drifts slowly. Anomalies of five kinds are injected at random, non-overlapping places:
spike, level_shift, variance_burst, broken_seasonality (the daily cycle stops), decoupling (cpu stops
following requests). Rows are written per day with pyarrow, so the same seed gives the same bytes.

With `gaps`, the same series (same seed: the same values and labels) is sampled the way real collectors report:
timestamps jitter around the grid, some steps are read twice, single readings go missing, and outages of 20
minutes to a day leave holes (never over a labelled anomaly, which would then be unfindable).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = ("cpu", "memory", "latency", "requests")
ANOMALY_KINDS = ("spike", "level_shift", "variance_burst", "broken_seasonality", "decoupling")
STEP = pd.Timedelta("5min")
DAY_STEPS = int(pd.Timedelta("1D") / STEP)


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate: a table name, a start date, how many days and entities, the seed."""

    table: str
    start: date
    days: int
    entities: int
    seed: int
    anomalies_per_entity_day: float = 0.35
    gaps: bool = False  # irregular reporting and random outages (see the module docstring)


# Gappy sampling (per entity): single readings lost, steps read twice, short outages per day, long ones per week.
JITTER_SECONDS = 60
MISSING_SHARE = 0.03
SECOND_READING_SHARE = 0.05
SHORT_OUTAGES_PER_DAY, SHORT_OUTAGE_STEPS = 0.6, (4, 36)  # 20 minutes to 3 hours
LONG_OUTAGES_PER_DAY, LONG_OUTAGE_STEPS = 0.15, (72, DAY_STEPS)  # 6 hours to a day


def _baseline(rng: np.random.Generator, times: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """One entity's normal behaviour: seasonal requests driving cpu, latency following cpu."""
    hours = (times.hour + times.minute / 60.0).to_numpy()
    days = ((times - times[0]) / pd.Timedelta("1D")).to_numpy()
    weekend = np.isin(times.dayofweek.to_numpy(), (5, 6))
    level = rng.uniform(200, 2000)
    amplitude = rng.uniform(0.3, 0.6)
    peak_hour = rng.uniform(12, 17)
    daily = 1 + amplitude * np.cos(2 * np.pi * (hours - peak_hour) / 24)
    weekly = np.where(weekend, rng.uniform(0.6, 0.85), 1.0)
    trend = 1 + rng.uniform(-0.01, 0.02) * days
    requests = level * daily * weekly * trend * np.exp(rng.normal(0, 0.04, len(times)))
    cpu_base, cpu_gain = rng.uniform(5, 20), rng.uniform(20, 40)
    cpu = cpu_base + cpu_gain * requests / level + rng.normal(0, 1.5, len(times))
    memory = rng.uniform(30, 60) + rng.uniform(0, 0.5) * days + 0.1 * cpu + rng.normal(0, 0.8, len(times))
    latency = rng.uniform(20, 80) * (1 + (cpu / 100) ** 2) * np.exp(rng.normal(0, 0.05, len(times)))
    return {"cpu": cpu, "memory": memory, "latency": latency, "requests": requests}


def _inject(rng: np.random.Generator, metrics: dict[str, np.ndarray], kind: str, start: int, length: int) -> None:
    """Change `metrics` in place over [start, start+length) by one anomaly of `kind`."""
    span = slice(start, start + length)
    noise_scale = {name: float(np.std(np.diff(values))) / np.sqrt(2) for name, values in metrics.items()}
    if kind == "spike":
        name = rng.choice(FEATURES)
        metrics[name][span] += rng.choice((-1, 1)) * rng.uniform(8, 12) * noise_scale[name]
    elif kind == "level_shift":
        name = rng.choice(("cpu", "memory", "latency"))
        metrics[name][span] += rng.choice((-1, 1)) * rng.uniform(5, 8) * noise_scale[name]
    elif kind == "variance_burst":
        name = rng.choice(FEATURES)
        metrics[name][span] += rng.normal(0, rng.uniform(5, 8) * noise_scale[name], length)
    elif kind == "broken_seasonality":
        frozen = metrics["requests"][start]
        ratio = frozen / metrics["requests"][span]
        metrics["requests"][span] = frozen * np.exp(rng.normal(0, 0.04, length))
        metrics["cpu"][span] = metrics["cpu"][span] * ratio
    elif kind == "decoupling":
        metrics["cpu"][span] = np.mean(metrics["cpu"]) + np.cumsum(rng.normal(0, 2.0, length))
    # Keep every metric physically possible after the change.
    metrics["cpu"] = np.clip(metrics["cpu"], 0, 100)
    metrics["memory"] = np.clip(metrics["memory"], 0, 100)
    metrics["latency"] = np.maximum(metrics["latency"], 1.0)
    metrics["requests"] = np.maximum(metrics["requests"], 0.0)


_DURATION_STEPS = {
    "spike": (1, 3),
    "level_shift": (24, 72),
    "variance_burst": (12, 36),
    "broken_seasonality": (48, 96),
    "decoupling": (36, 96),
}


def _anomaly_plan(rng: np.random.Generator, n_steps: int, rate: float, days: int) -> list[tuple[str, int, int]]:
    """Non-overlapping (kind, start, length) triples, at least 12 hours apart, none in the first 6 hours."""
    count = rng.poisson(rate * days)
    plan: list[tuple[str, int, int]] = []
    for _ in range(count * 10):
        if len(plan) == count:
            break
        kind = str(rng.choice(ANOMALY_KINDS))
        length = int(rng.integers(*_DURATION_STEPS[kind], endpoint=True))
        start = int(rng.integers(72, n_steps - length))
        if all(start + length + 144 < s or s + span + 144 < start for _, s, span in plan):
            plan.append((kind, start, length))
    return sorted(plan, key=lambda item: item[1])


def _outage_mask(rng: np.random.Generator, n_steps: int, days: int, labelled: list[tuple[int, int]]) -> np.ndarray:
    """Steps lost to outages: Poisson counts of short and long outages, none touching a labelled span."""
    lost = np.zeros(n_steps, dtype=bool)
    for rate, (low, high) in ((SHORT_OUTAGES_PER_DAY, SHORT_OUTAGE_STEPS), (LONG_OUTAGES_PER_DAY, LONG_OUTAGE_STEPS)):
        for _ in range(rng.poisson(rate * days)):
            length = int(rng.integers(low, high, endpoint=True))
            start = int(rng.integers(1, max(2, n_steps - length)))
            if all(start + length <= s or e < start for s, e in labelled):
                lost[start : start + length] = True
    return lost


def _gappy(rng: np.random.Generator, frame: pd.DataFrame, days: int, labelled: list[tuple[int, int]]) -> pd.DataFrame:
    """One entity's regular rows as a collector reports them: jittered, some read twice, some lost, outages."""
    n = len(frame)
    jitter = pd.to_timedelta(rng.integers(-JITTER_SECONDS, JITTER_SECONDS + 1, n), unit="s")
    frame = frame.assign(ts=frame["ts"] + jitter)
    keep = ~_outage_mask(rng, n, days, labelled) & (rng.random(n) >= MISSING_SHARE)
    again = keep & (rng.random(n) < SECOND_READING_SHARE)
    second = frame[again].copy()
    second["ts"] += pd.to_timedelta(rng.integers(20, 80, len(second)), unit="s")  # still within the step
    for name in FEATURES:
        second[name] *= 1 + rng.normal(0, 0.01, len(second))
    return pd.concat([frame[keep], second]).sort_values("ts", ignore_index=True)


def generate_frames(spec: GenerateSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All raw rows and all labels, sorted, as pandas frames (deterministic in the seed)."""
    rng = np.random.default_rng(spec.seed)
    gap_rng = np.random.default_rng([spec.seed, 1])  # its own stream: the values match the regular table's
    times = pd.date_range(pd.Timestamp(spec.start, tz="UTC"), periods=spec.days * DAY_STEPS, freq=STEP)
    frames, labels = [], []
    for e in range(spec.entities):
        entity = f"host-{e:03d}"
        metrics = _baseline(rng, times)
        labelled = []
        for kind, start, length in _anomaly_plan(rng, len(times), spec.anomalies_per_entity_day, spec.days):
            _inject(rng, metrics, kind, start, length)
            labels.append((entity, times[start], times[start + length - 1], kind))
            labelled.append((start, start + length - 1))
        frame = pd.DataFrame({"entity_id": entity, "ts": times, **{k: metrics[k] for k in FEATURES}})
        frames.append(_gappy(gap_rng, frame, spec.days, labelled) if spec.gaps else frame)
    raw = pd.concat(frames, ignore_index=True)
    if spec.gaps:  # jitter may move the first or last reading out of the generated days
        raw = raw[(raw["ts"] >= times[0]) & (raw["ts"] < times[-1] + STEP)].reset_index(drop=True)
    label_frame = pd.DataFrame(labels, columns=["entity_id", "start", "end", "kind"])
    return raw, label_frame.sort_values(["entity_id", "start"], ignore_index=True)


def _write(frame: pd.DataFrame, path: Path) -> None:
    """Parquet with microsecond timestamps (Spark cannot read nanosecond ones)."""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, coerce_timestamps="us")


def write_generated(lake: Path, spec: GenerateSpec) -> dict[str, int]:
    """Write raw/<table>/dt=D/part-00000.parquet per day and labels/<table>/labels.parquet."""
    raw, labels = generate_frames(spec)
    raw_root = lake / "raw" / spec.table
    counts = {}
    for offset in range(spec.days):
        day = spec.start + timedelta(days=offset)
        rows = raw[raw["ts"].dt.date == day]
        folder = raw_root / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        _write(rows, folder / "part-00000.parquet")
        counts[day.isoformat()] = len(rows)
    counts["labels"] = _write_labels(lake, spec.table, labels)
    return counts


def _write_labels(lake: Path, table: str, labels: pd.DataFrame) -> int:
    """labels/<table>/labels.parquet (what the nightly check and the demo measure events against); the count."""
    label_root = lake / "labels" / table
    label_root.mkdir(parents=True, exist_ok=True)
    _write(labels, label_root / "labels.parquet")
    return len(labels)


# The CSV export's column names: those of a metrics export a user brings, not the lake's (import maps them).
CSV_COLUMNS = {"entity_id": "host", "ts": "time"}


def write_generated_csv(lake: Path, spec: GenerateSpec, out: Path) -> dict[str, int]:
    """The same rows as one CSV file, the way a monitoring system exports metrics (host, time in ISO 8601 UTC with
    its Z, cpu, memory, latency, requests), for `anomalake import metrics`; the labels go to labels/<table> as
    `write_generated` writes them. The row and label counts."""
    raw, labels = generate_frames(spec)
    frame = raw.rename(columns=CSV_COLUMNS)
    frame["time"] = frame["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6g")
    return {"rows": len(frame), "labels": _write_labels(lake, spec.table, labels)}
