"""The report without Spark: the alert-volume verdict (a day's flagged share against the model's expected share and the
last days'), and a day whose events run found no event."""

from __future__ import annotations

from datetime import date

from anomalake.pipelines.reporting.report import RateVerdict


def test_a_44_percent_day_is_red_against_the_expected_rate_even_after_days_of_33_percent():
    verdict = RateVerdict(today=0.44, expected=10.0**-3, usual=0.33, days=3)
    assert verdict.red and verdict.over_expected and not verdict.over_usual
    page = verdict.html()
    assert 'class="verdict bad"' in page and "the model's expected 0.10%" in page and "on average" not in page


def test_a_jump_over_the_usual_share_is_red_and_says_so():
    verdict = RateVerdict(today=0.05, expected=0.03, usual=0.02, days=14)
    assert verdict.red and verdict.over_usual and not verdict.over_expected
    assert "red: more than 2x 2.00% on average over 14 earlier days" in verdict.html()


def test_a_day_under_the_expected_share_is_green_whatever_a_quiet_history_says():
    assert not RateVerdict(today=0.0009, expected=0.001, usual=0.0, days=5).red
    assert not RateVerdict(today=0.0015, expected=0.001, usual=None, days=0).red  # 1.5x the expected share
    assert 'class="verdict ok"' in RateVerdict(0.0015, 0.001, None, 0).html()
    over_history = RateVerdict(today=0.0015, expected=0.001, usual=0.0005, days=5)
    assert over_history.red and not over_history.over_expected


def test_new_events_per_entity_are_judged_the_same_way_against_their_bound():
    verdict = RateVerdict(today=3.0, expected=1.2, usual=0.5, days=7, events=True)
    assert verdict.red and verdict.over_expected and verdict.over_usual
    page = verdict.html()
    assert page.startswith("<p>New events:") and "3.00 per entity today" in page and "at most 1.20 per entity" in page
    assert not RateVerdict(today=0.4, expected=1.2, usual=0.1, days=7, events=True).red  # under the bound: quiet


def test_a_day_whose_events_job_found_no_event_says_so(tmp_path, tiny_table):
    """The report of a scored day after an events run that found none (no events table at all yet)."""
    import pandas as pd
    import pyarrow as pa
    from deltalake import write_deltalake

    from anomalake.pipelines.lake.layout import Lake
    from anomalake.pipelines.lake.runs import write_run_record
    from anomalake.pipelines.reporting.report import build_report

    day, lake = date(2026, 3, 20), Lake(tmp_path)
    scores = pd.DataFrame(
        {
            "entity_id": ["a", "a"],
            "ts": pd.to_datetime(["2026-03-20 00:00", "2026-03-20 00:05"], utc=True),
            "raw_score": [0.1, 0.2],
            "score": [0.5, 0.7],
            "threshold": [3.0, 3.0],
            "is_anomaly": [False, False],
            "model_version": ["v1", "v1"],
            "run_id": ["s1", "s1"],
            "detector": ["dense_autoencoder"] * 2,
            "dt": [day.isoformat()] * 2,
        }
    )
    write_deltalake(str(lake.scores("telemetry")), pa.Table.from_pandas(scores), partition_by=["detector", "dt"])
    score = {"run_id": "s1", "rows_in": 2, "rows_out": 2, "anomalies": 0, "quarantined": {}}
    write_run_record(lake.root, "telemetry", "score_dense_autoencoder", day, score)
    events = {"run_id": "e1", "rows_in": 2, "rows_out": 0, "context": 2, "new_events": 0, "entities": 1}
    write_run_record(lake.root, "telemetry", "events_dense_autoencoder", day, events)
    page = build_report(lake, tiny_table, "dense_autoencoder", day)
    assert "<h2>Events</h2><p>No event on this day.</p>" in page and "No anomaly flagged in this partition" in page
    assert "events_dense_autoencoder run e1" in page and 'class="verdict ok"' in page
