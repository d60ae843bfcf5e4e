"""LSTM/GRU forecaster: predicts every metric's next step along the window; the score is the prediction error.

As in LSTM dynamic thresholding (Hundman et al., 2018): each step's error is standardised per step and metric
by its typical size on the training data, smoothed with an exponentially weighted average over a short span,
and the window's score is the smoothed error at its last step, averaged over the `top_k` worst metrics (0 =
all metrics). The window's first step has no prediction, so it contributes nothing to the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalake.models.families.residual import ResidualDetector, ewma, top_k_mean
from anomalake.models.registry import register
from anomalake.models.training import KerasConfig


@dataclass(frozen=True)
class LstmForecasterConfig(KerasConfig):
    """Recurrent cell ("lstm" or "gru"), its width and depth, and how errors become a score."""

    cell: str = "lstm"
    units: int = 64
    layers: int = 1
    smoothing_span: int = 8
    top_k: int = 0


@register
class LstmForecaster(ResidualDetector):
    """LSTM/GRU forecaster: next-step prediction error of every metric, smoothed."""

    family = "lstm_forecaster"
    config_class = LstmForecasterConfig
    tiny_params = {"units": 16}

    def __init__(self, config: LstmForecasterConfig):
        super().__init__(config)
        if config.cell not in ("lstm", "gru"):
            raise ValueError(f"{self.family}: cell must be 'lstm' or 'gru', got '{config.cell}'")

    def _predict(self, normalized: Any) -> tuple[Any, Any]:
        import keras

        recurrent = keras.layers.LSTM if self.config.cell == "lstm" else keras.layers.GRU
        history = keras.layers.Cropping1D((0, 1), name="history")(normalized)  # steps 0 .. L-2
        target = keras.layers.Cropping1D((1, 0), name="next_steps")(normalized)  # steps 1 .. L-1
        hidden = history
        for _ in range(self.config.layers):
            hidden = recurrent(self.config.units, return_sequences=True)(hidden)
        return keras.layers.Dense(normalized.shape[-1], name="forecast")(hidden), target

    def _summarize(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        smoothed_last = ewma(squared, self.config.smoothing_span, axis=1)[:, -1, :]
        contributions = np.concatenate([np.zeros_like(squared[:, :1]), squared], axis=1)
        return top_k_mean(smoothed_last, self.config.top_k), contributions
