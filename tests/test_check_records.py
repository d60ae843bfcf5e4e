"""The nightly check on hand-written run records: the alert-volume jump rule, the latest record of a day wins."""

from __future__ import annotations

from datetime import date, timedelta

from anomalake.pipelines.lake.checks import run_check
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.runs import write_run_record

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
