"""What every dataset reader shares: the dataset and report types, splits and file reading.

Nothing here knows a particular layout; the readers (`flickr8k`, `kaggle`, `karpathy`, `table`)
build on it and `captioner.data.loader` assembles what they read into a `CaptionDataset`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from captioner.errors import FileError
from captioner.images import IMAGE_EXTENSIONS
from captioner.text import clean_caption

__all__ = [
    "MAX_MESSAGES",
    "OTHER_IMAGE_DIRS",
    "SPLITS",
    "CaptionDataset",
    "DatasetError",
    "LoadReport",
    "Raw",
    "Record",
    "check_key",
    "default_image_dir",
    "files_with_suffix",
    "find_image_dir",
    "hashed_split",
    "normalize_split",
    "parse_lines",
    "read_lines",
    "read_text",
    "single_file",
]

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "restval": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "testing": "test",
}
# Names a caller may pass to `split_images`; "all" is every captioned image.
_QUERY_SPLITS = (*SPLITS, "all")

# Image folders looked for next to a caption file, for the layouts without a fixed one.
OTHER_IMAGE_DIRS = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images")

MAX_MESSAGES = 20

_IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)

T = TypeVar("T")

# (image key, raw caption, canonical split or None)
Record = tuple[str, str, str | None]


class DatasetError(FileError):
    """A caption dataset that cannot be read; `str(e)` is "<file>: <problem>"."""


def normalize_split(name: str) -> str | None:
    """Maps a split name or alias ("val", "validation", "restval", ...) to train/dev/test."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def hashed_split(key: str) -> str:
    """The deterministic split of an image key for datasets without split information.

    BLAKE2b of the key modulo 8: 0-5 train, 6 dev, 7 test. Independent of PYTHONHASHSEED and
    of the other images in the dataset.
    """
    bucket = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()[-1] % 8
    return "train" if bucket < 6 else ("dev" if bucket == 6 else "test")


# --------------------------------------------------------------------------------------------
# Report and dataset


@dataclass
class LoadReport:
    """What a load kept and what it skipped, with the first few reasons.

    Attributes:
        images: images kept (with at least one caption and, if checked, present on disk).
        captions: captions kept.
        records: caption records read (lines, rows or JSON sentences).
        skipped_lines: malformed lines, rows or entries.
        missing_images: distinct images named in the captions but not found in the image folder.
        missing_captions: captions dropped because their image is missing.
        empty_captions: captions that are empty after cleaning.
        unknown_splits: records whose split name is not train/dev/test or an alias.
        split_conflicts: images listed in more than one split (kept in the first).
        split_extras: names in split lists with no captioned image (ignored).
        unassigned_images: captioned images that are in no split.
        seconds: wall time of the load.
        messages: the first `MAX_MESSAGES` problem descriptions.
        more_messages: how many further problems were counted but not described.
    """

    images: int = 0
    captions: int = 0
    records: int = 0
    skipped_lines: int = 0
    missing_images: int = 0
    missing_captions: int = 0
    empty_captions: int = 0
    unknown_splits: int = 0
    split_conflicts: int = 0
    split_extras: int = 0
    unassigned_images: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)
    more_messages: int = 0

    def note(self, message: str) -> None:
        """Records a problem description, keeping only the first `MAX_MESSAGES`."""
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)
        else:
            self.more_messages += 1

    def skip(self, where: str, reason: str) -> None:
        """Counts a record that a reader could not use and notes "<where>: <reason>; skipped".

        Args:
            where: the file and place, e.g. "captions.txt line 8".
            reason: why, e.g. "no tab between image and caption"; a reason starting with
                "unknown split" counts in `unknown_splits`, any other in `skipped_lines`.
        """
        if reason.startswith("unknown split"):
            self.unknown_splits += 1
        else:
            self.skipped_lines += 1
        self.note(f"{where}: {reason}; skipped")

    @property
    def problems(self) -> int:
        """Number of skipped or ignored items of every kind."""
        return (
            self.skipped_lines
            + self.missing_images
            + self.empty_captions
            + self.unknown_splits
            + self.split_conflicts
            + self.split_extras
        )

    def __str__(self) -> str:
        line = f"{self.images:,} images, {self.captions:,} captions in {self.seconds:.2f} s"
        counts = [
            (self.skipped_lines, "malformed lines skipped"),
            (self.missing_images, f"missing images ({self.missing_captions:,} captions dropped)"),
            (self.empty_captions, "empty captions skipped"),
            (self.unknown_splits, "records with an unknown split skipped"),
            (self.split_conflicts, "images in more than one split"),
            (self.split_extras, "split-list names without captions"),
            (self.unassigned_images, "images in no split"),
        ]
        extras = [f"{n:,} {what}" for n, what in counts if n]
        if extras:
            line += "; " + ", ".join(extras)
        lines = [line, *(f"  {m}" for m in self.messages)]
        if self.more_messages:
            lines.append(f"  ... and {self.more_messages:,} more")
        return "\n".join(lines)


@dataclass
class CaptionDataset:
    """Captions for a folder of images, with train/dev/test splits.

    Attributes:
        name: the format it was read from: flickr8k, kaggle, karpathy, csv or jsonl.
        image_dir: the folder that image keys are relative to.
        captions: image key -> raw captions (stripped), in file order.
        splits: "train"/"dev"/"test" -> image keys; only splits the source defines are present.
        report: counts and messages from loading.
        source: the caption file that was read.
    """

    name: str
    image_dir: Path
    captions: dict[str, list[str]]
    splits: dict[str, list[str]]
    report: LoadReport = field(default_factory=LoadReport)
    source: Path | None = None

    def split_images(self, split: str) -> list[str]:
        """The image keys of a split ("train", "dev", "test", an alias such as "val", or "all").

        Raises:
            DatasetError: the split name is unknown, or this dataset has no such split.
        """
        if split.strip().lower() == "all":
            return list(self.captions)
        canonical = normalize_split(split)
        where = self.source or self.image_dir
        if canonical is None:
            raise DatasetError(where, f"unknown split {split!r} (known: {', '.join(_QUERY_SPLITS)}, or val for dev)")
        if canonical not in self.splits:
            present = ", ".join(f"{s} ({len(keys):,} images)" for s, keys in self.splits.items()) or "none"
            raise DatasetError(where, f"this {self.name} dataset has no {canonical} split (it has: {present})")
        return list(self.splits[canonical])

    def image_path(self, key: str) -> Path:
        """The file of an image key."""
        return self.image_dir / key

    def cleaned(self, split: str) -> dict[str, list[str]]:
        """Image key -> cleaned, non-empty captions for a split (see `split_images`)."""
        out: dict[str, list[str]] = {}
        for key in self.split_images(split):
            kept = [c for c in map(clean_caption, self.captions.get(key, ())) if c]
            if kept:
                out[key] = kept
        return out

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class Raw:
    """A reader's output before cleaning, image checks and split assembly.

    Attributes:
        source: the caption file read.
        image_dir: the folder image keys are relative to.
        records: the captions read, in file order.
        report: the reader's counts and messages so far.
        split_lists: split lists read from separate files (Flickr8k); None means the splits come
            from the records, or are hashed.
        hashed: whether to give every image its `hashed_split`.
    """

    source: Path
    image_dir: Path
    records: list[Record]
    report: LoadReport
    split_lists: dict[str, list[str]] | None = None
    hashed: bool = False


# --------------------------------------------------------------------------------------------
# Files


def read_text(path: Path) -> str:
    """Reads a UTF-8 text file, refusing binary data and other encodings with a clear error.

    Raises:
        DatasetError: the file is missing, unreadable, empty, binary or not UTF-8.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "not found") from None
    except IsADirectoryError:
        raise DatasetError(path, "is a directory, expected a caption file") from None
    except OSError as e:
        raise DatasetError(path, f"cannot read: {e.strerror or e}") from None
    if not data.strip():
        raise DatasetError(path, "file is empty")
    if b"\x00" in data[:8192]:
        raise DatasetError(path, "binary file, not a text caption file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(
            path, f"not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); re-save the file as UTF-8"
        ) from None


def read_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs; splits on newlines only, since captions may hold other breaks."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def parse_lines(path: Path, report: LoadReport, parse: Callable[[str], T | str]) -> Iterator[tuple[int, T]]:
    """Parses each non-blank line of a text file, skipping the lines `parse` refuses.

    Args:
        path: the file (read with `read_text`).
        report: counts every non-blank line in `records`, and each refused one via `skip`.
        parse: line -> the parsed value, or a string saying why the line is unusable.

    Yields:
        (line number, parsed value) for the lines `parse` accepts.
    """
    name = path.name
    for number, line in read_lines(read_text(path)):
        if not line.strip():
            continue
        report.records += 1
        parsed = parse(line)
        if isinstance(parsed, str):
            report.skip(f"{name} line {number}", parsed)
            continue
        yield number, parsed


def check_key(key: str) -> str | None:
    """Why an image key is unusable, or None if it is fine."""
    if not key:
        return "no image name"
    if not key.lower().endswith(_IMAGE_SUFFIXES):
        return f"{key!r} is not an image file name"
    return None


def files_with_suffix(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The regular files in `directory` whose (lower-cased) suffix is one of `suffixes`, sorted."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def single_file(path: Path, suffixes: tuple[str, ...], kind: str) -> Path:
    """`path` itself if it is a file, else the one file in it with one of `suffixes`.

    Raises:
        DatasetError: the directory holds none or several such files.
    """
    if not path.is_dir():
        return path
    found = files_with_suffix(path, suffixes)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DatasetError(path, f"expected exactly one {kind} file here, found {names}; pass the file itself")
    return found[0]


def find_image_dir(roots: Iterable[Path], candidates: Iterable[str], default: Path) -> Path:
    """The first existing folder `root / name` (roots outer, candidates inner), else `default`."""
    candidates = tuple(candidates)
    for root in roots:
        for name in candidates:
            if (root / name).is_dir():
                return root / name
    return default


def default_image_dir(caption_file: Path, image_dir: Path | None) -> Path:
    """`image_dir` if given, else a usual image folder next to `caption_file`, else its folder."""
    if image_dir is not None:
        return image_dir
    return find_image_dir((caption_file.parent,), OTHER_IMAGE_DIRS, caption_file.parent)
