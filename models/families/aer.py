"""AER: a bidirectional LSTM encoder-decoder that reconstructs a window and regresses the steps around it.

The design of OrionBench's best pipeline (Wong et al., 2022, "AER: Auto-Encoder with Regression for Time Series
Anomaly Detection"; Orion's `orion/primitives/aer.py`): the encoder reads the window's inner steps 1 .. L-2 and
the decoder outputs L steps: step 0 predicted backwards (reverse regression), the inner steps reconstructed, and
step L-1 predicted forwards. Training weighs the two regressions and the reconstruction as AER does (`reg_ratio`
/ 2 each for the regressions, 1 - `reg_ratio` for the mean reconstruction error).

The score combines the two kinds of error, each from squared standardised residuals: the regression error (the
mean over metrics of the forward error at the last step and the reverse error at the first) and a statistic of
the reconstruction residuals (models/families/residual.py). `combination` "mult" is AER's default,
(1 + regression) x (1 + reconstruction), high when either is; "sum" adds them. Explanations are the squared
standardised residuals of every (step, metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalake.models.families.residual import ResidualDetector, window_statistic
from anomalake.models.registry import register
from anomalake.models.training import KerasConfig

COMBINATIONS = ("mult", "sum")


@dataclass(frozen=True)
class AerConfig(KerasConfig):
    """LSTM width (each direction), the regressions' share of the loss, and how the two errors make the score."""

    units: int = 30
    reg_ratio: float = 0.5
    combination: str = "mult"
    statistic: str = "mean"
    top_k: int = 4


@register
class Aer(ResidualDetector):
    """AER: bidirectional LSTM reconstruction of the window plus a forward and a reverse one-step regression."""

    family = "aer"
    config_class = AerConfig
    tiny_params = {"units": 8}

    def __init__(self, config: AerConfig):
        super().__init__(config)
        if config.combination not in COMBINATIONS:
            raise ValueError(
                f"{self.family}: combination must be one of {', '.join(COMBINATIONS)}, got '{config.combination}'"
            )
        if not 0.0 < config.reg_ratio < 1.0:
            raise ValueError(f"{self.family}: reg_ratio must lie in (0, 1), got {config.reg_ratio}")
        if config.input_shape and config.input_shape[0] < 4:
            raise ValueError(f"{self.family}: windows need at least 4 steps, got {config.input_shape[0]}")

    def _predict(self, normalized: Any) -> tuple[Any, Any]:
        import keras

        steps, features = normalized.shape[1], normalized.shape[2]
        inner = keras.layers.Cropping1D((1, 1), name="inner_steps")(normalized)
        state = keras.layers.Bidirectional(keras.layers.LSTM(self.config.units), name="encoder")(inner)
        repeated = keras.layers.RepeatVector(steps)(state)
        decoded = keras.layers.Bidirectional(
            keras.layers.LSTM(self.config.units, return_sequences=True), name="decoder"
        )(repeated)
        output = keras.layers.Dense(features, name="regression_and_reconstruction")(decoded)
        return self._weighted(output, steps, "prediction"), self._weighted(normalized, steps, "target")

    def _weighted(self, sequence: Any, steps: int, name: str) -> Any:
        """The sequence with its first and last step scaled so that a plain mean squared residual is AER's loss.

        With scale a on the two regression steps, the mean over L steps weighs each regression by a^2 / L and the
        reconstruction's mean by (L - 2) / L; a^2 = (L - 2) reg_ratio / (2 (1 - reg_ratio)) gives AER's ratio.
        Scoring divides every residual by its own training size, so the scale does not reach the score."""
        import keras

        scale = float(np.sqrt((steps - 2) * self.config.reg_ratio / (2.0 * (1.0 - self.config.reg_ratio))))
        first = keras.layers.Rescaling(scale, name=f"{name}_first")(keras.layers.Cropping1D((0, steps - 1))(sequence))
        last = keras.layers.Rescaling(scale, name=f"{name}_last")(keras.layers.Cropping1D((steps - 1, 0))(sequence))
        inner = keras.layers.Cropping1D((1, 1))(sequence)
        return keras.layers.Concatenate(axis=1, name=f"{name}_weighted")([first, inner, last])

    def _summarize(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        regression = (squared[:, 0, :].mean(axis=1) + squared[:, -1, :].mean(axis=1)) / 2.0
        reconstruction = window_statistic(squared[:, 1:-1, :], self.config.statistic, self.config.top_k)
        if self.config.combination == "mult":
            return (1.0 + regression) * (1.0 + reconstruction), squared
        return regression + reconstruction, squared
