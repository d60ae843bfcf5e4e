"""Time-series anomaly benchmark metrics, computed as the field's reference code computes them.

- OrionBench "contextual" overlap-segment counts and F1: sintel-dev/Orion orion/evaluation/contextual.py
  (`_overlap_segment`, `_pad`), orion/evaluation/common.py (`_overlap`), orion/results.py (`get_f1_scores`).
- NAB score: numenta/NAB nab/sweeper.py (`scaledSigmoid`, `Sweeper.calcSweepScore`,
  `Sweeper.calcScoreByThreshold`, `Sweeper._getProbationaryLength`), nab/scorer.py (`scoreDataSet`, which
  scores through the Sweeper), nab/runner.py (`Runner.normalize`), config/profiles.json.
- Point-wise precision/recall/F1, ROC AUC and average precision (scikit-learn).

Pure numpy / pandas / scikit-learn: no Spark, no TensorFlow.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

Interval = tuple[Any, Any]

# numenta/NAB config/profiles.json (CostMatrix tpWeight / fpWeight / fnWeight / tnWeight).
NAB_PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0, "tn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0, "tn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0, "tn": 1.0},
}
# nab/runner.py: Runner.probationaryPercent; nab/sweeper.py caps the period at 15 % of 5000 rows.
NAB_PROBATION_PERCENT = 0.15
NAB_PROBATION_CAP_ROWS = 5000


@dataclass(frozen=True)
class SegmentCounts:
    """Overlap-segment confusion counts of one series (Orion has no true negatives here)."""

    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class Scores:
    """Precision, recall and F1; NaN where a ratio is 0/0, as Orion reports it."""

    precision: float
    recall: float
    f1: float


def flags_to_intervals(timestamps: Sequence[Any], flags: Sequence[bool]) -> list[Interval]:
    """Contiguous runs of flagged steps as closed (start, end) intervals of timestamps."""
    # pd.Index(...).tolist() yields pandas Timestamps for datetimes and Python ints for integers.
    values = pd.Index(timestamps).tolist()
    flagged = np.asarray(flags, dtype=bool)
    if len(values) != len(flagged):
        raise ValueError(f"{len(values)} timestamps but {len(flagged)} flags")
    edges = np.diff(np.concatenate([[0], flagged.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(values[s], values[e]) for s, e in zip(starts, stops)]


def _overlaps(a: Interval, b: Interval) -> bool:
    """Whether closed intervals a and b share at least one instant."""
    # Orion pads every end by one (contextual.py `_pad`: (start, end + 1)) and then asks for a strict
    # overlap (common.py `_overlap`: (e0 - o1) * (e1 - o0) < 0). On integer timestamps that is exactly
    # "the closed intervals share a point": touching by one step overlaps, adjacent runs do not.
    return a[0] <= b[1] and b[0] <= a[1]


def overlap_segment_counts(expected: Sequence[Interval], detected: Sequence[Interval]) -> SegmentCounts:
    """Orion's overlap-segment counts (contextual_confusion_matrix with weighted=False) of one series."""
    # contextual.py `_overlap_segment`: a label is one tp however many detections hit it, else one fn;
    # a detection overlapping no label is one fp; a detection spanning two labels makes both tp.
    tp = sum(any(_overlaps(e, d) for d in detected) for e in expected)
    fp = sum(not any(_overlaps(e, d) for e in expected) for d in detected)
    return SegmentCounts(tp=tp, fp=fp, fn=len(expected) - tp)


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0 (pandas division in orion/results.py)."""
    return num / den if den else math.nan


def _scores(tp: float, fp: float, fn: float) -> Scores:
    """Precision, recall and F1 from counts; F1 is NaN when precision + recall is 0 or NaN."""
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return Scores(precision, recall, _ratio(2 * precision * recall, precision + recall))


def segment_scores(counts: Sequence[SegmentCounts]) -> Scores:
    """Precision, recall and F1 of a category: tp, fp and fn summed over its series first."""
    # orion/results.py `get_f1_scores`: groupby(dataset, pipeline)[fp, fn, tp].sum(), then the ratios.
    return _scores(sum(c.tp for c in counts), sum(c.fp for c in counts), sum(c.fn for c in counts))


def pointwise_scores(labels: np.ndarray, flags: np.ndarray) -> Scores:
    """Point-wise precision, recall and F1 of boolean flags against boolean labels."""
    truth, pred = np.asarray(labels, dtype=bool), np.asarray(flags, dtype=bool)
    if truth.shape != pred.shape:
        raise ValueError(f"labels {truth.shape} and flags {pred.shape} differ in shape")
    tp = int(np.sum(truth & pred))
    return _scores(tp, int(np.sum(~truth & pred)), int(np.sum(truth & ~pred)))


def _single_class(labels: np.ndarray) -> bool:
    return np.unique(np.asarray(labels, dtype=bool)).size < 2


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of anomaly scores; NaN when the labels hold one class only."""
    # scikit-learn raises on one class; a benchmark table wants a missing value instead.
    return math.nan if _single_class(labels) else float(roc_auc_score(np.asarray(labels, dtype=bool), scores))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN when one class only."""
    # average_precision_score only warns on a missing positive class; NaN keeps both cases alike.
    if _single_class(labels):
        return math.nan
    return float(average_precision_score(np.asarray(labels, dtype=bool), scores))


def nab_scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid 2 / (1 + e^(5y)) - 1 of a relative position y (-1 window start, 0 its end)."""
    # nab/sweeper.py scaledSigmoid: anything more than three window lengths past a window is exactly -1.
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def _nab_weights(profile: str | Mapping[str, float]) -> Mapping[str, float]:
    return NAB_PROFILES[profile] if isinstance(profile, str) else profile


def _probationary_length(n: int) -> float:
    """Rows at the start of a series whose detections NAB ignores."""
    # nab/sweeper.py Sweeper._getProbationaryLength (and nab/util.py getProbationPeriod).
    return min(math.floor(NAB_PROBATION_PERCENT * n), NAB_PROBATION_PERCENT * NAB_PROBATION_CAP_ROWS)


def _window_rows(timestamps: Sequence[Any], windows: Sequence[Interval]) -> list[tuple[int, int]]:
    """First and last row index of each window (rows whose timestamp lies in the closed window)."""
    index = pd.Index(timestamps)
    if not index.is_monotonic_increasing:
        raise ValueError("timestamps must be sorted")
    rows = []
    for start, end in sorted(windows, key=lambda w: w[0]):
        left, right = int(index.searchsorted(start, "left")), int(index.searchsorted(end, "right")) - 1
        if right < left:
            raise ValueError(f"window ({start}, {end}) covers no timestamp")
        if rows and left <= rows[-1][1]:
            raise ValueError(f"window ({start}, {end}) overlaps the previous one")  # NAB merges these when labelling
        rows.append((left, right))
    return rows


def _nab_tp(i: int, left: int, right: int, a_tp: float) -> float:
    """Reward of a detection at row i inside window [left, right]; A_TP at the window's first row."""
    # nab/sweeper.py calcSweepScore: position -(right - i + 1) / width, weighted tpWeight / scaledSigmoid(-1).
    position = -(right - i + 1) / (right - left + 1)
    return nab_scaled_sigmoid(position) * a_tp / nab_scaled_sigmoid(-1.0)


def _nab_fp(i: int, windows: list[tuple[int, int]], a_fp: float) -> float:
    """Penalty (negative) of a detection at row i outside every window."""
    rights = [right for _, right in windows]
    k = bisect.bisect_left(rights, i) - 1  # the closest window that ended before row i
    if k < 0:
        return -a_fp  # nab/sweeper.py: no preceding window scores as if very far from one
    left, right = windows[k]
    width = right - left + 1
    # nab/sweeper.py divides by (width - 1), which fails for a one-row window; there we take the older
    # nab/scorer.py Scorer.getScore rule (relative position 2.0).
    position = (i - right) / (width - 1) if width > 1 else 2.0
    return nab_scaled_sigmoid(position) * a_fp


def nab_raw_score(
    timestamps: Sequence[Any],
    flags: Sequence[bool],
    windows: Sequence[Interval],
    profile: str | Mapping[str, float] = "standard",
) -> float:
    """Raw NAB score of one series' binary detections against its labelled anomaly windows."""
    weights = _nab_weights(profile)
    detected = np.asarray(flags, dtype=bool)
    if len(detected) != len(timestamps):
        raise ValueError(f"{len(timestamps)} timestamps but {len(detected)} flags")
    rows = _window_rows(timestamps, windows)
    # Rows before this are "probationary" in nab/sweeper.py and dropped from scoring altogether.
    first_scored = math.ceil(_probationary_length(len(detected)))
    in_window = np.zeros(len(detected), dtype=bool)
    score = 0.0
    for left, right in rows:
        in_window[left : right + 1] = True
        lo = max(left, first_scored)
        if lo > right:
            continue  # a window wholly in the probationary period is neither found nor missed
        hits = np.flatnonzero(detected[lo : right + 1])
        # calcScoreByThreshold keeps the max per window, starting at -fnWeight; the sigmoid falls with
        # the position, so the max is the first detection's reward.
        score += _nab_tp(lo + int(hits[0]), left, right, weights["tp"]) if hits.size else -weights["fn"]
    for i in np.flatnonzero(detected & ~in_window):
        if i >= first_scored:
            score += _nab_fp(int(i), rows, weights["fp"])
    return score


def nab_score(
    series: Sequence[tuple[Sequence[Any], Sequence[bool], Sequence[Interval]]],
    profile: str | Mapping[str, float] = "standard",
) -> float:
    """Normalised NAB score 100 * (S - S_null) / (S_perfect - S_null) over (timestamps, flags, windows)."""
    weights = _nab_weights(profile)
    # nab/runner.py Runner.normalize: raw scores are summed over all files first; S_null is the null
    # detector (no detections) and S_perfect is tpWeight per labelled window, which is what one
    # detection on every window's first row earns (the sweeper divides by scaledSigmoid(-1)).
    raw = sum(nab_raw_score(ts, flags, windows, weights) for ts, flags, windows in series)
    null = sum(nab_raw_score(ts, np.zeros(len(ts), dtype=bool), windows, weights) for ts, _, windows in series)
    perfect = weights["tp"] * sum(len(windows) for _, _, windows in series)
    return _ratio(100.0 * (raw - null), perfect - null)
