"""The nightly check: read a day's run records and refuse a night whose accounting or alert volume is off.

The alert volume is the events job's: new events per entity, against the last nights' (an anomaly rate of
windows says little once windows are grouped into events).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.lake.accounting import RowAccount
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.runs import latest_run_record, latest_run_records

HISTORY_DAYS = 14
JUMP_FACTOR = 5.0
RATE_FLOOR = 0.2  # new events per entity: a jump is judged against at least this, so a quiet history flags no noise


@dataclass(frozen=True)
class CheckResult:
    """What was checked for one day, and every problem found (empty when the night is healthy)."""

    day: date
    problems: tuple[str, ...]
    anomaly_rates: dict[str, float]


def _accounting(name: str, record: dict) -> list[str]:
    account = RowAccount.from_record(record)
    out = account.rows_out + account.context + account.quarantined_total
    return [] if account.balanced else [f"{name}: rows in {account.rows_in} != rows out + quarantined {out}"]


def events_per_entity(record: dict) -> float:
    """New events per entity of an events run record."""
    return record["new_events"] / max(record.get("entities", 0), 1)


def _jump(lake: Lake, table: str, job: str, day: date, rate: float) -> list[str]:
    history = latest_run_records(lake.root, table, job, [day - timedelta(days=n) for n in range(1, HISTORY_DAYS + 1)])
    rates = [events_per_entity(r) for r in history.values()]
    if len(rates) < 3:
        return []
    usual = max(sum(rates) / len(rates), RATE_FLOOR)
    if rate > JUMP_FACTOR * usual:
        return [
            f"{job}: {rate:.2f} new events per entity is over {JUMP_FACTOR:g}x the last {len(rates)} days' {usual:.2f}"
        ]
    return []


def run_check(lake: Lake, table: TableConfig, detectors: list[str], day: date) -> CheckResult:
    """Row accounting of windows, of each detector's scores and events, the error rate, and the alert-volume jump.

    anomaly_rates: new events per entity of each detector's events run.
    """
    problems: list[str] = []
    windows = latest_run_record(lake.root, table.name, "windows", day)
    if windows is None:
        return CheckResult(day, ("no windows run recorded",), {})
    problems += _accounting("windows", windows)
    rates = {}
    for detector in detectors:
        scored = _scores_problems(lake, table, detector, day, windows)
        problems += scored
        job = f"events_{detector}"
        record = latest_run_record(lake.root, table.name, job, day)
        if record is None:
            problems.append(f"{job}: no run recorded for dt={day}")
            continue
        problems += _accounting(job, record)
        score = latest_run_record(lake.root, table.name, f"score_{detector}", day)
        if score is not None and record["rows_in"] != score["rows_out"]:
            problems.append(f"{job}: saw {record['rows_in']} windows, the score job wrote {score['rows_out']}")
        rates[detector] = events_per_entity(record)
        problems += _jump(lake, table.name, job, day, rates[detector])
    return CheckResult(day, tuple(problems), rates)


def _scores_problems(lake: Lake, table: TableConfig, detector: str, day: date, windows: dict) -> list[str]:
    """The score job's record of the day: present, balanced, all windows seen, few enough unscorable."""
    job = f"score_{detector}"
    record = latest_run_record(lake.root, table.name, job, day)
    if record is None:
        return [f"{job}: no run recorded for dt={day}"]
    problems = _accounting(job, record)
    if record["rows_in"] != windows["rows_out"]:
        problems.append(f"{job}: scored {record['rows_in']} windows, the windows job wrote {windows['rows_out']}")
    account = RowAccount.from_record(record)
    if account.quarantine_problem(table.max_quarantine_share):
        problems.append(f"{job}: {account.quarantined_total} of {account.rows_in} windows could not be scored")
    return problems
