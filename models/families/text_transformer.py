"""Transformer language model on text: a message's score is its tokens' mean surprise (negative log-likelihood).

A small decoder-only Transformer (pre-norm blocks of causal self-attention and a feed-forward layer, learned
position embeddings) predicts every token from the ones before it, so one forward pass gives every token's
likelihood; the vocabulary, the scoring and the explanation are shared with text_lstm
(models/families/language_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from anomalake.models.families.language_model import PositionEmbedding, TextConfig, TextLanguageModel
from anomalake.models.registry import register


@dataclass(frozen=True)
class TextTransformerConfig(TextConfig):
    """Attention heads, number of blocks and the feed-forward width of each block."""

    heads: int = 2
    layers: int = 2
    ff_dim: int = 128


@keras.saving.register_keras_serializable(package="anomalake")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm Transformer decoder block: causal self-attention, then a feed-forward layer, both residual."""

    def __init__(self, heads: int, dim: int, ff_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.dim, self.ff_dim, self.dropout = heads, dim, ff_dim, dropout
        self.attention = keras.layers.MultiHeadAttention(heads, dim // heads, dropout=dropout)
        self.norm_attention, self.norm_feed = keras.layers.LayerNormalization(), keras.layers.LayerNormalization()
        self.feed_in, self.feed_out = keras.layers.Dense(ff_dim, activation="gelu"), keras.layers.Dense(dim)
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        # Built here, not lazily, so that a loaded model has every weight before its weights are read.
        self.norm_attention.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm_feed.build(input_shape)
        self.feed_in.build(input_shape)
        self.feed_out.build((*input_shape[:-1], self.ff_dim))

    def call(self, x, training=None):
        normed = self.norm_attention(x)
        # Causal: a position sees only earlier ones, so padding (always at the end) never leaks backwards.
        x = x + self.drop(self.attention(normed, normed, use_causal_mask=True, training=training), training=training)
        return x + self.drop(self.feed_out(self.feed_in(self.norm_feed(x))), training=training)

    def get_config(self):
        sizes = {"heads": self.heads, "dim": self.dim, "ff_dim": self.ff_dim, "dropout": self.dropout}
        return {**super().get_config(), **sizes}


@register
class TextTransformer(TextLanguageModel):
    """Transformer language model on text: mean negative log-likelihood of the message's tokens."""

    family = "text_transformer"
    config_class = TextTransformerConfig
    tiny_params = {"embedding_dim": 32, "ff_dim": 64, "layers": 1, "sequence_length": 12, "learning_rate": 0.01}

    def _hidden(self, previous: Any, n_ids: int) -> Any:
        c = self.config
        x = PositionEmbedding(name="positions")(keras.layers.Embedding(n_ids, c.embedding_dim, name="embed")(previous))
        x = keras.layers.Dropout(c.dropout)(x)
        for i in range(c.layers):
            x = TransformerBlock(c.heads, c.embedding_dim, c.ff_dim, c.dropout, name=f"block_{i}")(x)
        return keras.layers.LayerNormalization(name="final_norm")(x)
