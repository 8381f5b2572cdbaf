"""Writing a sharded dataset's training captions to disk in one pass over its shards (read by `stream`).

One pass over the shards (captions only, no image bytes) does what `load_dataset`, `Vocabulary.build`
and `encode_captions` do in memory for the other formats, holding one shard at a time:

- each sample gets `load_dataset`'s checks (`ShardedSource.captioned`) and is added to the
  dataset's description (`DatasetSummary`);
- the samples of the training and validation splits (the first `limit_images` of each) are cleaned
  and their words numbered in order of first sight; training captions' words are counted;
- their images are found in the feature store a source shard at a time (`_Locator`: only the store
  shards written from that source shard are read, never an index of every key); images without
  features (unreadable ones) are left out, as in memory;
- each caption's provisional ids and store position are appended to the split's files.

Then the vocabulary is built from the counts exactly as `Vocabulary.build` builds it (or the run's
saved one is used), and one chunked pass over the token files maps provisional ids to vocabulary
ids. Memory: the word table (distinct words, as `Vocabulary.build` holds), one shard's samples,
and chunks of BLOCK rows.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from captioner import atomic
from captioner.data import LoadReport, ShardedSource
from captioner.data.base import DatasetError, query_split
from captioner.data.shards import DatasetSummary
from captioner.features import FeatureStore
from captioner.text import clean_caption
from captioner.training.stream import MANIFEST, StreamedCaptions
from captioner.vocab import Vocabulary

__all__ = ["StreamedSplits", "build_caption_files", "open_caption_files"]

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096  # rows buffered before a write, and remapped at a time
SPLITS = ("train", "val")


@dataclass
class StreamedSplits:
    """What training needs of a sharded dataset: the vocabulary and both splits on disk."""

    vocab: Vocabulary
    train: StreamedCaptions
    val: StreamedCaptions
    dataset_info: dict  # `CaptionDataset.describe`'s fields
    listed_train_images: int  # training images with captions, before looking for their features


class _Words:
    """Provisional word ids (4, 5, ... in order of first sight; 0-3 are the special tokens) and training counts."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.counts: list[int] = [0, 0, 0, 0]

    def encode(self, cleaned: str, count: bool) -> list[int]:
        """A cleaned caption's provisional ids wrapped in <start> (1) and <end> (2)."""
        out = [1]
        for word in cleaned.split():
            number = self.ids.get(word)
            if number is None:
                number = self.ids[word] = len(self.counts)
                self.counts.append(0)
            if count:
                self.counts[number] += 1
            out.append(number)
        out.append(2)
        return out

    def vocabulary(self, min_count: int) -> Vocabulary:
        """`Vocabulary.build` over the counted captions: frequent words, by count then alphabetically."""
        return Vocabulary.from_counts({w: self.counts[i] for w, i in self.ids.items()}, min_count)

    def table(self, vocab: Vocabulary) -> np.ndarray:
        """(W,) int32 provisional id -> vocabulary id (unknown words: <unk>)."""
        table = np.full(len(self.counts), vocab.unk_id, np.int32)
        table[:4] = (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id)
        for word, number in self.ids.items():
            table[number] = vocab.word_to_id.get(word, vocab.unk_id)
        return table


def _write_header(file: BinaryIO, dtype: type, shape: tuple[int, ...]) -> None:
    # numpy pads the header so that the first dimension can grow in place to 21 digits.
    np.lib.format.write_array_header_1_0(file, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})


class _SplitWriter:
    """Appends one split's rows to its three files (written as `.tmp`, renamed by `finish`)."""

    def __init__(self, directory: Path, name: str, max_length: int) -> None:
        self.directory, self.name, self.max_length = directory, name, max_length
        self.parts = {"tokens": (np.int32, (max_length,)), "positions": (np.int32, (2,)), "lengths": (np.int32, ())}
        self.files = {part: open(self._path(part, ".tmp"), "w+b") for part in self.parts}
        for part, (dtype, tail) in self.parts.items():
            _write_header(self.files[part], dtype, (0, *tail))
        self.offset = self.files["tokens"].tell()  # every header has the same (padded) size
        self.tokens = np.zeros((CHUNK_ROWS, max_length), np.int32)  # (C, T)
        self.positions = np.zeros((CHUNK_ROWS, 2), np.int32)  # (C, 2)
        self.lengths = np.zeros(CHUNK_ROWS, np.int32)  # (C,)
        self.fill = 0
        self.rows = 0
        self.images = 0

    def _path(self, part: str, suffix: str = "") -> Path:
        return self.directory / f"{self.name}-{part}.npy{suffix}"

    def add(self, ids: list[int], position: tuple[int, int]) -> None:
        """One caption: provisional ids with <start>/<end> (cut to max_length, keeping <end>), and its image's position."""
        if len(ids) > self.max_length:
            ids = ids[: self.max_length - 1] + [2]
        self.tokens[self.fill] = 0
        self.tokens[self.fill, : len(ids)] = ids
        self.positions[self.fill] = position
        self.lengths[self.fill] = len(ids)
        self.fill += 1
        if self.fill == CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        self.files["tokens"].write(self.tokens[: self.fill].tobytes())
        self.files["positions"].write(self.positions[: self.fill].tobytes())
        self.files["lengths"].write(self.lengths[: self.fill].tobytes())
        self.rows += self.fill
        self.fill = 0

    def finish(self, table: np.ndarray) -> None:
        """Writes the last rows and the real shapes, maps provisional ids through `table` (W,), renames the files."""
        self._flush()
        for part, (dtype, tail) in self.parts.items():
            file = self.files[part]
            file.seek(0)
            _write_header(file, dtype, (self.rows, *tail))
            if file.tell() != self.offset:  # numpy's padding makes this impossible below 10**21 rows
                raise RuntimeError(f"{self._path(part)}: header size changed")
        tokens, row_bytes = self.files["tokens"], self.max_length * 4
        for start in range(0, self.rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, self.rows - start)
            tokens.seek(self.offset + start * row_bytes)
            chunk = np.frombuffer(tokens.read(count * row_bytes), np.int32)  # (count * T,)
            tokens.seek(self.offset + start * row_bytes)
            tokens.write(table[chunk].tobytes())
        for part, file in self.files.items():
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._path(part, ".tmp"), self._path(part))

    def abandon(self) -> None:
        for part, file in self.files.items():
            file.close()
            self._path(part, ".tmp").unlink(missing_ok=True)


class _Locator:
    """Finds a source shard's images in a keyless `FeatureStore`, reading only the store shards written from it."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.by_source: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
        self.anywhere: list[int] = []  # shards of too many (or unknown) sources
        for number, sources in enumerate(store.shard_sources()):
            if sources is None:
                self.anywhere.append(number)
            else:
                for source in sources:
                    self.by_source[source].append(number)
        self._recent: collections.OrderedDict[int, tuple[list[str], list, int]] = collections.OrderedDict()

    def _entries(self, number: int) -> tuple[list[str], list, int]:
        if number not in self._recent:  # a store shard written by Ray may hold images of a few source shards
            self._recent[number] = self.store.shard_entries(number)
            if len(self._recent) > 4:
                self._recent.popitem(last=False)
        return self._recent[number]

    def find(self, fingerprint: list[int] | None, keys: set[str]) -> dict[str, tuple[int, int]]:
        """key -> (store shard, row) of the newest copy of each of `keys` encoded from this source shard version."""
        if not keys or fingerprint is None:
            return {}
        best: dict[str, tuple[int, int, int]] = {}
        for number in sorted(self.by_source.get(tuple(fingerprint), []) + self.anywhere):
            shard_keys, sources, written = self._entries(number)
            for row, key in enumerate(shard_keys):
                if key in keys and sources[row] == fingerprint and (key not in best or best[key][0] <= written):
                    best[key] = (written, number, row)
        return {key: (number, row) for key, (_, number, row) in best.items()}


def _split_test(name: str, where: Path) -> Callable[[str | None], bool]:
    """Whether a sample's split is the one a split name asks for ("all": every split)."""
    canonical = query_split(name, where)
    return lambda split: canonical is None or split == canonical


def build_caption_files(
    source: ShardedSource,
    store: FeatureStore,
    directory: Path,
    *,
    train_split: str,
    val_split: str,
    max_length: int,
    min_word_count: int,
    vocab: Vocabulary | None = None,
    limit_images: int | None = None,
    allow_outside_paths: bool = False,
    given: str | os.PathLike = "",
) -> tuple[Vocabulary, LoadReport]:
    """Writes the train and val caption files and manifest into `directory` (see `captioner.training.stream`).

    Args:
        source: the dataset's shards.
        store: its feature store, opened keyless, with every source shard extracted.
        directory: where the files go (created; files of an earlier build are replaced).
        train_split, val_split: split names ("train", "dev", an alias, or "all").
        max_length: tokens per caption with <start>/<end>; longer captions are cut, keeping <end>.
        min_word_count: for the vocabulary built from the training captions.
        vocab: the vocabulary to use instead (a resumed run's).
        limit_images: only the first N images of each split.
        allow_outside_paths: keep keys that are absolute paths or contain "..".
        given: the dataset path as the user gave it (its last part names the set in the manifest).

    Returns:
        (vocabulary, what was skipped while reading).
    """
    directory.mkdir(parents=True, exist_ok=True)
    report = LoadReport(unit="sample")
    report.source = (source.shards[0] if len(source.shards) == 1 else source.root).name
    tests = {"train": _split_test(train_split, source.root), "val": _split_test(val_split, source.root)}
    summary = DatasetSummary(source.format)
    words = _Words()
    locator = _Locator(store)
    writers = {name: _SplitWriter(directory, name, max_length) for name in SPLITS}
    listed = dict.fromkeys(SPLITS, 0)
    without_features = 0
    try:
        for shard in source.shards:
            fingerprint = source.fingerprint(shard)
            pending: list[tuple[str, str, list[list[int]]]] = []  # (split, key, provisional ids per caption): one shard's
            for sample in source.captioned(shard, report, allow_outside_paths):
                summary.add(sample)
                cleaned = [clean_caption(c) for c in sample.captions]
                for name, wanted in tests.items():
                    if wanted(sample.split) and (limit_images is None or listed[name] < limit_images):
                        listed[name] += 1
                        count = name == "train" and vocab is None
                        pending.append((name, sample.key, [words.encode(c, count) for c in cleaned]))
            found = locator.find(fingerprint, {key for _, key, _ in pending})
            for name, key, captions in pending:
                position = found.get(key)
                if position is None:  # not encoded (an unreadable image)
                    without_features += 1
                    continue
                writers[name].images += 1
                for ids in captions:
                    writers[name].add(ids, position)
        if vocab is None:
            vocab = words.vocabulary(min_word_count)
        table = words.table(vocab)
        for writer in writers.values():
            writer.finish(table)
    except BaseException:
        for writer in writers.values():
            writer.abandon()
        raise
    report.images, report.captions = summary.images, summary.captions
    if without_features:
        log.info("%d images of the training and validation splits have no features (unreadable) and are left out", without_features)
    manifest = {
        "splits": {
            name: {"split": (train_split, val_split)[i], "rows": w.rows, "images": w.images, "listed_images": listed[name]}
            for i, (name, w) in enumerate(writers.items())
        },
        "store_shards": store.shard_names(),
        "max_length": max_length,
        "vocabulary_words": len(vocab),
        "dataset": summary.describe(Path(given) if given else source.root),
    }
    atomic.write_json(directory / MANIFEST, manifest)
    return vocab, report


def open_caption_files(directory: Path, store: FeatureStore, vocab: Vocabulary) -> StreamedSplits:
    """The splits `build_caption_files` wrote, for training with `vocab` (the one they were encoded with)."""
    train = StreamedCaptions(directory, "train", store)
    manifest = train.manifest
    if manifest.get("vocabulary_words") != len(vocab):
        raise DatasetError(directory, f"caption files were encoded with another vocabulary ({manifest.get('vocabulary_words')} words, not {len(vocab)})")
    return StreamedSplits(vocab, train, StreamedCaptions(directory, "val", store), manifest["dataset"], int(manifest["splits"]["train"]["listed_images"]))
