"""Template of the families that score by residuals: a reconstruction or prediction minus its target.

A family says how the normalised input is reconstructed or predicted (`_predict`) and how squared
standardised residuals become a score and an explanation (`_summarize`); this class does the rest. The
saved model maps raw samples to standardised residuals (every statistic travels inside model.keras), so
the score and the explanation come from one forward pass.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from anomalake.models.base import Detector, iterate_batches
from anomalake.models.distributed import model_scope
from anomalake.models.training import (
    adapted_normalizer,
    fit_keras,
    float_batch,
    mean_square,
    seed_everything,
    with_fixed_scale,
)


def top_k_mean(squared: np.ndarray, k: int) -> np.ndarray:
    """Per sample, the mean of the k largest values of `squared` (all values when k is 0)."""
    flat = squared.reshape(len(squared), -1)
    if k <= 0 or k >= flat.shape[1]:
        return flat.mean(axis=1)
    return np.partition(flat, -k, axis=1)[:, -k:].mean(axis=1)


STATISTICS = ("mean", "peak", "peak_x_mean")


def window_statistic(squared: np.ndarray, statistic: str, top_k: int) -> np.ndarray:
    """One score per sample from its squared standardised residuals.

    `mean`: the mean of all of them (a broad shift over the window); `peak`: the mean of the `top_k` largest
    (a spike); `peak_x_mean`: the geometric mean of the two, which ranks a sample high when it has either a
    strong peak or a broad rise, and both kinds of anomaly occur in the same tables.
    """
    if statistic == "mean":
        return top_k_mean(squared, 0)
    if statistic == "peak":
        return top_k_mean(squared, top_k)
    if statistic == "peak_x_mean":
        return np.sqrt(top_k_mean(squared, top_k) * top_k_mean(squared, 0))
    raise ValueError(f"statistic '{statistic}' is not one of {', '.join(STATISTICS)}")


def ewma(values: np.ndarray, span: int, axis: int = 1) -> np.ndarray:
    """Exponentially weighted moving average along `axis` (pandas' span convention, no bias adjustment)."""
    alpha = 2.0 / (span + 1.0)
    moved = np.moveaxis(values, axis, 0)
    out = np.empty_like(moved, dtype=np.float64)
    out[0] = moved[0]
    for t in range(1, len(moved)):
        out[t] = alpha * moved[t] + (1.0 - alpha) * out[t - 1]
    return np.moveaxis(out, 0, axis)


class ResidualDetector(Detector):
    """A detector whose score is built from standardised residuals of a Keras reconstruction or forecast."""

    distributable = True  # one Keras model trained by `fit_keras` on the normalised input: see models/distributed.py

    @abc.abstractmethod
    def _predict(self, normalized: Any) -> tuple[Any, Any]:
        """Keras tensors (prediction, target) from the normalised input tensor; the residual is their difference."""

    @abc.abstractmethod
    def _summarize(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (n,) and contributions (n, *input_shape) from squared standardised residuals."""

    def fit(self, train: Any, validation: Any = None) -> "ResidualDetector":
        """Adapt a per-channel normaliser to `train`, train the model to drive the residual to zero, fix its scale."""
        import keras
        import tensorflow as tf

        seed_everything(self.config)
        shape = tuple(self.config.input_shape)
        shaped = float_batch(shape)
        with model_scope():  # the strategy's scope when training is distributed (models/distributed.py)
            inputs = keras.Input(shape=shape, name="x")
            prediction, target = self._predict(adapted_normalizer(train, self.config, shaped)(inputs))
            model = keras.Model(inputs, keras.layers.Subtract(name="residual")([prediction, target]), name=self.family)
            model.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), loss="mse")
        residual_shape = tuple(model.output.shape[1:])
        to_xy = lambda x: (shaped(x), tf.zeros((tf.shape(x)[0], *residual_shape)))  # noqa: E731
        self.history_ = fit_keras(model, train, validation, self.config, to_xy)
        self.model_ = with_fixed_scale(model, mean_square(model, train, self.config, shaped), self.family)
        return self

    def residual_mse(self, data: Any) -> float:
        """The training loss on `data`: the mean squared residual before standardisation (compares two fits)."""
        self._check_fitted()
        variance = np.asarray(self.model_.get_layer("residual_scale").get_config()["variance"], dtype=np.float64)
        total, count = 0.0, 0
        for x in iterate_batches(data):
            residual = np.asarray(self.model_(self.as_batch(x), training=False), dtype=np.float64)
            total, count = total + float((np.square(residual) * variance).sum()), count + residual.size
        return total / max(count, 1)

    def _score_batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared standardised residuals of one forward pass, summarised by the family."""
        residual = np.asarray(self.model_(samples, training=False), dtype=np.float64)
        return self._summarize(np.square(residual))
