"""Run records: one row per job run and day in the lake's `runs` Delta table, read by `anomalake check`, the
report and the events job, and as SQL `runs`.

A record says what a run read and wrote: run id, job, table, day, inputs and outputs with their row counts,
quarantined rows by reason, model version, code version and timings. A record whose rows do not balance
(rows_in = rows_out + context + quarantined) is refused, so a job that lost rows fails instead of reporting.

The table (lake/runs, partitioned by table, job and dt) only grows: each job run appends its records of all its
days in one commit (delta-rs, no Spark: the nightly check and Airflow's processes write and read it too) whose
user metadata names the run, and the latest record of a day is the one that counts. Appends of other runs never
conflict: a commit that lost a race goes in on the next version. Beside the typed columns that SQL reads,
`record` keeps each record whole as JSON, which is what `latest_run_record` returns. A lake written before the
table existed kept one JSON file per record under lake/_runs/; the first append imports them, so no history is
lost.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql.pandas.types import to_arrow_schema

from anomalake.pipelines.lake.accounting import RowAccount
from anomalake.pipelines.lake.delta import read_snapshot
from anomalake.pipelines.lake.layout import Lake, is_delta
from anomalake.pipelines.lake.schemas import RUNS

PARTITION_COLUMNS = ["table", "job", "dt"]
RECORD_SCHEMA = to_arrow_schema(RUNS).append(pa.field("record", pa.string()))
LEGACY_RUNS_DIR = "_runs"  # one JSON file per record, before the table existed


def runs_root(lake: Path) -> Path:
    """lake/runs: the run records' Delta table."""
    return Lake(Path(lake)).runs()


def code_version() -> str:
    """The installed anomalake version (what ran)."""
    try:
        return version("anomalake")
    except PackageNotFoundError:
        return "unknown"


def check_balance(table: str, job: str, day: date, record: Mapping[str, Any]) -> None:
    """JobError unless rows_in = rows_out + context + quarantined (records without rows_in are not row jobs)."""
    if "rows_in" in record:
        RowAccount.from_record(record).check(f"table {table}, partition dt={day.isoformat()}", job)


def write_run_records(
    lake: Path, table: str, job: str, records: Mapping[date, Mapping[str, Any]], started_at: datetime | None = None
) -> None:
    """Check every day's accounting, then append the records (day -> record with its run_id) in one commit."""
    for day, record in records.items():
        check_balance(table, job, day, record)
    finished = datetime.now(timezone.utc)
    timing = (
        {"started_at": started_at.isoformat(), "seconds": round((finished - started_at).total_seconds(), 3)}
        if started_at
        else {}
    )
    base = {"table": table, "job": job, "finished_at": finished.isoformat(), "code_version": code_version(), **timing}
    append_records(lake, [{**base, "dt": day.isoformat(), **record} for day, record in sorted(records.items())])


def write_run_record(
    lake: Path, table: str, job: str, day: date, record: Mapping[str, Any], started_at: datetime | None = None
) -> None:
    """One day's record (see `write_run_records`)."""
    write_run_records(lake, table, job, {day: record}, started_at)


def append_records(lake: Path, payloads: list[dict[str, Any]]) -> None:
    """Append whole records as they are (no accounting check) in one commit that names their run and job."""
    from deltalake import CommitProperties, write_deltalake

    root = runs_root(lake)
    payloads = [*_legacy_records(lake, root), *payloads]
    if not payloads:
        return
    rows = pa.Table.from_pylist([_row(p) for p in payloads], schema=RECORD_SCHEMA)
    metadata = {"run_id": payloads[-1].get("run_id"), "job": payloads[-1].get("job")}
    # delta-rs retries a commit that lost a race on the next version itself, and appends never conflict.
    write_deltalake(
        str(root.resolve()),
        rows,
        mode="append",
        partition_by=PARTITION_COLUMNS,
        commit_properties=CommitProperties(custom_metadata={"userMetadata": json.dumps(metadata, sort_keys=True)}),
    )


def _row(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A record as a row of the table: its typed columns (the quarantined map as pairs) and the whole record."""
    row = {field.name: payload.get(field.name) for field in RECORD_SCHEMA if field.name != "record"}
    row["quarantined"] = sorted((payload.get("quarantined") or {}).items())
    for column in ("inputs", "outputs"):
        row[column] = [{k: c.get(k) for k in ("table", "partition", "rows")} for c in payload.get(column) or []]
    row["record"] = json.dumps(payload, sort_keys=True, default=str)
    return row


def _legacy_records(lake: Path, root: Path) -> list[dict[str, Any]]:
    """The JSON records of a lake written before the runs table, when the table does not exist yet."""
    legacy = Path(lake) / LEGACY_RUNS_DIR
    if is_delta(root) or not legacy.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(legacy.rglob("*.json"))]


def run_records(lake: Path, table: str, job: str, day: date | str) -> list[dict[str, Any]]:
    """Every record of a job for a day, oldest first (read without Spark)."""
    dt = day if isinstance(day, str) else day.isoformat()
    rows = read_snapshot(runs_root(lake), {"table": table, "job": job, "dt": dt}, columns=["record"])
    records = [] if rows is None else [json.loads(r) for r in rows["record"]]
    return sorted(records, key=lambda r: r["finished_at"])


def latest_run_records(lake: Path, table: str, job: str, days: Iterable[date]) -> dict[date, dict[str, Any]]:
    """The most recently finished record of each of `days` that has one, in one read of the table."""
    by_name = {day.isoformat(): day for day in days}
    rows = read_snapshot(
        runs_root(lake), {"table": table, "job": job}, ["dt", "record"], ds.field("dt").isin(list(by_name))
    )
    latest: dict[date, dict[str, Any]] = {}
    for dt, text in [] if rows is None else zip(rows["dt"], rows["record"]):
        record, day = json.loads(text), by_name[dt]
        if day not in latest or record["finished_at"] > latest[day]["finished_at"]:
            latest[day] = record
    return latest


def latest_run_record(lake: Path, table: str, job: str, day: date | str) -> dict[str, Any] | None:
    """The most recently finished run record of a job for a day, or None."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    return latest_run_records(lake, table, job, [day]).get(day)
