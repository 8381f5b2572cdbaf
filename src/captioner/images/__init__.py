"""Image loading: any ordinary photo file becomes a uint8 RGB array.

Every consumer (feature extraction, the CLI, the web service) reads pixels through
`load_image`, so training images and a user's own photos get exactly the same treatment:

- Formats: JPEG (including MPO camera files), PNG, BMP and WebP. Other formats that Pillow
  could parse are refused, which keeps Pillow's long tail of rarely used decoders away from
  untrusted uploads.
- EXIF orientation is applied, so a portrait phone photo is upright.
- Every mode becomes RGB: greyscale and 1-bit are replicated, palettes expanded, CMYK converted,
  16-bit greyscale scaled to 8 bits (65535 -> 255, rounding, not clipping).
- Transparency is composited on white, like a browser showing the image on a white page.
  Dropping the alpha channel instead would expose whatever colour the encoder left under fully
  transparent pixels, which is often black or garbage.
- With `size`, the whole image is squashed to `size` x `size` with Lanczos resampling; nothing is
  cropped (the shared Flickr8k images were made the same way).

Hostile input is refused with `ImageError`, whose message is "<path>: <problem>" on one line:

- Only regular files are read (a FIFO, a device such as /dev/zero, a socket or a directory is
  refused before anything is read; the file is opened non-blocking so a FIFO swapped in at the
  last moment cannot hang), and at most `MAX_FILE_BYTES` of them.
- Decompression bombs: more than `MAX_PIXELS` pixels, or a decode estimated to need more than
  `MAX_DECODE_BYTES` of memory, is refused before decoding.
- Missing files, broken symbolic links and link loops, truncated files and non-image files.

Memory: big images are decoded at reduced size where the format allows it (JPEG: libjpeg's DCT
scaling via `draft`, at least twice the target size), and the conversion to RGB runs tile by tile,
each tile reduced by whole factors (a box filter, never below `_REDUCING_GAP` times the target)
before it is stored, so the only full-size buffer is the decoder's own. Images no bigger than
`_REDUCING_GAP` x `size` on a side take exactly the straightforward path (convert, then Lanczos).
"""

from __future__ import annotations

import concurrent.futures
import errno
import io
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from captioner.errors import FileError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_DECODE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "ImageError",
    "ImageListing",
    "list_images",
    "load_ahead",
    "load_image",
    "scan_images",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# Enough for a 108-megapixel phone photo; a bigger "photo" is far more likely to be a
# decompression bomb than a picture someone wants captioned.
MAX_PIXELS = 120_000_000

# 100 MB: several times the largest camera JPEG; stops endless or huge files before they are read.
MAX_FILE_BYTES = 100_000_000

# Estimated memory one decode may use (decoder buffers plus our copies; the encoded file, at most
# MAX_FILE_BYTES, comes on top): keeps a process's peak for any accepted image well under 1 GB.
MAX_DECODE_BYTES = 512 * 2**20

# Pillow format names that the extensions above correspond to. Multi-picture JPEGs that many
# cameras write come back from the JPEG opener with format "MPO".
_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")

# Whole-factor reduction (Image.reduce, a box filter) stops while the image is still at least this
# many times the target size, and Lanczos does the rest; Pillow's docs call a gap of 3
# indistinguishable from Lanczos all the way.
_REDUCING_GAP = 3

# Pixels converted to RGB at a time: bounds the scratch memory of the conversion.
_TILE_PIXELS = 1 << 20

# Upper bound of scratch bytes per tile pixel: crop, RGBA copy, white page, composite, RGB result,
# NumPy copies of 16-bit values.
_TILE_BYTES_PER_PIXEL = 32

# Bytes per pixel of Pillow's own storage; every other mode (RGB included) takes 4.
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}

# libwebp's animation decoder keeps two canvases and hands Pillow a third copy of the frame.
_WEBP_EXTRA_COPIES = 3

# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270,
                          Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90})


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


def load_image(source: str | os.PathLike | bytes, size: int | None = None, *, name: str | None = None) -> np.ndarray:
    """Reads an image file as a uint8 RGB array.

    Args:
        source: a file path, or the encoded file's bytes (for example an HTTP upload).
        size: if given, the whole image is squashed (not cropped) to `size` x `size`;
            if None, the original size is kept (which needs more memory, so the
            `MAX_DECODE_BYTES` budget is reached by smaller images: about 70 megapixels for RGB).
        name: what error messages call the image; defaults to the path, or "<bytes>".

    Returns:
        An array of shape (size, size, 3), or (height, width, 3) when `size` is None.

    Raises:
        ImageError: the file is missing, not a regular file, empty, larger than `MAX_FILE_BYTES`,
            not a supported image, truncated or corrupt, has more than `MAX_PIXELS` pixels, or
            would need more than `MAX_DECODE_BYTES` of memory to decode.
        ValueError: `size` is not a positive integer.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0):
        raise ValueError(f"size must be a positive integer or None, not {size!r}")
    size = None if size is None else int(size)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(label, f"file too large ({len(data)} bytes; limit {MAX_FILE_BYTES})")
    else:
        label = name or os.fspath(source)
        data = _read_file(source, label)
    if not data:
        raise ImageError(label, "empty file")

    img = _open(data, label)
    stored = img.size
    extent: tuple[float, float] = img.size  # how much of the stored image the decoded one covers
    try:
        if size is not None and img.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping at least twice the target
            # size, so the Lanczos filter below still does the final reduction: a 12-megapixel
            # photo decodes several times faster with no visible difference at encoder sizes.
            drafted = img.draft(None, (2 * size, 2 * size))
            if drafted and img.size != stored:
                # The scaled image covers the stored one exactly over (0, 0, width / scale,
                # height / scale); its last row and column can be partial.
                extent = drafted[1][2:]
                logger.debug("%s: decoding %dx%d at %dx%d", label, *stored, *img.size)
        needed = _decode_bytes(img, size)
        if needed > MAX_DECODE_BYTES:
            width, height = stored
            raise ImageError(label, f"image too large to decode ({width}x{height} {img.mode} needs about "
                                    f"{needed // 2**20} MiB; limit {MAX_DECODE_BYTES // 2**20} MiB)")
        # Force the full decode now: Pillow decodes lazily, and a truncated file must fail
        # here with a clear message rather than later or, worse, as half an image.
        img.load()
    except ImageError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(label, _decode_problem(e)) from None

    transpose = _exif_orientation(img)
    try:
        return _rgb_pixels(img, size, transpose, extent)
    except MemoryError:
        raise ImageError(label, "not enough memory to decode the image") from None
    except Exception as e:
        raise ImageError(label, f"cannot convert image ({img.mode}): {_first_line(e)}") from None


def scan_images(directory: str | os.PathLike, recursive: bool = False) -> ImageListing:
    """Lists the image files in `directory`, and what could not be listed.

    Files are chosen by extension (`IMAGE_EXTENSIONS`, case-insensitive). Hidden files and
    folders are skipped silently: macOS leaves "._photo.jpg" metadata files beside photos in many
    zipped datasets, and they are not images. Symbolic links to files are followed; an entry that
    cannot be used (a link loop, a broken link, a FIFO named like an image...) becomes one
    `skipped` item and a warning on this module's logger, never an error for the whole folder.
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
    except FileNotFoundError:
        raise ImageError(folder, "directory not found") from None
    except NotADirectoryError:
        raise ImageError(folder, "not a directory") from None
    except PermissionError:
        raise ImageError(folder, "permission denied") from None
    except OSError as e:
        raise ImageError(folder, _stat_problem(folder, e)) from None
    except ValueError:
        raise ImageError(folder, "invalid file name") from None


# --- reading the file --------------------------------------------------------------------------


def _read_file(path: str | os.PathLike, label: str) -> bytes:
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
    kinds = ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISSOCK, "socket"))
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
    return f"cannot read file: {getattr(e, 'strerror', None) or _first_line(e)}"


# --- decoding ----------------------------------------------------------------------------------


def _open(data: bytes, label: str) -> Image.Image:
    """Parses the header, refusing unsupported formats and decompression bombs."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_IMAGE_PIXELS up and raises from twice that; our own limit
            # below decides, so the warning would only be noise. So would "Corrupt EXIF data":
            # broken metadata is ignored on purpose.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as e:
        found = _PIXELS_IN_MESSAGE.search(str(e))
        pixels = found.group(1) if found else "too many"
        raise ImageError(label, f"image too large ({pixels} pixels; limit {MAX_PIXELS})") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not a JPEG, PNG, BMP or WebP image") from None
    except Exception as e:
        raise ImageError(label, _decode_problem(e)) from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(label, f"image too large ({width * height} pixels; limit {MAX_PIXELS})")
    if width == 0 or height == 0:
        raise ImageError(label, f"image has no pixels ({width}x{height})")
    return img


def _decode_bytes(img: Image.Image, size: int | None) -> int:
    """Estimated peak memory of decoding `img` (opened, after any draft) and making the result.

    Every buffer that is alive at once: the decoder's (Pillow's image, plus libjpeg's coefficients
    for a progressive JPEG and libwebp's canvases), the conversion's tile scratch, the result at
    reduced size, and the final Lanczos image. The encoded file itself is not counted. On large
    images it comes out 5-25% above the measured growth of peak RSS less the file's size
    (benchmarks/image_memory.py prints both).
    """
    width, height = img.size
    total = width * height * _STORAGE_BYTES.get(img.mode, 4)
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        # libjpeg keeps every DCT coefficient (2 bytes per sample) of a progressive JPEG at the
        # stored size, whatever the scale it decodes at.
        full_width, full_height = _jpeg_stored_size(img)
        layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * len(img.getbands())
        h_max = max(h for _, h, _, _ in layers) or 1
        v_max = max(v for _, _, v, _ in layers) or 1
        for _, h, v, _ in layers:
            blocks_x = -(-(-(-full_width * h // h_max)) // 8)
            blocks_y = -(-(-(-full_height * v // v_max)) // 8)
            total += blocks_x * blocks_y * 64 * 2
    elif img.format == "WEBP":
        total += _WEBP_EXTRA_COPIES * width * height * 4
    x_factor, y_factor = _reduce_factors(width, height, size)
    tile_width, tile_height = _tile_shape(width, height, x_factor, y_factor)
    total += tile_width * tile_height * _TILE_BYTES_PER_PIXEL
    reduced = -(-width // x_factor) * -(-height // y_factor)
    total += reduced * 3
    if size is not None:
        total += reduced * 4 + size * size * 7  # Image.fromarray copy, Lanczos result, final array
    return total


def _jpeg_stored_size(img: Image.Image) -> tuple[int, int]:
    """A JPEG's size before `draft` (the draft box is (0, 0, width / scale, height / scale))."""
    scale = (getattr(img, "decoderconfig", None) or (1,))[0] or 1
    width, height = img.size
    return width * scale, height * scale


def _reduce_factors(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Whole factors to reduce by, keeping each side at least `_REDUCING_GAP` x `size`."""
    if size is None:
        return 1, 1
    target = _REDUCING_GAP * size
    x_factor, y_factor = max(1, width // target), max(1, height // target)
    while x_factor * y_factor > _TILE_PIXELS:  # only for tiny targets: keep one block within a tile
        x_factor, y_factor = max(1, x_factor // 2), max(1, y_factor // 2)
    return x_factor, y_factor


def _tile_shape(width: int, height: int, x_factor: int, y_factor: int) -> tuple[int, int]:
    """(width, height) of the tiles converted at a time: whole reduction blocks, about `_TILE_PIXELS`."""
    if width * y_factor <= _TILE_PIXELS:
        rows = max(1, _TILE_PIXELS // (width * y_factor)) * y_factor
        return width, min(rows, height)
    columns = max(1, _TILE_PIXELS // (x_factor * y_factor)) * x_factor
    return min(columns, width), min(y_factor, height)


def _exif_orientation(img: Image.Image) -> Image.Transpose | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data"; we ignore it on purpose
            return _ORIENTATIONS.get(img.getexif().get(0x0112, 1))
    except Exception:
        # Broken EXIF metadata is common in edited photos; the pixels are still fine, so use
        # them as stored rather than refusing the image.
        return None


def _rgb_pixels(img: Image.Image, size: int | None, transpose: Image.Transpose | None,
                extent: tuple[float, float]) -> np.ndarray:
    """Converts the decoded image to upright RGB, tile by tile, reduced, then squashed to `size`.

    `extent` is the part of `img`, in its pixels, that the whole stored image maps to: its size,
    or slightly less after a JPEG draft whose last row and column are partial.
    """
    width, height = img.size
    x_factor, y_factor = _reduce_factors(width, height, size)
    reduced_width, reduced_height = -(-width // x_factor), -(-height // y_factor)
    if transpose in _SWAPS_SIDES:
        out = np.empty((reduced_width, reduced_height, 3), dtype=np.uint8)
    else:
        out = np.empty((reduced_height, reduced_width, 3), dtype=np.uint8)
    stored = _stored_view(out, transpose)  # `out` seen in the file's orientation
    tile_width, tile_height = _tile_shape(width, height, x_factor, y_factor)
    if (x_factor, y_factor) != (1, 1):
        logger.debug("reducing %dx%d %s by %dx%d before resampling", width, height, img.mode, x_factor, y_factor)
    for top in range(0, height, tile_height):
        for left in range(0, width, tile_width):
            box = (left, top, min(left + tile_width, width), min(top + tile_height, height))
            tile = img if box == (0, 0, width, height) else img.crop(box)
            if (x_factor, y_factor) != (1, 1):
                # Reduce as early as possible: the later steps then work on a few pixels only.
                # Alpha is averaged premultiplied, so compositing afterwards gives the same
                # colours as compositing first.
                tile = _reducible(tile).reduce((x_factor, y_factor))
            tile = _to_rgb(tile)
            row, column = top // y_factor, left // x_factor
            stored[row : row + tile.height, column : column + tile.width] = np.asarray(tile)
            del tile
    if size is None or out.shape[:2] == (size, size):
        return out
    # A partial last block (or draft row) covers less than a whole pixel: resample from the exact
    # region the stored image maps to, as Image.thumbnail and resize(reducing_gap=...) do.
    covered = (extent[0] / x_factor, extent[1] / y_factor)
    box = None
    if covered != (reduced_width, reduced_height):
        box = _upright_box(covered, (reduced_width, reduced_height), transpose)
    resized = Image.fromarray(out).resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.array(resized, dtype=np.uint8)


def _upright_box(covered: tuple[float, float], shape: tuple[int, int],
                 transpose: Image.Transpose | None) -> tuple[float, float, float, float]:
    """Where the region (0, 0, *covered) of a stored image of `shape` (w, h) lands once upright."""
    (x, y), (width, height) = covered, shape
    T = Image.Transpose
    boxes = {
        None: (0, 0, x, y),
        T.FLIP_LEFT_RIGHT: (width - x, 0, width, y),
        T.FLIP_TOP_BOTTOM: (0, height - y, x, height),
        T.ROTATE_180: (width - x, height - y, width, height),
        T.TRANSPOSE: (0, 0, y, x),
        T.ROTATE_90: (0, width - x, y, width),
        T.ROTATE_270: (height - y, 0, height, x),
        T.TRANSVERSE: (height - y, width - x, height, width),
    }
    return boxes[transpose]


def _stored_view(out: np.ndarray, transpose: Image.Transpose | None) -> np.ndarray:
    """A view of `out` (upright) in which writing the stored image leaves `out` transposed."""
    T = Image.Transpose
    if transpose is None:
        return out
    if transpose == T.FLIP_LEFT_RIGHT:
        return out[:, ::-1]
    if transpose == T.FLIP_TOP_BOTTOM:
        return out[::-1]
    if transpose == T.ROTATE_180:
        return out[::-1, ::-1]
    if transpose == T.TRANSPOSE:
        return out.transpose(1, 0, 2)
    if transpose == T.ROTATE_90:  # counter-clockwise
        return np.rot90(out, -1)
    if transpose == T.ROTATE_270:
        return np.rot90(out, 1)
    if transpose == T.TRANSVERSE:
        return np.rot90(out, 2).transpose(1, 0, 2)
    raise ValueError(f"unknown transposition {transpose!r}")


def _reducible(img: Image.Image) -> Image.Image:
    """`img` in a mode whose pixels can be averaged (L, LA, RGB or RGBA), with the same colours."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return _scale_to_8_bit(img)
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("PA", "RGBa"):
        return img.convert("RGBA")
    if mode == "La":
        return img.convert("LA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return _scale_to_8_bit(img).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        return _composite_on_white(img)
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are right.
    return img.convert("RGB")


def _scale_to_8_bit(img: Image.Image) -> Image.Image:
    """Maps 16-bit greyscale to 8 bits by scaling (65535 -> 255, rounding), not by clipping at 255.

    Integer arithmetic on one tile: round(v / 257) == (v + 128) // 257 for every integer v, as
    v / 257 is never exactly halfway between two integers; 16-bit values go through a table.
    """
    values = np.asarray(img)
    if img.mode == "F":
        eight = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
    elif values.dtype.itemsize == 2:
        eight = _SIXTEEN_TO_EIGHT[values]
    else:
        eight = ((np.clip(values, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)
    return Image.fromarray(eight)


_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _decode_problem(e: Exception) -> str:
    text = _first_line(e)
    if "truncated" in text.lower():
        return f"truncated image file ({text})"
    if isinstance(e, MemoryError):
        return "not enough memory to decode the image"
    return f"corrupt or unreadable image data ({text})"


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


_Batch = TypeVar("_Batch")
_Loaded = TypeVar("_Loaded")


def load_ahead(batches: Sequence[_Batch], load: Callable[[_Batch], _Loaded]) -> Iterator[tuple[_Batch, _Loaded]]:
    """Yields (batch, load(batch)) in order, loading the next batch on a worker thread.

    Decoding JPEGs releases the GIL, so the next batch is read while the caller encodes this one.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            loaded = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(load, batches[i + 1])
            yield batch, loaded
