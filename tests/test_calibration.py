"""Calibration without labels: robust to contamination, monotone, JSON round trip."""
from __future__ import annotations

import numpy as np
import pytest

from models.calibration import Calibration, fit_calibration


def heldout(seed: int = 0, contamination: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.lognormal(0.0, 0.3, 5000)
    n_bad = int(contamination * scores.size)
    scores[:n_bad] *= 50  # anomalies that unlabelled held-out data contains
    return scores


@pytest.mark.parametrize("method", ["robust_z", "pot", "quantile"])
def test_normal_scores_are_rarely_flagged(method):
    calibration = fit_calibration(heldout(), method)
    fresh = heldout(seed=1)
    assert calibration.is_anomaly(fresh).mean() < 0.01


def test_robust_z_ignores_a_few_percent_of_anomalies_in_the_holdout():
    clean, dirty = fit_calibration(heldout()), fit_calibration(heldout(contamination=0.03))
    assert abs(clean.center - dirty.center) < 0.05 and abs(clean.scale / dirty.scale - 1) < 0.1


def test_transform_is_monotone_and_flags_large_scores():
    calibration = fit_calibration(heldout())
    raw = np.array([0.5, 1.0, 2.0, 100.0])
    assert np.all(np.diff(calibration.transform(raw)) > 0)
    assert calibration.is_anomaly(raw).tolist() == [False, False, False, True]


def test_round_trip_through_dict():
    calibration = fit_calibration(heldout(), "pot")
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        fit_calibration(np.array([1.0, np.nan] * 10))
    with pytest.raises(ValueError, match="not one of"):
        fit_calibration(heldout(), "magic")
