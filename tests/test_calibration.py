"""Calibration without labels: one -log10 tail-probability scale, thresholds that keep their promise."""

from __future__ import annotations

import numpy as np
import pytest

from anomalake.models.calibration import MAX_SCORE, METHODS, Calibration, fit_calibration


def heldout(seed: int = 0, contamination: float = 0.0, n: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.lognormal(0.0, 0.3, n)
    n_bad = int(contamination * scores.size)
    scores[:n_bad] *= 50  # anomalies that unlabelled held-out data contains
    return scores


@pytest.mark.parametrize("method", METHODS)
def test_normal_scores_are_rarely_flagged(method):
    calibration = fit_calibration(heldout(), method, risk=1e-3, quantile=0.999, threshold_z=4.0, contamination=0.001)
    assert calibration.is_anomaly(heldout(seed=1)).mean() < 0.01


@pytest.mark.parametrize(
    "name, draw",
    [
        ("lognormal", lambda rng, n: rng.lognormal(0.0, 0.5, n)),
        ("gamma", lambda rng, n: rng.gamma(2.0, 1.0, n)),
        ("normal", lambda rng, n: rng.normal(5.0, 1.0, n)),
        ("pareto", lambda rng, n: rng.pareto(3.0, n)),
    ],
)
def test_extreme_value_threshold_keeps_the_target_false_alarm_rate(name, draw):
    rng = np.random.default_rng(11)
    calibration = fit_calibration(draw(rng, 20_000), "pot", risk=1e-3)
    false_alarms = calibration.is_anomaly(draw(rng, 1_000_000)).mean()
    assert 0.5e-3 <= false_alarms <= 2e-3, f"{name}: false-alarm rate {false_alarms:.2e} for a target of 1e-3"


def test_score_is_minus_log10_of_the_tail_probability():
    rng = np.random.default_rng(3)
    calibration = fit_calibration(rng.exponential(1.0, 50_000), "pot")
    # For Exp(1), P(X >= x) = exp(-x): x = ln(10) * k is "1 in 10^k".
    for k in (1.0, 2.0, 3.0, 4.0):
        assert calibration.transform(np.array([np.log(10) * k]))[0] == pytest.approx(k, abs=0.25)
    assert calibration.threshold == pytest.approx(3.0)


def test_robust_z_threshold_ignores_a_few_percent_of_anomalies_in_the_holdout():
    clean = fit_calibration(heldout(), "robust_z", threshold_z=3.0)
    dirty = fit_calibration(heldout(contamination=0.03), "robust_z", threshold_z=3.0)
    boundary = np.exp(3.0 * 1.4826 * 0.3 * 0.6745)  # about the lognormal's z = 3 point
    assert clean.is_anomaly(np.array([boundary * 1.2]))[0] and dirty.is_anomaly(np.array([boundary * 1.2]))[0]
    assert not clean.is_anomaly(np.array([1.0]))[0] and not dirty.is_anomaly(np.array([1.0]))[0]


def test_contamination_flags_about_that_share_of_the_holdout():
    scores = heldout(contamination=0.02)
    calibration = fit_calibration(scores, "contamination", contamination=0.02)
    assert 0.015 <= calibration.is_anomaly(scores).mean() <= 0.025


def test_transform_is_monotone_finite_and_flags_large_scores():
    calibration = fit_calibration(heldout(), "pot", risk=1e-3)
    raw = np.array([0.0, 0.5, 1.0, 2.0, 100.0, 1e30])
    calibrated = calibration.transform(raw)
    assert np.all(np.diff(calibrated) >= 0) and np.all(np.diff(calibrated[1:4]) > 0)
    assert np.all(np.isfinite(calibrated)) and calibrated.max() <= MAX_SCORE
    assert calibration.is_anomaly(raw).tolist() == [False, False, False, False, True, True]


def test_round_trip_through_dict():
    calibration = fit_calibration(heldout(), "pot")
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        fit_calibration(np.array([1.0, np.nan] * 10))
    with pytest.raises(ValueError, match="not one of"):
        fit_calibration(heldout(), "magic")


def test_mad_threshold_sits_at_median_plus_z_robust_deviations_of_the_raw_scores():
    raw = heldout(contamination=0.02)
    calibration = fit_calibration(raw, "mad", threshold_z=6.0)
    center = np.median(raw)
    spread = 1.4826 * np.median(np.abs(raw - center))
    assert calibration.threshold == pytest.approx(float(calibration.transform(center + 6.0 * spread)))
    assert not calibration.is_anomaly(np.array([center + 5.5 * spread]))[0]
    assert calibration.is_anomaly(np.array([center + 6.5 * spread]))[0]


def test_a_threshold_past_a_bounded_tail_still_flags_what_the_tail_calls_impossible():
    # uniform held-out scores: the fitted tail ends near 1; robust_z on logs wants a threshold far past it
    raw = np.random.default_rng(3).uniform(0.0, 1.0, 5000)
    calibration = fit_calibration(raw, "robust_z", threshold_z=40.0)
    assert calibration.threshold < MAX_SCORE
    assert calibration.is_anomaly(np.array([50.0]))[0] and not calibration.is_anomaly(np.array([0.5]))[0]


def test_no_method_demands_rarer_than_one_in_a_million():
    # scores spread evenly over decades below a hard top: robust_z on their logs lands far past the largest
    raw = np.exp(np.random.default_rng(4).uniform(-10.0, 0.0, 5000))
    capped = fit_calibration(raw, "robust_z", threshold_z=3.0)
    uncapped = fit_calibration(raw, "robust_z", threshold_z=3.0, max_threshold=MAX_SCORE)
    assert uncapped.threshold > 6.0 and capped.threshold == 6.0
    assert fit_calibration(raw, "pot", risk=1e-3).threshold == pytest.approx(3.0)
