"""VUS-ROC and VUS-PR (Paparrizos et al., VLDB 2022), as the TSB-AD benchmark defines and computes them.

TSB-AD ranks detectors by the volume under range-based ROC and PR surfaces: each labelled range is widened
by a buffer whose weight falls off as a square root, the buffer goes from 0 to the sliding length, and the
areas are averaged over the buffer widths. This is a port of TSB-AD 1.5's `RangeAUC_volume_opt` (250
thresholds at evenly spaced ranks of the sorted scores) with its loop over thresholds replaced by cumulative
sums over the score order, so a full NAB run costs seconds instead of minutes; tests/ hold it to the
published code. The sliding length is TSB-AD's `find_length_rank`: the strongest autocorrelation period of
the series' first metric, 125 where none lies in 3..300.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import argrelextrema

THRESHOLDS = 250
DEFAULT_SLIDING_LENGTH = 125
_ACF_LAGS, _ACF_BASE, _ACF_POINTS = 400, 3, 20_000


class Volumes(NamedTuple):
    roc: float
    pr: float


def sliding_length(values: np.ndarray) -> int:
    """TSB-AD's sliding length for a series (find_length_rank, rank 1): the lag of the highest local maximum
    of the autocorrelation from lag 3 on, among the first 20,000 points; 125 when there is none in 3..300."""
    x = np.asarray(values, dtype=float)[:_ACF_POINTS]
    x = x[np.isfinite(x)] - np.nanmean(x) if np.isfinite(x).any() else x[:0]
    denominator = float(np.dot(x, x))
    if len(x) <= _ACF_BASE + 2 or denominator == 0.0:
        return DEFAULT_SLIDING_LENGTH
    lags = np.arange(_ACF_BASE, min(_ACF_LAGS, len(x) - 1) + 1)
    acf = np.array([np.dot(x[: len(x) - k], x[k:]) for k in lags]) / denominator
    peaks = argrelextrema(acf, np.greater)[0]
    if len(peaks) == 0:
        return DEFAULT_SLIDING_LENGTH
    best = int(peaks[np.argmax(acf[peaks])])
    return DEFAULT_SLIDING_LENGTH if best < 3 or best > 300 else best + _ACF_BASE


def volumes(labels: np.ndarray, scores: np.ndarray, length: int) -> Volumes:
    """(VUS-ROC, VUS-PR) of scores against 0/1 labels with buffers 0..length; NaN when nothing is labelled."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    ranges = _ranges(labels)
    if not ranges:
        return Volumes(float("nan"), float("nan"))
    order = np.argsort(-scores, kind="stable")
    ascending = np.sort(scores)
    cuts = ascending[::-1][np.linspace(0, len(scores) - 1, THRESHOLDS).astype(int)]
    predicted = len(scores) - np.searchsorted(ascending, cuts, side="left")  # rows with score >= cut
    labelled_hits = np.cumsum(labels[order])[predicted - 1]
    areas = [
        _areas(labels, scores, ranges, order, cuts, predicted, labelled_hits, window) for window in range(length + 1)
    ]
    roc, pr = np.mean(np.array(areas), axis=0)
    return Volumes(float(roc), float(pr))


def _areas(labels, scores, ranges, order, cuts, predicted, labelled_hits, window: int) -> tuple[float, float]:
    """Range-AUC-ROC and range-AP for one buffer width, every threshold at once."""
    extended = _extended(labels, ranges, window)
    merged = _merged(ranges, window, len(labels))
    # Within the buffered ranges a predicted row counts with its buffer weight; labelled rows count in full.
    true_positives = np.cumsum(extended[order])[predicted - 1]
    counted = labels.sum() + true_positives - labelled_hits
    peaks = np.array([scores[a : b + 1].max() for a, b in merged])
    existence = (peaks[None, :] >= cuts[:, None]).sum(axis=1) / len(merged)
    positives = (labels.sum() + counted) / 2
    tpr = np.minimum(true_positives / positives, 1) * existence
    fpr = (predicted - true_positives) / (len(labels) - positives)
    precision = true_positives / predicted
    tpr_curve = np.concatenate([[0.0], tpr, [1.0]])
    fpr_curve = np.concatenate([[0.0], fpr, [1.0]])
    roc = float(np.dot(np.diff(fpr_curve), (tpr_curve[1:] + tpr_curve[:-1]) / 2))
    pr = float(np.dot(np.diff(tpr_curve[:-1]), precision))
    return roc, pr


def _ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of labelled rows."""
    edges = np.diff(np.concatenate([[0], labels, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def _extended(labels: np.ndarray, ranges: list, window: int) -> np.ndarray:
    """Labels with a square-root buffer of window // 2 rows on each side of every range (TSB-AD's
    `sequencing`)."""
    out, n, half = labels.astype(float), len(labels), window // 2
    for start, end in ranges:
        after = np.arange(end + 1, min(end + half + 1, n))
        out[after] += np.sqrt(1 - (after - end) / window)
        before = np.arange(max(start - half, 0), start)
        out[before] += np.sqrt(1 - (start - before) / window)
    return np.minimum(out, 1.0)


def _merged(ranges: list, window: int, n: int) -> list[tuple[int, int]]:
    """The buffered ranges, overlapping ones merged (TSB-AD's `new_sequence`)."""
    half = window // 2
    merged, start = [], max(ranges[0][0] - half, 0)
    for (_, end), (next_start, _) in zip(ranges, ranges[1:]):
        if end + half < next_start - half:
            merged.append((start, end + half))
            start = next_start - half
    merged.append((start, min(ranges[-1][1] + half, n - 1)))
    return merged
