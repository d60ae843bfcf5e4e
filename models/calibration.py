"""Raw score -> calibrated score -> is_anomaly, fitted on held-out scores without labels.

Merlion's split: the detector gives a raw score on its own scale; the calibration maps it to one scale shared
by every family, the negative base-10 logarithm of the estimated probability that a normal sample scores at
least this high (3 = as rare as 1 in 1,000 normal samples); a threshold on that scale decides.

The tail probability is estimated from held-out scores: the empirical distribution up to the
`tail_quantile`, and above it a generalised Pareto distribution fitted to the excesses (peaks over
threshold, as in SPOT), which extrapolates beyond the largest held-out score. The methods differ only in
where the threshold is put:
- `pot`: at the target false-alarm rate `risk` (threshold = -log10(risk));
- `quantile`: at the held-out score's `quantile`;
- `robust_z`: at median + `threshold_z` robust standard deviations (1.4826 MAD) of the log raw scores;
  median and MAD ignore the few anomalies that unlabelled held-out data always contains;
- `mad`: at median + `threshold_z` robust standard deviations (1.4826 MAD) of the raw scores themselves:
  for scores whose log spreads widely (a window's peak residual), where `robust_z` lands past the tail;
- `contamination`: at the (1 - `contamination`) quantile, for a user who knows the anomaly rate.
Every threshold is capped at `max_threshold` (default 6, one in a million held-out samples).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

METHODS = ("pot", "quantile", "robust_z", "mad", "contamination")
MAX_SCORE = 30.0  # past a bounded tail's end, or rarer than 1 in 10^30: the scale saturates (raw_score still ranks)
_EPS = 1e-12
_BODY_KNOTS = 256


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: the held-out score distribution (body knots + GPD tail) and a threshold."""

    method: str
    threshold: float
    body_raw: tuple[float, ...]
    body_score: tuple[float, ...]
    tail_start: float
    tail_share: float
    tail_shape: float
    tail_scale: float
    n_holdout: int

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated score: -log10 of the estimated tail probability of each raw score."""
        raw = np.asarray(raw, dtype=np.float64)
        body = np.interp(raw, self.body_raw, self.body_score, left=0.0)
        excess = np.maximum(raw - self.tail_start, 0.0)
        tail = -np.log10(self.tail_share) - _gpd_log_sf(excess, self.tail_shape, self.tail_scale) / np.log(10)
        return np.minimum(np.where(raw > self.tail_start, tail, body), MAX_SCORE)

    def is_anomaly(self, raw: np.ndarray) -> np.ndarray:
        """Flags: calibrated score above the threshold."""
        return self.transform(raw) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (calibration.json)."""
        values = asdict(self)
        values["body_raw"], values["body_score"] = list(self.body_raw), list(self.body_score)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Calibration":
        """Rebuild from `to_dict`."""
        return cls(**{**values, "body_raw": tuple(values["body_raw"]), "body_score": tuple(values["body_score"])})


def _gpd_log_sf(excess: np.ndarray, shape: float, scale: float) -> np.ndarray:
    """Natural log of the generalised Pareto survival function (-inf past a bounded tail's end)."""
    if abs(shape) < 1e-9:
        return -excess / scale
    inner = 1.0 + shape * excess / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inner > 0, -np.log(np.maximum(inner, 1e-300)) / shape, -np.inf)


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Shape and scale of a generalised Pareto fit to positive excesses, never with a bounded tail.

    A negative shape puts an end on the tail; a few hundred held-out excesses cannot locate that end, and a
    wrong one makes every later score just past it "impossible" (the scale's top), which on NAB flagged
    ordinary windows by the dozen. Such fits fall back to the exponential tail (shape 0) of the same mean.
    """
    shape, scale = _fit_gpd_any(excesses)
    if shape < 0:
        return 0.0, max(float(np.mean(excesses)), _EPS)
    return shape, scale


def _fit_gpd_any(excesses: np.ndarray) -> tuple[float, float]:
    """Shape and scale of a generalised Pareto fit to positive excesses (MLE, moments when MLE is unsound)."""
    from scipy import stats

    mean, var = float(np.mean(excesses)), float(np.var(excesses))
    moments_shape = 0.5 * (1.0 - mean * mean / var) if var > 0 else 0.0
    moments = (moments_shape, max(0.5 * mean * (mean * mean / var + 1.0), _EPS) if var > 0 else max(mean, _EPS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape, _, scale = stats.genpareto.fit(excesses, floc=0.0)
    except Exception:  # scipy's optimiser can fail on degenerate samples; moments always exist
        return moments
    if not (np.isfinite(shape) and np.isfinite(scale) and scale > 0 and -0.5 <= shape <= 1.0):
        return moments
    return float(shape), float(scale)


def fit_calibration(
    raw_holdout: np.ndarray,
    method: str = "pot",
    risk: float = 1e-3,
    tail_quantile: float = 0.95,
    quantile: float = 0.999,
    threshold_z: float = 6.0,
    contamination: float = 0.01,
    max_threshold: float = 6.0,
) -> Calibration:
    """Fit a calibration to held-out raw scores (no labels).

    Whatever the method, the threshold is at most `max_threshold` (default 6: a window rarer than one in a
    million held-out windows is always flagged). Without the cap, `robust_z` on widely spread log scores put
    thresholds at 1e-26 and let NAB's plainest anomalies (scores of 5 to 8) pass.
    """
    if method not in METHODS:
        raise ValueError(f"calibration method '{method}' is not one of {', '.join(METHODS)}")
    raw = np.sort(np.asarray(raw_holdout, dtype=np.float64).ravel())
    if raw.size < 20 or not np.all(np.isfinite(raw)):
        raise ValueError(f"calibration needs at least 20 finite held-out scores, got {raw.size}")
    if not 0 < risk < 1 or not 0 < contamination < 1:
        raise ValueError(f"risk and contamination must lie in (0, 1), got {risk} and {contamination}")
    probs = np.linspace(0.0, tail_quantile, _BODY_KNOTS)
    knots = np.maximum.accumulate(np.quantile(raw, probs))
    body_raw, index = np.unique(knots, return_index=True)
    body_score = -np.log10(1.0 - probs[index])
    tail_start = float(body_raw[-1])
    excesses = raw[raw > tail_start] - tail_start
    tail_share = max(excesses.size, 1) / raw.size
    shape, scale = fit_gpd(excesses) if excesses.size >= 10 else (0.0, max(float(np.std(raw)), _EPS))
    partial = Calibration(
        method, 0.0, tuple(body_raw), tuple(body_score), tail_start, tail_share, shape, scale, raw.size
    )
    threshold = min(
        _threshold(partial, raw, method, risk, quantile, threshold_z, contamination), max_threshold, MAX_SCORE - 1e-6
    )
    return replace(partial, threshold=threshold)


def _threshold(cal: Calibration, raw: np.ndarray, method: str, risk: float, q: float, z: float, c: float) -> float:
    """The threshold on the calibrated scale for `method`."""
    if method == "pot":
        return float(-np.log10(risk))
    if method == "quantile":
        return float(cal.transform(np.quantile(raw, q)))
    if method == "contamination":
        return float(cal.transform(np.quantile(raw, 1.0 - c)))
    if method == "mad":
        center = float(np.median(raw))
        spread = float(1.4826 * np.median(np.abs(raw - center))) or float(np.std(raw)) or _EPS
        return float(cal.transform(center + z * spread))
    logs = np.log(np.maximum(raw, _EPS))
    center = float(np.median(logs))
    spread = float(1.4826 * np.median(np.abs(logs - center))) or float(np.std(logs)) or 1.0
    return float(cal.transform(np.exp(center + z * spread)))


# The settings a detector's `calibration:` block may hold (besides holdout_fraction, which the train job reads):
# fit_calibration's own keyword arguments, so the list cannot drift from what it accepts.
CALIBRATION_SETTINGS = tuple(inspect.signature(fit_calibration).parameters)[1:]
