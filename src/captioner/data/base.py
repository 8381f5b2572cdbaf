"""What every dataset reader shares: the dataset, report and error types, and splits.

Nothing here knows a particular layout; the readers (`flickr8k`, `kaggle`, `karpathy`, `table`)
build on it and on `captioner.data.files`, and `captioner.data.loader` assembles what they read
into a `CaptionDataset`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from captioner.errors import FileError
from captioner.text import clean_caption

__all__ = [
    "MAX_MESSAGES",
    "SPLITS",
    "CaptionDataset",
    "DatasetError",
    "LoadReport",
    "NoDatasetError",
    "Raw",
    "Record",
    "hashed_split",
    "normalize_split",
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

# Problem descriptions a report keeps (the counts are always complete); `str(report)` shows the
# first SHOWN_MESSAGES of them, `summary()` the first SUMMARY_EXAMPLES (all with verbose=True).
MAX_MESSAGES = 10_000
SHOWN_MESSAGES = 20
SUMMARY_EXAMPLES = 3

# (image key, raw caption, canonical split or None, where in the file: line number or entry index)
Record = tuple[str, str, str | None, int]


class DatasetError(FileError):
    """A caption dataset that cannot be read; `str(e)` is "<file>: <problem>"."""


class NoDatasetError(DatasetError):
    """No dataset file of any known format is at the path (as opposed to one that is broken).

    Callers may fall back to something else (the CLI treats such a folder as a plain folder of
    images); a plain `DatasetError` means a dataset file was found but cannot be used, which
    must be shown to the user, never hidden behind a fallback.
    """


def normalize_split(name: str) -> str | None:
    """Maps a split name or alias ("val", "validation", "restval", ...) to train/dev/test."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def query_split(name: str, where: Path) -> str | None:
    """A split name a caller asks for -> train/dev/test, or None for "all".

    Raises:
        DatasetError: an unknown name (named against `where`).
    """
    if name.strip().lower() == "all":
        return None
    canonical = normalize_split(name)
    if canonical is None:
        raise DatasetError(where, f"unknown split {name!r} (known: {', '.join(_QUERY_SPLITS)}, or val for dev)")
    return canonical


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
    """What a load kept and what it skipped, with the reasons.

    Attributes:
        images: images kept (with at least one caption and, if checked, present on disk).
        captions: captions kept.
        records: caption records read (lines, rows or JSON sentences).
        skipped_lines: malformed lines, rows or entries.
        missing_images: distinct images named in the captions but not found in the image folder.
        missing_captions: captions dropped because their image is missing.
        empty_captions: captions that are empty after cleaning.
        unknown_splits: records whose split name is not train/dev/test or an alias.
        outside_paths: records whose image path is absolute or climbs out of the image folder
            with "..", refused unless the load allowed them.
        split_conflicts: images listed in more than one split (kept in the first).
        split_extras: names in split lists with no captioned image (ignored).
        unassigned_images: captioned images that are in no split.
        seconds: wall time of the load.
        messages: problem descriptions, the first `MAX_MESSAGES` of them.
        more_messages: how many further problems were counted but not described.
        source: the name of the caption file, which `summary` starts with.
        unit: what the file's records are called in `summary`: "line" or "record".
    """

    images: int = 0
    captions: int = 0
    records: int = 0
    skipped_lines: int = 0
    missing_images: int = 0
    missing_captions: int = 0
    empty_captions: int = 0
    unknown_splits: int = 0
    outside_paths: int = 0
    split_conflicts: int = 0
    split_extras: int = 0
    unassigned_images: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)
    more_messages: int = 0
    source: str = ""
    unit: str = "line"
    # Indexes in `messages` of notices that are not problems (e.g. "using a hashed split").
    _notices: set[int] = field(default_factory=set, init=False, repr=False, compare=False)

    def note(self, message: str, problem: bool = True) -> None:
        """Records a description, keeping only the first `MAX_MESSAGES`.

        Args:
            message: one line, e.g. "captions.txt line 8: 3 fields, expected 2; skipped".
            problem: False for a notice about the whole load that skipped nothing; notices are
                left out of `summary`'s examples.
        """
        if len(self.messages) < MAX_MESSAGES:
            if not problem:
                self._notices.add(len(self.messages))
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
            self.skipped_lines + self.missing_images + self.empty_captions + self.unknown_splits + self.outside_paths + self.split_conflicts + self.split_extras
        )

    def summary(self, verbose: bool = False) -> str | None:
        """What the load skipped, for a user: one line, or None when nothing was skipped.

        For example ``Flickr8k.token.txt: skipped 3 lines (2 malformed, 1 empty caption), 2 split
        entries without an image; e.g. line 8: no tab between image and caption; line 12: ...;
        line 40: ... (4 more: --verbose for all)``.

        Args:
            verbose: list every recorded problem, one per line after the counts, instead of the
                first `SUMMARY_EXAMPLES` on the same line.

        Returns:
            The summary, or None if nothing was skipped or ignored.
        """
        if not self.problems:
            return None
        head = (f"{self.source}: " if self.source else "") + ", ".join(self._counts())
        prefixes = (f"{self.source} ", f"{self.source}: ") if self.source else ()
        examples = [_example(m, prefixes) for i, m in enumerate(self.messages) if i not in self._notices]
        if verbose:
            lines = [f"{head}:", *(f"  {e}" for e in examples)]
            if self.more_messages:
                lines.append(f"  ... and {self.more_messages:,} more, not recorded")
            return "\n".join(lines)
        if not examples:
            return head
        line = f"{head}; e.g. " + "; ".join(examples[:SUMMARY_EXAMPLES])
        more = len(examples) - SUMMARY_EXAMPLES + self.more_messages
        return line + (f" ({more:,} more: --verbose for all)" if more > 0 else "")

    def _counts(self) -> list[str]:
        """The summary's counts: "skipped 3 lines (2 malformed, 1 empty caption)", ..."""
        reasons = [
            _count(self.skipped_lines, "malformed", "malformed"),
            _count(self.empty_captions, "empty caption", "empty captions"),
            _count(self.unknown_splits, "unknown split", "unknown splits"),
            _count(self.outside_paths, "image path outside the dataset folder", "image paths outside the dataset folder"),
        ]
        skipped = self.skipped_lines + self.empty_captions + self.unknown_splits + self.outside_paths
        counts = []
        if skipped:
            counts.append(f"skipped {_count(skipped, self.unit, self.unit + 's')} ({', '.join(filter(None, reasons))})")
        if self.missing_images:
            dropped = _count(self.missing_captions, "caption", "captions")
            counts.append(f"{_count(self.missing_images, 'image', 'images')} not found ({dropped} dropped)")
        if self.split_extras:
            counts.append(f"{_count(self.split_extras, 'split entry', 'split entries')} without an image")
        if self.split_conflicts:
            counts.append(f"{_count(self.split_conflicts, 'image', 'images')} in more than one split")
        return counts

    def __str__(self) -> str:
        line = f"{self.images:,} images, {self.captions:,} captions in {self.seconds:.2f} s"
        counts = [
            (self.skipped_lines, "malformed lines skipped"),
            (self.missing_images, f"missing images ({self.missing_captions:,} captions dropped)"),
            (self.empty_captions, "empty captions skipped"),
            (self.unknown_splits, "records with an unknown split skipped"),
            (self.outside_paths, "image paths outside the dataset folder skipped"),
            (self.split_conflicts, "images in more than one split"),
            (self.split_extras, "split-list names without captions"),
            (self.unassigned_images, "images in no split"),
        ]
        extras = [f"{n:,} {what}" for n, what in counts if n]
        if extras:
            line += "; " + ", ".join(extras)
        lines = [line, *(f"  {m}" for m in self.messages[:SHOWN_MESSAGES])]
        hidden = len(self.messages) - SHOWN_MESSAGES + self.more_messages
        if hidden > 0:
            lines.append(f"  ... and {hidden:,} more")
        return "\n".join(lines)


def _count(n: int, singular: str, plural: str) -> str:
    """ "1 image", "2,000 images", or "" for 0."""
    return f"{n:,} {singular if n == 1 else plural}" if n else ""


def _example(message: str, prefixes: tuple[str, ...]) -> str:
    """A message without the file name the summary already starts with, or its "; skipped"."""
    for prefix in prefixes:
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    return message.removesuffix("; skipped")


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
        where = self.source or self.image_dir
        canonical = query_split(split, where)
        if canonical is None:
            return list(self.captions)
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

    def describe(self, given: str | Path) -> dict:
        """Name, format, size and a content fingerprint: what a model records instead of a local path.

        Args:
            given: the path the dataset was loaded from; only its last part is kept, as the name.

        The fingerprint is a SHA-256 of the captions and splits (not of paths or file bytes), so the
        same data set copied anywhere, in any line order, gets the same one.
        """
        digest = hashlib.sha256()
        for key in sorted(self.captions):
            digest.update(json.dumps([key, self.captions[key]], ensure_ascii=False).encode())
        for split in sorted(self.splits):
            digest.update(json.dumps([split, sorted(self.splits[split])]).encode())
        return {
            "name": Path(given).resolve().name,
            "format": self.name,
            "images": len(self.captions),
            "captions": sum(map(len, self.captions.values())),
            "splits": {s: len(k) for s, k in self.splits.items()},
            "sha256": digest.hexdigest(),
        }


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
        place: how a record's number reads in messages: "line {}" or, for an entry of a JSON
            list, e.g. "images[{}]".
    """

    source: Path
    image_dir: Path
    records: list[Record]
    report: LoadReport
    split_lists: dict[str, list[str]] | None = None
    hashed: bool = False
    place: str = "line {}"

    def where(self, number: int) -> str:
        """Where record `number` is, for messages: "captions.txt line 8"."""
        return f"{self.source.name} {self.place.format(number)}"
