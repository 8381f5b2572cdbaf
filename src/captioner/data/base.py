"""Caption datasets: readers for the common layouts, caption cleaning and splits.

`load_dataset` reads any of these into one `CaptionDataset`:

- ``flickr8k``: the classic download. ``Flickr8k.token.txt`` ("<image>.jpg#<n>\\t<caption>") and
  ``Flickr_8k.{train,dev,test}Images.txt``, in the root or in ``Flickr8k_text/``, and the images in
  ``Flicker8k_Dataset/`` (the historical spelling), ``Flickr8k_Dataset/`` or ``Images/``.
  A missing split file just means that split is absent (the shared copy has no test split).
- ``kaggle``: ``captions.txt`` (CSV with an ``image,caption`` header) and ``Images/``.
- ``karpathy``: Karpathy's ``dataset_{flickr8k,flickr30k,coco}.json``. Split ``val`` becomes
  ``dev`` and ``restval`` becomes ``train``. COCO keys are ``filepath/filename``.
- ``csv``: a CSV file with ``image`` and ``caption`` columns and an optional ``split`` column.
- ``jsonl``: one JSON object per line, ``{"image": ..., "caption": ..., "split": ...}``
  (``"captions": [...]`` is accepted too).

Splits are always named ``train``, ``dev`` and ``test``; ``val``, ``valid`` and ``validation`` are
accepted as aliases of ``dev`` (and ``restval`` of ``train`` in files). Formats without a split
column get a hashed split: each image's split depends only on its own key (BLAKE2b of the key,
modulo 8: 0-5 train, 6 dev, 7 test, so about 75 / 12.5 / 12.5 %), which is reproducible across
machines and Python runs and does not move images when others are added or removed. The Kaggle
copy of Flickr8k has no split lists, so its hashed dev/test splits are *not* the standard
Karpathy ones; compare numbers against published results on the classic layout only.

Bad input never stops a load because of one line: malformed lines, rows whose split name is not
recognised, captions that are empty after cleaning and images missing from the image folder are
skipped, counted in `LoadReport` and described (with line numbers) in its first messages. A file
that is not in the expected format at all (no valid line, wrong header, binary, not UTF-8) raises
`DatasetError`, whose message is "<file>: <problem>" on one line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from captioner.errors import FileError
from captioner.images import IMAGE_EXTENSIONS

__all__ = [
    "FORMATS",
    "SPLITS",
    "CaptionDataset",
    "DatasetError",
    "LoadReport",
    "clean_caption",
    "detect_format",
    "hashed_split",
    "load_dataset",
    "normalize_split",
]

FORMATS = ("flickr8k", "kaggle", "karpathy", "csv", "jsonl")
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

TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
FLICKR8K_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images")
_OTHER_IMAGE_DIRS = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images")

_IMAGE_COLUMNS = ("image", "image_name", "filename", "file_name", "file", "path")
_CAPTION_COLUMNS = ("caption", "comment", "text", "sentence", "raw")
_SPLIT_COLUMNS = ("split",)

MAX_MESSAGES = 20

_IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)


class DatasetError(FileError):
    """A caption dataset that cannot be read; `str(e)` is "<file>: <problem>"."""


# --------------------------------------------------------------------------------------------
# Cleaning

# Punctuation and symbols: everything that is neither a word character nor whitespace. For
# ASCII text this is exactly `string.punctuation`, as in the classic tutorial.
_NOT_WORD = re.compile(r"[^\w\s]|_")


def clean_caption(text: str) -> str:
    """Cleans a caption the classic tutorial's way, but keeps one-letter words.

    Lower-cases, deletes punctuation inside tokens ("tri-colored" -> "tricolored", "dog's" ->
    "dogs"), then drops every token that is not purely alphabetic ("2", "3rd"). One-letter words
    such as "a" are kept: the tutorial dropped them, which costs BLEU against human references.
    Cleaning is idempotent, and the special tokens ("<start>", ...) can never come out of it.

    Returns:
        The cleaned words joined by single spaces, or "" if nothing is left.
    """
    if not text.isascii():
        # Compose accents so "é" written as e + combining accent stays one letter.
        text = unicodedata.normalize("NFC", text)
    words = _NOT_WORD.sub("", text.lower()).split()
    return " ".join([w for w in words if w.isalpha()])


def _has_words(text: str) -> bool:
    """Whether `clean_caption(text)` is non-empty, without building it (loads check 100,000s)."""
    # Nearly every caption has a plain word early on; only the rest need the punctuation pass.
    return any(w.isalpha() for w in text.split()) or any(w.isalpha() for w in _NOT_WORD.sub("", text).split())


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


# --------------------------------------------------------------------------------------------
# Entry points


def detect_format(path: str | os.PathLike) -> str:
    """Guesses the layout of a dataset directory or caption file.

    Returns:
        One of `FORMATS`.

    Raises:
        DatasetError: the path does not exist or matches no known layout.
    """
    path = Path(path)
    if path.is_dir():
        if _find_token_file(path) is not None:
            return "flickr8k"
        if (path / "captions.txt").is_file():
            return "kaggle"
        if _karpathy_files(path):
            return "karpathy"
        for fmt, suffixes in (("csv", (".csv",)), ("jsonl", (".jsonl", ".ndjson"))):
            if _files_with_suffix(path, suffixes):
                return fmt
        raise DatasetError(
            path,
            f"no known dataset layout here (looked for {TOKEN_FILE}, captions.txt, dataset_*.json, *.csv, *.jsonl)",
        )
    if not path.exists():
        raise DatasetError(path, "not found")
    if not path.is_file():
        raise DatasetError(path, "not a regular file or directory")
    name, suffix = path.name.lower(), path.suffix.lower()
    if name.endswith(".token.txt"):
        return "flickr8k"
    if name == "captions.txt":
        return "kaggle"
    if suffix == ".json":
        return "karpathy"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return _sniff_format(path)


def load_dataset(
    path: str | os.PathLike,
    format: str = "auto",
    image_dir: str | os.PathLike | None = None,
    check_images: bool = True,
) -> CaptionDataset:
    """Reads a caption dataset (see the module docstring for the layouts).

    Args:
        path: the dataset directory or its caption file.
        format: one of `FORMATS`, or "auto" to detect it.
        image_dir: the image folder, if not the layout's usual one.
        check_images: keep only images that exist in the image folder (one directory scan,
            not one lookup per caption); missing ones are counted in the report.

    Returns:
        The dataset, with `report` saying what was kept and skipped.

    Raises:
        DatasetError: unknown format, missing files, a file in the wrong format, or nothing left
            to load (for example when no image was found: probably the wrong `image_dir`).
    """
    started = time.perf_counter()
    path = Path(path)
    fmt = format.strip().lower()
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise DatasetError(path, f"unknown dataset format {format!r} (known: auto, {', '.join(FORMATS)})")
    elif not path.exists():
        raise DatasetError(path, "not found")

    reader = {
        "flickr8k": _read_flickr8k,
        "kaggle": _read_kaggle,
        "karpathy": _read_karpathy,
        "csv": _read_csv_dataset,
        "jsonl": _read_jsonl_dataset,
    }[fmt]
    raw = reader(path, Path(image_dir) if image_dir is not None else None)
    dataset = _assemble(raw, fmt, check_images)
    dataset.report.seconds = time.perf_counter() - started
    return dataset


# --------------------------------------------------------------------------------------------
# What every reader produces before the shared checks


@dataclass
class _Raw:
    """A reader's output before cleaning, image checks and split assembly."""

    source: Path
    image_dir: Path
    records: list[tuple[str, str, str | None]]  # (key, raw caption, canonical split or None)
    report: LoadReport
    # Split lists read from separate files (Flickr8k); None means "from the records or hashed".
    split_lists: dict[str, list[str]] | None = None
    hashed: bool = False


def _assemble(raw: _Raw, name: str, check_images: bool) -> CaptionDataset:
    report = raw.report
    captions, record_splits = _collect_captions(raw)
    if check_images:
        _drop_missing_images(raw, captions)
    if raw.split_lists is not None:
        splits = _splits_from_lists(raw.split_lists, captions, report)
    else:
        splits = _splits_from_records(captions, record_splits, raw.hashed)
    assigned = {k for keys in splits.values() for k in keys}
    report.unassigned_images = sum(1 for k in captions if k not in assigned)
    report.images = len(captions)
    report.captions = sum(len(c) for c in captions.values())
    if not captions:
        raise DatasetError(raw.source, _nothing_loaded(raw, check_images))
    return CaptionDataset(name, raw.image_dir, captions, splits, report, raw.source)


def _collect_captions(raw: _Raw) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Groups captions by image, dropping empty ones; remembers each image's first split."""
    report = raw.report
    captions: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    for key, caption, split in raw.records:
        if not _has_words(caption):
            report.empty_captions += 1
            report.note(f"{key}: empty caption {caption!r} skipped")
            continue
        captions.setdefault(key, []).append(caption)
        if split is not None:
            first = splits.setdefault(key, split)
            if first != split:
                report.split_conflicts += 1
                report.note(f"{key}: listed in {first} and {split}; kept in {first}")
    return captions, splits


def _drop_missing_images(raw: _Raw, captions: dict[str, list[str]]) -> None:
    if not raw.image_dir.is_dir():
        raise DatasetError(raw.image_dir, "image folder not found (pass image_dir, or check_images=False)")
    present = _existing_files(raw.image_dir, captions)
    report = raw.report
    for key in [k for k in captions if k not in present]:
        report.missing_images += 1
        report.missing_captions += len(captions[key])
        report.note(f"{key}: image not found in {raw.image_dir}; its {len(captions[key])} captions skipped")
        del captions[key]


def _existing_files(image_dir: Path, keys: Iterable[str]) -> set[str]:
    """The keys whose files exist, scanning each folder once instead of one stat per key."""
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        folder, _, name = key.rpartition("/")
        by_folder.setdefault(folder, []).append((key, name))
    present: set[str] = set()
    for folder, folder_keys in by_folder.items():
        try:
            with os.scandir(image_dir / folder) as entries:
                names = {e.name for e in entries if e.is_file()}
        except OSError:
            continue  # a folder that is missing just means its images are missing
        present.update(key for key, name in folder_keys if name in names)
    return present


def _splits_from_lists(
    lists: dict[str, list[str]], captions: dict[str, list[str]], report: LoadReport
) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for split, names in lists.items():
        keys: list[str] = []
        for name in names:
            if name not in captions:
                report.split_extras += 1
                report.note(f"{name}: in the {split} list but has no captions or no image; ignored")
            elif name in owner:
                if owner[name] != split:
                    report.split_conflicts += 1
                    report.note(f"{name}: listed in {owner[name]} and {split}; kept in {owner[name]}")
            else:
                owner[name] = split
                keys.append(name)
        splits[split] = keys
    return splits


def _splits_from_records(
    captions: dict[str, list[str]], record_splits: dict[str, str], hashed: bool
) -> dict[str, list[str]]:
    if hashed:
        splits: dict[str, list[str]] = {s: [] for s in SPLITS}
        for key in captions:
            splits[hashed_split(key)].append(key)
        return splits
    splits = {}
    for key in captions:
        splits.setdefault(record_splits[key], []).append(key)
    return {s: splits[s] for s in SPLITS if s in splits}


def _nothing_loaded(raw: _Raw, check_images: bool) -> str:
    r = raw.report
    if check_images and r.missing_images:
        return (
            f"none of the {r.missing_images:,} images named in the captions is in {raw.image_dir} "
            "(wrong image_dir?)"
        )
    if r.empty_captions:
        return f"no usable captions: all {r.empty_captions:,} are empty after cleaning"
    first = f" (first problem: {r.messages[0]})" if r.messages else ""
    return f"no captions found{first}"


# --------------------------------------------------------------------------------------------
# Text files


def _read_text(path: Path) -> str:
    """Reads a UTF-8 text file, refusing binary data and other encodings with a clear error."""
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


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs; splits on newlines only, since captions may hold other breaks."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def _check_key(key: str) -> str | None:
    """Why an image key is unusable, or None if it is fine."""
    if not key:
        return "no image name"
    if not key.lower().endswith(_IMAGE_SUFFIXES):
        return f"{key!r} is not an image file name"
    return None


def _files_with_suffix(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _find_image_dir(roots: Iterable[Path], candidates: Iterable[str], default: Path) -> Path:
    candidates = tuple(candidates)
    for root in roots:
        for name in candidates:
            if (root / name).is_dir():
                return root / name
    return default


def _sniff_format(path: Path) -> str:
    first = _read_text(path).lstrip().split("\n", 1)[0]
    if "\t" in first and "#" in first.split("\t", 1)[0]:
        return "flickr8k"
    if first.startswith("{"):
        return "jsonl"
    if _header_columns(first) is not None:
        return "csv"
    raise DatasetError(path, "unknown caption file format (expected a Flickr8k token file, CSV, JSONL or JSON)")


# --------------------------------------------------------------------------------------------
# Flickr8k classic


def _find_token_file(root: Path) -> Path | None:
    for folder in (root, root / "Flickr8k_text"):
        if (folder / TOKEN_FILE).is_file():
            return folder / TOKEN_FILE
    return None


def _read_flickr8k(path: Path, image_dir: Path | None) -> _Raw:
    if path.is_dir():
        token_file = _find_token_file(path)
        if token_file is None:
            raise DatasetError(path, f"no {TOKEN_FILE} here or in Flickr8k_text/")
        root = path
    else:
        token_file = path
        root = path.parent.parent if path.parent.name == "Flickr8k_text" else path.parent
    report = LoadReport()
    records = _parse_token_file(token_file, report)
    split_lists = _read_split_lists(token_file.parent)
    if image_dir is None:
        image_dir = _find_image_dir((root, token_file.parent), FLICKR8K_IMAGE_DIRS, root / FLICKR8K_IMAGE_DIRS[0])
    hashed = not split_lists
    if hashed:
        report.note(f"{token_file.parent}: no Flickr_8k.*Images.txt split files; using a hashed split")
    return _Raw(token_file, image_dir, records, report, None if hashed else split_lists, hashed)


def _parse_token_file(token_file: Path, report: LoadReport) -> list[tuple[str, str, None]]:
    records: list[tuple[str, str, None]] = []
    name = token_file.name
    for number, line in _lines(_read_text(token_file)):
        if not line.strip():
            continue
        report.records += 1
        parsed = _parse_token_line(line)
        if isinstance(parsed, str):
            report.skipped_lines += 1
            report.note(f"{name} line {number}: {parsed}; skipped")
            continue
        records.append((parsed[0], parsed[1], None))
    if not records:
        first = f": {report.messages[0]}" if report.messages else ""
        raise DatasetError(token_file, f"not a Flickr8k token file (no '<image>#<n><TAB><caption>' line){first}")
    return records


def _parse_token_line(line: str) -> tuple[str, str] | str:
    """(image key, caption) or the reason the line is malformed."""
    if "\t" not in line:
        return "no tab between image and caption"
    ref, caption = line.split("\t", 1)
    key, hash_, number = ref.strip().rpartition("#")
    if not hash_ or not number.isdigit():
        return f"{ref.strip()!r} is not '<image>#<n>'"
    problem = _check_key(key)
    if problem:
        return problem
    return key, caption.strip()


def _read_split_lists(text_dir: Path) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for split, filename in SPLIT_FILES.items():
        path = text_dir / filename
        if path.is_file():
            # The original files lack a final newline; _lines does not care.
            lists[split] = [line.strip() for _, line in _lines(_read_text(path)) if line.strip()]
    return lists


# --------------------------------------------------------------------------------------------
# CSV (Kaggle captions.txt and plain CSV)


def _read_kaggle(path: Path, image_dir: Path | None) -> _Raw:
    if path.is_dir():
        captions_file = path / "captions.txt"
        if not captions_file.is_file():
            raise DatasetError(path, "no captions.txt here (Kaggle layout: captions.txt + Images/)")
    else:
        captions_file = path
    if image_dir is None:
        root = captions_file.parent
        image_dir = _find_image_dir((root,), ("Images", "images"), root / "Images")
    return _read_csv(captions_file, image_dir)


def _read_csv_dataset(path: Path, image_dir: Path | None) -> _Raw:
    csv_file = _single_file(path, (".csv", ".tsv"), "CSV")
    if image_dir is None:
        image_dir = _find_image_dir((csv_file.parent,), _OTHER_IMAGE_DIRS, csv_file.parent)
    return _read_csv(csv_file, image_dir)


def _single_file(path: Path, suffixes: tuple[str, ...], kind: str) -> Path:
    if not path.is_dir():
        return path
    found = _files_with_suffix(path, suffixes)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DatasetError(path, f"expected exactly one {kind} file here, found {names}; pass the file itself")
    return found[0]


def _header_columns(header: str) -> tuple[str, list[str]] | None:
    """(delimiter, lower-cased column names) if the line is a header with image and caption columns."""
    for delimiter in (",", "\t", "|", ";"):
        if delimiter not in header:
            continue
        columns = [c.strip().strip('"').lower() for c in header.split(delimiter)]
        if any(c in _IMAGE_COLUMNS for c in columns) and any(c in _CAPTION_COLUMNS for c in columns):
            return delimiter, columns
    return None


def _column(columns: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in columns:
            return columns.index(name)
    return None


def _read_csv(csv_file: Path, image_dir: Path) -> _Raw:
    text = _read_text(csv_file)
    header_line = text.lstrip().split("\n", 1)[0].rstrip("\r")
    found = _header_columns(header_line)
    if found is None:
        shown = header_line if len(header_line) <= 60 else header_line[:57] + "..."
        raise DatasetError(
            csv_file, f"not a caption CSV: the header {shown!r} needs 'image' and 'caption' columns"
        )
    delimiter, columns = found
    image_col = _column(columns, _IMAGE_COLUMNS)
    caption_col = _column(columns, _CAPTION_COLUMNS)
    split_col = _column(columns, _SPLIT_COLUMNS)
    report = LoadReport()
    records: list[tuple[str, str, str | None]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    seen_header = False
    try:
        for row in reader:
            number = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if not seen_header:
                seen_header = True
                continue
            report.records += 1
            parsed = _parse_csv_row(row, len(columns), image_col, caption_col, split_col)
            if isinstance(parsed, str):
                counter = "unknown_splits" if parsed.startswith("unknown split") else "skipped_lines"
                setattr(report, counter, getattr(report, counter) + 1)
                report.note(f"{csv_file.name} line {number}: {parsed}; skipped")
                continue
            records.append(parsed)
    except csv.Error as e:
        raise DatasetError(csv_file, f"line {reader.line_num}: malformed CSV ({e})") from None
    if not records and report.skipped_lines:
        raise DatasetError(csv_file, f"no valid row: {report.messages[0]}")
    return _Raw(csv_file, image_dir, records, report, None, hashed=split_col is None)


def _parse_csv_row(
    row: list[str], width: int, image_col: int, caption_col: int, split_col: int | None
) -> tuple[str, str, str | None] | str:
    if len(row) > width and caption_col == width - 1:
        # An unquoted comma inside a caption in the last column: the rest of the row is caption.
        row = [*row[:caption_col], ",".join(row[caption_col:])]
    if len(row) != width:
        return f"{len(row)} fields, expected {width}"
    key = row[image_col].strip()
    problem = _check_key(key)
    if problem:
        return problem
    split = None
    if split_col is not None:
        split = normalize_split(row[split_col])
        if split is None:
            return f"unknown split {row[split_col].strip()!r}"
    return key, row[caption_col].strip(), split


# --------------------------------------------------------------------------------------------
# JSON Lines


def _read_jsonl_dataset(path: Path, image_dir: Path | None) -> _Raw:
    jsonl_file = _single_file(path, (".jsonl", ".ndjson"), "JSON Lines")
    if image_dir is None:
        image_dir = _find_image_dir((jsonl_file.parent,), _OTHER_IMAGE_DIRS, jsonl_file.parent)
    report = LoadReport()
    records: list[tuple[str, str, str | None]] = []
    any_split = False
    valid_lines = 0
    for number, line in _lines(_read_text(jsonl_file)):
        if not line.strip():
            continue
        report.records += 1
        parsed = _parse_jsonl_line(line)
        if isinstance(parsed, str):
            counter = "unknown_splits" if parsed.startswith("unknown split") else "skipped_lines"
            setattr(report, counter, getattr(report, counter) + 1)
            report.note(f"{jsonl_file.name} line {number}: {parsed}; skipped")
            continue
        valid_lines += 1
        any_split = any_split or parsed[0][2] is not None
        records.extend(parsed)
    if not valid_lines and report.skipped_lines:
        raise DatasetError(jsonl_file, f"not JSON Lines with image and caption fields: {report.messages[0]}")
    if any_split:
        records = _fill_missing_splits(records, report, jsonl_file.name)
    return _Raw(jsonl_file, image_dir, records, report, None, hashed=not any_split)


def _parse_jsonl_line(line: str) -> list[tuple[str, str, str | None]] | str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, found {type(obj).__name__}"
    key = obj.get("image", obj.get("filename"))
    if not isinstance(key, str):
        return "no 'image' string"
    key = key.strip()
    problem = _check_key(key)
    if problem:
        return problem
    if "captions" in obj and "caption" not in obj:
        texts = obj["captions"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return "'captions' is not a list of strings"
    else:
        texts = obj.get("caption")
        if not isinstance(texts, str):
            return "no 'caption' string"
        texts = [texts]
    split = obj.get("split")
    if split is not None:
        if not isinstance(split, str) or normalize_split(split) is None:
            return f"unknown split {split!r}"
        split = normalize_split(split)
    return [(key, t.strip(), split) for t in texts]


def _fill_missing_splits(
    records: list[tuple[str, str, str | None]], report: LoadReport, name: str
) -> list[tuple[str, str, str | None]]:
    """Within a file that has splits, a record without one is as unusable as an unknown split."""
    kept = []
    for record in records:
        if record[2] is None:
            report.unknown_splits += 1
            report.note(f"{name}: {record[0]}: no split while other lines have one; skipped")
        else:
            kept.append(record)
    return kept


# --------------------------------------------------------------------------------------------
# Karpathy JSON


def _karpathy_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("dataset_*.json"))


def _read_karpathy(path: Path, image_dir: Path | None) -> _Raw:
    if path.is_dir():
        found = _karpathy_files(path)
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise DatasetError(path, f"expected one dataset_*.json here, found {names}; pass the file itself")
        path = found[0]
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DatasetError(path, "not a Karpathy caption file (expected {\"images\": [...]})")
    if image_dir is None:
        image_dir = _find_image_dir((path.parent,), _OTHER_IMAGE_DIRS, path.parent)
    report = LoadReport()
    records: list[tuple[str, str, str | None]] = []
    for index, entry in enumerate(doc["images"]):
        parsed = _parse_karpathy_entry(entry)
        if isinstance(parsed, str):
            counter = "unknown_splits" if parsed.startswith("unknown split") else "skipped_lines"
            setattr(report, counter, getattr(report, counter) + 1)
            report.records += 1
            report.note(f"{path.name} images[{index}]: {parsed}; skipped")
            continue
        report.records += len(parsed)
        records.extend(parsed)
    if not records and report.skipped_lines:
        raise DatasetError(path, f"no usable image entry: {report.messages[0]}")
    return _Raw(path, image_dir, records, report)


def _parse_karpathy_entry(entry: object) -> list[tuple[str, str, str | None]] | str:
    if not isinstance(entry, dict):
        return "not an object"
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        return "no 'filename'"
    filepath = entry.get("filepath")
    key = f"{filepath.strip('/')}/{filename.strip()}" if isinstance(filepath, str) and filepath else filename.strip()
    problem = _check_key(key)
    if problem:
        return problem
    raw_split = entry.get("split")
    split = normalize_split(raw_split) if isinstance(raw_split, str) else None
    if split is None:
        return f"unknown split {raw_split!r}"
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        return "no 'sentences' list"
    out = []
    for sentence in sentences:
        text = _sentence_text(sentence)
        if text is not None:
            out.append((key, text.strip(), split))
    if not out:
        return "no sentence with 'raw' text"
    return out


def _sentence_text(sentence: object) -> str | None:
    if not isinstance(sentence, dict):
        return None
    raw = sentence.get("raw")
    if isinstance(raw, str):
        return raw
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return None
