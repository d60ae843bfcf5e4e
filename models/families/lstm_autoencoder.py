"""LSTM sequence autoencoder: the window is encoded into one state and decoded step by step.

The score is a statistic of the squared standardised reconstruction residuals (models/families/residual.py; by
default their mean over the window); the recurrent encoder sees order, so it also catches a change of
shape that keeps every value in its normal range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalake.models.families.residual import ResidualDetector, window_statistic
from anomalake.models.registry import register
from anomalake.models.training import KerasConfig


@dataclass(frozen=True)
class LstmAutoencoderConfig(KerasConfig):
    """Width of the encoder's and decoder's LSTM and how many residuals make the score."""

    units: int = 64
    statistic: str = "mean"
    top_k: int = 4


@register
class LstmAutoencoder(ResidualDetector):
    """LSTM sequence autoencoder: sequence-to-sequence reconstruction error of the window."""

    family = "lstm_autoencoder"
    config_class = LstmAutoencoderConfig
    tiny_params = {"units": 16}

    def _predict(self, normalized: Any) -> tuple[Any, Any]:
        import keras

        steps, features = normalized.shape[1], normalized.shape[2]
        state = keras.layers.LSTM(self.config.units, name="encoder")(normalized)
        repeated = keras.layers.RepeatVector(steps)(state)
        decoded = keras.layers.LSTM(self.config.units, return_sequences=True, name="decoder")(repeated)
        return keras.layers.Dense(features, name="reconstruction")(decoded), normalized

    def _summarize(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return window_statistic(squared, self.config.statistic, self.config.top_k), squared
