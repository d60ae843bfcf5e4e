"""Temporal convolutional autoencoder for long windows: strided 1-D convolutions down, transposed ones up.

Each level halves the time axis, so a long window is summarised by a few local patterns; the number of
levels is cut to what the window length allows (the length must divide by 2 per level). The score is a
statistic of the squared standardised reconstruction residuals (models/families/residual.py; by default their mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalake.models.families.residual import ResidualDetector, window_statistic
from anomalake.models.registry import register
from anomalake.models.training import KerasConfig


@dataclass(frozen=True)
class Conv1dAutoencoderConfig(KerasConfig):
    """Filters per level (the decoder mirrors them), the kernel width, the code's channels, the score's statistic."""

    filters: tuple[int, ...] = (64, 32, 16)
    kernel_size: int = 5
    bottleneck: int = 8
    statistic: str = "mean"
    top_k: int = 4


def usable_levels(length: int, wanted: int) -> int:
    """The most halvings (at most `wanted`) that leave a whole number of steps."""
    levels = 0
    while levels < wanted and length % (2 ** (levels + 1)) == 0:
        levels += 1
    return levels


@register
class Conv1dAutoencoder(ResidualDetector):
    """Temporal convolutional autoencoder: reconstruction error of long windows."""

    family = "conv1d_autoencoder"
    config_class = Conv1dAutoencoderConfig
    tiny_params = {"filters": (32, 16), "bottleneck": 8, "epochs": 8}

    def _predict(self, normalized: Any) -> tuple[Any, Any]:
        import keras

        steps, features = normalized.shape[1], normalized.shape[2]
        filters = self.config.filters[: usable_levels(steps, len(self.config.filters))]
        hidden = normalized
        for width in filters:
            hidden = keras.layers.Conv1D(width, self.config.kernel_size, strides=2, padding="same", activation="relu")(
                hidden
            )
        # A narrow code per remaining step: without it the encoder keeps nearly everything and reconstructs anomalies
        # too.
        hidden = keras.layers.Conv1D(self.config.bottleneck, 1, activation="relu", name="code")(hidden)
        for width in reversed(filters):
            hidden = keras.layers.Conv1DTranspose(
                width, self.config.kernel_size, strides=2, padding="same", activation="relu"
            )(hidden)
        return keras.layers.Conv1D(features, 1, name="reconstruction")(hidden), normalized

    def _summarize(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return window_statistic(squared, self.config.statistic, self.config.top_k), squared
