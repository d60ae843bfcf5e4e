"""The report's alert-volume verdict: a day's flagged share against the model's expected share and the last days'."""

from __future__ import annotations

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
