"""Shared Keras machinery of the families: the training config, batched data, fit with early stopping.

Training data is either a numpy array (shuffled and batched here with the config's seed) or a finite
tf.data.Dataset of batches with a known number of batches per pass (the Petastorm feed of the train job).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from anomalake.models.base import DetectorConfig
from anomalake.models.distributed import current_distribution, without_autoshard


@dataclass(frozen=True)
class KerasConfig(DetectorConfig):
    """The training schedule every Keras family shares."""

    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    verbose: int = 2
    min_steps_per_epoch: int = 0  # small tables: an epoch repeats the data until this many updates


def batched(data: Any, config: KerasConfig, prepare: Callable[[Any], Any] | None = None) -> Any:
    """A tf.data.Dataset of batches: arrays are shuffled with the seed and batched; `prepare` maps each batch."""
    import tensorflow as tf

    if isinstance(data, np.ndarray):
        data = tf.data.Dataset.from_tensor_slices(data).shuffle(len(data), seed=config.seed).batch(config.batch_size)
    return data.map(prepare) if prepare is not None else data


def steps_per_pass(data: Any, batch_size: int) -> int:
    """Batches in one pass over `data`; Keras is told, so it never runs into the end of the data."""
    import tensorflow as tf

    if isinstance(data, np.ndarray):
        return -(-len(data) // batch_size)
    steps = int(tf.data.experimental.cardinality(data))
    if steps <= 0:
        raise ValueError("training data must be an array or a finite dataset with a known number of batches")
    return steps


def float_batch(shape: tuple[int, ...]) -> Callable[[Any], Any]:
    """A batch mapper: cast to float32 and reshape flattened samples to (-1, *shape)."""
    import tensorflow as tf

    return lambda x: tf.reshape(tf.cast(x, tf.float32), (-1, *shape))


_LOG_DIR: ContextVar[str | None] = ContextVar("training_log_dir", default=None)


@contextmanager
def training_logs(folder: str | Path) -> Iterator[None]:
    """Within this block every fit writes TensorBoard logs (loss curves per epoch) under `folder`."""
    token = _LOG_DIR.set(str(folder))
    try:
        yield
    finally:
        _LOG_DIR.reset(token)


def write_calibration_summary(folder: str | Path, raw: np.ndarray, calibrated: np.ndarray, threshold: float) -> None:
    """TensorBoard histograms of the held-out raw and calibrated scores, and the threshold, under `folder`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        tf.summary.histogram("holdout/raw_score", np.asarray(raw, dtype=np.float64), step=0)
        tf.summary.histogram("holdout/score", np.asarray(calibrated, dtype=np.float64), step=0)
        tf.summary.scalar("calibration/threshold", float(threshold), step=0)
    writer.close()


class EpochProgress:
    """A Keras callback factory: one line per epoch with the losses, the time spent and the time left."""

    @staticmethod
    def make(epochs: int) -> Any:
        import keras

        class _Progress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.started = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                spent = time.monotonic() - self.started
                left = spent / (epoch + 1) * (epochs - epoch - 1)
                losses = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k.endswith("loss"))
                print(
                    f"epoch {epoch + 1}/{epochs}: {losses}; {spent:.0f}s spent, about {left:.0f}s left at most",
                    flush=True,
                )

        return _Progress()


def fit_keras(
    model: Any, train: Any, validation: Any, config: KerasConfig, to_xy: Callable[[Any], Any]
) -> dict[str, list[float]]:
    """Fit a compiled model on (x, y) pairs made by `to_xy` from each batch; early stopping; the history.

    verbose 1: Keras's progress bar and a line per epoch (a terminal); 2: the line per epoch only (logs,
    Airflow); 0: silent. Inside `training_logs(folder)` the loss curves also go to TensorBoard.
    """
    import keras

    distribution = current_distribution()
    if distribution is not None:  # each worker fits on its own shard; the strategy averages the gradients
        train, validation = distribution.train_shard, distribution.validation_shard
    train_ds = batched(train, config, to_xy)
    val_ds = batched(validation, config, to_xy) if validation is not None else None
    monitor = "val_loss" if val_ds is not None else "loss"
    callbacks = [keras.callbacks.EarlyStopping(monitor, patience=config.patience, restore_best_weights=True)]
    if config.verbose:
        callbacks.append(EpochProgress.make(config.epochs))
    if _LOG_DIR.get():
        callbacks.append(keras.callbacks.TensorBoard(_LOG_DIR.get(), write_graph=False))
    if distribution is None:
        steps = max(steps_per_pass(train, config.batch_size), config.min_steps_per_epoch)
        validation_steps = steps_per_pass(validation, config.batch_size) if val_ds is not None else None
    else:  # every worker must take the same number of steps, whatever the size of its shard
        steps, validation_steps = (
            max(distribution.steps_per_epoch, config.min_steps_per_epoch),
            distribution.validation_steps,
        )
        train_ds, val_ds = without_autoshard(train_ds), without_autoshard(val_ds) if val_ds is not None else None
    history = model.fit(
        train_ds.repeat(),
        steps_per_epoch=steps,
        validation_data=val_ds.repeat() if val_ds is not None else None,
        validation_steps=validation_steps,
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=1 if config.verbose == 1 else 0,
        shuffle=False,  # the feed shuffles (Petastorm row groups and queue, or the array dataset)
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def adapted_normalizer(train: Any, config: KerasConfig, prepare: Callable[[Any], Any], axis: int = -1) -> Any:
    """A Normalization layer adapted to the training data (per channel along `axis`)."""
    import keras

    normalizer = keras.layers.Normalization(axis=axis, name="normalize")
    normalizer.adapt(batched(train, config, prepare))
    return normalizer


def mean_square(model: Any, data: Any, config: KerasConfig, prepare: Callable[[Any], Any]) -> np.ndarray:
    """Mean over the data of the model's squared output, per output element (the scale of its residuals)."""
    total, count = 0.0, 0
    for x in batched(data, config, prepare):
        out = np.asarray(model(x, training=False), dtype=np.float64)
        total, count = total + np.square(out).sum(axis=0), count + len(out)
    return np.maximum(total / max(count, 1), 1e-8)


def with_fixed_scale(model: Any, variance: np.ndarray | list[np.ndarray], name: str) -> Any:
    """`model` with each output element divided by sqrt(its variance) in a fixed layer (saved in .keras).

    `variance` is one array per output (a list when the model has several outputs).
    """
    import keras

    variances = variance if isinstance(variance, list) else [variance]
    outputs = []
    for i, (out, v) in enumerate(zip(model.outputs, variances)):
        axes = tuple(range(1, v.ndim + 1))  # one scale per output element, whatever the output's rank
        layer_name = "residual_scale" if len(variances) == 1 else f"residual_scale_{i}"
        outputs.append(keras.layers.Normalization(axis=axes, mean=np.zeros_like(v), variance=v, name=layer_name)(out))
    return keras.Model(model.inputs[0], outputs if len(outputs) > 1 else outputs[0], name=name)


def seed_everything(config: DetectorConfig) -> None:
    """Seed Python, numpy and TensorFlow from the config, so a fixed seed gives the same model."""
    import keras

    keras.utils.set_random_seed(config.seed)
