"""Dense autoencoder on flattened windows or feature vectors; the score is the standardised reconstruction error.

The residual of every (step, feature) is divided by its own typical size on the training data, so a metric
that the model reconstructs well is not drowned by one it reconstructs loosely; the score is the mean of the
`top_k` largest squared standardised residuals (0 = all of them): a small top_k catches a one-step spike, the
mean over the window a long, broad shift.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.base import Detector
from models.registry import register
from models.training import KerasConfig, adapted_normalizer, fit_keras, float_batch, mean_square, seed_everything, with_fixed_scale


@dataclass(frozen=True)
class DenseAutoencoderConfig(KerasConfig):
    """Layer widths of the encoder (the decoder mirrors them) and how many residuals make the score."""

    hidden: tuple[int, ...] = (128, 32)
    epochs: int = 12
    top_k: int = 1


def top_k_mean(squared: np.ndarray, k: int) -> np.ndarray:
    """Per sample, the mean of the k largest values of `squared` (all values when k is 0)."""
    flat = squared.reshape(len(squared), -1)
    if k <= 0 or k >= flat.shape[1]:
        return flat.mean(axis=1)
    return np.partition(flat, -k, axis=1)[:, -k:].mean(axis=1)


@register
class DenseAutoencoder(Detector):
    """Dense autoencoder: reconstruction error of a flattened window or feature vector.

    The saved Keras model maps raw samples to their standardised residual (reconstruction minus normalised
    input, divided by the residual's training spread), so every statistic travels inside model.keras and the
    score and the explanation come from one forward pass.
    """

    family = "dense_autoencoder"
    config_class = DenseAutoencoderConfig
    input_kinds = ("timeseries", "image")

    def _build(self, normalizer: Any) -> Any:
        import keras

        shape = tuple(self.config.input_shape)
        inputs = keras.Input(shape=shape, name="x")
        normalized = keras.layers.Flatten()(normalizer(inputs))
        hidden = normalized
        for width in self.config.hidden:
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        for width in reversed(self.config.hidden[:-1]):
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        reconstruction = keras.layers.Dense(int(np.prod(shape)), name="reconstruction")(hidden)
        residual = keras.layers.Subtract(name="residual")([reconstruction, normalized])
        model = keras.Model(inputs, residual, name=self.family)
        model.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), loss="mse")
        return model

    def fit(self, train: Any, validation: Any = None) -> "DenseAutoencoder":
        """Adapt the normaliser to `train`, then train the autoencoder (early stopping on validation)."""
        import tensorflow as tf

        seed_everything(self.config)
        shaped = float_batch(tuple(self.config.input_shape))
        n_inputs = int(np.prod(self.config.input_shape))
        model = self._build(adapted_normalizer(train, self.config, shaped))
        to_xy = lambda x: (shaped(x), tf.zeros((tf.shape(x)[0], n_inputs)))  # noqa: E731 - drive the residual to zero
        self.history_ = fit_keras(model, train, validation, self.config, to_xy)
        self.model_ = with_fixed_scale(model, mean_square(model, train, self.config, shaped), self.family)
        return self

    def _score_batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the top_k squared standardised residuals per sample, and all of them per input element."""
        residual = np.asarray(self.model_(samples, training=False), dtype=np.float64)
        squared = np.square(residual).reshape(samples.shape)
        return top_k_mean(squared, self.config.top_k), squared
