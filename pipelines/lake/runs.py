"""Run records: one small JSON per job run and day under lake/_runs/, read by `anomalake check` and as SQL `runs`.

A record says what a run read and wrote: run id, job, table, day, inputs and outputs with their row counts,
quarantined rows by reason, model version, code version and timings. A record whose rows do not balance
(rows_in = rows_out + context + quarantined) is refused, so a job that lost rows fails instead of reporting.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from anomalake.models.files import write_text_atomically
from anomalake.pipelines.lake.accounting import RowAccount
from anomalake.pipelines.lake.schemas import RUNS

RUNS_DIR = "_runs"


def code_version() -> str:
    """The installed anomalake version (what ran)."""
    try:
        return version("anomalake")
    except PackageNotFoundError:
        return "unknown"


def run_record_dir(lake: Path, table: str, job: str, day: date | str) -> Path:
    """lake/_runs/<table>/<job>/dt=<day>/ (job is windows, train_<detector> or score_<detector>)."""
    return lake / RUNS_DIR / table / job / f"dt={day if isinstance(day, str) else day.isoformat()}"


def check_balance(table: str, job: str, day: date, record: dict[str, Any]) -> None:
    """JobError unless rows_in = rows_out + context + quarantined (records without rows_in are not row jobs)."""
    if "rows_in" in record:
        RowAccount.from_record(record).check(f"table {table}, partition dt={day.isoformat()}", job)


def write_run_record(
    lake: Path, table: str, job: str, day: date, record: dict[str, Any], started_at: datetime | None = None
) -> Path:
    """Check the accounting, then write <run_id>.json atomically (temp file, fsync, rename) and return its path."""
    check_balance(table, job, day, record)
    folder = run_record_dir(lake, table, job, day)
    folder.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(timezone.utc)
    timing = (
        {"started_at": started_at.isoformat(), "seconds": round((finished - started_at).total_seconds(), 3)}
        if started_at
        else {}
    )
    payload = {
        "table": table,
        "job": job,
        "dt": day.isoformat(),
        "finished_at": finished.isoformat(),
        "code_version": code_version(),
        **timing,
        **record,
    }
    return write_text_atomically(folder / f"{record['run_id']}.json", json.dumps(payload, sort_keys=True, default=str))


def latest_run_record(lake: Path, table: str, job: str, day: date | str) -> dict[str, Any] | None:
    """The most recently finished run record of a job for a day, or None."""
    records = [json.loads(p.read_text()) for p in run_record_dir(lake, table, job, day).glob("*.json")]
    return max(records, key=lambda r: r["finished_at"]) if records else None


def read_runs(spark: SparkSession, lake: Path) -> DataFrame | None:
    """Every run record of the lake as one DataFrame (the `runs` view), or None before the first run."""
    root = lake / RUNS_DIR
    if not root.is_dir() or not any(root.rglob("*.json")):
        return None
    return (
        spark.read.schema(RUNS).option("recursiveFileLookup", "true").option("pathGlobFilter", "*.json").json(str(root))
    )
