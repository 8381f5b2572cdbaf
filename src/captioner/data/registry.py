"""The one registry of dataset formats; every reader module registers itself here.

A format is a name, how to recognise it (in a directory, by a file's name, by a file's first
line) and how to read it. `detect_format` asks the formats in the order they registered, which is
the order `captioner.data` imports the reader modules in. A new format (WebDataset, Parquet, ...)
is one new module that calls `register`, plus its import in `captioner/data/__init__.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.data.base import NoDatasetError, Raw
from captioner.data.files import read_text

if TYPE_CHECKING:
    from captioner.data.shards import ShardedSource

__all__ = ["Format", "detect_format", "format_names", "get_format", "register"]


@dataclass(frozen=True)
class Format:
    """One dataset format.

    Attributes:
        name: what `load_dataset(format=...)` and `CaptionDataset.name` call it.
        read: (dataset directory or caption file, image folder or None) -> `Raw`; raises
            `NoDatasetError` for a directory without its file, `DatasetError` for a file it
            cannot read.
        looks_for: what marks it in a directory, for messages ("captions.txt", "*.csv").
        in_directory: whether a directory holds a dataset of this format.
        file_names: lower-case file names that are this format ("captions.txt").
        file_suffixes: lower-case endings of file names that are this format (".csv").
        sniff: whether the first line of a file with an unclaimed name looks like this format.
        open_shards: for formats that hold their images inside shards (WebDataset, Parquet): the
            path -> `ShardedSource` that streams them a shard at a time; None for the others.
    """

    name: str
    read: Callable[[Path, Path | None], Raw]
    looks_for: str
    in_directory: Callable[[Path], bool]
    file_names: tuple[str, ...] = ()
    file_suffixes: tuple[str, ...] = ()
    sniff: Callable[[str], bool] | None = None
    open_shards: Callable[[Path], ShardedSource] | None = None

    def claims(self, path: Path) -> bool:
        """Whether the name of the file `path` says it is this format."""
        name = path.name.lower()
        return name in self.file_names or name.endswith(self.file_suffixes)


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Adds a format; detection tries formats in the order they were registered.

    Raises:
        ValueError: a format of that name is already registered (a programming error).
    """
    if fmt.name in _FORMATS:
        raise ValueError(f"dataset format {fmt.name!r} is registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    """The names of the registered formats, in detection order."""
    return tuple(_FORMATS)


def get_format(name: str) -> Format | None:
    """The registered format called `name`, or None."""
    return _FORMATS.get(name)


def detect_format(path: str | os.PathLike) -> str:
    """Guesses the layout of a dataset directory or caption file.

    Returns:
        One of `FORMATS`.

    Raises:
        NoDatasetError: nothing is at the path, or nothing there is a known layout (a directory
            without any of the formats' files, a file of no known format).
        DatasetError: a file of unclaimed name that cannot be read (binary, not UTF-8, ...).
    """
    path = Path(path)
    if path.is_dir():
        for fmt in _FORMATS.values():
            if fmt.in_directory(path):
                return fmt.name
        looked_for = ", ".join(fmt.looks_for for fmt in _FORMATS.values())
        raise NoDatasetError(path, f"no known dataset layout here (looked for {looked_for})")
    if not path.exists():
        raise NoDatasetError(path, "not found")
    if not path.is_file():
        raise NoDatasetError(path, "not a regular file or directory")
    for fmt in _FORMATS.values():
        if fmt.claims(path):
            return fmt.name
    first = read_text(path).lstrip().split("\n", 1)[0]
    for fmt in _FORMATS.values():
        if fmt.sniff is not None and fmt.sniff(first):
            return fmt.name
    raise NoDatasetError(path, "unknown caption file format (expected a Flickr8k token file, CSV, JSONL, JSON, WebDataset .tar or Parquet)")
