"""Anomaly events from window scores: thresholds that follow each entity's recent scores, then events.

For day D and one entity, the raw scores of the trailing `history_days` before D and of D itself are smoothed
(a trailing mean over `smoothing` windows, which filters single noisy windows out and keeps sustained errors)
and a threshold is chosen on them the way LSTM-DT (telemanom) does: the z in mean + z * std that best separates
the scores above it from the rest, penalising many points and, quadratically, many sequences above it. Runs of
smoothed scores above the threshold, padded by `padding` windows on each side, are candidate sequences; those
whose peak is not clearly above the next lower peak (by `min_percent`) are pruned, and sequences closer than
`merge_gap` windows are merged. What remains on day D are its events.

Everything a day computes depends only on the scores of its own range, so a day recomputed later (by the next
day, to find the start of an event that goes on past midnight, or by a backfill in any order) gives the same
events: an event open at the end of day D-1 goes on in day D under the same id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Sequence

import numpy as np
import pandas as pd

from anomalake.pipelines.config import EventSettings


@dataclass(frozen=True)
class DayScores:
    """One entity's scored windows in time order: window ends (UTC), raw and calibrated scores, day of each."""

    ts: np.ndarray  # datetime64[us]
    raw: np.ndarray
    score: np.ndarray
    day: np.ndarray  # datetime64[D] of each window's end

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "DayScores":
        """From a frame with ts, raw_score and score, sorted by ts (duplicates are not expected)."""
        ordered = frame.sort_values("ts", kind="stable")
        ts = _utc_naive(ordered["ts"]).to_numpy(dtype="datetime64[us]")
        return cls(
            ts,
            ordered["raw_score"].to_numpy(np.float64),
            ordered["score"].to_numpy(np.float64),
            ts.astype("datetime64[D]"),
        )

    def days(self) -> list[date]:
        return sorted({d.item() for d in np.unique(self.day)})

    def pause_length(self, windows: int) -> np.timedelta64:
        """How long the windows may pause before the entity counts as quiet: `windows` typical window periods."""
        if len(self.ts) < 2:
            return np.timedelta64(1, "D")
        period = float(np.median(np.diff(self.ts).astype("timedelta64[us]").astype(np.int64)))
        return np.timedelta64(int(max(windows, 1) * max(period, 1.0)), "us")

    def pauses(self, windows: int) -> np.ndarray:
        """Per window, whether the windows pause before it for longer than `pause_length` (the entity was down, or
        its readings were too sparse to window): an event neither spans nor bridges a pause."""
        return np.r_[False, np.diff(self.ts) > self.pause_length(windows)] if len(self.ts) else np.zeros(0, bool)

    def between(self, first: date, last: date) -> "DayScores":
        keep = (self.day >= np.datetime64(first)) & (self.day <= np.datetime64(last))
        return DayScores(self.ts[keep], self.raw[keep], self.score[keep], self.day[keep])


@dataclass(frozen=True)
class Event:
    """One event of one entity as day D sees it: its span up to the end of D, its peak, whether it goes on."""

    entity_id: str
    start: datetime
    end: datetime
    peak_ts: datetime  # the strongest window of the event so far (an earlier day's, for an event that goes on)
    peak_raw: float
    severity: float  # the calibrated score of that window
    strongest_ts: datetime  # the strongest window of the event on day D (its explanation is the event's)
    window_ends: tuple[datetime, ...]  # the windows of day D inside the event
    open: bool  # the event runs to the last window of day D (it may go on tomorrow)
    threshold: float  # the day's threshold on the smoothed raw scores (NaN: the calibration decided)

    @property
    def fallback(self) -> bool:
        return bool(np.isnan(self.threshold))

    def event_id(self, detector: str) -> str:
        """Stable id: entity, detector and start, whatever day reports the event."""
        key = f"{self.entity_id}|{detector}|{self.start.isoformat()}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    def row(self, detector: str, day: date) -> dict:
        """The event as a row of EVENT_ROWS."""
        return {
            "entity_id": self.entity_id,
            "event_id": self.event_id(detector),
            "start": self.start,
            "end": self.end,
            "peak_ts": self.peak_ts,
            "peak_score": self.peak_raw,
            "severity": self.severity,
            "windows": len(self.window_ends),
            "open": self.open,
            "new": self.start.date() == day,
            "threshold": None if self.fallback else self.threshold,
            "threshold_source": "calibration" if self.fallback else "history",
            "strongest_ts": self.strongest_ts,
            "window_ends": list(self.window_ends),
            "dt": day.isoformat(),
        }


# --- thresholds ------------------------------------------------------------------------------------------


def trailing_mean(values: np.ndarray, windows: int) -> np.ndarray:
    """Each value averaged with the windows-1 before it (fewer at the start); the same for a value whatever range
    it is computed in, as long as the range holds those windows."""
    if windows <= 1 or len(values) == 0:
        return values.astype(np.float64)
    kernel = np.ones(windows) / windows
    full = np.convolve(np.concatenate([np.full(windows - 1, np.nan), values]), kernel, mode="valid")
    head = [values[: i + 1].mean() for i in range(min(windows - 1, len(values)))]
    return np.concatenate([head, full[len(head) :]])


def dynamic_threshold(errors: np.ndarray, z_min: float, z_max: float, step: float = 0.5) -> float:
    """telemanom's threshold: the z in [z_min, z_max] maximising
    (drop in mean / mean + drop in std / std) / (points above + sequences above ** 2), on a fixed grid of z."""
    mean, std = float(errors.mean()), float(errors.std())
    if std == 0 or mean == 0:
        return mean + z_max * std
    best_z, best_value = z_max, -np.inf
    for z in np.arange(z_min, z_max + step / 2, step):
        epsilon = mean + z * std
        above = errors > epsilon
        below = errors[~above]
        if not above.any() or len(below) == 0:
            continue
        drop = (mean - below.mean()) / mean + (std - below.std()) / std
        sequences = int(np.count_nonzero(above[1:] & ~above[:-1]) + above[0])
        value = drop / (above.sum() + sequences**2)
        if value > best_value:
            best_z, best_value = float(z), value
    return mean + best_z * std


def day_threshold(errors: np.ndarray, settings: EventSettings) -> float:
    """The threshold of a day's range of smoothed scores, by the table's method.

    The dynamic threshold is found again, up to `rounds` times, on the scores outside the (padded) sequences above
    the last one: a large anomaly in the history inflates the std, and would otherwise hide the smaller ones.
    """
    if settings.method == "fixed":
        return float(errors.mean() + settings.z_max * errors.std())
    epsilon = dynamic_threshold(errors, settings.z_min, settings.z_max)
    for _ in range(settings.rounds):
        inside = _mask(len(errors), sequences_above(errors, epsilon, settings.padding))
        if inside.all() or not inside.any():
            break
        lower = dynamic_threshold(errors[~inside], settings.z_min, settings.z_max)
        if lower >= epsilon:
            break
        epsilon = lower
    return epsilon


# --- sequences -------------------------------------------------------------------------------------------


def sequences_above(errors: np.ndarray, epsilon: float, padding: int) -> list[tuple[int, int]]:
    """(first, last) index of each run of errors above epsilon, each widened by `padding` on both sides."""
    above = errors > epsilon
    if padding and above.any():
        hits = np.flatnonzero(above)
        widened = np.zeros(len(errors) + 1, dtype=np.int64)
        np.add.at(widened, np.maximum(hits - padding, 0), 1)
        np.add.at(widened, np.minimum(hits + padding + 1, len(errors)), -1)
        above = np.cumsum(widened)[:-1] > 0
    return _runs(above)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def prune(errors: np.ndarray, sequences: list[tuple[int, int]], min_percent: float) -> list[tuple[int, int]]:
    """The sequences whose peaks stand out: sorted by peak, the weakest ones whose peak is less than
    `min_percent` above the next lower peak (the highest error outside every sequence closes the list) go."""
    if not sequences:
        return []
    inside = np.zeros(len(errors), dtype=bool)
    for first, last in sequences:
        inside[first : last + 1] = True
    peaks = [float(errors[first : last + 1].max()) for first, last in sequences]
    order = np.argsort(peaks, kind="stable")[::-1]
    ranked = [peaks[i] for i in order] + [float(errors[~inside].max()) if (~inside).any() else 0.0]
    keep = 0
    for rank in range(len(order)):
        higher, lower = ranked[rank], ranked[rank + 1]
        if higher > 0 and (higher - lower) / higher >= min_percent:
            keep = rank + 1
    return sorted(sequences[i] for i in order[:keep])


def merge(sequences: list[tuple[int, int]], gap: int, pauses: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Sequences fewer than `gap` windows apart joined into one, unless the windows pause between them."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(sequences):
        close = bool(merged) and first - merged[-1][1] <= gap
        if close and (pauses is None or not pauses[merged[-1][1] + 1 : first + 1].any()):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def split_at_pauses(sequences: list[tuple[int, int]], pauses: np.ndarray, above: np.ndarray) -> list[tuple[int, int]]:
    """Sequences cut where the windows pause; a piece without a window `above` (padding reached it across the
    pause) goes."""
    pieces = []
    for first, last in sequences:
        cuts = [first, *(first + np.flatnonzero(pauses[first + 1 : last + 1]) + 1).tolist(), last + 1]
        pieces += [(a, b - 1) for a, b in zip(cuts[:-1], cuts[1:]) if above[a:b].any()]
    return pieces


# --- days and events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayFlags:
    """Which windows of one day are inside an event, and the threshold that decided it."""

    day: date
    inside: np.ndarray  # per window of `scores`: inside an event sequence of this day's computation
    threshold: float
    fallback: bool


def flag_day(scores: DayScores, day: date, settings: EventSettings, calibrated_threshold: float) -> DayFlags:
    """The windows of `day` (and of its history, as this day's threshold sees them) that lie in event sequences.

    `scores` must hold the history days and `day`; fewer than min_history_days days with scores before `day`
    and the held-out calibration decides instead (calibrated score above `calibrated_threshold`).
    """
    history = scores.between(day - timedelta(days=settings.history_days), day)
    pauses = history.pauses(settings.merge_gap)
    earlier = [d for d in history.days() if d < day]
    if len(earlier) < settings.min_history_days:
        above = history.score > calibrated_threshold
        sequences = merge(split_at_pauses(_runs(above), pauses, above), settings.merge_gap, pauses)
        return DayFlags(day, _mask(len(history.ts), sequences), np.nan, True)
    errors = trailing_mean(history.raw, settings.smoothing)
    epsilon = day_threshold(errors, settings)
    candidates = split_at_pauses(sequences_above(errors, epsilon, settings.padding), pauses, errors > epsilon)
    sequences = prune(errors, candidates, settings.min_percent)
    if settings.above_calibration:  # unusual for this entity lately, and for what the model learnt as normal
        sequences = [(a, b) for a, b in sequences if history.score[a : b + 1].max() > calibrated_threshold]
    return DayFlags(day, _mask(len(history.ts), merge(sequences, settings.merge_gap, pauses)), epsilon, False)


def _mask(n: int, sequences: list[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(n, dtype=bool)
    for first, last in sequences:
        inside[first : last + 1] = True
    return inside


def day_events(
    entity: str, scores: DayScores, day: date, settings: EventSettings, calibrated_threshold: float
) -> list[Event]:
    """The events of one entity on `day`: runs of its windows inside event sequences, an event that was open at
    the end of the day before continuing under its start (followed back up to max_chain_days)."""
    flags = flag_day(scores, day, settings, calibrated_threshold)
    history = scores.between(day - timedelta(days=settings.history_days), day)
    on_day = history.day == np.datetime64(day)
    pauses = history.pauses(settings.merge_gap)
    runs = split_at_pauses(_runs(flags.inside & on_day), pauses, flags.inside)
    if not runs:
        return []
    first_of_day, last_of_day = int(np.flatnonzero(on_day)[0]), int(np.flatnonzero(on_day)[-1])
    # An event goes on past midnight only when the entity's windows do: one that ends before a pause that
    # reaches midnight closes (the entity went quiet), and after such a pause a first run starts a new event.
    reach = history.pause_length(settings.merge_gap)
    midnight = np.datetime64(day_start(day).replace(tzinfo=None) + timedelta(days=1), "us")
    runs_to_midnight = midnight - history.ts[last_of_day] <= reach
    from_midnight = history.ts[first_of_day] - (midnight - np.timedelta64(1, "D")) <= reach
    # The first run may go on from yesterday: it does when it starts the day, or when every window before it
    # stays above the threshold that opened yesterday's open event (a shifted level that today's threshold
    # splits at its own boundary is still the incident that began yesterday, not a new alert).
    carried = _open_event(entity, scores, day - timedelta(days=1), settings, calibrated_threshold)
    if not from_midnight:
        carried = None
    if carried is not None and runs[0][0] != first_of_day:
        if _stays_above(history, first_of_day, runs[0][0], carried, settings, calibrated_threshold):
            runs[0] = (first_of_day, runs[0][1])
        else:
            carried = None
    events = []
    for first, last in runs:
        strongest = first + int(np.argmax(history.score[first : last + 1]))
        today = (float(history.score[strongest]), float(history.raw[strongest]), _dt(history.ts[strongest]))
        if first == first_of_day and carried is not None:
            start = carried.start
            severity, raw, peak_ts = max(
                (carried.severity, carried.peak_raw, carried.peak_ts), today, key=lambda p: p[0]
            )
        else:
            start, (severity, raw, peak_ts) = _dt(history.ts[first]), today
        window_ends = tuple(_dt(ts) for ts in history.ts[first : last + 1])
        events.append(
            Event(
                entity,
                start,
                _dt(history.ts[last]),
                peak_ts,
                raw,
                severity,
                today[2],
                window_ends,
                last == last_of_day and runs_to_midnight,
                float(flags.threshold),
            )
        )
    return events


def _stays_above(
    history: DayScores, first: int, stop: int, event: Event, settings: EventSettings, calibrated_threshold: float
) -> bool:
    """Whether the windows [first, stop) all stay above the threshold that decided `event` (no sign that it ended)."""
    if event.fallback:
        return bool((history.score[first:stop] > calibrated_threshold).all())
    return bool((trailing_mean(history.raw, settings.smoothing)[first:stop] > event.threshold).all())


def _open_event(entity: str, scores: DayScores, day: date, settings: EventSettings, calibrated_threshold: float):
    """The event of `entity` open at the end of `day` (None when none was, or the chain is followed far enough)."""
    if settings.max_chain_days <= 0 or day not in scores.days():
        return None
    shorter = replace(settings, max_chain_days=settings.max_chain_days - 1)
    still_open = [e for e in day_events(entity, scores, day, shorter, calibrated_threshold) if e.open]
    return still_open[0] if still_open else None


def entity_events(
    entity: str,
    frame: pd.DataFrame,
    days: Sequence[date],
    settings: EventSettings,
    calibrated_threshold: float,
    detector: str,
) -> list[dict]:
    """EVENT_ROWS of one entity for each of `days`, from its scored windows (those days and their history)."""
    scores = DayScores.of(frame)
    present = set(scores.days())
    return [
        e.row(detector, d)
        for d in days
        if d in present
        for e in day_events(entity, scores, d, settings, calibrated_threshold)
    ]


def sample_events(
    frame: pd.DataFrame, days: Sequence[date], settings: EventSettings, calibrated_threshold: float, detector: str
) -> list[dict]:
    """Images and texts: each sample of day D above the day's threshold is an event; the threshold follows the
    raw scores of the whole table over its trailing days (the held-out calibration with too little history)."""
    frame = frame.assign(day=_utc_naive(frame["ts"]).dt.date)
    rows = []
    for day in days:
        history = frame[(frame["day"] >= day - timedelta(days=settings.history_days)) & (frame["day"] <= day)]
        today = history[history["day"] == day]
        if today.empty:
            continue
        fallback = history.loc[history["day"] < day, "day"].nunique() < settings.min_history_days
        if fallback:
            threshold, flagged = np.nan, today[today["score"] > calibrated_threshold]
        else:
            # samples have no sequences to take out again: one round
            threshold = day_threshold(history["raw_score"].to_numpy(np.float64), replace(settings, rounds=0))
            flagged = today[today["raw_score"] > threshold]
        for sample in flagged.itertuples():
            at = _dt(np.datetime64(_utc_naive(pd.Series([sample.ts])).iloc[0]))
            event = Event(
                str(sample.entity_id),
                at,
                at,
                at,
                float(sample.raw_score),
                float(sample.score),
                at,
                (at,),
                False,
                float(threshold),
            )
            rows.append(event.row(detector, day))
    return rows


def _dt(value: np.datetime64) -> datetime:
    return pd.Timestamp(value).tz_localize(timezone.utc).to_pydatetime()


def _utc_naive(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values)
    return values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def flag_windows(
    scored: pd.DataFrame,
    kind: str,
    settings: EventSettings,
    calibrated_threshold: float,
    days: Sequence[date],
    detector: str = "reference",
) -> pd.DataFrame:
    """Scored rows (entity_id, ts, raw_score, score, ...) of `days` with is_anomaly true where they lie inside an
    event: the event stage of the nightly path in one process (the reference detectors in `evaluate` use it)."""
    frame = scored.assign(day=_utc_naive(scored["ts"]).dt.date)
    wanted = set(days)
    if kind == "timeseries":
        rows = [
            r
            for entity, part in frame.groupby("entity_id", sort=True)
            for r in entity_events(str(entity), part, sorted(wanted), settings, calibrated_threshold, detector)
        ]
    else:
        rows = sample_events(frame, sorted(wanted), settings, calibrated_threshold, detector)
    inside = {(r["entity_id"], pd.Timestamp(ts).tz_convert("UTC")) for r in rows for ts in r["window_ends"]}
    out = frame[frame["day"].isin(wanted)].drop(columns="day").reset_index(drop=True)
    stamps = pd.to_datetime(out["ts"], utc=True)
    out["is_anomaly"] = [(e, t) in inside for e, t in zip(out["entity_id"], stamps)]
    return out
