"""Captions as arrays and `tf.data` batches whose image features stream from the feature store.

One example per caption (teacher forcing over the whole caption). Batches hold captions of
similar length to waste little work on padding; every epoch's order is a pure function of
(seed, epoch), which is what makes resume exact.

`CaptionArrays` holds a split in memory (the file formats: Flickr8k, CSV, ...);
`captioner.training.stream.StreamedCaptions` keeps a sharded dataset's split on disk. Both give
an epoch's global batches as (store positions (B, 2), tokens (B, T)) through `epoch_batches` and a
`tf.data` pipeline through `dataset`, which is all the training loop uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import tensorflow as tf

from captioner.features import FeatureStore
from captioner.models.base import GRID
from captioner.vocab import Vocabulary

BUCKET_BATCHES = 32  # batches per length-sorting window: similar lengths, still well shuffled


class CaptionRows(Protocol):
    """One split's captions, wherever they are: what training reads (`CaptionArrays`, `StreamedCaptions`)."""

    @property
    def max_length(self) -> int: ...  # T, tokens per row

    @property
    def images(self) -> int: ...  # images the captions are of

    def __len__(self) -> int: ...  # captions

    def epoch_batches(self, batch_size: int, seed: int | None = None, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def reader(self, store: FeatureStore, features: str) -> FeatureReader: ...

    def dataset(self, reader: FeatureReader, batch_size: int, seed: int | None = None, epoch: int = 0) -> tf.data.Dataset: ...


@dataclasses.dataclass
class CaptionArrays:
    """Captions of one split, with where their images' features are in the store."""

    image_index: np.ndarray  # (N,) int32, each caption's image (a row of `positions`)
    tokens: np.ndarray  # (N, max_length) int32, <start> ... <end> then padding
    keys: list[str]  # (I,) image keys
    positions: np.ndarray  # (I, 2) (shard, row) of each image in the store

    @property
    def lengths(self) -> np.ndarray:
        return (self.tokens != 0).sum(axis=1)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def images(self) -> int:
        return len(self.keys)

    @property
    def max_length(self) -> int:
        return int(self.tokens.shape[1])

    def reader(self, store: FeatureStore, features: str) -> FeatureReader:
        """The feature reader for `dataset`'s batches (they carry image numbers)."""
        return FeatureReader(store, self.positions, features)

    def epoch_batches(self, batch_size: int, seed: int | None = None, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of (store positions (B, 2) int64, tokens (B, T)): in `epoch_order`, or in row order without a seed."""
        order = np.arange(len(self)) if seed is None else epoch_order(self.lengths, batch_size, seed, epoch)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield self.positions[self.image_index[rows]], self.tokens[rows]

    def dataset(self, reader: FeatureReader, batch_size: int, seed: int | None = None, epoch: int = 0) -> tf.data.Dataset:
        """One epoch's batches (in row order without a seed), as `make_dataset` makes them."""
        return make_dataset(self, reader, batch_size, None if seed is None else epoch_order(self.lengths, batch_size, seed, epoch))


def encode_captions(captions: dict[str, list[str]], vocab: Vocabulary, max_length: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cleaned captions per image -> (image keys, image index (N,), tokens (N, max_length))."""
    keys = list(captions)
    index = np.repeat(np.arange(len(keys), dtype=np.int32), [len(captions[k]) for k in keys])
    tokens = np.full((len(index), max_length), vocab.pad_id, np.int32)  # filled row by row: no list per caption
    row = 0
    for key in keys:
        for caption in captions[key]:
            ids = vocab.encode(caption)
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + [vocab.end_id]
            tokens[row, : len(ids)] = ids
            row += 1
    return keys, index, tokens


def epoch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Example order for one epoch: shuffled, then length-sorted inside windows, batches shuffled.

    Args:
        lengths: (N,) each caption's length in tokens.
        batch_size: examples per batch.
        seed, epoch: the order is a pure function of these (and `lengths`).

    Returns:
        (N,) a permutation of range(N): whole batches first, in random order, then the one short batch.
    """
    return shuffled_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))


def shuffled_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """`epoch_order` with its random generator given: (N,) lengths -> (N,) order, the short batch last."""
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_BATCHES
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        order[start : start + window] = chunk[np.argsort(lengths[chunk], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rest = [b for b in batches if len(b) < batch_size]
    return np.concatenate([full[i] for i in rng.permutation(len(full))] + rest) if batches else order


class FeatureReader:
    """Reads the features of a batch of images from the store, shaped for one kind of decoder.

    Args:
        store: the feature store.
        positions: (I, 2) (shard, row) of image number i, for `read`; None when batches carry
            their store positions themselves (`read_at`).
        features: the decoder's kind of features (`GRID` or pooled).
    """

    def __init__(self, store: FeatureStore, positions: np.ndarray | None, features: str) -> None:
        self.store = store
        self.positions = positions
        self.grid = features == GRID
        shape = store.shape
        self.shape = (-1, int(np.prod(shape[:-1])), shape[-1]) if self.grid else (-1, shape[-1])
        if not self.grid and len(shape) != 1:
            raise ValueError(f"store {store.directory} holds grids {shape}; this decoder takes pooled vectors")

    def read(self, image_index: np.ndarray) -> np.ndarray:
        """(B,) image numbers -> (B, D) or (B, L, D) float32."""
        if self.positions is None:
            raise TypeError("this FeatureReader was made without image positions: use read_at")
        return self.read_at(self.positions[image_index])

    def read_at(self, positions: np.ndarray) -> np.ndarray:
        """(B, 2) store positions (shard, row) -> (B, D) or (B, L, D) float32."""
        return self.store.gather(positions).reshape(self.shape)

    def tf_read(self, image_index: tf.Tensor) -> tf.Tensor:
        return self._in_graph(self.read, image_index)

    def tf_read_at(self, positions: tf.Tensor) -> tf.Tensor:
        return self._in_graph(self.read_at, positions)

    def _in_graph(self, read: Callable[[np.ndarray], np.ndarray], where: tf.Tensor) -> tf.Tensor:
        features = tf.numpy_function(read, [where], tf.float32, stateful=False)
        return tf.ensure_shape(features, [None, *self.shape[1:]])


def make_dataset(arrays: CaptionArrays, reader: FeatureReader, batch_size: int, order: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of ((features, inputs (B, T)), targets (B, T)), T = longest caption in the batch."""
    order = np.arange(len(arrays)) if order is None else order

    def to_batch(image_index: tf.Tensor, tokens: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
        length = tf.reduce_max(tf.reduce_sum(tf.cast(tokens != 0, tf.int32), axis=1))
        tokens = tokens[:, :length]
        return (reader.tf_read(image_index), tokens[:, :-1]), tokens[:, 1:]

    return (
        tf.data.Dataset.from_tensor_slices((arrays.image_index[order], arrays.tokens[order]))
        .batch(batch_size)
        .map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
