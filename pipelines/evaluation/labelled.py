"""Labels from users: how a detector's events did on a labelled table's days -> the `detection_metrics` table.

When a table has labels (`labels/<table>`: entity_id, start, end, kind, the layout `anomalake generate`
writes), the nightly check measures each detector's events of day D against the labelled intervals that touch
D, with the overlap-segment counts `evaluate` uses (pipelines/evaluation/metrics.py): a labelled interval is
found when an event of its entity overlaps it; an event that overlaps none is a false alarm. The figures go to
detection_metrics/table=<t>/detector=<d>/dt=D (columns model_version, metric, value; Spark SQL reads it as
`detection_metrics`), so a team sees how the detector does on its own data over time. Labels are read here
only: nothing in training, thresholds or events reads them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta, timezone

import pandas as pd
import pyarrow as pa

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.evaluation import metrics
from anomalake.pipelines.lake.delta import read_snapshot, replace_partition_without_spark
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.runs import latest_run_record

DETECTION_METRICS = ("precision", "recall", "f1", "labelled", "detected", "found", "false_alarms")
_EVENT_SPAN = ["entity_id", "start", "end"]
SCHEMA = pa.schema([("model_version", pa.string()), ("metric", pa.string()), ("value", pa.float64())])


def read_labels(lake: Lake, table: TableConfig) -> pd.DataFrame | None:
    """The table's labelled intervals (start and end in UTC), or None when it has none."""
    root = lake.labels(table.name)
    if not root.is_dir() or not any(root.rglob("*.parquet")):
        return None
    labels = pd.read_parquet(root, columns=["entity_id", "start", "end"])
    return labels.assign(start=pd.to_datetime(labels["start"], utc=True), end=pd.to_datetime(labels["end"], utc=True))


def day_metrics(lake: Lake, table: TableConfig, detector: str, day: date, labels: pd.DataFrame) -> dict[str, float]:
    """Overlap-segment precision, recall and F1 of the detector's events of `day`, and the counts behind them."""
    begin = datetime.combine(day, time(0), tzinfo=timezone.utc)
    end = begin + timedelta(days=1)
    expected = labels[(labels["start"] < end) & (labels["end"] >= begin)]
    events = _day_events(lake, table, detector, day)
    counts = [
        metrics.overlap_segment_counts(_intervals(expected, entity), _intervals(events, entity))
        for entity in sorted(set(expected["entity_id"]) | set(events["entity_id"]))
    ]
    scores = metrics.segment_scores(counts)
    return {
        "precision": scores.precision,
        "recall": scores.recall,
        "f1": scores.f1,
        "labelled": float(len(expected)),
        "detected": float(len(events)),
        "found": float(sum(c.tp for c in counts)),
        "false_alarms": float(sum(c.fp for c in counts)),
    }


def _intervals(frame: pd.DataFrame, entity: str) -> list[tuple]:
    rows = frame[frame["entity_id"] == entity]
    return list(zip(rows["start"], rows["end"]))


def _day_events(lake: Lake, table: TableConfig, detector: str, day: date) -> pd.DataFrame:
    """entity_id, start, end (UTC) of the events in the day's partition (none when it has no events)."""
    events = read_snapshot(lake.events(table.name), {"detector": detector, "dt": day.isoformat()}, _EVENT_SPAN)
    if events is None:
        return pd.DataFrame({"entity_id": [], "start": pd.Series([], dtype="datetime64[us, UTC]"), "end": []})
    return events.assign(start=pd.to_datetime(events["start"], utc=True), end=pd.to_datetime(events["end"], utc=True))


def write_detection_metrics(
    lake: Lake, table: TableConfig, detectors: list[str], day: date, run_id: str | None = None
) -> dict[str, dict]:
    """Each detector's figures of `day` written to its detection_metrics partition (replaced when run again, in one
    Delta commit naming `run_id`, a fresh one by default); {} when the table has no labels or a detector has no
    events run of the day."""
    run_id = run_id or uuid.uuid4().hex[:12]
    labels = read_labels(lake, table)
    if labels is None:
        return {}
    out = {}
    for detector in detectors:
        record = latest_run_record(lake.root, table.name, f"events_{detector}", day)
        if record is None:
            continue
        figures = day_metrics(lake, table, detector, day, labels)
        _write_partition(lake, table, detector, day, str(record.get("model_version", "")), figures, run_id)
        out[detector] = figures
    return out


def _write_partition(
    lake: Lake, table: TableConfig, detector: str, day: date, version: str, figures: dict, run_id: str
) -> None:
    rows = {
        "model_version": [version] * len(figures),
        "metric": list(figures),
        "value": [None if pd.isna(v) else float(v) for v in figures.values()],
    }
    keys = {"table": table.name, "detector": detector}
    # One Delta commit: a reader sees the day's old figures or the new ones, never none.
    replace_partition_without_spark(
        pa.Table.from_pydict(rows, schema=SCHEMA), lake.detection_metrics(), keys, day.isoformat(), run_id, "check"
    )
