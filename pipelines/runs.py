"""Run records: one small JSON per job run under lake/_runs/, read back by `anomalake check`."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any


def run_record_dir(lake: Path, table: str, job: str, day: date | str) -> Path:
    """lake/_runs/<table>/<job>/dt=<day>/ (job is windows, or score_<detector>)."""
    return lake / "_runs" / table / job / f"dt={day if isinstance(day, str) else day.isoformat()}"


def write_run_record(lake: Path, table: str, job: str, day: date, record: dict[str, Any]) -> Path:
    """Write <run_id>.json atomically (temp file, then rename) and return its path."""
    folder = run_record_dir(lake, table, job, day)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"table": table, "job": job, "dt": day.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(), **record}
    target = folder / f"{record['run_id']}.json"
    tmp = folder / f".{record['run_id']}.json.tmp"
    tmp.write_text(json.dumps(payload, sort_keys=True, default=str))
    tmp.replace(target)
    return target


def latest_run_record(lake: Path, table: str, job: str, day: date | str) -> dict[str, Any] | None:
    """The most recently finished run record of a job for a day, or None."""
    records = [json.loads(p.read_text()) for p in run_record_dir(lake, table, job, day).glob("*.json")]
    return max(records, key=lambda r: r["finished_at"]) if records else None
