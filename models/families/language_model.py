"""Shared machinery of the text families: a language model over each message's tokens, scored by its surprise.

A text family is a causal language model: the message is standardised and split into tokens by a
TextVectorization layer adapted on the training texts (its vocabulary travels inside model.keras), an
end-of-message token follows the last token, and the model predicts every token from the ones before it
(a begin token stands before the first). A token's surprise is its negative log-likelihood; the raw score
is the mean surprise over the message's tokens (padding excluded), the explanation the surprise per token.
A family only builds the network between the previous-token ids and the per-position hidden states.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from anomalake.models.base import Detector
from anomalake.models.training import KerasConfig, batched, fit_keras, seed_everything

OOV_ID = 1  # TextVectorization's ids: 0 is padding, 1 out-of-vocabulary, then the vocabulary by frequency


@dataclass(frozen=True)
class TextConfig(KerasConfig):
    """Vocabulary, message length in tokens and embedding width shared by the text families."""

    max_tokens: int = 20000
    min_count: int = 2
    sequence_length: int = 48
    embedding_dim: int = 64
    dropout: float = 0.1
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 0.002


@keras.saving.register_keras_serializable(package="anomalake")
def standardize_text(texts: Any) -> Any:
    """Lower-case; every digit becomes 0 and every symbol its own token (a number's length and shape stay)."""
    import tensorflow as tf

    # Phone numbers, prices and short codes are signal in messages: keep their shape, not their value.
    texts = tf.strings.regex_replace(tf.strings.lower(texts), r"[0-9]", "0")
    return tf.strings.regex_replace(texts, r"([^\p{L}\p{N}\s])", r" \1 ")


@keras.saving.register_keras_serializable(package="anomalake")
class NextTokenTargets(keras.layers.Layer):
    """Token ids (n, L) -> (previous ids, target ids): an end token after the last token, a begin token first."""

    def __init__(self, end_id: int, begin_id: int, **kwargs):
        super().__init__(**kwargs)
        self.end_id, self.begin_id = int(end_id), int(begin_id)

    def call(self, ids):
        ids = keras.ops.cast(ids, "int32")
        length = keras.ops.sum(keras.ops.cast(ids > 0, "int32"), axis=1)
        # one_hot of an index equal to L is all zeros: a truncated message has no end token.
        targets = ids + self.end_id * keras.ops.cast(keras.ops.one_hot(length, ids.shape[1]), "int32")
        begin = keras.ops.full_like(targets[:, :1], self.begin_id)
        return keras.ops.concatenate([begin, targets[:, :-1]], axis=1), targets

    def compute_output_spec(self, ids):
        # Two distinct specs: one shared object would make both outputs the same symbolic tensor.
        return keras.KerasTensor(ids.shape, dtype="int32"), keras.KerasTensor(ids.shape, dtype="int32")

    def get_config(self):
        return {**super().get_config(), "end_id": self.end_id, "begin_id": self.begin_id}


@keras.saving.register_keras_serializable(package="anomalake")
class TokenSurprise(keras.layers.Layer):
    """(logits, targets) -> per-token negative log-likelihood, zero at padding.

    The out-of-vocabulary id stands for every rare training word at once, so its predicted probability is
    shared among them: an OOV token costs log(number of rare words) more (without it a message full of
    unknown words would look ordinary, since OOV as a class is common).
    """

    def __init__(self, oov_penalty: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.oov_penalty = float(oov_penalty)

    def call(self, logits, targets):
        nll = keras.ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        nll = keras.ops.maximum(nll, 0.0) + self.oov_penalty * keras.ops.cast(targets == OOV_ID, nll.dtype)
        return nll * keras.ops.cast(targets > 0, nll.dtype)

    def get_config(self):
        return {**super().get_config(), "oov_penalty": self.oov_penalty}


@keras.saving.register_keras_serializable(package="anomalake")
class MeanSurprise(keras.layers.Layer):
    """(surprise, targets) -> mean surprise over the message's tokens (an empty message has its end token)."""

    def call(self, surprise, targets):
        counted = keras.ops.sum(keras.ops.cast(targets > 0, surprise.dtype), axis=1)
        return keras.ops.sum(surprise, axis=1) / keras.ops.maximum(counted, 1.0)


@keras.saving.register_keras_serializable(package="anomalake")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to the token embeddings (the Transformer's word order)."""

    def build(self, input_shape):
        self.positions = self.add_weight(shape=tuple(input_shape[1:]), initializer="glorot_uniform", name="positions")

    def call(self, x):
        return x + self.positions


def as_text_batch(family: str, x: Any) -> np.ndarray:
    """A 1-D object array of str from str / bytes input (a tf.data batch arrives as bytes); else TypeError."""
    arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if arr.ndim == 0 and arr.dtype.kind in "OSU":
        arr = arr.reshape(1)  # one message
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.dtype.kind not in "OSU" or arr.ndim != 1:
        raise TypeError(f"{family}: expected text (an array of strings), got {arr.dtype} of shape {arr.shape}")
    out = np.empty(len(arr), dtype=object)
    for i, value in enumerate(arr):
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if not isinstance(value, str):
            raise TypeError(f"{family}: expected text (an array of strings), got a {type(value).__name__} at row {i}")
        out[i] = value
    return out


def adapted_vectorizer(train: Any, config: TextConfig) -> tuple[Any, int]:
    """A TextVectorization adapted on `train` that keeps tokens seen min_count times, and how many it drops.

    Dropping rare tokens lets the model see OOV in training, so an unseen word gets a learned, finite surprise.
    """

    def vectorizer(vocabulary=None):
        return keras.layers.TextVectorization(
            max_tokens=None if vocabulary is not None else config.max_tokens,
            standardize=standardize_text,
            output_sequence_length=config.sequence_length,
            vocabulary=vocabulary,
            name="vectorize",
        )

    full = vectorizer()
    full.adapt(batched(train, config))
    vocabulary = full.get_vocabulary()
    counts = np.zeros(len(vocabulary), dtype=np.int64)
    for batch in batched(train, config):
        counts += np.bincount(np.asarray(full(batch)).ravel(), minlength=len(vocabulary))
    kept = [token for token, count in zip(vocabulary[2:], counts[2:]) if count >= config.min_count]
    rare = len(vocabulary) - 2 - len(kept)
    return vectorizer(kept or ["[PAD]"]), rare  # [PAD]: a vocabulary may not be empty; it never occurs


class TextLanguageModel(Detector):
    """Causal language model over a message's tokens; score = mean surprise, explanation = surprise per token.

    The saved Keras model maps raw strings to [mean surprise (n,), surprise per token (n, sequence_length)].
    Subclasses implement `_hidden(previous, n_ids)`: the per-position states from the previous-token ids.
    """

    input_kinds = ("text",)

    @abc.abstractmethod
    def _hidden(self, previous: Any, n_ids: int) -> Any:
        """Per-position hidden states (n, L, width) from the previous-token ids (n, L) over `n_ids` ids."""

    @property
    def explanation_shape(self) -> tuple[int, ...]:
        return (self.config.sequence_length,)

    def as_batch(self, x: Any) -> np.ndarray:
        return as_text_batch(self.family, x)

    def _build(self, vectorizer: Any, rare_words: int) -> Any:
        n_words = vectorizer.vocabulary_size()
        text = keras.Input(shape=(), dtype="string", name="text")
        previous, targets = NextTokenTargets(end_id=n_words, begin_id=n_words + 1, name="next_token")(vectorizer(text))
        logits = keras.layers.Dense(n_words + 1, name="logits")(self._hidden(previous, n_words + 2))
        surprise = TokenSurprise(float(np.log1p(rare_words)), name="surprise")(logits, targets)
        scored = keras.Model(text, [MeanSurprise(name="score")(surprise, targets), surprise], name=self.family)
        return keras.Model(text, surprise, name=f"{self.family}_train"), scored

    def fit(self, train: Any, validation: Any = None) -> "TextLanguageModel":
        """Adapt the vocabulary on `train`, then train the language model (early stopping on validation)."""
        import tensorflow as tf

        seed_everything(self.config)
        model, scored = self._build(*adapted_vectorizer(train, self.config))
        # The model outputs each token's surprise; L1 towards zero is exactly the mean negative log-likelihood.
        model.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), loss="mae")
        to_xy = lambda x: (x, tf.zeros((tf.shape(x)[0], self.config.sequence_length)))  # noqa: E731
        self.history_ = fit_keras(model, train, validation, self.config, to_xy)
        self.model_ = scored  # the same layers, with the mean surprise as a second output
        return self

    def _explanation_parts(self, samples: np.ndarray, contributions: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
        """Tokens (as the vocabulary spells them; "[UNK]" for a rare word, "[END]" after the last) and their
        surprise."""
        import tensorflow as tf

        vectorizer = self.model_.get_layer("vectorize")
        vocabulary = vectorizer.get_vocabulary() + ["[END]"]
        ids = np.asarray(vectorizer(tf.constant(samples.astype(str))))
        names = []
        for row in ids:
            length = int((row > 0).sum())
            tokens = [vocabulary[i] for i in row[:length]] + (["[END]"] if length < len(row) else [])
            names.append(tokens + [""] * (len(row) - len(tokens)))
        return names, contributions

    def _score_batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean surprise over the message's tokens (the end token included), and the surprise per token."""
        import tensorflow as tf

        score, surprise = self.model_(tf.constant(samples.astype(str)), training=False)
        return np.asarray(score, dtype=np.float64), np.asarray(surprise, dtype=np.float64)
