"""Raw score -> calibrated score -> is_anomaly, fitted on held-out scores without labels.

Merlion's split: the detector gives a raw score; a calibrator maps it to a unit-free scale that is the same
for every family; a threshold on that scale decides. Methods:
- `robust_z`: z = (log(raw) - median) / (1.4826 * MAD) of the held-out scores; threshold = `threshold_z`.
  Median and MAD ignore the anomalies that unlabelled held-out data always contains.
- `pot`: robust z as above, then the threshold from a generalised Pareto fit to the tail over the
  `tail_quantile` (peaks over threshold, SPOT), at false-alarm risk `risk` per sample.
- `quantile`: robust z as above, threshold = the `quantile` of the held-out calibrated scores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

METHODS = ("robust_z", "pot", "quantile")
_EPS = 1e-12


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: the robust centre and scale of log raw scores and the threshold on z."""

    method: str
    center: float
    scale: float
    threshold: float
    n_holdout: int

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated score (robust z of the log raw score)."""
        return (np.log(np.maximum(np.asarray(raw, dtype=np.float64), _EPS)) - self.center) / self.scale

    def is_anomaly(self, raw: np.ndarray) -> np.ndarray:
        """Flags: calibrated score above the threshold."""
        return self.transform(raw) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (calibration.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Calibration":
        """Rebuild from `to_dict`."""
        return cls(**values)


def _gpd_quantile(excesses: np.ndarray, n_total: int, risk: float, base: float) -> float:
    """SPOT's threshold: base + sigma/xi * ((risk * n / n_t)^(-xi) - 1), moments estimate of the GPD."""
    mean, var = float(np.mean(excesses)), float(np.var(excesses))
    if var <= 0:
        return base + mean
    xi = 0.5 * (1.0 - mean * mean / var)
    sigma = 0.5 * mean * (mean * mean / var + 1.0)
    ratio = risk * n_total / len(excesses)
    if abs(xi) < 1e-6:
        return base - sigma * np.log(ratio)
    return base + sigma / xi * (ratio ** (-xi) - 1.0)


def fit_calibration(
    raw_holdout: np.ndarray,
    method: str = "robust_z",
    threshold_z: float = 6.0,
    risk: float = 1e-4,
    tail_quantile: float = 0.98,
    quantile: float = 0.999,
) -> Calibration:
    """Fit a calibration to held-out raw scores (no labels)."""
    if method not in METHODS:
        raise ValueError(f"calibration method '{method}' is not one of {', '.join(METHODS)}")
    raw = np.asarray(raw_holdout, dtype=np.float64)
    if raw.size < 10 or not np.all(np.isfinite(raw)):
        raise ValueError(f"calibration needs at least 10 finite held-out scores, got {raw.size}")
    logs = np.log(np.maximum(raw, _EPS))
    center = float(np.median(logs))
    scale = float(1.4826 * np.median(np.abs(logs - center))) or float(np.std(logs)) or 1.0
    z = (logs - center) / scale
    if method == "robust_z":
        threshold = threshold_z
    elif method == "quantile":
        threshold = float(np.quantile(z, quantile))
    else:
        base = float(np.quantile(z, tail_quantile))
        excesses = z[z > base] - base
        threshold = _gpd_quantile(excesses, z.size, risk, base) if excesses.size >= 5 else float(z.max())
    return Calibration(method, center, scale, float(threshold), int(raw.size))
