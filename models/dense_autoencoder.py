"""Dense autoencoder on flattened windows; the score is the largest standardised reconstruction errors.

The residual of every (step, feature) is divided by its own typical size on the training data, so a metric
that the model reconstructs well is not drowned by one it reconstructs loosely; the score is the mean of the
`top_k` largest squared standardised residuals, which catches a one-step spike as well as a long shift.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.base import MODEL_FILE, Detector, DetectorConfig, iterate_batches
from models.registry import register


@dataclass(frozen=True)
class DenseAutoencoderConfig(DetectorConfig):
    """Layer widths of the encoder (the decoder mirrors them) and the training schedule."""

    hidden: tuple[int, ...] = (128, 32)
    epochs: int = 12
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    top_k: int = 1
    verbose: int = 2


@register
class DenseAutoencoder(Detector):
    """Reconstruction-error detector: per-feature normalisation, dense bottleneck, residual output.

    The saved Keras model maps raw samples to their standardised residual (reconstruction minus normalised
    input, divided by the residual's training spread), so every statistic travels inside model.keras and the
    score and the explanation come from one forward pass.
    """

    family = "dense_autoencoder"
    config_class = DenseAutoencoderConfig

    def _build(self, normalizer: Any) -> Any:
        import keras

        shape = tuple(self.config.input_shape)
        n_inputs = int(np.prod(shape))
        inputs = keras.Input(shape=(n_inputs,), name="x")
        normalized = keras.layers.Flatten()(normalizer(keras.layers.Reshape(shape)(inputs)))
        hidden = normalized
        for width in self.config.hidden:
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        for width in reversed(self.config.hidden[:-1]):
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        reconstruction = keras.layers.Dense(n_inputs, name="reconstruction")(hidden)
        residual = keras.layers.Subtract(name="residual")([reconstruction, normalized])
        model = keras.Model(inputs, residual, name=self.family)
        model.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), loss="mse")
        return model

    def _flat_dataset(self, data: Any) -> Any:
        """A tf.data.Dataset of (x, zeros) batches: training drives the residual to zero."""
        import tensorflow as tf

        n_inputs = int(np.prod(self.config.input_shape))
        if isinstance(data, np.ndarray):
            flat = self.as_batch(data).reshape(len(data), n_inputs)
            data = tf.data.Dataset.from_tensor_slices(flat).shuffle(len(flat), seed=self.config.seed)
            data = data.batch(self.config.batch_size)
        flat = data.map(lambda x: tf.reshape(tf.cast(x, tf.float32), (-1, n_inputs)))
        return flat.map(lambda x: (x, tf.zeros_like(x)))

    def _passes(self, data: Any) -> int:
        """Batches in one pass over `data`; Keras is told, so it never runs into the end of the data."""
        import tensorflow as tf

        if isinstance(data, np.ndarray):
            return -(-len(data) // self.config.batch_size)
        steps = int(tf.data.experimental.cardinality(data))
        if steps <= 0:
            raise ValueError("training data must be an array or a finite dataset with a known number of batches")
        return steps

    def fit(self, train: Any, validation: Any = None) -> "DenseAutoencoder":
        """Adapt the normaliser to `train`, then train the autoencoder (early stopping on validation)."""
        import keras

        keras.utils.set_random_seed(self.config.seed)
        train_ds = self._flat_dataset(train)
        normalizer = keras.layers.Normalization(axis=-1, name="normalize")
        normalizer.adapt(train_ds.map(lambda x, _: x).map(lambda x: _reshape_for(x, self.config.input_shape)))
        model = self._build(normalizer)
        val_ds = self._flat_dataset(validation) if validation is not None else None
        monitor = "val_loss" if val_ds is not None else "loss"
        stop = keras.callbacks.EarlyStopping(monitor, patience=self.config.patience, restore_best_weights=True)
        history = model.fit(
            train_ds.repeat(),
            steps_per_epoch=self._passes(train),
            validation_data=val_ds.repeat() if val_ds is not None else None,
            validation_steps=self._passes(validation) if val_ds is not None else None,
            epochs=self.config.epochs,
            callbacks=[stop],
            verbose=self.config.verbose,
            shuffle=False,  # the feed shuffles (Petastorm row groups and queue, or the array dataset)
        )
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        self.model_ = self._standardized(model, train_ds)
        return self

    def _standardized(self, residual_model: Any, train_ds: Any) -> Any:
        """Append a fixed layer dividing each residual by its root mean square over the training data."""
        import keras

        total, count = 0.0, 0
        for x, _ in train_ds:
            residual = np.asarray(residual_model(x, training=False), dtype=np.float64)
            total, count = total + np.square(residual).sum(axis=0), count + len(residual)
        variance = np.maximum(total / max(count, 1), 1e-8)
        scale = keras.layers.Normalization(mean=np.zeros_like(variance), variance=variance, name="residual_scale")
        return keras.Model(residual_model.inputs[0], scale(residual_model.outputs[0]), name=self.family)

    def score_and_explain(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the top_k squared standardised residuals per sample, and all of them per (step, feature)."""
        self._check_fitted()
        scores, contributions = [], []
        for batch in iterate_batches(x):
            samples = self.as_batch(batch)
            flat = samples.reshape(len(samples), -1)
            residual = np.asarray(self.model_(flat, training=False), dtype=np.float64) if len(flat) else flat
            squared = np.square(residual).reshape(samples.shape)
            contributions.append(squared)
            flat_squared = squared.reshape(len(samples), -1)
            k = min(self.config.top_k, flat_squared.shape[1])
            scores.append(np.partition(flat_squared, -k, axis=1)[:, -k:].mean(axis=1))
        return np.concatenate(scores), np.concatenate(contributions)

    def _save_model(self, folder: Path) -> None:
        self.model_.save(folder / MODEL_FILE)

    def _load_model(self, folder: Path) -> None:
        import keras

        self.model_ = keras.models.load_model(folder / MODEL_FILE, safe_mode=True, compile=False)


def _reshape_for(x: Any, shape: tuple[int, ...]) -> Any:
    import tensorflow as tf

    return tf.reshape(x, (-1, *shape))
