"""Adversarially trained detector in the manner of GANomaly / ALAD: encoder, generator, discriminator.

The encoder maps a sample to a latent code, the generator maps the code back to a sample, and the
discriminator learns to tell real samples from generated ones. Encoder and generator are trained to
reconstruct the sample and to fool the discriminator by matching its internal features (feature matching,
which keeps GAN training stable on small data). The score adds the two views the model has of a sample:
its standardised reconstruction error and the discriminator's feature-matching distance between the sample
and its reconstruction, each divided by its mean on the training data, mixed by `feature_weight`.

Works on windows (steps, metrics) and images (height, width, channels): the networks are dense on the
flattened sample. The saved model is one functional model (sample in; standardised reconstruction and
feature residuals out); the discriminator's head is only needed for training and is not saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalake.models.base import Detector
from anomalake.models.families.residual import window_statistic
from anomalake.models.registry import register
from anomalake.models.training import (
    KerasConfig,
    adapted_normalizer,
    batched,
    float_batch,
    mean_square,
    seed_everything,
    steps_per_pass,
    with_fixed_scale,
)


@dataclass(frozen=True)
class GanConfig(KerasConfig):
    """Widths of the encoder (the generator mirrors them), of the discriminator, and the score's mix."""

    hidden: tuple[int, ...] = (64, 8)
    discriminator: tuple[int, ...] = (128, 64)
    adversarial_weight: float = 0.1
    feature_weight: float = 0.1
    statistic: str = "mean"
    top_k: int = 4


def _dense_stack(widths: tuple[int, ...], name: str) -> list[Any]:
    import keras

    return [keras.layers.Dense(w, activation="relu", name=f"{name}_{i}") for i, w in enumerate(widths)]


def _apply(layers: list[Any], x: Any) -> Any:
    for layer in layers:
        x = layer(x)
    return x


@register
class Gan(Detector):
    """GAN detector (GANomaly / ALAD style): reconstruction error plus the discriminator's feature distance."""

    family = "gan"
    config_class = GanConfig
    input_kinds = ("timeseries", "image")
    tiny_params = {"hidden": (32, 8), "discriminator": (32, 16), "epochs": 6}

    def _networks(self, normalizer: Any) -> dict[str, Any]:
        """The trainable parts as Keras models sharing layers: autoencoder, features, discriminator."""
        import keras

        shape = tuple(self.config.input_shape)
        width = int(np.prod(shape))
        inputs = keras.Input(shape=shape, name="x")
        flat = keras.layers.Flatten()(normalizer(inputs))
        code = _apply(_dense_stack(self.config.hidden, "encoder"), flat)
        generator = _dense_stack(tuple(reversed(self.config.hidden[:-1])), "generator")
        generator.append(keras.layers.Dense(width, name="generated"))
        generated = _apply(generator, code)
        sample = keras.Input(shape=(width,), name="flat_sample")
        critic_layers = _dense_stack(self.config.discriminator, "discriminator")
        features = keras.Model(sample, _apply(critic_layers, sample), name="features")
        head = keras.layers.Dense(1, name="real_logit")
        return {
            "autoencoder": keras.Model(inputs, [flat, generated], name="autoencoder"),
            "features": features,
            "critic": keras.Model(sample, head(features(sample)), name="critic"),
        }

    def fit(self, train: Any, validation: Any = None) -> "Gan":
        """Alternate discriminator and encoder-generator updates for `epochs` passes; fix the score scales."""
        seed_everything(self.config)
        shaped = float_batch(tuple(self.config.input_shape))
        nets = self._networks(adapted_normalizer(train, self.config, shaped))
        steps = max(steps_per_pass(train, self.config.batch_size), self.config.min_steps_per_epoch)
        step = _train_step(nets, self.config)
        data = iter(batched(train, self.config, shaped).repeat())
        self.history_ = {"reconstruction": [], "discriminator": [], "val_reconstruction": []}
        for _ in range(self.config.epochs):
            losses = np.mean([np.asarray(step(next(data))) for _ in range(steps)], axis=0)
            self.history_["reconstruction"].append(float(losses[0]))
            self.history_["discriminator"].append(float(losses[1]))
            if validation is not None:  # watched, not used to stop: adversarial losses do not fall steadily
                self.history_["val_reconstruction"].append(
                    _reconstruction_loss(nets["autoencoder"], validation, self.config, shaped)
                )
        residuals = self._residual_model(nets)
        variances = [mean_square(_output(residuals, i), train, self.config, shaped) for i in range(2)]
        self.model_ = with_fixed_scale(residuals, variances, self.family)
        return self

    def _residual_model(self, nets: dict[str, Any]) -> Any:
        """Sample -> (reconstruction residual, feature-matching residual), both flat."""
        import keras

        flat, generated = nets["autoencoder"].outputs
        inputs = nets["autoencoder"].inputs[0]
        rec = keras.layers.Subtract(name="reconstruction_residual")([generated, flat])
        fm = keras.layers.Subtract(name="feature_residual")([nets["features"](generated), nets["features"](flat)])
        return keras.Model(inputs, [rec, fm], name=self.family)

    def _score_batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1 - w) x reconstruction part + w x feature part, each standardised to mean 1 on training data."""
        rec, fm = (np.square(np.asarray(t, dtype=np.float64)) for t in self.model_(samples, training=False))
        weight = self.config.feature_weight
        score = (1.0 - weight) * window_statistic(rec, self.config.statistic, self.config.top_k) + weight * fm.mean(
            axis=1
        )
        return score, rec.reshape(samples.shape)


def _reconstruction_loss(autoencoder: Any, data: Any, config: GanConfig, shaped: Any) -> float:
    """Mean squared reconstruction error (normalised units) over one pass of `data`."""
    total, count = 0.0, 0
    for x in batched(data, config, shaped):
        flat, generated = (np.asarray(t, dtype=np.float64) for t in autoencoder(x, training=False))
        total, count = total + float(np.square(generated - flat).sum()), count + flat.size
    return total / max(count, 1)


def _output(model: Any, index: int) -> Any:
    import keras

    return keras.Model(model.inputs[0], model.outputs[index])


def _train_step(nets: dict[str, Any], config: GanConfig) -> Any:
    """One compiled update: the discriminator on real vs generated, then encoder and generator."""
    import keras
    import tensorflow as tf

    autoencoder, features, critic = nets["autoencoder"], nets["features"], nets["critic"]
    critic_opt = keras.optimizers.Adam(config.learning_rate, beta_1=0.5)
    generator_opt = keras.optimizers.Adam(config.learning_rate, beta_1=0.5)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(x: Any) -> Any:
        flat, generated = autoencoder(x, training=True)
        with tf.GradientTape() as tape:
            real, fake = critic(flat, training=True), critic(tf.stop_gradient(generated), training=True)
            critic_loss = bce(tf.ones_like(real), real) + bce(tf.zeros_like(fake), fake)
        grads = tape.gradient(critic_loss, critic.trainable_variables)
        critic_opt.apply_gradients(zip(grads, critic.trainable_variables))
        with tf.GradientTape() as tape:
            flat, generated = autoencoder(x, training=True)
            reconstruction = tf.reduce_mean(tf.square(generated - flat))
            matching = tf.reduce_mean(tf.square(features(generated) - tf.stop_gradient(features(flat))))
            loss = reconstruction + config.adversarial_weight * matching
        grads = tape.gradient(loss, autoencoder.trainable_variables)
        generator_opt.apply_gradients(zip(grads, autoencoder.trainable_variables))
        return tf.stack([reconstruction, critic_loss])

    return step
