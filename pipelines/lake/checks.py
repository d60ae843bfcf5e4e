"""The nightly check: read a day's run records and refuse a night whose accounting or anomaly rate is off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.lake.accounting import RowAccount
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.runs import latest_run_record

HISTORY_DAYS = 14
JUMP_FACTOR = 5.0
RATE_FLOOR = 0.002  # a jump is judged against at least this rate, so a quiet history does not flag noise


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


def _jump(lake: Lake, table: str, job: str, day: date, rate: float) -> list[str]:
    history = [latest_run_record(lake.root, table, job, day - timedelta(days=n)) for n in range(1, HISTORY_DAYS + 1)]
    rates = [r["anomalies"] / r["rows_out"] for r in history if r and r["rows_out"]]
    if len(rates) < 3:
        return []
    usual = max(sum(rates) / len(rates), RATE_FLOOR)
    if rate > JUMP_FACTOR * usual:
        return [f"{job}: anomaly rate {rate:.2%} is over {JUMP_FACTOR:g}x the last {len(rates)} days' {usual:.2%}"]
    return []


def run_check(lake: Lake, table: TableConfig, detectors: list[str], day: date) -> CheckResult:
    """Row accounting of windows and of each detector's scores, the error rate, and the anomaly-rate jump."""
    problems: list[str] = []
    windows = latest_run_record(lake.root, table.name, "windows", day)
    if windows is None:
        return CheckResult(day, ("no windows run recorded",), {})
    problems += _accounting("windows", windows)
    rates = {}
    for detector in detectors:
        job = f"score_{detector}"
        record = latest_run_record(lake.root, table.name, job, day)
        if record is None:
            problems.append(f"{job}: no run recorded for dt={day}")
            continue
        problems += _accounting(job, record)
        if record["rows_in"] != windows["rows_out"]:
            problems.append(f"{job}: scored {record['rows_in']} windows, the windows job wrote {windows['rows_out']}")
        account = RowAccount.from_record(record)
        if account.quarantine_problem(table.max_quarantine_share):
            problems.append(f"{job}: {account.quarantined_total} of {account.rows_in} windows could not be scored")
        rates[detector] = record["anomalies"] / record["rows_out"] if record["rows_out"] else 0.0
        problems += _jump(lake, table.name, job, day, rates[detector])
    return CheckResult(day, tuple(problems), rates)
