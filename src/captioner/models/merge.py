"""The seed's "merge" captioner: image feature and LSTM language state are added, then classified.

    photo (D,) -> dropout -> dense 256 (relu) ----------------+
                                                            add -> dense 256 (relu) -> dense V
    words (T,) -> embedding 256 (masked) -> dropout -> LSTM 256 +

One set of layers serves three uses:
- `MergeDecoder.call`: teacher forcing over whole captions, logits for every position (training).
- `MergeDecoder.step`: one word at a time with carried LSTM state (fast generation).
- `captioner.tutorial.define_model`: the classic tutorial's functional model (prefix -> next-word
  softmax), built on the same layers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import layers, ops

from captioner.models.base import POOLED, Decoder, DecoderConfig, build_decoder, register_decoder

if TYPE_CHECKING:
    import tensorflow as tf


@dataclasses.dataclass
class MergeConfig(DecoderConfig):
    """Hyper-parameters of the merge decoder (`units` is the LSTM size and the image projection's)."""


@register_decoder("merge")
@keras.saving.register_keras_serializable(package="captioner")
class MergeDecoder(Decoder):
    """The merge decoder: pooled features, zero initial state, no attention."""

    config_class = MergeConfig
    features = POOLED

    def __init__(self, config: MergeConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.feature_dropout = layers.Dropout(config.dropout, name="feature_dropout")
        self.feature_dense = layers.Dense(config.units, activation="relu", name="feature_dense")
        self.embedding = layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=True, name="embedding")
        self.word_dropout = layers.Dropout(config.dropout, name="word_dropout")
        self.lstm = layers.LSTM(config.units, return_sequences=True, return_state=True, name="lstm")
        self.hidden_dense = layers.Dense(config.units, activation="relu", name="hidden_dense")
        self.output_dense = layers.Dense(config.vocab_size, name="output_dense")

    def encode_image(self, features: tf.Tensor | np.ndarray, training: bool = False) -> tf.Tensor:
        """(B, D) image features -> (B, units) projection added at every word."""
        return self.feature_dense(self.feature_dropout(features, training=training))

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Teacher forcing: (features (B, D), tokens (B, T)) -> logits (B, T, V)."""
        features, tokens = inputs
        image = self.encode_image(features, training)  # (B, units)
        words = self.word_dropout(self.embedding(tokens), training=training)  # (B, T, E)
        sequence, _, _ = self.lstm(words, training=training)  # (B, T, units)
        hidden = self.hidden_dense(sequence + image[:, None, :])  # (B, T, units)
        return self.output_dense(hidden)  # (B, T, V)

    def initial_state(self, memory: tf.Tensor) -> list[tf.Tensor]:
        """Zero LSTM state: [(B, units), (B, units)] (the image enters at every word instead)."""
        zeros = ops.zeros_like(memory)  # (B, units)
        return [zeros, zeros]

    def step(self, image: tf.Tensor, tokens: tf.Tensor, state: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], None]:
        """One generation step.

        Args:
            image: (B, units) output of `encode_image`.
            tokens: (B,) int previous words.
            state: [h (B, units), c (B, units)].

        Returns:
            logits (B, V) for the next word, the new state, and None (no attention).
        """
        words = self.embedding(tokens[:, None])  # (B, 1, E)
        output, h, c = self.lstm(words, initial_state=state)  # (B, 1, units)
        logits = self.output_dense(self.hidden_dense(output[:, 0] + image))  # (B, V)
        return logits, [h, c], None


__all__ = ["MergeConfig", "MergeDecoder", "build_decoder"]
