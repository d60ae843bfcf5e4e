"""The run records' table and the nightly check on hand-written records: one commit per run, concurrent appends,
older lakes' JSON records imported, the alert-volume jump rule, the latest record of a day wins."""

from __future__ import annotations

import json
import multiprocessing
from datetime import date, timedelta
from pathlib import Path

import pytest

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.lake.checks import run_check
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.runs import run_records, runs_root, write_run_record, write_run_records

DAY = date(2026, 3, 20)


def night(lake: Lake, day: date, new_events: int, rows: int = 1000, entities: int = 10) -> None:
    """The run records of one healthy night: windows, scores, and events with `new_events` new events."""
    windows = {"run_id": f"w{day}", "rows_in": rows, "rows_out": rows, "context": 0, "quarantined": {}}
    write_run_record(lake.root, "telemetry", "windows", day, windows)
    score = {"run_id": f"s{day}", "rows_in": rows, "rows_out": rows, "anomalies": 0, "quarantined": {}}
    write_run_record(lake.root, "telemetry", "score_dense_autoencoder", day, score)
    events = {
        "run_id": f"e{day}",
        "rows_in": rows,
        "rows_out": 10 * new_events,
        "context": rows - 10 * new_events,
        "quarantined": {},
        "events": new_events,
        "new_events": new_events,
        "entities": entities,
    }
    write_run_record(lake.root, "telemetry", "events_dense_autoencoder", day, events)


def test_a_sudden_jump_in_the_anomaly_rate_is_flagged(tmp_path, tiny_table):
    lake = Lake(tmp_path)
    for n in range(1, 8):
        night(lake, DAY - timedelta(days=n), new_events=3)
    night(lake, DAY, new_events=4)
    assert run_check(lake, tiny_table, ["dense_autoencoder"], DAY).problems == ()
    night(lake, DAY + timedelta(days=1), new_events=40)  # 4 new events per entity, against 0.3 before
    problems = run_check(lake, tiny_table, ["dense_autoencoder"], DAY + timedelta(days=1)).problems
    assert len(problems) == 1 and "4.00 new events per entity is over 5x the last 8 days' 0.31" in problems[0]


def test_a_short_history_does_not_judge_jumps(tmp_path, tiny_table):
    lake = Lake(tmp_path)
    night(lake, DAY - timedelta(days=1), new_events=0)
    night(lake, DAY, new_events=90)
    assert run_check(lake, tiny_table, ["dense_autoencoder"], DAY).problems == ()


def test_the_latest_record_of_a_day_wins(tmp_path, tiny_table):
    lake = Lake(tmp_path)
    night(lake, DAY, new_events=5)
    assert run_check(lake, tiny_table, ["dense_autoencoder"], DAY).problems == ()
    # A later re-run of the score job that saw fewer windows than the windows job wrote: its record is the one judged.
    rerun = {"run_id": "rerun", "rows_in": 990, "rows_out": 990, "anomalies": 5, "quarantined": {}}
    write_run_record(lake.root, "telemetry", "score_dense_autoencoder", DAY, rerun)
    problems = run_check(lake, tiny_table, ["dense_autoencoder"], DAY).problems
    assert problems == (
        "score_dense_autoencoder: scored 990 windows, the windows job wrote 1000",
        "events_dense_autoencoder: saw 1000 windows, the score job wrote 990",
    )
    # And a re-run after it that agrees again wins over both.
    again = {"run_id": "again", "rows_in": 1000, "rows_out": 1000, "anomalies": 5, "quarantined": {}}
    write_run_record(lake.root, "telemetry", "score_dense_autoencoder", DAY, again)
    assert run_check(lake, tiny_table, ["dense_autoencoder"], DAY).problems == ()


def test_a_run_appends_all_its_days_in_one_commit_and_an_unbalanced_day_writes_nothing(tmp_path):
    from deltalake import DeltaTable

    days = [DAY, DAY + timedelta(days=1)]
    good = {day: {"run_id": "r1", "rows_in": 5, "rows_out": 4, "context": 1} for day in days}
    write_run_records(tmp_path, "telemetry", "windows", good)
    log = DeltaTable(str(runs_root(tmp_path)))
    assert log.version() == 0 and json.loads(log.history(1)[0]["userMetadata"]) == {"job": "windows", "run_id": "r1"}
    bad = {**good, days[1]: {"run_id": "r2", "rows_in": 5, "rows_out": 5, "context": 1}}
    bad = {day: {**record, "run_id": "r2"} for day, record in bad.items()}
    with pytest.raises(JobError, match="partition dt=2026-03-21: windows row accounting does not balance"):
        write_run_records(tmp_path, "telemetry", "windows", bad)
    assert DeltaTable(str(runs_root(tmp_path))).version() == 0  # the balanced day of that run was not written either
    assert [r["run_id"] for r in run_records(tmp_path, "telemetry", "windows", days[1])] == ["r1"]


def _append_eight(lake_and_worker: tuple[str, int]) -> None:
    lake, worker = lake_and_worker
    for n in range(8):
        record = {"run_id": f"w{worker}-{n}", "rows_in": 1, "rows_out": 1}
        write_run_record(Path(lake), f"table{worker}", "windows", DAY + timedelta(days=n), record)


def test_runs_appending_at_once_all_land(tmp_path):
    # spawn: a forked child would inherit delta-rs's runtime threads from this process, and could hang on them
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_eight, [(str(tmp_path), worker) for worker in range(4)])
    days = [DAY + timedelta(days=n) for n in range(8)]
    found = {r["run_id"] for w in range(4) for day in days for r in run_records(tmp_path, f"table{w}", "windows", day)}
    assert found == {f"w{w}-{n}" for w in range(4) for n in range(8)}


def test_the_json_records_of_an_older_lake_are_imported_by_the_first_append(tmp_path):
    folder = tmp_path / "_runs" / "telemetry" / "windows" / f"dt={DAY}"
    folder.mkdir(parents=True)
    old = {
        "table": "telemetry",
        "job": "windows",
        "dt": DAY.isoformat(),
        "run_id": "old",
        "rows_in": 2,
        "rows_out": 2,
        "finished_at": "2026-03-20T01:00:00+00:00",
        "quarantined": {"bad_value": 0},
    }
    (folder / "old.json").write_text(json.dumps(old))
    write_run_record(
        tmp_path, "telemetry", "score_dense_autoencoder", DAY, {"run_id": "new", "rows_in": 2, "rows_out": 2}
    )
    assert run_records(tmp_path, "telemetry", "windows", DAY) == [old]
    write_run_record(
        tmp_path, "telemetry", "score_dense_autoencoder", DAY, {"run_id": "again", "rows_in": 2, "rows_out": 2}
    )
    assert len(run_records(tmp_path, "telemetry", "windows", DAY)) == 1  # imported once
