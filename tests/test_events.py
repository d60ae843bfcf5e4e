"""The event stage on hand-made score series: what a spike, a level shift, a slow drift and a quiet series give."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from anomalake.pipelines.config import ConfigError, EventSettings, parse_table
from anomalake.pipelines.events.detection import (
    dynamic_threshold,
    entity_events,
    merge,
    prune,
    sample_events,
    sequences_above,
    trailing_mean,
)

FIRST = date(2026, 3, 1)
DAYS = [FIRST + timedelta(days=i) for i in range(10)]
PER_DAY = 288  # 5-minute windows
SETTINGS = EventSettings()
CALIBRATED = 3.0  # the held-out threshold on the calibrated scale (the fallback's)


def frame(values: np.ndarray) -> pd.DataFrame:
    ts = pd.date_range(FIRST.isoformat(), periods=len(values), freq="5min", tz="UTC")
    return pd.DataFrame({"ts": ts, "raw_score": values, "score": values})


def quiet(seed: int = 0) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(1.0, 0.2, PER_DAY * len(DAYS)))


def events(values: np.ndarray, days=DAYS, settings=SETTINGS) -> list[dict]:
    return entity_events("host-1", frame(values), days, settings, CALIBRATED, "dense_autoencoder")


def at(day: int, hour: float) -> int:
    return day * PER_DAY + int(hour * 12)


def test_a_quiet_series_gives_no_event():
    assert events(quiet()) == []


def test_a_spike_is_one_event_on_its_day():
    values = quiet()
    values[at(8, 8) : at(8, 8.5)] += 5.0
    (event,) = events(values)
    assert event["dt"] == DAYS[8].isoformat() and event["new"] and not event["open"]
    assert event["start"] <= pd.Timestamp(f"{DAYS[8]} 08:00", tz="UTC") <= event["end"]
    assert event["severity"] == pytest.approx(values.max()) and event["threshold_source"] == "history"


def test_a_persistent_level_shift_is_one_event_not_every_window_for_days():
    values = quiet()
    values[at(7, 10) :] += 3.0  # from day 7, 10:00 on, for good
    found = events(values)
    assert len({e["event_id"] for e in found}) == 1 and found[0]["new"] and found[0]["dt"] == DAYS[7].isoformat()
    flagged = sum(e["windows"] for e in found)
    assert flagged < PER_DAY, f"{flagged} windows flagged: the threshold must follow the new level"


def test_a_slow_drift_gives_no_event():
    values = quiet() + np.linspace(0.0, 2.0, PER_DAY * len(DAYS))
    assert events(values) == []


def test_an_event_open_at_midnight_goes_on_next_day_under_the_same_id():
    values = quiet()
    values[at(8, 22) : at(9, 2)] += 6.0
    found = events(values)
    assert [e["dt"] for e in found] == [DAYS[8].isoformat(), DAYS[9].isoformat()]
    yesterday, today = found
    assert yesterday["open"] and yesterday["new"] and not today["new"] and not today["open"]
    assert today["event_id"] == yesterday["event_id"] and today["start"] == yesterday["start"]
    assert today["start"] < pd.Timestamp(f"{DAYS[9]}", tz="UTC") < today["end"]


def test_a_day_gives_the_same_events_whatever_range_it_is_computed_in():
    values = quiet(3)
    values[at(8, 22) : at(9, 2)] += 6.0
    values[at(6, 12) : at(6, 12.2)] += 4.0
    alone = {d: events(values, [d]) for d in DAYS}
    together = events(values)
    assert [e for d in DAYS for e in alone[d]] == together
    # ... and in a range that starts later (a backfill that reaches the day from the other side)
    assert events(values[: at(10, 0)], DAYS[8:]) == [e for e in together if e["dt"] >= DAYS[8].isoformat()]


def test_too_little_history_falls_back_to_the_held_out_threshold():
    values = quiet()
    values[at(1, 6) : at(1, 7)] = 5.0  # day 1 has one day of history (min_history_days is 3)
    (event,) = events(values, DAYS[:3])
    assert (
        event["threshold_source"] == "calibration" and event["threshold"] is None and event["dt"] == DAYS[1].isoformat()
    )


def test_images_and_texts_flag_samples_against_the_tables_trailing_scores():
    rng = np.random.default_rng(1)
    rows = []
    for i, day in enumerate(DAYS):
        raw = np.abs(rng.normal(1.0, 0.1, 50))
        if i == 9:
            raw[7] = 9.0  # one odd sample on the last day
        rows.append(
            pd.DataFrame(
                {
                    "entity_id": [f"img-{i}-{j}" for j in range(50)],
                    "ts": pd.Timestamp(day, tz="UTC"),
                    "raw_score": raw,
                    "score": raw,
                }
            )
        )
    found = sample_events(pd.concat(rows, ignore_index=True), DAYS[-1:], SETTINGS, CALIBRATED, "conv_autoencoder")
    assert [(e["entity_id"], e["windows"], e["threshold_source"]) for e in found] == [("img-9-7", 1, "history")]


def test_the_threshold_pieces():
    errors = np.r_[np.ones(100), 10.0, 10.0, np.ones(100)]
    epsilon = dynamic_threshold(errors, 2.0, 10.0)
    assert 1.0 < epsilon < 10.0
    assert sequences_above(errors, epsilon, 3) == [(97, 104)]
    assert merge([(0, 2), (5, 6), (30, 31)], gap=3) == [(0, 6), (30, 31)]
    spiky = np.r_[np.ones(50), 5.0, np.ones(50), 5.1, np.ones(50)]
    assert prune(spiky, [(50, 50), (101, 101)], 0.1) == [(50, 50), (101, 101)]  # both stand out from the rest
    np.testing.assert_array_equal(trailing_mean(np.arange(5.0), 2), [0.0, 0.5, 1.5, 2.5, 3.5])


def test_the_events_block_of_a_table_is_validated():
    table = parse_table("t", {"features": ["a"], "window": {"length": 4}, "events": {"history_days": 3, "padding": 0}})
    assert table.events.history_days == 3 and table.events.padding == 0
    with pytest.raises(ConfigError, match="events method 'magic'"):
        parse_table("t", {"features": ["a"], "window": {"length": 4}, "events": {"method": "magic"}})
    with pytest.raises(ConfigError, match=r"table t: events: unknown key 'windw'"):
        parse_table("t", {"features": ["a"], "window": {"length": 4}, "events": {"windw": 3}})


def test_a_large_anomaly_in_the_history_hides_no_smaller_one_today():
    values = quiet()
    values[at(5, 3) : at(5, 5)] += 30.0  # a large incident two days before: it inflates the history's std
    values[at(7, 12) : at(7, 13)] += 4.0
    found = [e for e in events(values) if e["dt"] == DAYS[7].isoformat()]
    assert len(found) == 1 and found[0]["new"], found
    one_round = [
        e for e in events(values, settings=dataclasses.replace(SETTINGS, rounds=0)) if e["dt"] == DAYS[7].isoformat()
    ]
    assert one_round == [], "without the threshold found again, the large incident hides today's"


def test_an_event_must_also_be_unusual_against_the_calibration():
    values = quiet() * 0.5  # a very quiet entity: its calibrated scores stay below the held-out threshold
    values[at(7, 12) : at(7, 13)] += 1.0  # stands out from its own days, not from what the model learnt as normal
    assert events(values) == []
    lenient = dataclasses.replace(SETTINGS, above_calibration=False)
    assert [e["dt"] for e in events(values, settings=lenient)] == [DAYS[7].isoformat()]


def outage(values: np.ndarray, first: int, last: int) -> pd.DataFrame:
    """The windows of `values` without those of [first, last): the entity sent nothing then."""
    return frame(values).drop(index=range(first, last)).reset_index(drop=True)


def test_a_long_outage_gives_no_event_inside_it():
    values = quiet()
    down, up = at(8, 6), at(8, 16)  # ten hours without windows
    values[down - 6 : down] += 5.0  # unusual just before the host went down ...
    values[up : up + 6] += 5.0  # ... and again as it came back
    found = entity_events("host-1", outage(values, down, up), DAYS, SETTINGS, CALIBRATED, "dense_autoencoder")
    went_down, came_back = frame(values)["ts"][down], frame(values)["ts"][up]
    assert len(found) == 2, [(e["start"], e["end"]) for e in found]
    for event in found:
        assert event["end"] < went_down or event["start"] >= came_back, (event["start"], event["end"])
    # Before the fix, padding and merging bridged the ten hours: one event from 05:30 to 16:30.


def test_an_event_before_an_outage_over_midnight_closes_and_tomorrow_starts_anew():
    values = quiet()
    down, up = at(8, 20), at(9, 6)
    values[down - 6 : down] += 6.0
    values[up : up + 6] += 6.0
    found = entity_events("host-1", outage(values, down, up), DAYS, SETTINGS, CALIBRATED, "dense_autoencoder")
    assert [e["dt"] for e in found] == [DAYS[8].isoformat(), DAYS[9].isoformat()]
    evening, morning = found
    assert not evening["open"] and morning["new"] and morning["event_id"] != evening["event_id"]
