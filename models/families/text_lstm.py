"""LSTM language model on text: a message's score is its tokens' mean surprise (negative log-likelihood).

The recurrent variant of text_transformer: stacked LSTMs read the message left to right and predict every
next token; the vocabulary, the scoring and the explanation are shared (models/families/language_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from anomalake.models.families.language_model import TextConfig, TextLanguageModel
from anomalake.models.registry import register


@dataclass(frozen=True)
class TextLstmConfig(TextConfig):
    """Width and depth of the LSTM stack."""

    units: int = 128
    layers: int = 1
    learning_rate: float = 0.003


@register
class TextLstm(TextLanguageModel):
    """LSTM language model on text: mean negative log-likelihood of the message's tokens."""

    family = "text_lstm"
    config_class = TextLstmConfig
    tiny_params = {"embedding_dim": 32, "units": 32, "sequence_length": 12, "learning_rate": 0.02}

    def _hidden(self, previous: Any, n_ids: int) -> Any:
        c = self.config
        x = keras.layers.Embedding(n_ids, c.embedding_dim, name="embed")(previous)
        for i in range(c.layers):
            # Left to right only: padding (always at the end) never changes an earlier token's prediction.
            x = keras.layers.LSTM(c.units, return_sequences=True, name=f"lstm_{i}")(x)
        return keras.layers.Dropout(c.dropout)(x)
