"""Statistics of CNN features for images: a rotation-prediction encoder, a Gaussian of its pooled features.

The encoder learns, from the normal images only, which quarter turn was applied to an image (the
self-supervised task of Golan & El-Yaniv's GEOM): to tell the turns apart it must learn the shape of a normal
image. For each turn, a Gaussian with a ridge-shrunk covariance is fitted to the training images' feature
means (every feature map of every stage, averaged over the image). The raw score adds two parts, each divided
by its spread on the training images: the Mahalanobis distances of the turned images' features, and the
classifier's negative log-likelihood of the true turns (an odd image confuses it). On one-class MNIST (200
training images) the sum has a mean ROC-AUC of about 0.97, the Mahalanobis part alone about 0.965 and the
turn loss alone 0.91. Non-square images use the half turn only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from anomalake.models.base import Detector
from anomalake.models.registry import register
from anomalake.models.training import KerasConfig, batched, fit_keras, float_batch, seed_everything

CHUNK = 256  # images per forward pass when scoring


def rotate(images: Any, turns: int) -> Any:
    """`images` (n, h, w, c) turned by `turns` quarter turns counter-clockwise, as np.rot90 over (h, w); turns 4
    to 7 mirror the image left to right first (the flips of GEOM's transformations)."""
    if turns % 8 >= 4:
        images = keras.ops.flip(images, axis=2)
    for _ in range(turns % 4):
        images = keras.ops.flip(keras.ops.transpose(images, (0, 2, 1, 3)), axis=1)
    return images


@keras.saving.register_keras_serializable(package="anomalake")
class Rotate90(keras.layers.Layer):
    """A fixed rotation by `turns` quarter turns, 4 to 7 after a mirror (so the scoring model turns the image)."""

    def __init__(self, turns: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.turns = int(turns) % 8

    def call(self, images: Any) -> Any:
        return rotate(images, self.turns)

    def compute_output_shape(self, shape: tuple) -> tuple:
        return (shape[0], shape[2], shape[1], shape[3]) if self.turns % 2 else tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "turns": self.turns}


@dataclass(frozen=True)
class CnnFeatureStatsConfig(KerasConfig):
    """Filters of the encoder stages (each but the last halves the resolution) and the covariance shrinkage."""

    filters: tuple[int, ...] = (32, 64, 128)
    shrinkage: float = 0.01
    flips: bool = False  # also tell the mirrored turns apart (8 transformations, not 4)
    epochs: int = 40
    batch_size: int = 16
    patience: int = 5


def shrunk_inverse_root(features: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a matrix W with W W^T = inverse of the ridge-shrunk covariance: |(f - mean) W|^2 is Mahalanobis."""
    mean = features.mean(axis=0)
    cov = np.cov(features - mean, rowvar=False).reshape(features.shape[1], features.shape[1])
    target = max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
    precision = np.linalg.inv((1.0 - shrinkage) * cov + shrinkage * target)
    return mean, np.linalg.cholesky((precision + precision.T) / 2.0)


def predict(model: Any, images: np.ndarray) -> list[np.ndarray]:
    """The outputs of `model` on `images` (in chunks) as a list of float64 arrays."""
    outputs = model.predict(images, batch_size=CHUNK, verbose=0)
    return [np.asarray(v, dtype=np.float64) for v in (outputs if isinstance(outputs, list) else [outputs])]


def whitener(features: np.ndarray, shrinkage: float, name: str) -> Any:
    """A fixed layer mapping features f to (f - mean) W, whose squared norm is their Mahalanobis distance."""
    mean, root = shrunk_inverse_root(features, shrinkage)
    return fixed_dense(len(mean), root, -mean @ root, name)


def fixed_dense(units: int, kernel: np.ndarray, bias: np.ndarray | None, name: str) -> Any:
    """A non-trainable Dense layer holding fitted statistics (saved in model.keras with the weights)."""
    layer = keras.layers.Dense(units, use_bias=bias is not None, trainable=False, name=name)
    layer.build((None, kernel.shape[0]))
    layer.set_weights([kernel.astype(np.float32)] + ([] if bias is None else [bias.astype(np.float32)]))
    return layer


@register
class CnnFeatureStats(Detector):
    """CNN feature statistics: Mahalanobis distance of rotation-prediction features, plus the rotation loss.

    The saved Keras model turns the image itself, so one image goes in and two things come out: the raw score
    and a map of how far the feature maps of the unturned image lie from their training mean and spread,
    location by location and stage by stage, resized to the image (the explanation, the same for every channel).
    """

    family = "cnn_feature_stats"
    config_class = CnnFeatureStatsConfig
    input_kinds = ("image",)
    tiny_params = {"filters": (8, 16, 16)}

    @property
    def turns(self) -> tuple[int, ...]:
        """The transformations the encoder tells apart: quarter turns of square images, the half turn otherwise,
        each also after a mirror with `flips`."""
        height, width = self.config.input_shape[:2]
        turns = (0, 1, 2, 3) if height == width else (0, 2)
        return turns + tuple(k + 4 for k in turns) if self.config.flips else turns

    def _build(self) -> tuple[Any, Any]:
        """The encoder and the turn classifier on its last pooled features.

        The encoder maps an image to each stage's feature maps, the mean of every map of every stage (the
        features of the Gaussian: early stages see strokes, the last one shapes) and the last stage's means.
        """
        inputs = keras.Input(shape=tuple(self.config.input_shape), name="x")
        hidden, maps = inputs, []
        for stage, filters in enumerate(self.config.filters):
            hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(hidden)
            maps.append(hidden)
            if stage < len(self.config.filters) - 1:
                hidden = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(hidden)
        pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(hidden)
        means = [keras.layers.GlobalAveragePooling2D()(m) for m in maps[:-1]] + [pooled]
        features = keras.layers.Concatenate(name="stage_means")(means) if len(means) > 1 else pooled
        encoder = keras.Model(inputs, [*maps, features, pooled], name="encoder")
        logits = keras.layers.Dense(len(self.turns), name="turn_logits")(pooled)
        classifier = keras.Model(inputs, logits, name="turn_classifier")
        classifier.compile(
            optimizer=keras.optimizers.Adam(self.config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return encoder, classifier

    def _turned(self, shape: tuple[int, ...]) -> Any:
        """A batch mapper: every image of the batch in each turn, labelled by the turn's index."""
        import tensorflow as tf

        shaped = float_batch(shape)

        def to_xy(batch: Any) -> Any:
            images = shaped(batch)
            labels = tf.repeat(tf.range(len(self.turns)), tf.shape(images)[0])
            return tf.concat([rotate(images, k) for k in self.turns], axis=0), labels

        return to_xy

    def fit(self, train: Any, validation: Any = None) -> "CnnFeatureStats":
        """Train the turn classifier on `train` (early stopping on validation), then fit the feature statistics.

        The statistics come from `train` only: the validation images are the calibration hold-out of the
        train job, and scores fitted on them would sit below those of new normal images.
        """
        seed_everything(self.config)
        encoder, classifier = self._build()
        self.history_ = fit_keras(
            classifier, train, validation, self.config, self._turned(tuple(self.config.input_shape))
        )
        self.model_ = self._scoring_model(encoder, classifier, self._training_images(train))
        return self

    def _training_images(self, train: Any) -> np.ndarray:
        """All training images as one float32 array (the Gaussian needs them at once; 250 images are small)."""
        shaped = float_batch(tuple(self.config.input_shape))
        return np.concatenate([np.asarray(batch) for batch in batched(train, self.config, shaped)])

    def _scoring_model(self, encoder: Any, classifier: Any, images: np.ndarray) -> Any:
        """Image in; raw score and deviation map out, with the statistics of `images` as fixed layers."""
        inputs = keras.Input(shape=tuple(self.config.input_shape), name="x")
        turned = [inputs if k == 0 else Rotate90(k, name=f"turn_{k}")(inputs) for k in self.turns]
        outputs = [encoder(x) for x in turned]
        maps, features = outputs[0][:-2], [out[-2] for out in outputs]
        fitted = predict(keras.Model(inputs, [*maps, *features]), images)
        gaussians = [
            whitener(values, self.config.shrinkage, f"whiten_{k}") for k, values in zip(self.turns, fitted[len(maps) :])
        ]
        whitened = [gaussian(f) for gaussian, f in zip(gaussians, features)]
        head = classifier.get_layer("turn_logits")
        log_probs = [keras.layers.Activation("log_softmax")(head(out[-1])) for out in outputs]
        parts = keras.layers.Concatenate(name="parts")([self._mahalanobis(whitened), self._turn_loss(log_probs)])
        # each part divided by its spread on the training images, so neither drowns the other
        spread = predict(keras.Model(inputs, parts), images)[0].std(axis=0)
        score = fixed_dense(1, (1.0 / np.maximum(spread, 1e-12))[:, None], None, "score")(parts)
        deviation = self._deviation_map(maps, fitted[: len(maps)])
        return keras.Model(inputs, [score, deviation], name=self.family)

    def _mahalanobis(self, whitened: list[Any]) -> Any:
        """Sum over the turns of the squared whitened features: (n, 1)."""
        stacked = keras.layers.Concatenate()(whitened) if len(whitened) > 1 else whitened[0]
        squared = keras.layers.Multiply()([stacked, stacked])
        return fixed_dense(1, np.ones((squared.shape[-1], 1)), None, "mahalanobis")(squared)

    def _turn_loss(self, log_probs: list[Any]) -> Any:
        """Negative log-likelihood of the true turn, summed over the turns: (n, 1)."""
        n = len(self.turns)
        pick = np.zeros((n * n, 1))
        pick[[i * n + i for i in range(n)], 0] = -1.0  # turn i's own class among its n log-probabilities
        return fixed_dense(1, pick, None, "turn_loss")(keras.layers.Concatenate()(log_probs))

    def _deviation_map(self, maps: list[Any], fitted: list[np.ndarray]) -> Any:
        """Fixed layers: the feature maps' squared standardised deviation, per location, at the image's size.

        Each stage's map is averaged over its channels and resized; the stages are averaged (the first one
        places a deviation sharply, the later ones see whether it matters to the shape).
        """
        height, width = self.config.input_shape[:2]
        resized = []
        for stage, (tensor, values) in enumerate(zip(maps, fitted)):
            variance = values.var(axis=0)
            # a floor: locations where a feature never fires in training would otherwise divide by zero
            variance = variance + 0.1 * variance.mean() + 1e-12
            scale = keras.layers.Normalization(
                axis=(1, 2, 3), mean=values.mean(axis=0), variance=variance, name=f"scale_{stage}"
            )
            standardized = scale(tensor)
            squared = keras.layers.Multiply()([standardized, standardized])
            channel_mean = np.full((values.shape[-1], 1), 1.0 / (values.shape[-1] * len(maps)))
            per_location = fixed_dense(1, channel_mean, None, f"channel_mean_{stage}")(squared)
            resized.append(
                keras.layers.Resizing(height, width, interpolation="bilinear", name=f"to_image_{stage}")(per_location)
            )
        return keras.layers.Add(name="deviation")(resized) if len(resized) > 1 else resized[0]

    def _score_batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's raw score, and its deviation map repeated over the image's channels."""
        scores, maps = [], []
        for start in range(0, len(samples), CHUNK):  # bounded memory: each image is run in four turns
            score, deviation = self.model_(samples[start : start + CHUNK], training=False)
            scores.append(np.asarray(score, dtype=np.float64)[:, 0])
            maps.append(np.maximum(np.asarray(deviation, dtype=np.float64), 0.0))
        return np.concatenate(scores), np.broadcast_to(np.concatenate(maps), samples.shape).copy()
