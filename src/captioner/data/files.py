"""Reading caption files and checking image keys, for every reader.

Caption files must be UTF-8 text (a BOM is fine); binary files, other encodings and empty files
raise `DatasetError` naming the file and the problem on one line. Image keys are checked once
per record: an image file name, no control characters, and (in `captioner.data.loader`) no
absolute path and no ".." unless the load allows paths outside the dataset folder.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from captioner.data.base import DatasetError, LoadReport, NoDatasetError
from captioner.images import IMAGE_EXTENSIONS

__all__ = [
    "OTHER_IMAGE_DIRS",
    "check_key",
    "default_image_dir",
    "files_with_suffix",
    "find_image_dir",
    "is_outside",
    "parse_lines",
    "quoted",
    "read_lines",
    "read_text",
    "shorten",
    "single_file",
]

T = TypeVar("T")

# Image folders looked for next to a caption file, for the layouts without a fixed one.
OTHER_IMAGE_DIRS = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images")

_IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)

# Characters no image file name should hold: C0/C1 controls and the Unicode line separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PATH_SEPARATORS = re.compile(r"[/\\]")

# Longest text quoted from a file into a message; a hostile file can hold megabyte-long lines.
_QUOTE_LIMIT = 160


def read_text(path: Path) -> str:
    """Reads a UTF-8 text file (a BOM is fine), refusing binary data and other encodings clearly.

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
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError(path, "UTF-16 text, not UTF-8; re-save the file as UTF-8")
    if b"\x00" in data[:8192]:
        raise DatasetError(path, "binary file, not a text caption file")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        start = bom + e.start  # e.start counts from after the BOM
        line = data[:start].count(b"\n") + 1
        raise DatasetError(path, f"not UTF-8 text (byte 0x{data[start]:02x} on line {line}); re-save the file as UTF-8") from None


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


def shorten(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """`text`, cut to `limit` characters with "..." if longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """`repr(value)` (which escapes line breaks), cut to `limit` characters: for messages."""
    return shorten(repr(value), limit)


def check_key(key: str) -> str | None:
    """Why an image key is unusable, or None if it is fine."""
    if not key:
        return "no image name"
    if not key.lower().endswith(_IMAGE_SUFFIXES):
        return f"{quoted(key)} is not an image file name"
    if not key.isprintable() and _CONTROL.search(key):
        return f"image name {quoted(key)} holds a control character"
    return None


def is_outside(key: str) -> bool:
    """Whether an image key leaves the image folder by its text: an absolute path or "..".

    Both separators count ("/" and "\\"), and so do Windows drive paths ("C:..."). Symbolic
    links inside the folder are not looked at: this is about what a caption file names.
    """
    if key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":" and key[0].isascii() and key[0].isalpha()):
        return True
    return ".." in key and ".." in _PATH_SEPARATORS.split(key)


def files_with_suffix(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The regular files in `directory` whose (lower-cased) suffix is one of `suffixes`, sorted."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def single_file(path: Path, suffixes: tuple[str, ...], kind: str) -> Path:
    """`path` itself if it is a file, else the one file in it with one of `suffixes`.

    Raises:
        NoDatasetError: the directory holds no such file.
        DatasetError: it holds several.
    """
    if not path.is_dir():
        return path
    found = files_with_suffix(path, suffixes)
    if len(found) != 1:
        error = NoDatasetError if not found else DatasetError
        names = ", ".join(p.name for p in found) or "none"
        raise error(path, f"expected exactly one {kind} file here, found {names}; pass the file itself")
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
