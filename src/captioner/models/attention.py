"""Show, Attend and Tell (Xu et al. 2015): soft additive attention over the encoder's grid.

    grid (L, D) --dense relu--> grid (L, P)                          (optional: projection_dim P > 0)
    grid (L, D) --mean--> dense tanh -> h0, c0                       (the state starts from the image)
    grid (L, D) --dense--> keys (L, A)
    each word:  scores = w . tanh(keys + dense(h))  -> alpha = softmax over the L cells
                context = sigmoid(dense(h)) * sum(alpha * grid)    (the gating scalar beta, per channel)
                h, c = LSTM([embedding(word); context], (h, c))
                logits = dense_V(dropout(embedding(word) + dense(h) + dense(context)))   (deep output)

Training adds the doubly-stochastic regulariser alpha_c * mean_L (1 - sum_t alpha_tl)^2 (averaged over
cells as in sgrvinod's tutorial), which asks every cell to be looked at about once over the caption.

The projection is computed once per image. It shrinks what every step reads: with D = 1280 and
512 units, each step multiplies by about 6.1M weights (24 MB in float32, more than the CPU caches
hold, so one word costs a trip through memory for all of them); with P = 512, by about 3.9M.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from captioner.models.base import GRID, Decoder, DecoderConfig, register_decoder


@dataclasses.dataclass
class AttentionConfig(DecoderConfig):
    """Hyper-parameters of the attention decoder."""

    attention_dim: int = 256  # size of the additive attention's hidden layer
    alpha_c: float = 1.0  # weight of the doubly-stochastic attention regulariser
    projection_dim: int = 0  # > 0: project each grid cell to this size once per image (faster steps)


@register_decoder("attention")
@keras.saving.register_keras_serializable(package="captioner")
class AttentionDecoder(Decoder):
    """Soft attention LSTM decoder over (B, L, D) grids; returns (B, L) weights at every step."""

    config_class = AttentionConfig
    features = GRID

    def __init__(self, config: AttentionConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.alpha_c = config.alpha_c
        self.projection = layers.Dense(config.projection_dim, activation="relu", name="projection") if config.projection_dim else None
        context_dim = config.projection_dim or config.feature_dim
        self.init_h = layers.Dense(config.units, activation="tanh", name="init_h")
        self.init_c = layers.Dense(config.units, activation="tanh", name="init_c")
        self.attention_keys = layers.Dense(config.attention_dim, name="attention_keys")
        self.attention_query = layers.Dense(config.attention_dim, name="attention_query")
        self.attention_score = layers.Dense(1, name="attention_score")
        self.gate = layers.Dense(context_dim, activation="sigmoid", name="gate")
        self.embedding = layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")
        self.lstm_cell = layers.LSTMCell(config.units, name="lstm_cell")
        self.hidden_out = layers.Dense(config.embedding_dim, name="hidden_out")
        self.context_out = layers.Dense(config.embedding_dim, name="context_out")
        self.output_dropout = layers.Dropout(config.dropout, name="output_dropout")
        self.output_dense = layers.Dense(config.vocab_size, name="output_dense")

    def encode_image(self, features: tf.Tensor | np.ndarray, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(B, L, D) grid -> memory: the grid (B, L, P or D) and its attention keys (B, L, A)."""
        grid = self.projection(features) if self.projection is not None else features
        return grid, self.attention_keys(grid)

    def initial_state(self, memory: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
        """[h (B, units), c (B, units)] from the mean grid feature."""
        mean = ops.mean(memory[0], axis=1)  # (B, D)
        return [self.init_h(mean), self.init_c(mean)]

    def _step(
        self, memory: tuple[tf.Tensor, tf.Tensor], tokens: tf.Tensor, state: list[tf.Tensor], training: bool = False
    ) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        grid, keys = memory
        h, c = state
        scores = self.attention_score(ops.tanh(keys + self.attention_query(h)[:, None, :]))[:, :, 0]  # (B, L)
        alpha = ops.softmax(scores, axis=-1)  # (B, L)
        context = self.gate(h) * ops.sum(grid * alpha[:, :, None], axis=1)  # (B, D)
        words = self.embedding(tokens)  # (B, E)
        output, (h, c) = self.lstm_cell(ops.concatenate([words, context], axis=-1), [h, c], training=training)
        hidden = words + self.hidden_out(output) + self.context_out(context)  # (B, E)
        return self.output_dense(self.output_dropout(hidden, training=training)), [h, c], alpha

    def step(self, memory: tuple[tf.Tensor, tf.Tensor], tokens: tf.Tensor, state: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """tokens (B,) -> logits (B, V), [h, c], attention weights (B, L)."""
        return self._step(memory, tokens, state)

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Teacher forcing: (grid (B, L, D), tokens (B, T)) -> logits (B, T, V)."""
        features, tokens = inputs
        memory = self.encode_image(features, training)
        h, c = self.initial_state(memory)
        steps = tf.shape(tokens)[1]
        all_logits = tf.TensorArray(self.compute_dtype, size=steps)
        all_alphas = tf.TensorArray(self.compute_dtype, size=steps)

        def body(
            t: tf.Tensor, h: tf.Tensor, c: tf.Tensor, all_logits: tf.TensorArray, all_alphas: tf.TensorArray
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.TensorArray, tf.TensorArray]:
            logits, (h, c), alpha = self._step(memory, tokens[:, t], [h, c], training)
            return t + 1, h, c, all_logits.write(t, logits), all_alphas.write(t, alpha)

        _, _, _, all_logits, all_alphas = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), h, c, all_logits, all_alphas))
        logits = tf.transpose(all_logits.stack(), [1, 0, 2])  # (B, T, V)
        if training and self.alpha_c:
            alphas = tf.transpose(all_alphas.stack(), [1, 0, 2])  # (B, T, L)
            mask = tf.cast(tokens != 0, alphas.dtype)[:, :, None]  # padding positions attend nowhere
            coverage = tf.reduce_sum(alphas * mask, axis=1)  # (B, L)
            self.add_loss(self.alpha_c * tf.reduce_mean((1.0 - coverage) ** 2))
        return logits
