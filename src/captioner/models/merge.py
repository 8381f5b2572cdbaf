"""The seed's "merge" captioner: image feature and LSTM language state are added, then classified.

    photo (D,) -> dropout -> dense 256 (relu) ----------------+
                                                            add -> dense 256 (relu) -> dense V
    words (T,) -> embedding 256 (masked) -> dropout -> LSTM 256 +

One set of layers serves three uses:
- `MergeDecoder.call`: teacher forcing over whole captions, logits for every position (training).
- `MergeDecoder.step`: one word at a time with carried LSTM state (fast generation).
- `define_model`: the classic tutorial's functional model (prefix -> next-word softmax), built on
  the same layers, so `create_sequences` / `data_generator` / `generate_desc` keep working.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import keras
import numpy as np
from keras import layers, ops


@dataclasses.dataclass
class MergeConfig:
    """Hyper-parameters of the merge decoder; saved as JSON next to every trained model."""

    vocab_size: int
    max_length: int  # longest token sequence the decoder sees, start and end tokens included
    feature_dim: int = 2048  # size of the pooled image feature
    embedding_dim: int = 256
    units: int = 256  # LSTM state size; also the size of the projected image feature
    dropout: float = 0.5
    decoder: str = "merge"


@keras.saving.register_keras_serializable(package="captioner")
class MergeDecoder(keras.Model):
    """The merge decoder as a Keras `Model` subclass."""

    def __init__(self, config: MergeConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.feature_dropout = layers.Dropout(config.dropout)
        self.feature_dense = layers.Dense(config.units, activation="relu", name="feature_dense")
        self.embedding = layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=True, name="embedding")
        self.word_dropout = layers.Dropout(config.dropout)
        self.lstm = layers.LSTM(config.units, return_sequences=True, return_state=True, name="lstm")
        self.hidden_dense = layers.Dense(config.units, activation="relu", name="hidden_dense")
        self.output_dense = layers.Dense(config.vocab_size, name="output_dense")

    def build_all(self) -> "MergeDecoder":
        """Creates every variable by running one dummy batch (needed before loading weights)."""
        self(
            (np.zeros((1, self.config.feature_dim), "float32"), np.ones((1, 2), "int32")),
            training=False,
        )
        return self

    def encode_image(self, features, training=False):
        """(B, D) image features -> (B, units) projection added at every word."""
        return self.feature_dense(self.feature_dropout(features, training=training))

    def call(self, inputs, training=False):
        """Teacher forcing: (features (B, D), tokens (B, T)) -> logits (B, T, V)."""
        features, tokens = inputs
        image = self.encode_image(features, training)  # (B, units)
        words = self.word_dropout(self.embedding(tokens), training=training)  # (B, T, E)
        sequence, _, _ = self.lstm(words, training=training)  # (B, T, units)
        hidden = self.hidden_dense(sequence + image[:, None, :])  # (B, T, units)
        return self.output_dense(hidden)  # (B, T, V)

    def initial_state(self, batch_size: int):
        """Zero LSTM state: [(B, units), (B, units)]."""
        zeros = ops.zeros((batch_size, self.config.units))
        return [zeros, zeros]

    def step(self, image, tokens, state):
        """One generation step.

        Args:
            image: (B, units) output of `encode_image`.
            tokens: (B,) int previous words.
            state: [h (B, units), c (B, units)].

        Returns:
            logits (B, V) for the next word, and the new state.
        """
        words = self.embedding(tokens[:, None])  # (B, 1, E)
        output, h, c = self.lstm(words, initial_state=state)  # (B, 1, units)
        logits = self.output_dense(self.hidden_dense(output[:, 0] + image))  # (B, V)
        return logits, [h, c]

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        return cls(MergeConfig(**config.pop("config")), **config)


def build_decoder(config: MergeConfig) -> MergeDecoder:
    """Builds a decoder with all variables created."""
    return MergeDecoder(config).build_all()


# --- The classic tutorial's API, kept working on top of the same layers --------------------------------


def define_model(
    vocab_size: int,
    max_length: int,
    feature_dim: int = 2048,
    embedding_dim: int = 256,
    units: int = 256,
    dropout: float = 0.5,
) -> keras.Model:
    """The seed's model: (photo (D,), pre-padded prefix (max_length,)) -> next-word softmax (V,).

    Compiled with categorical cross-entropy and Adam, as in the tutorial. The decoder it wraps is
    `model.decoder`, so a model trained this way also generates with the fast stepping decoder.
    """
    config = MergeConfig(vocab_size, max_length, feature_dim, embedding_dim, units, dropout)
    decoder = build_decoder(config)
    photo = keras.Input(shape=(feature_dim,), name="photo")
    prefix = keras.Input(shape=(max_length,), dtype="int32", name="prefix")
    # The decoder's own layers, but the dense layers only at the last position, as the seed does.
    image = decoder.encode_image(photo)  # (B, units)
    sequence, _, _ = decoder.lstm(decoder.word_dropout(decoder.embedding(prefix)))  # (B, max_length, units)
    # Pre-padding puts the last real word at the final position.
    logits = decoder.output_dense(decoder.hidden_dense(sequence[:, -1, :] + image))  # (B, V)
    next_word = layers.Activation("softmax", name="next_word")(logits)
    model = keras.Model([photo, prefix], next_word, name="merge_captioner")
    model.decoder = decoder
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def pad_prefix(sequence: list[int], max_length: int) -> np.ndarray:
    """Keras' `pad_sequences` default: zeros in front, long sequences cut from the front."""
    padded = np.zeros(max_length, dtype="int32")
    tail = sequence[-max_length:]
    if tail:
        padded[-len(tail):] = tail
    return padded


def create_sequences(tokenizer, max_length: int, desc_list: list[str], photo: np.ndarray, vocab_size: int):
    """The seed's one-example-per-prefix expansion of a photo's captions.

    Args:
        tokenizer: anything with `texts_to_sequences` (our `Vocabulary` has it).
        max_length: prefix length the model takes.
        desc_list: captions with start and end tokens, e.g. "<start> a dog runs <end>".
        photo: (D,) or (1, D) feature.
        vocab_size: number of output classes.

    Returns:
        X1 (N, D) photos, X2 (N, max_length) prefixes, y (N, vocab_size) one-hot next words.
    """
    photo = np.asarray(photo).reshape(-1)
    photos, prefixes, targets = [], [], []
    for desc in desc_list:
        seq = tokenizer.texts_to_sequences([desc])[0]
        for i in range(1, len(seq)):
            photos.append(photo)
            prefixes.append(pad_prefix(seq[:i], max_length))
            target = np.zeros(vocab_size, dtype="float32")
            target[seq[i]] = 1.0
            targets.append(target)
    return np.array(photos), np.array(prefixes), np.array(targets)


def data_generator(descriptions: dict[str, list[str]], photos: dict[str, np.ndarray], tokenizer, max_length: int, vocab_size: int) -> Iterator:
    """The seed's endless generator: one batch per photo, all prefixes of all its captions.

    Yields `((X1, X2), y)` as `create_sequences` builds them, for `model.fit(..., steps_per_epoch=len(descriptions))`.
    """
    while True:
        for key, desc_list in descriptions.items():
            in_img, in_seq, out_word = create_sequences(tokenizer, max_length, desc_list, photos[key], vocab_size)
            yield (in_img, in_seq), out_word
