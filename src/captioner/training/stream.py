"""A sharded dataset's captions on disk, read a pool at a time: training memory that does not grow with the set.

`captioner.training.stream_build` writes the captions of a split to a folder (``captions/`` in the
run directory) in one pass over the shards:

    <split>-tokens.npy      (N, T) int32, <start> ... <end> then padding; rows in dataset order
    <split>-positions.npy   (N, 2) int32, (store shard, row) of each caption's image features
    <split>-lengths.npy     (N,) int32, tokens per caption (padding excluded)
    manifest.json           rows and images per split, the store's shard names the shard numbers
                            refer to, the vocabulary size, the dataset's description

`StreamedCaptions` reads them with plain reads (``os.pread``), never a memory map, whose touched
pages would count in the resident set: training holds one pool of row numbers and lengths and the
batches in flight, whatever the size of the set.

Epoch order (`pooled_order`), a pure function of (rows, seed, epoch) like `epoch_order`:

- a set of at most BLOCK_ROWS x POOL_BLOCKS captions (131,072; Flickr8k has 30,000) is one pool,
  ordered by `epoch_order` itself: the exact global shuffle the in-memory formats get;
- a larger set is cut into blocks of BLOCK_ROWS consecutive rows, the blocks are shuffled, and each
  run of POOL_BLOCKS of them is a pool that gets `epoch_order`'s treatment (shuffle, sort lengths
  inside windows, shuffle the batches). A pool's short batch is carried into the next pool, so
  every batch but the epoch's last is whole, as with `epoch_order`.

A caption thus meets captions of 31 random other blocks (a block is ~4,000 consecutive captions of
a shard, which img2dataset fills in URL-list order) in every epoch, and other ones in the next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from captioner.errors import FileError
from captioner.features import FeatureStore
from captioner.training.batches import FeatureReader, shuffled_batches

__all__ = ["BLOCK_ROWS", "MANIFEST", "POOL_BLOCKS", "NpyRows", "StreamedCaptions", "pooled_order"]

BLOCK_ROWS = 4096  # consecutive caption rows shuffled as one block
POOL_BLOCKS = 32  # blocks mixed in one pool: 131,072 captions, ~3 MiB of row numbers and lengths
MANIFEST = "manifest.json"


class NpyRows:
    """Rows of an `.npy` file (C order), read with `os.pread`: nothing is mapped or cached here.

    Args:
        path: the file; its header gives the shape (N, ...) and dtype.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")  # closed with this object
        try:
            version = np.lib.format.read_magic(self._file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(self._file)
        except ValueError as err:
            self._file.close()
            raise FileError(path, f"not a readable array ({err})") from None
        if fortran:
            self._file.close()
            raise FileError(path, "array in Fortran order")
        self.offset = self._file.tell()
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        actual = os.fstat(self._file.fileno()).st_size
        if actual != expected:
            self._file.close()
            raise FileError(path, f"file is {actual} bytes, its header says {expected} (cut short?)")

    def __len__(self) -> int:
        return self.shape[0]

    def _pread(self, size: int, offset: int) -> bytes:
        parts = []
        while size > 0:
            part = os.pread(self._file.fileno(), min(size, 1 << 30), offset)
            if not part:
                raise FileError(self.path, "file shorter than its header says")
            parts.append(part)
            size, offset = size - len(part), offset + len(part)
        return b"".join(parts)

    def range(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new array (stop - start, ...)."""
        stop = min(stop, len(self))
        data = self._pread(max(stop - start, 0) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(-1, *self.shape[1:])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows numbered `rows` (B,), in that order: (B, ...)."""
        size, offset, fd = self.row_bytes, self.offset, self._file.fileno()
        data = b"".join([os.pread(fd, size, offset + int(r) * size) for r in rows])
        if len(data) != len(rows) * size:
            raise FileError(self.path, "file shorter than its header says")
        return np.frombuffer(data, self.dtype).reshape(-1, *self.shape[1:])

    def close(self) -> None:
        self._file.close()


def pooled_order(
    n: int,
    lengths_of: Callable[[int, int], np.ndarray],
    batch_size: int,
    seed: int,
    epoch: int,
    block_rows: int | None = None,
    pool_blocks: int | None = None,
) -> Iterator[np.ndarray]:
    """One epoch's batches of row numbers, a pool at a time (see the module notes).

    Args:
        n: rows in the split.
        lengths_of: (start, stop) -> (stop - start,) lengths of those rows; called a block at a time.
        batch_size: rows per batch.
        seed, epoch: the order is a pure function of these, `n` and the lengths.
        block_rows, pool_blocks: default `BLOCK_ROWS` and `POOL_BLOCKS` (read when called).

    Yields:
        (B,) int64 row numbers: whole batches, then one short batch if `n` is not a multiple of
        `batch_size`; together a permutation of range(n).
    """
    block_rows = BLOCK_ROWS if block_rows is None else block_rows
    pool_blocks = POOL_BLOCKS if pool_blocks is None else pool_blocks
    if n <= block_rows * pool_blocks:  # one pool: exactly epoch_order, the global shuffle
        order = shuffled_batches(lengths_of(0, n), batch_size, np.random.default_rng([seed, epoch]))
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]
        return
    blocks = -(-n // block_rows)
    shuffled = np.random.default_rng([seed, epoch, 0]).permutation(blocks)
    carry_rows = np.empty(0, np.int64)  # the previous pool's short batch
    carry_lengths = np.empty(0, np.int64)
    for pool, first in enumerate(range(0, blocks, pool_blocks)):
        spans = [(int(b) * block_rows, min(n, (int(b) + 1) * block_rows)) for b in shuffled[first : first + pool_blocks]]
        rows = np.concatenate([carry_rows, *(np.arange(a, b, dtype=np.int64) for a, b in spans)])  # (P,)
        lengths = np.concatenate([carry_lengths, *(np.asarray(lengths_of(a, b), np.int64) for a, b in spans)])  # (P,)
        order = shuffled_batches(lengths, batch_size, np.random.default_rng([seed, epoch, 1 + pool]))
        whole = len(order) - len(order) % batch_size
        for start in range(0, whole, batch_size):
            yield rows[order[start : start + batch_size]]
        carry_rows, carry_lengths = rows[order[whole:]], lengths[order[whole:]]
    if len(carry_rows):
        yield carry_rows


class StreamedCaptions:
    """One split's captions as `stream_build` wrote them, read from disk a batch at a time.

    Args:
        directory: the folder of the caption files.
        split: the file prefix, "train" or "val".
        store: the feature store whose shards the positions refer to (opened by this process;
            shards are matched by name, so its shard numbers may differ from the writer's).

    Raises:
        FileError: a file is missing or damaged, or a store shard it refers to is gone.
    """

    def __init__(self, directory: Path, split: str, store: FeatureStore) -> None:
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            info = manifest["splits"][split]
        except (OSError, ValueError, KeyError, TypeError):
            raise FileError(directory / MANIFEST, "missing or unreadable; start the run again without --resume") from None
        self.directory = directory
        self.manifest: dict = manifest
        self.images: int = int(info["images"])
        self.tokens = NpyRows(directory / f"{split}-tokens.npy")  # (N, T) int32
        self.positions = NpyRows(directory / f"{split}-positions.npy")  # (N, 2) int32
        self.lengths = NpyRows(directory / f"{split}-lengths.npy")  # (N,) int32
        if not len(self.tokens) == len(self.positions) == len(self.lengths) == int(info["rows"]):
            raise FileError(directory, f"{split} caption files disagree on the number of rows; train again")
        self.max_length = self.tokens.shape[1]
        numbers = {name: number for number, name in enumerate(store.shard_names())}
        missing = [name for name in manifest["store_shards"] if name not in numbers]
        self._shard_numbers = np.array([numbers.get(name, -1) for name in manifest["store_shards"]], np.int64)  # (S,)
        self._missing = missing

    def __len__(self) -> int:
        return len(self.tokens)

    def _read(self, rows: np.ndarray | None, start: int = 0, stop: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(positions (B, 2) int64 in this process's store numbering, tokens (B, T) int32) of some rows."""
        if rows is None:
            positions, tokens = self.positions.range(start, stop), self.tokens.range(start, stop)
        else:
            positions, tokens = self.positions.take(rows), self.tokens.take(rows)
        local = positions.astype(np.int64)
        local[:, 0] = self._shard_numbers[local[:, 0]]
        if len(local) and local[:, 0].min() < 0:
            raise FileError(self.directory, f"feature store shards it refers to are gone ({', '.join(self._missing[:3])}); train again")
        return local, tokens

    def epoch_batches(self, batch_size: int, seed: int | None = None, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of (store positions (B, 2) int64, tokens (B, T) int32): in `pooled_order`, or in row order without a seed."""
        if seed is None:
            for start in range(0, len(self), batch_size):
                yield self._read(None, start, start + batch_size)
            return
        for rows in pooled_order(len(self), self.lengths.range, batch_size, seed, epoch):
            yield self._read(rows)

    def reader(self, store: FeatureStore, features: str) -> FeatureReader:
        """The feature reader for these batches (they carry their store positions)."""
        return FeatureReader(store, None, features)

    def dataset(self, reader: FeatureReader, batch_size: int, seed: int | None = None, epoch: int = 0) -> tf.data.Dataset:
        """Batches of ((features, inputs (B, T')), targets (B, T')), T' + 1 = the batch's longest caption."""
        signature = (tf.TensorSpec((None, 2), tf.int64), tf.TensorSpec((None, self.max_length), tf.int32))

        def to_batch(positions: tf.Tensor, tokens: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
            length = tf.reduce_max(tf.reduce_sum(tf.cast(tokens != 0, tf.int32), axis=1))
            tokens = tokens[:, :length]
            return (reader.tf_read_at(positions), tokens[:, :-1]), tokens[:, 1:]

        return (
            tf.data.Dataset.from_generator(lambda: self.epoch_batches(batch_size, seed, epoch), output_signature=signature)
            .map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )
