"""Event-level precision, recall and F1 of flagged windows against labelled anomaly spans.

Per entity, a run of consecutive flagged windows is one detection; it covers the time from the first
flagged window's first step to the last flagged window's last step (the data the model saw). An anomaly
is found when a detection overlaps it; a detection that overlaps no anomaly is a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class EventScore:
    """Counts and ratios of an event-level comparison."""

    anomalies: int
    found: int
    detections: int
    true_detections: int

    @property
    def precision(self) -> float:
        return self.true_detections / self.detections if self.detections else 0.0

    @property
    def recall(self) -> float:
        return self.found / self.anomalies if self.anomalies else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def detections(scores: pd.DataFrame, window_seconds: int, stride_seconds: int) -> pd.DataFrame:
    """Runs of consecutive flagged windows per entity -> (entity_id, start, end)."""
    flagged = scores.loc[scores["is_anomaly"].astype(bool), ["entity_id", "ts"]].sort_values(["entity_id", "ts"])
    if flagged.empty:
        return pd.DataFrame(columns=["entity_id", "start", "end"])
    new_run = (flagged["entity_id"] != flagged["entity_id"].shift()) | (
        flagged["ts"].diff() > pd.Timedelta(seconds=stride_seconds)
    )
    runs = (
        flagged.assign(run=new_run.cumsum())
        .groupby("run")
        .agg(entity_id=("entity_id", "first"), first=("ts", "min"), end=("ts", "max"))
    )
    runs["start"] = runs["first"] - pd.Timedelta(seconds=window_seconds)
    return runs[["entity_id", "start", "end"]].reset_index(drop=True)


def event_spans(events: pd.DataFrame, window_seconds: int) -> pd.DataFrame:
    """Rows of the events table (one per event and day) -> one detection per event (entity_id, start, end), from
    the first step its first window saw to its last window."""
    if events.empty:
        return pd.DataFrame(columns=["entity_id", "start", "end"])
    spans = events.groupby(["entity_id", "event_id"], as_index=False).agg(start=("start", "min"), end=("end", "max"))
    spans["start"] = spans["start"] - pd.Timedelta(seconds=window_seconds)
    return spans[["entity_id", "start", "end"]]


def event_score(found_by: pd.DataFrame, labels: pd.DataFrame) -> EventScore:
    """Match detections (entity_id, start, end) with labelled spans (entity_id, start, end)."""
    found = np.zeros(len(labels), dtype=bool)
    true_detections = 0
    for entity, group in found_by.groupby("entity_id"):
        mask = (labels["entity_id"] == entity).to_numpy()
        starts, ends = labels.loc[mask, "start"].to_numpy(), labels.loc[mask, "end"].to_numpy()
        for d_start, d_end in zip(group["start"].to_numpy(), group["end"].to_numpy()):
            overlap = (starts <= d_end) & (ends >= d_start)
            true_detections += bool(overlap.any())
            idx = np.flatnonzero(mask)[overlap]
            found[idx] = True
    return EventScore(len(labels), int(found.sum()), len(found_by), true_detections)


def labels_in_scope(labels: pd.DataFrame, scores: pd.DataFrame, window_seconds: int) -> pd.DataFrame:
    """The labelled spans that scored windows could see (they overlap the scored data of their entity)."""
    seen = scores.groupby("entity_id")["ts"].agg(["min", "max"])
    seen["min"] = seen["min"] - pd.Timedelta(seconds=window_seconds)
    joined = labels.join(seen, on="entity_id", how="inner")
    return joined[(joined["start"] <= joined["max"]) & (joined["end"] >= joined["min"])][labels.columns].reset_index(
        drop=True
    )
