"""The classic Keras tutorial's five functions, kept working on top of this package.

`extract_features`, `define_model`, `create_sequences`, `data_generator` and `generate_desc` have
the seed's names and signatures. `define_model` builds the tutorial's functional model on the
layers of a `MergeDecoder`, so a model trained the tutorial's way also generates with the fast
stepping search. The tutorial's own one-`predict`-per-word loop stays as `generate_desc_by_prefix`,
the baseline the benchmarks compare against.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Protocol

import keras
import numpy as np
from keras import layers

from captioner.decoding import SearchDecoder
from captioner.features import extract_features
from captioner.models.merge import MergeConfig, MergeDecoder, build_decoder
from captioner.vocab import END, START, Vocabulary

__all__ = ["create_sequences", "data_generator", "define_model", "extract_features", "generate_desc", "generate_desc_by_prefix", "pad_prefix"]


class Tokenizer(Protocol):
    """What the tutorial's functions need of a tokenizer: our `Vocabulary`, or Keras' legacy `Tokenizer`."""

    def texts_to_sequences(self, texts: list[str]) -> list[list[int]]: ...


class WordTokenizer(Tokenizer, Protocol):
    """A `Tokenizer` that also maps ids back to words (`generate_desc`)."""

    @property
    def index_word(self) -> Mapping[int, str]: ...


# One compiled search per (decoder, vocabulary, max length): building one traces its graphs, and
# the tutorial calls `generate_desc` once per photo. Entries go when their decoder does.
_SEARCHES: weakref.WeakKeyDictionary[MergeDecoder, dict[tuple[int, int], SearchDecoder]] = weakref.WeakKeyDictionary()


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
        padded[-len(tail) :] = tail
    return padded


def create_sequences(
    tokenizer: Tokenizer, max_length: int, desc_list: list[str], photo: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def data_generator(
    descriptions: dict[str, list[str]], photos: dict[str, np.ndarray], tokenizer: Tokenizer, max_length: int, vocab_size: int
) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray]]:
    """The seed's endless generator: one batch per photo, all prefixes of all its captions.

    Yields `((X1, X2), y)` as `create_sequences` builds them, for `model.fit(..., steps_per_epoch=len(descriptions))`.
    """
    while True:
        for key, desc_list in descriptions.items():
            in_img, in_seq, out_word = create_sequences(tokenizer, max_length, desc_list, photos[key], vocab_size)
            yield (in_img, in_seq), out_word


def _decoder_of(model: keras.Model) -> MergeDecoder | None:
    """The `MergeDecoder` itself, or the one a `define_model` model wraps; None otherwise."""
    decoder = model if isinstance(model, MergeDecoder) else getattr(model, "decoder", None)
    return decoder if isinstance(decoder, MergeDecoder) else None


def _search(decoder: MergeDecoder, vocab: Vocabulary, max_length: int) -> SearchDecoder:
    searches = _SEARCHES.setdefault(decoder, {})
    key = (id(vocab), max_length)
    if key not in searches or searches[key].vocab is not vocab:
        searches[key] = SearchDecoder(decoder, vocab, max_length, block_repeats=False)  # the seed's plain greedy
    return searches[key]


def generate_desc(model: keras.Model, tokenizer: WordTokenizer, photo: np.ndarray, max_length: int) -> str:
    """The seed's function: greedy caption for one photo, as "<start> a dog runs <end>".

    A model from `define_model` (or a `MergeDecoder`) is decoded with the fast stepping search;
    any other model taking (photo, pre-padded prefix) is run the seed's way, one `predict` per word.

    Args:
        model: the captioning model.
        tokenizer: our `Vocabulary` (or anything with `texts_to_sequences` and `index_word`).
        photo: (D,) or (1, D) image feature.
        max_length: longest prefix the model takes.
    """
    photo = np.asarray(photo, dtype="float32").reshape(1, -1)
    decoder = _decoder_of(model)
    if decoder is not None and isinstance(tokenizer, Vocabulary):
        ids = [int(i) for i in _search(decoder, tokenizer, max_length).greedy_tokens(photo)[0] if i != tokenizer.pad_id]
        return " ".join(tokenizer.id_to_word[i] for i in [tokenizer.start_id, *ids])
    return generate_desc_by_prefix(model, tokenizer, photo, max_length)


def generate_desc_by_prefix(model: keras.Model, tokenizer: WordTokenizer, photo: np.ndarray, max_length: int) -> str:
    """The seed's original loop: re-run the whole padded prefix through `model.predict` per word."""
    in_text = START
    for _ in range(max_length):
        sequence = pad_prefix(tokenizer.texts_to_sequences([in_text])[0], max_length)[None, :]
        next_id = int(np.argmax(model.predict([photo, sequence], verbose=0)))
        word = tokenizer.index_word.get(next_id)
        if word is None:
            break
        in_text += " " + word
        if word == END:
            break
    return in_text
