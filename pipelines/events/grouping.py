"""Anomaly events: runs of flagged windows of one entity, merged when they lie close together.

An event is what a person acts on: the windows that flagged it share data, so flags fewer than one window
length apart are one event (an alert that stays open while it keeps firing).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def merge_close_runs(flags: np.ndarray, gap: int) -> np.ndarray:
    """Flags with every unflagged stretch of at most `gap` steps between two flagged steps filled in."""
    out = np.asarray(flags, dtype=bool).copy()
    hits = np.flatnonzero(out)
    for a, b in zip(hits[:-1], hits[1:]):
        if 1 < b - a <= gap + 1:
            out[a:b] = True
    return out


def event_starts(events: np.ndarray) -> np.ndarray:
    """True on the first step of each event (what an alerting system reports once per event)."""
    events = np.asarray(events, dtype=bool)
    return events & ~np.concatenate([[False], events[:-1]])


def anomaly_events(scores: pd.DataFrame, gap_seconds: float) -> pd.DataFrame:
    """One row per event of a scored time-series table: entity_id, first_window, last_window, peak_score,
    windows (how many flagged), and the row of its strongest window (peak_index, an index of `scores`)."""
    flagged = scores[scores["is_anomaly"]].sort_values(["entity_id", "ts"])
    rows = []
    for entity, part in flagged.groupby("entity_id", sort=False):
        new_event = part["ts"].diff().dt.total_seconds().fillna(np.inf) > gap_seconds
        for _, event in part.groupby(new_event.cumsum()):
            rows.append(
                {
                    "entity_id": entity,
                    "first_window": event["ts"].iloc[0],
                    "last_window": event["ts"].iloc[-1],
                    "peak_score": float(event["score"].max()),
                    "windows": len(event),
                    "peak_index": event["score"].idxmax(),
                }
            )
    columns = ["entity_id", "first_window", "last_window", "peak_score", "windows", "peak_index"]
    return (
        pd.DataFrame(rows, columns=columns)
        .sort_values("peak_score", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
