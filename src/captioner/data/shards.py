"""Sharded datasets that hold their images inside: what the WebDataset and Parquet readers share.

`img2dataset` writes web-scale caption sets as numbered shards (``00000.tar``, ``00001.tar``, ...
or ``00000.parquet``, ...), each with a few thousand images and their captions. Such a set is never
read into memory whole: a `ShardedSource` lists the shards and yields one shard's `Sample`s at a
time, so extraction and training hold one shard (or one Parquet row group) at once.

Samples get the same checks as every other format (`captioner.data.loader`):

- a sample without image bytes (img2dataset keeps failed downloads as rows without an image) is
  counted as a missing image, one without any caption as malformed;
- a sample whose captions are all empty after cleaning is counted as an empty caption;
- the split is the sample's own ``split`` field if it has one (train/dev/test or an alias such as
  ``val``; an unknown name skips the sample), else the hashed split of its key
  (`captioner.data.base.hashed_split`), so a sample keeps its split whichever shard it is in.

A sample's key is its img2dataset key plus the image's extension (``000000123.jpg``), the same for
the WebDataset and the Parquet copy of one set. Keys are assumed unique across shards, as img2dataset
writes them (shard number and row); checking that would need every key in memory.

`ShardedSource.to_raw` turns a small set into the ordinary `Raw` (captions only, no image bytes),
which is how `load_dataset` reads these formats too. Training streams instead: `captioned` yields a
shard's samples with the checks `load_dataset` adds (image paths outside the folder, empty
captions), and `DatasetSummary` describes the set as `CaptionDataset.describe` does, without
holding it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from captioner.data.base import DatasetError, LoadReport, NoDatasetError, Raw, Record, hashed_split, normalize_split
from captioner.data.files import is_outside, quoted, shorten
from captioner.text import has_words

__all__ = ["DatasetSummary", "Sample", "ShardedSource", "find_shards"]


@dataclass
class Sample:
    """One image of a shard with its captions.

    Attributes:
        key: the image key, e.g. "000000123.jpg" (img2dataset key + image extension).
        image: the encoded image file's bytes; None when the reader was asked not to read them or
            the sample has none (see `has_image`).
        has_image: whether the shard holds image bytes for it.
        captions: raw captions (stripped).
        split: the canonical split from the sample itself, or None (then it is hashed).
        where: where it is, for messages: "00000.tar 000000123".
    """

    key: str
    image: bytes | None
    has_image: bool
    captions: list[str]
    split: str | None
    where: str
    raw_split: object = None  # what the sample said its split was, when that is not a split name


# (shard, read image bytes?, report) -> the shard's samples, unchecked
ShardReader = Callable[[Path, bool, LoadReport], Iterator[Sample]]


@dataclass
class ShardedSource:
    """A dataset of shards, read one shard at a time.

    Attributes:
        format: "webdataset" or "parquet".
        root: the dataset folder (or the folder of the one shard given).
        shards: the shard files, sorted by name.
        reader: reads one shard's samples (see `ShardReader`).
        report: counts and messages of everything `samples` has read so far.
    """

    format: str
    root: Path
    shards: list[Path]
    reader: ShardReader
    report: LoadReport = field(default_factory=lambda: LoadReport(unit="sample"))

    def shard_name(self, shard: Path) -> str:
        """The shard's path relative to the root: what completion markers and messages call it."""
        try:
            return shard.relative_to(self.root).as_posix()
        except ValueError:
            return shard.name

    @staticmethod
    def fingerprint(shard: Path) -> list[int] | None:
        """[size, mtime in ns] of a shard file: a shard changed after extraction is read again."""
        try:
            stat = os.stat(shard)
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def samples(self, shard: Path, images: bool = True, report: LoadReport | None = None) -> Iterator[Sample]:
        """The usable samples of one shard, checked, each with its split (never None).

        Args:
            shard: one of `shards`.
            images: read image bytes (False: captions and splits only, much faster for tar shards).
            report: where to count what is skipped (default: `self.report`).
        """
        report = self.report if report is None else report
        for sample in self.reader(shard, images, report):
            report.records += 1
            if not sample.has_image:
                report.missing_images += 1
                report.missing_captions += len(sample.captions)
                report.note(f"{sample.where}: no image in the shard; its {len(sample.captions)} caption(s) skipped")
                continue
            if not sample.captions:
                report.skip(sample.where, "no caption")
                continue
            if sample.raw_split is not None and sample.split is None:
                report.skip(sample.where, f"unknown split {quoted(sample.raw_split)}")
                continue
            if not any(map(has_words, sample.captions)):
                report.empty_captions += len(sample.captions)
                report.note(f"{sample.where}: empty caption {quoted(shorten(sample.captions[0]))}; skipped")
                continue
            if sample.split is None:
                sample.split = hashed_split(sample.key)
            yield sample

    def captioned(self, shard: Path, report: LoadReport, allow_outside_paths: bool = False) -> Iterator[Sample]:
        """The samples of one shard that `load_dataset` would keep, captions only, without empty captions.

        The checks `load_dataset` adds to `samples`: a key that is an absolute path or climbs out
        with ".." is skipped unless `allow_outside_paths`, and captions without a word are dropped
        (each counted in `report`).
        """
        for sample in self.samples(shard, images=False, report=report):
            if not allow_outside_paths and is_outside(sample.key):
                report.outside_paths += 1
                report.note(f"{sample.where}: image path {quoted(sample.key)} is outside the dataset folder; skipped")
                continue
            kept = [c for c in sample.captions if has_words(c)]
            if len(kept) < len(sample.captions):
                report.empty_captions += len(sample.captions) - len(kept)
                report.note(f"{sample.where}: {len(sample.captions) - len(kept)} empty caption(s) for {shorten(sample.key)}; skipped")
            sample.captions = kept
            yield sample

    def __iter__(self) -> Iterator[Sample]:
        """Every usable sample of every shard, shard by shard."""
        for shard in self.shards:
            yield from self.samples(shard)

    def to_raw(self, image_dir: Path | None = None) -> Raw:
        """All captions as an ordinary `Raw` (for `load_dataset`); image bytes are not kept."""
        records: list[Record] = []
        number = 0
        for shard in self.shards:
            for sample in self.samples(shard, images=False):
                number += 1
                records.extend((sample.key, caption, sample.split, number) for caption in sample.captions)
        return Raw(self.shards[0] if len(self.shards) == 1 else self.root, image_dir or self.root, records, self.report, place="sample {}")


def find_shards(path: Path, suffixes: tuple[str, ...], kind: str) -> tuple[Path, list[Path]]:
    """(root, shard files) for a shard file or a folder of shards (searched one level deep too).

    Raises:
        NoDatasetError: nothing there, or a folder without any such file.
    """
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise NoDatasetError(path, "not found")
    found = shard_files(path, suffixes)
    if not found:
        raise NoDatasetError(path, f"no {kind} shards here (looked for {', '.join('*' + s for s in suffixes)})")
    return path, found


def shard_files(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Shard files in `directory` and its direct subfolders, sorted by path."""
    try:
        found = [p for p in directory.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)]
        if not found:
            found = [p for sub in directory.iterdir() if sub.is_dir() for p in sub.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)]
    except OSError as err:
        raise DatasetError(directory, f"cannot list the folder ({err.strerror or type(err).__name__})") from None
    return sorted(found)


def split_of(value: object) -> tuple[str | None, object]:
    """(canonical split or None, the raw value when it is given but not a split name)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, str) and normalize_split(value) is not None:
        return normalize_split(value), None
    return None, value


@dataclass
class DatasetSummary:
    """What `CaptionDataset.describe` says of a dataset, added up a sample at a time.

    The fingerprint differs from `describe`'s (which hashes the keys in sorted order, so it needs
    them all): it is the sum modulo 2**256 of a SHA-256 per image (key, captions, split), which is
    as independent of shard and sample order and needs nothing per image.
    """

    format: str
    images: int = 0
    captions: int = 0
    splits: Counter = field(default_factory=Counter)
    _sum: int = 0

    def add(self, sample: Sample) -> None:
        """Counts one kept sample (its captions as `captioned` left them; `split` set)."""
        self.images += 1
        self.captions += len(sample.captions)
        self.splits[sample.split] += 1
        digest = hashlib.sha256(json.dumps([sample.key, sample.captions, sample.split], ensure_ascii=False).encode()).digest()
        self._sum = (self._sum + int.from_bytes(digest, "big")) % (1 << 256)

    def describe(self, given: str | Path) -> dict:
        """Name, format, size and fingerprint, as `CaptionDataset.describe` returns them."""
        return {
            "name": Path(given).resolve().name,
            "format": self.format,
            "images": self.images,
            "captions": self.captions,
            "splits": {s: self.splits[s] for s in ("train", "dev", "test") if self.splits[s]},
            "sha256": f"{self._sum:064x}",
        }
