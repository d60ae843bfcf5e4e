"""Dense autoencoder on flattened windows or feature vectors; the score is the standardised reconstruction error.

The residual of every (step, feature) is divided by its own typical size on the training data, so a metric
that the model reconstructs well is not drowned by one it reconstructs loosely; `statistic` turns the
squared standardised residuals into the score (see models/families/residual.py: the `peak` of the `top_k` largest
catches a one-step spike, the `mean` a broad shift, `peak_x_mean` both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalake.models.families.residual import ResidualDetector, window_statistic
from anomalake.models.registry import register
from anomalake.models.training import KerasConfig


@dataclass(frozen=True)
class DenseAutoencoderConfig(KerasConfig):
    """Layer widths of the encoder (the decoder mirrors them) and how many residuals make the score."""

    hidden: tuple[int, ...] = (128, 32)
    epochs: int = 12
    statistic: str = "peak_x_mean"
    top_k: int = 1


@register
class DenseAutoencoder(ResidualDetector):
    """Dense autoencoder: reconstruction error of a flattened window, image or feature vector."""

    family = "dense_autoencoder"
    config_class = DenseAutoencoderConfig
    input_kinds = ("timeseries", "image")

    def _predict(self, normalized: Any) -> tuple[Any, Any]:
        import keras

        flat = keras.layers.Flatten()(normalized)
        hidden = flat
        for width in (*self.config.hidden, *reversed(self.config.hidden[:-1])):
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        return keras.layers.Dense(flat.shape[-1], name="reconstruction")(hidden), flat

    def _summarize(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        squared = squared.reshape((len(squared), *self.config.input_shape))
        return window_statistic(squared, self.config.statistic, self.config.top_k), squared
