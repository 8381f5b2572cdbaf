"""Reading image files safely, and listing the image files of a folder.

`read_file` returns a file's bytes only if it is a regular file of at most `MAX_FILE_BYTES` (a
FIFO, a device, a socket or a directory is refused before anything is read, and the file is opened
non-blocking so a FIFO swapped in at the last moment cannot hang). `scan_images` lists a folder's
image files and reports the entries it cannot use (link loops, broken links, FIFOs...) instead of
failing. Problems become `ImageError`, whose message is "<path>: <problem>" on one line.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from captioner.errors import FileError

logger = logging.getLogger("captioner.images")  # the package's logger, as before it was split

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# 100 MB: several times the largest camera JPEG; stops endless or huge files before they are read.
MAX_FILE_BYTES = 100_000_000

# scandir errors that mean something more specific for a folder than for a file.
_FOLDER_PROBLEMS: dict[int | None, str] = {errno.ENOENT: "directory not found", errno.ENOTDIR: "not a directory"}


class ImageError(FileError):
    """An image file that cannot be used; `str(e)` is "<path>: <problem>".

    Attributes:
        path: the file (or the name given for in-memory bytes).
        problem: what is wrong with it, one line.
    """


@dataclass
class ImageListing:
    """What `scan_images` found in a folder.

    Attributes:
        paths: the usable image files, sorted by (relative) path.
        skipped: (path, reason) for entries with an image extension that cannot be used (a symbolic
            link loop, a broken link, a FIFO or device...), and for subfolders that could not be
            searched (unreadable, or a link back to a folder above it), sorted by path.
        subfolders: subfolders that were not searched because the listing was not recursive
            (hidden ones not counted: a recursive listing skips them too).
    """

    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    subfolders: int = 0


def scan_images(directory: str | os.PathLike, recursive: bool = False) -> ImageListing:
    """Lists the image files in `directory`, and what could not be listed.

    Files are chosen by extension (`IMAGE_EXTENSIONS`, case-insensitive). Hidden files and
    folders are skipped silently: macOS leaves "._photo.jpg" metadata files beside photos in many
    zipped datasets, and they are not images. Symbolic links to files are followed; an entry that
    cannot be used (a link loop, a broken link, a FIFO named like an image...) becomes one
    `skipped` item and a warning on the "captioner.images" logger, never an error for the whole folder.
    A recursive listing follows links to folders, but each folder is searched once, so a link back
    to a folder above it cannot loop.

    Args:
        directory: the folder to list.
        recursive: also list subfolders (at any depth).

    Raises:
        ImageError: `directory` itself does not exist, is not a directory, or cannot be read.
    """
    directory = Path(directory)
    listing = ImageListing()
    found: list[tuple[str, ...]] = []
    skipped: list[tuple[tuple[str, ...], str]] = []
    try:
        top = os.stat(directory)
        searched = {(top.st_dev, top.st_ino)}
    except (OSError, ValueError):
        searched = set()  # _scan below reports it
    pending: list[tuple[tuple[str, ...], frozenset]] = [((), frozenset(searched))]
    while pending:
        parts, above = pending.pop()
        try:
            entries = _scan(directory, parts)
        except ImageError as e:
            if not parts:
                raise
            skipped.append((parts, f"cannot search folder: {e.problem}"))
            continue
        subfolders: list[tuple[tuple[str, ...], frozenset]] = []
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            here = (*parts, entry.name)
            is_image_name = os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            try:
                info = entry.stat()  # follows symbolic links
            except (OSError, ValueError) as e:
                if is_image_name:
                    skipped.append((here, _stat_problem(entry.path, e)))
                else:
                    logger.debug("%s: ignored: %s", entry.path, e)
                continue
            if stat.S_ISDIR(info.st_mode):
                if not recursive:
                    listing.subfolders += 1
                    continue
                key = (info.st_dev, info.st_ino)
                if key in above:
                    skipped.append((here, "symbolic link loop (links back to a folder above it)"))
                elif key in searched:
                    logger.info("%s: already searched under another name", entry.path)
                else:
                    searched.add(key)
                    subfolders.append((here, above | {key}))
            elif is_image_name:
                if stat.S_ISREG(info.st_mode):
                    found.append(here)
                else:
                    skipped.append((here, _file_type_problem(info.st_mode)))
        pending.extend(reversed(subfolders))
    listing.paths = [directory.joinpath(*parts) for parts in sorted(found)]
    listing.skipped = [(directory.joinpath(*parts), reason) for parts, reason in sorted(skipped)]
    for path, reason in listing.skipped:
        logger.warning("%s: skipped: %s", path, reason)
    if listing.subfolders:
        logger.info("%s: %d subfolder(s) not searched (the listing is not recursive)", directory, listing.subfolders)
    return listing


def list_images(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files in `directory`, sorted by (relative) path: `scan_images(...).paths`.

    Entries that cannot be used are left out (and logged as warnings); call `scan_images` to get
    them, and the number of subfolders a non-recursive listing did not search.

    Raises:
        ImageError: the directory does not exist or is not a directory.
    """
    return scan_images(directory, recursive).paths


def _scan(directory: Path, parts: tuple[str, ...]) -> list[os.DirEntry]:
    folder = directory.joinpath(*parts)
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (OSError, ValueError) as e:
        problem = _FOLDER_PROBLEMS.get(getattr(e, "errno", None)) or _stat_problem(folder, e)
        raise ImageError(folder, problem) from None


# --- reading the file --------------------------------------------------------------------------


def read_file(path: str | os.PathLike, label: str) -> bytes:
    """The file's bytes; refuses anything but a regular file of at most `MAX_FILE_BYTES`."""
    try:
        _check_regular_file(os.stat(path), label)  # follows symbolic links
        # O_NONBLOCK: if a FIFO replaced the file since the stat, opening it must not wait for a
        # writer (reading a regular file is unaffected). The fstat below is the final word.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except ImageError:
        raise
    except OSError as e:
        raise ImageError(label, _stat_problem(path, e)) from None
    except ValueError:  # an embedded NUL character
        raise ImageError(label, "invalid file name") from None
    try:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            _check_regular_file(info, label)
            # One more byte than expected, then (only if the file grew, or reports no size, like
            # /proc files) up to one byte over the cap.
            data = f.read(min(info.st_size, MAX_FILE_BYTES) + 1)
            if len(data) > info.st_size:
                data += f.read(MAX_FILE_BYTES + 1 - len(data))
    except ImageError:
        raise
    except OSError as e:
        raise ImageError(label, f"cannot read file: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(label, f"file too large (more than {MAX_FILE_BYTES} bytes; limit {MAX_FILE_BYTES})")
    return data


def _check_regular_file(info: os.stat_result, label: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(label, _file_type_problem(info.st_mode))
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(label, f"file too large ({info.st_size} bytes; limit {MAX_FILE_BYTES})")


def _file_type_problem(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    kinds = ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    kind = next((name for test, name in kinds if test(mode)), "special file")
    return f"not a regular file ({kind})"


def _stat_problem(path: str | os.PathLike, e: Exception) -> str:
    """One line for an OSError from stat/open/scandir (or the ValueError of a NUL in the name)."""
    number = getattr(e, "errno", None)
    if number == errno.ENOENT:
        try:
            if os.path.islink(path):
                return "broken symbolic link (its target does not exist)"
        except (OSError, ValueError):
            pass
        return "file not found"
    if number == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if number in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if number == errno.ENOTDIR:
        return "file not found (part of the path is not a folder)"
    if number == errno.ENAMETOOLONG:
        return "file name too long"
    if isinstance(e, ValueError):
        return "invalid file name"
    return f"cannot read file: {getattr(e, 'strerror', None) or first_line(e)}"


def first_line(e: Exception) -> str:
    """The first line of `e`'s message, or its type's name if the message is empty."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
