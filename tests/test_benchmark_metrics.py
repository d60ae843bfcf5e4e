"""Benchmark metrics against numbers worked out by hand: intervals, Orion overlap segments, point-wise, AUCs, NAB."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anomalake.pipelines.evaluation.metrics import (
    NAB_PROFILES,
    SegmentCounts,
    flags_to_intervals,
    nab_raw_score,
    nab_scaled_sigmoid,
    nab_score,
    overlap_segment_counts,
    pointwise_scores,
    pr_auc,
    roc_auc,
    segment_scores,
)

# ---- flags_to_intervals


def test_intervals_at_start_end_and_single_points():
    flags = [1, 1, 0, 0, 1, 0, 0, 0, 1, 1]
    # runs: rows 0-1, row 4 alone, rows 8-9 (the last step)
    assert flags_to_intervals(range(10), flags) == [(0, 1), (4, 4), (8, 9)]


def test_intervals_none_and_all():
    assert flags_to_intervals(range(5), [0] * 5) == []
    assert flags_to_intervals(range(5), [1] * 5) == [(0, 4)]
    assert flags_to_intervals([], []) == []


def test_intervals_are_timestamps_not_row_numbers():
    ints = flags_to_intervals([100, 200, 300, 400], [0, 1, 1, 0])
    assert ints == [(200, 300)] and all(type(v) is int for v in ints[0])
    ts = pd.date_range("2026-02-03", periods=4, freq="5min")
    ((start, end),) = flags_to_intervals(ts, [0, 1, 1, 0])
    assert isinstance(start, pd.Timestamp) and (start, end) == (ts[1], ts[2])


def test_intervals_length_mismatch():
    with pytest.raises(ValueError):
        flags_to_intervals(range(3), [1, 0])


# ---- Orion overlap segments


def test_detection_overlapping_a_label_by_one_step_is_tp():
    # label 10..20, detection 20..25 share step 20 (Orion: (10,21) vs (20,26) -> (10-26)*(21-20) < 0)
    assert overlap_segment_counts([(10, 20)], [(20, 25)]) == SegmentCounts(tp=1, fp=0, fn=0)


def test_adjacent_detection_does_not_overlap():
    # 21..25 starts one step after 10..20 ends (Orion: (10-26)*(21-21) = 0, not < 0) -> fp, label missed
    assert overlap_segment_counts([(10, 20)], [(21, 25)]) == SegmentCounts(tp=0, fp=1, fn=1)


def test_detection_touching_nothing_is_fp():
    assert overlap_segment_counts([(10, 20)], [(30, 35)]) == SegmentCounts(tp=0, fp=1, fn=1)


def test_two_detections_in_one_label_give_one_tp_no_fp():
    assert overlap_segment_counts([(10, 20)], [(11, 12), (15, 16)]) == SegmentCounts(tp=1, fp=0, fn=0)


def test_one_detection_spanning_two_labels_gives_two_tp():
    assert overlap_segment_counts([(10, 20), (30, 40)], [(15, 35)]) == SegmentCounts(tp=2, fp=0, fn=0)


def test_missed_label_is_fn():
    assert overlap_segment_counts([(10, 20), (50, 60)], [(12, 13)]) == SegmentCounts(tp=1, fp=0, fn=1)


def test_overlap_with_pandas_timestamps():
    t = pd.Timestamp("2026-02-03")
    m = pd.Timedelta(minutes=5)
    expected = [(t, t + 4 * m)]
    assert overlap_segment_counts(expected, [(t + 4 * m, t + 6 * m), (t + 9 * m, t + 9 * m)]) == SegmentCounts(1, 1, 0)


def test_summing_before_f1_differs_from_averaging_per_series_f1():
    a = SegmentCounts(tp=1, fp=0, fn=0)  # P 1, R 1, F1 1
    b = SegmentCounts(tp=1, fp=3, fn=0)  # P 1/4, R 1, F1 2*(1/4)/(5/4) = 0.4
    per_series_mean = (segment_scores([a]).f1 + segment_scores([b]).f1) / 2  # (1 + 0.4) / 2 = 0.7
    pooled = segment_scores([a, b])  # tp 2, fp 3, fn 0: P 2/5, R 1, F1 0.8 / 1.4 = 4/7
    assert per_series_mean == pytest.approx(0.7)
    assert pooled.precision == pytest.approx(0.4) and pooled.recall == 1.0
    assert pooled.f1 == pytest.approx(4 / 7)


def test_zero_over_zero_is_nan_as_in_orion_results():
    # no detections: precision 0/0 -> NaN, recall 0/2 = 0, F1 NaN
    none = segment_scores([SegmentCounts(tp=0, fp=0, fn=2)])
    assert math.isnan(none.precision) and none.recall == 0.0 and math.isnan(none.f1)
    # only wrong detections: P 0/1 = 0, R 0/1 = 0, F1 0/0 -> NaN (pandas division in orion/results.py)
    wrong = segment_scores([SegmentCounts(tp=0, fp=1, fn=1)])
    assert wrong.precision == 0.0 and wrong.recall == 0.0 and math.isnan(wrong.f1)


# ---- point-wise


def test_pointwise_hand_case():
    labels = np.array([0, 0, 1, 1, 1, 0], dtype=bool)
    flags = np.array([0, 1, 1, 0, 1, 0], dtype=bool)
    # tp rows 2, 4; fp row 1; fn row 3 -> P 2/3, R 2/3, F1 2/3
    s = pointwise_scores(labels, flags)
    assert (s.precision, s.recall, s.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


# ---- ROC / PR AUC


def test_roc_and_pr_auc_hand_case():
    labels = np.array([0, 0, 1, 1], dtype=bool)
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    # ROC: positive-negative pairs ranked right: (.35>.1), (.8>.1), (.8>.4); wrong: (.35<.4) -> 3/4
    assert roc_auc(labels, scores) == pytest.approx(0.75)
    # AP: by score .8 (pos, P 1, R 1/2), .4 (neg), .35 (pos, P 2/3, R 1) -> 1/2*1 + 1/2*2/3 = 5/6
    assert pr_auc(labels, scores) == pytest.approx(5 / 6)


def test_auc_single_class_is_nan():
    assert math.isnan(roc_auc(np.zeros(4, dtype=bool), np.arange(4.0)))
    assert math.isnan(pr_auc(np.zeros(4, dtype=bool), np.arange(4.0)))
    assert math.isnan(roc_auc(np.ones(4, dtype=bool), np.arange(4.0)))


# ---- NAB
# One series of 100 integer steps; probationary period floor(0.15 * 100) = 15 rows; one window 50..59
# (width 10). Scaled sigmoid s(y) = 2 / (1 + e^(5y)) - 1 = tanh(-2.5 y); s(-1) = tanh(2.5) = 0.9866143.

N = 100
TS = list(range(N))
WINDOW = [(50, 59)]


def flags_at(*rows: int) -> np.ndarray:
    flags = np.zeros(N, dtype=bool)
    flags[list(rows)] = True
    return flags


def test_nab_profiles_match_config_profiles_json():
    assert NAB_PROFILES["standard"] == {"tp": 1.0, "fp": 0.11, "fn": 1.0, "tn": 1.0}
    assert NAB_PROFILES["reward_low_FP_rate"]["fp"] == 0.22
    assert NAB_PROFILES["reward_low_FN_rate"]["fn"] == 2.0


def test_nab_scaled_sigmoid_reference_points():
    # nab/sweeper.py docstring: s(-1) = 0.98661, s(-0.5) = 0.84828, s(0) = 0, s(1) = -0.98661; > 3 -> -1
    assert nab_scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab_scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab_scaled_sigmoid(0.0) == 0.0
    assert nab_scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab_scaled_sigmoid(3.5) == -1.0


def test_nab_detection_at_window_start_earns_a_tp():
    # position -(59 - 50 + 1) / 10 = -1 -> s(-1) * 1.0 / s(-1) = 1.0
    assert nab_raw_score(TS, flags_at(50), WINDOW) == pytest.approx(1.0)


def test_nab_late_detection_earns_less():
    # row 57: position -(59 - 57 + 1) / 10 = -0.3 -> tanh(0.75) / tanh(2.5) = 0.6351490 / 0.9866143 = 0.6437663
    assert nab_raw_score(TS, flags_at(57), WINDOW) == pytest.approx(0.6437663, abs=1e-6)


def test_nab_only_first_detection_in_window_counts():
    # rows 50 and 57 in the window: the window scores its best (first) detection, 1.0, once
    assert nab_raw_score(TS, flags_at(50, 57), WINDOW) == pytest.approx(1.0)


def test_nab_detection_after_window_is_sigmoid_weighted_fp_and_window_missed():
    # row 65: position (65 - 59) / (10 - 1) = 2/3 -> s = -tanh(5/3) = -0.9311096; * A_FP 0.11 = -0.1024221
    # the window has no detection: -A_FN = -1 -> total -1.1024221
    assert nab_raw_score(TS, flags_at(65), WINDOW) == pytest.approx(-1.1024221, abs=1e-6)


def test_nab_fp_far_after_window_and_before_any_window_cost_full_a_fp():
    # row 95: (95 - 59) / 9 = 4 > 3 -> s = -1 -> -0.11; with the window found at row 50: 1 - 0.11 = 0.89
    assert nab_raw_score(TS, flags_at(50, 95), WINDOW) == pytest.approx(0.89)
    # row 20: after probation, no preceding window -> -A_FP = -0.11; 1 - 0.11 = 0.89
    assert nab_raw_score(TS, flags_at(20, 50), WINDOW) == pytest.approx(0.89)


def test_nab_missed_window_costs_a_fn():
    assert nab_raw_score(TS, flags_at(), WINDOW) == pytest.approx(-1.0)


def test_nab_detection_in_probationary_period_is_ignored():
    # row 5 < 15 is dropped, so the score is that of row 50 alone: 1.0 (it would be 1 - 0.11 otherwise)
    assert nab_raw_score(TS, flags_at(5, 50), WINDOW) == pytest.approx(1.0)
    assert nab_raw_score(TS, flags_at(14), WINDOW) == pytest.approx(-1.0)
    # row 15 is the first scored row: -0.11 - 1 (window missed)
    assert nab_raw_score(TS, flags_at(15), WINDOW) == pytest.approx(-1.11)


def test_nab_profiles_change_the_raw_score_as_expected():
    late_fp = flags_at(65)  # s = -0.9311096 after the window, window missed
    assert nab_raw_score(TS, late_fp, WINDOW, "standard") == pytest.approx(-1 - 0.11 * 0.9311096, abs=1e-6)
    # low FN rate doubles the miss: -2 - 0.1024221 = -2.1024221
    assert nab_raw_score(TS, late_fp, WINDOW, "reward_low_FN_rate") == pytest.approx(-2.1024221, abs=1e-6)
    # low FP rate doubles the fp weight: -1 - 0.22 * 0.9311096 = -1.2048441
    assert nab_raw_score(TS, late_fp, WINDOW, "reward_low_FP_rate") == pytest.approx(-1.2048441, abs=1e-6)
    # a true positive is worth the same under all three (A_TP = 1)
    for profile in NAB_PROFILES:
        assert nab_raw_score(TS, flags_at(57), WINDOW, profile) == pytest.approx(0.6437663, abs=1e-6)


def test_nab_timestamps_and_int_rows_agree():
    ts = pd.date_range("2026-02-03", periods=N, freq="5min")
    window = [(ts[50], ts[59])]
    assert nab_raw_score(ts, flags_at(57, 65), window) == pytest.approx(nab_raw_score(TS, flags_at(57, 65), WINDOW))


def test_nab_normalised_perfect_is_100_and_null_is_0():
    windows_b = [(30, 39), (70, 79)]
    perfect = [(TS, flags_at(50), WINDOW), (TS, flags_at(30, 70), windows_b)]
    null = [(TS, flags_at(), WINDOW), (TS, flags_at(), windows_b)]
    for profile in NAB_PROFILES:
        assert nab_score(perfect, profile) == pytest.approx(100.0)
        assert nab_score(null, profile) == pytest.approx(0.0)


def test_nab_normalised_sums_files_before_normalising():
    # file A: its one window found at the start: 1.0; file B: three windows all missed: -3
    # S = -2, S_null = -1 - 3 = -4, S_perfect = 4 -> 100 * (-2 + 4) / (4 + 4) = 25
    # (averaging per-file normalised scores would give (100 + 0) / 2 = 50)
    three = [(20, 29), (50, 59), (80, 89)]
    series = [(TS, flags_at(50), WINDOW), (TS, flags_at(), three)]
    assert nab_score(series) == pytest.approx(25.0)


def test_nab_normalised_can_be_negative():
    # window missed and an fp before it: S = -0.11 - 1, S_null = -1, S_perfect = 1 -> 100 * -0.11 / 2 = -5.5
    assert nab_score([(TS, flags_at(20), WINDOW)]) == pytest.approx(-5.5)
