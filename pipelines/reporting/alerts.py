"""Alerts: one JSON message per table and day to a webhook when the day has new anomaly events or its check failed.

`anomalake alert --table T --date D` (the nightly DAG's check task calls it through a notifier when the Airflow
connection `anomalake_alerts` exists) builds the message from the lake: the day's new events of every detector
of the table (events that start on D; one that goes on from an earlier day was announced then), each with its
id, entity, span, severity and explanation, the problems of the day's check, and where the report is. Events once
announced are remembered (lake/_alerts/<table>/dt=D.json), so a re-run or a backfill of the day does not announce
them again, and a quiet, healthy day sends nothing. The post has a timeout and a few tries; a webhook that stays
down is logged and never fails the run (the events are in the lake either way).

Message schema (`"schema": "anomalake.alert/1"`): table, day, check {passed, problems}, detectors [{detector,
model_version, report, events [{event_id, entity_id, start, end, open, severity, peak_ts, explanation}]}], where
start/end/peak_ts are ISO 8601 UTC and explanation holds the table kind's explanation columns (top_feature,
feature_contributions, top_steps for metrics; regions or tokens for images and texts).
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.lake.checks import run_check
from anomalake.pipelines.lake.delta import read_snapshot
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.schemas import EXPLANATIONS

SCHEMA = "anomalake.alert/1"
TIMEOUT_SECONDS = 10.0
TRIES = 3
ANNOUNCED_DIR = "_alerts"


def _iso(value: Any) -> str | None:
    """ISO 8601 in UTC with its Z (a naive timestamp is UTC, as the lake's are)."""
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    return (stamp.tz_convert("UTC") if stamp.tzinfo else stamp).tz_localize(None).isoformat() + "Z"


def _plain(value: Any) -> Any:
    """An explanation value as JSON has it: arrays as lists, maps (read from Arrow as pairs) as objects, numpy
    scalars as numbers, timestamps as ISO 8601 strings."""
    if isinstance(value, np.ndarray):
        value = list(pd.to_datetime(value, utc=True)) if value.dtype.kind == "M" else value.tolist()
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (pd.Timestamp, np.datetime64, datetime)):
        return _iso(value)
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def report_location(base_url: str, table: str, detector: str, day: date) -> str:
    """Where the nightly report of a detector's day is, under the configured base URL (the lake's by default)."""
    return f"{base_url.rstrip('/')}/scores/{table}/detector={detector}/dt={day.isoformat()}/_report.html"


def _announced_path(lake: Lake, table: str, day: date) -> Path:
    return lake.root / ANNOUNCED_DIR / table / f"dt={day.isoformat()}.json"


def announced(lake: Lake, table: str, day: date) -> set[str]:
    """The event ids already announced for the table's day (and whether its failed check was)."""
    path = _announced_path(lake, table, day)
    return set(json.loads(path.read_text())["announced"]) if path.exists() else set()


def remember(lake: Lake, table: str, day: date, ids: set[str]) -> None:
    """Record what was announced, replacing the file atomically."""
    path = _announced_path(lake, table, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(json.dumps({"announced": sorted(ids)}, indent=1))
    os.replace(staged, path)


def _new_events(lake: Lake, table: TableConfig, detector: str, day: date, skip: set[str]) -> pd.DataFrame:
    events = read_snapshot(lake.events(table.name), {"detector": detector, "dt": day.isoformat()})
    if events is None or events.empty:
        return pd.DataFrame()
    fresh = events[events["new"].astype(bool) & ~events["event_id"].isin(skip)]
    return fresh.sort_values(["severity", "event_id"], ascending=[False, True], ignore_index=True)


def _event(row: pd.Series, kind: str) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        "entity_id": row["entity_id"],
        "start": _iso(row["start"]),
        "end": _iso(row["end"]),
        "open": bool(row["open"]),
        "severity": None if pd.isna(row["severity"]) else round(float(row["severity"]), 3),
        "peak_ts": _iso(row["peak_ts"]),
        "explanation": {f.name: _plain(row[f.name]) for f in EXPLANATIONS[kind] if f.name in row},
    }


def build_message(lake: Lake, table: TableConfig, day: date, base_url: str) -> tuple[dict | None, set[str]]:
    """The day's message (None when there is nothing new and the check passed) and every id announced for the day
    once it is sent (the earlier ones and its own: what `remember` keeps)."""
    skip = announced(lake, table.name, day)
    check = run_check(lake, table, list(table.detectors), day)
    detectors, ids = [], set()
    for detector in table.detectors:
        events = _new_events(lake, table, detector, day, skip)
        if events.empty:
            continue
        ids |= set(events["event_id"])
        detectors.append(
            {
                "detector": detector,
                "model_version": str(events["model_version"].iloc[0]),
                "report": report_location(base_url, table.name, detector, day),
                "events": [_event(row, table.kind) for _, row in events.iterrows()],
            }
        )
    failed = bool(check.problems) and f"check:{day.isoformat()}" not in skip
    if not detectors and not failed:
        return None, skip
    message = {
        "schema": SCHEMA,
        "table": table.name,
        "day": day.isoformat(),
        "check": {"passed": not check.problems, "problems": list(check.problems)},
        "detectors": detectors,
    }
    return message, skip | ids | ({f"check:{day.isoformat()}"} if failed else set())


def post(url: str, message: dict, timeout: float = TIMEOUT_SECONDS, tries: int = TRIES) -> str | None:
    """POST the message as JSON; None when the webhook took it (a 2xx answer), else what went wrong on the last try.
    Tries again after 1, 2, 4 ... seconds."""
    body = json.dumps(message).encode()
    problem = None
    for attempt in range(tries):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (the configured webhook)
                if 200 <= answer.status < 300:
                    return None
                problem = f"HTTP {answer.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            problem = str(getattr(error, "reason", error))
    return problem
