"""VUS-ROC, VUS-PR and the sliding length held to TSB-AD's published code (PyPI TSB-AD 1.5, installed by the
Makefile without its deep-learning dependencies) on real NAB series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from TSB_AD.evaluation.basic_metrics import generate_curve
from TSB_AD.utils.slidingWindows import find_length_rank

from anomalake.pipelines.evaluation import vus
from anomalake.pipelines.evaluation.datasets import load_nab

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"
SERIES = (
    "realAdExchange/exchange-2_cpc_results.csv",
    "realAdExchange/exchange-4_cpc_results.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "artificialWithAnomaly/art_load_balancer_spikes.csv",
)


@pytest.fixture(scope="module")
def nab_series():
    chosen = {s.group: s for s in load_nab(NAB) if s.group in SERIES}
    assert sorted(chosen) == sorted(SERIES)
    return [chosen[name] for name in SERIES]


def deviation_score(values: np.ndarray) -> np.ndarray:
    """A plain detector: distance from the trailing median, rounded so that scores tie as real ones do."""
    median = pd.Series(values).rolling(24, min_periods=1).median().to_numpy()
    return np.round(np.abs(values - median), 2)


def published(labels: np.ndarray, scores: np.ndarray, length: int) -> tuple[float, float]:
    curve = generate_curve(labels.astype(int), scores, length, "opt", 250)
    return curve[6], curve[7]


def test_sliding_length_is_tsb_ads_on_real_series(nab_series):
    for s in nab_series:
        values = s.frame["value"].to_numpy(float)
        assert vus.sliding_length(values) == find_length_rank(values, rank=1), s.group
    # the fallback: no autocorrelation peak in 3..300
    assert vus.sliding_length(np.zeros(500)) == find_length_rank(np.zeros(500), rank=1) == 125


def test_volumes_match_tsb_ad_on_real_series(nab_series):
    lengths = set()
    for s in nab_series:
        values = s.frame["value"].to_numpy(float)
        length = vus.sliding_length(values)
        lengths.add(length)
        scores = deviation_score(values)
        expected = published(s.labels, scores, length)
        got = vus.volumes(s.labels, scores, length)
        assert got.roc == pytest.approx(expected[0], abs=1e-12), s.group
        assert got.pr == pytest.approx(expected[1], abs=1e-12), s.group
    assert len(lengths) == len(SERIES)  # four different buffers, 6 to 125 steps


def test_a_wrong_score_order_lowers_both_volumes(nab_series):
    s = nab_series[3]  # load balancer spikes: the deviation score finds them
    values = s.frame["value"].to_numpy(float)
    length = vus.sliding_length(values)
    right = vus.volumes(s.labels, deviation_score(values), length)
    wrong = vus.volumes(s.labels, -deviation_score(values), length)
    assert wrong.roc == pytest.approx(published(s.labels, -deviation_score(values), length)[0], abs=1e-12)
    assert right.roc > 0.6 > wrong.roc
    assert right.pr > 2 * wrong.pr


def test_no_labelled_step_gives_no_volume():
    got = vus.volumes(np.zeros(100, int), np.arange(100.0), 10)
    assert np.isnan(got.roc) and np.isnan(got.pr)
