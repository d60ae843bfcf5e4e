"""Dense autoencoder on flattened windows; the score is the mean squared reconstruction error."""
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
    verbose: int = 2


@register
class DenseAutoencoder(Detector):
    """Reconstruction-error detector: per-feature normalisation, dense bottleneck, residual output.

    The saved Keras model maps raw samples to their residual in normalised units (reconstruction minus
    normalised input), so the normalisation statistics travel inside model.keras and the score and the
    explanation come from one forward pass.
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
            train_ds, validation_data=val_ds, epochs=self.config.epochs, callbacks=[stop], verbose=self.config.verbose
        )
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        self.model_ = model
        return self

    def score_and_explain(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean squared residual per sample, and the squared residual per (step, feature)."""
        self._check_fitted()
        scores, contributions = [], []
        for batch in iterate_batches(x):
            samples = self.as_batch(batch)
            flat = samples.reshape(len(samples), -1)
            residual = np.asarray(self.model_(flat, training=False), dtype=np.float64) if len(flat) else flat
            squared = np.square(residual).reshape(samples.shape)
            contributions.append(squared)
            scores.append(squared.reshape(len(samples), -1).mean(axis=1))
        return np.concatenate(scores), np.concatenate(contributions)

    def _save_model(self, folder: Path) -> None:
        self.model_.save(folder / MODEL_FILE)

    def _load_model(self, folder: Path) -> None:
        import keras

        self.model_ = keras.models.load_model(folder / MODEL_FILE, safe_mode=True, compile=False)


def _reshape_for(x: Any, shape: tuple[int, ...]) -> Any:
    import tensorflow as tf

    return tf.reshape(x, (-1, *shape))
