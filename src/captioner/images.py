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
- Decompression bombs (more than `MAX_PIXELS` pixels), truncated files, non-image files and
  missing files raise `ImageError`, whose message is "<path>: <problem>" on one line.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.errors import FileError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageError", "list_images", "load_ahead", "load_image"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# Enough for a 108-megapixel phone photo; a bigger "photo" is far more likely to be a
# decompression bomb than a picture someone wants captioned.
MAX_PIXELS = 120_000_000

# Pillow format names that the extensions above correspond to. Multi-picture JPEGs that many
# cameras write come back from the JPEG opener with format "MPO".
_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")


class ImageError(FileError):
    """An image file that cannot be used; `str(e)` is "<path>: <problem>".

    Attributes:
        path: the file (or the name given for in-memory bytes).
        problem: what is wrong with it, one line.
    """


def load_image(source: str | os.PathLike | bytes, size: int | None = None, *, name: str | None = None) -> np.ndarray:
    """Reads an image file as a uint8 RGB array.

    Args:
        source: a file path, or the encoded file's bytes (for example an HTTP upload).
        size: if given, the whole image is squashed (not cropped) to `size` x `size`;
            if None, the original size is kept.
        name: what error messages call the image; defaults to the path, or "<bytes>".

    Returns:
        An array of shape (size, size, 3), or (height, width, 3) when `size` is None.

    Raises:
        ImageError: the file is missing, empty, not a supported image, truncated or corrupt,
            or has more than `MAX_PIXELS` pixels.
        ValueError: `size` is not a positive integer.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0):
        raise ValueError(f"size must be a positive integer or None, not {size!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
    else:
        label = name or os.fspath(source)
        data = _read_file(source, label)
    if not data:
        raise ImageError(label, "empty file")

    img = _open(data, label)
    try:
        if size is not None and img.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping at least twice the target
            # size, so the Lanczos filter below still does the final reduction: a 12-megapixel
            # photo decodes several times faster with no visible difference at encoder sizes.
            img.draft(None, (2 * int(size), 2 * int(size)))
        # Force the full decode now: Pillow decodes lazily, and a truncated file must fail
        # here with a clear message rather than later or, worse, as half an image.
        img.load()
    except ImageError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(label, _decode_problem(e)) from None

    img = _apply_exif_orientation(img)
    try:
        img = _to_rgb(img)
        if size is not None and img.size != (size, size):
            img = img.resize((int(size), int(size)), Image.Resampling.LANCZOS)
    except Exception as e:
        raise ImageError(label, f"cannot convert image ({img.mode}): {_first_line(e)}") from None
    return np.array(img, dtype=np.uint8)


def list_images(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Lists the image files in `directory`, sorted by (relative) path.

    Files are chosen by extension (`IMAGE_EXTENSIONS`, case-insensitive). Hidden files and
    folders are skipped: macOS leaves "._photo.jpg" metadata files beside photos in many zipped
    datasets, and they are not images.

    Args:
        directory: the folder to list.
        recursive: also list subfolders (at any depth).

    Raises:
        ImageError: the directory does not exist or is not a directory.
    """
    directory = Path(directory)
    found: list[tuple[str, ...]] = []
    pending: list[tuple[str, ...]] = [()]
    while pending:
        parts = pending.pop()
        for entry in _scan(directory, parts):
            if entry.name.startswith("."):
                continue
            if recursive and entry.is_dir():
                pending.append((*parts, entry.name))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                found.append((*parts, entry.name))
    return [directory.joinpath(*parts) for parts in sorted(found)]


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


def _read_file(path: str | os.PathLike, label: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageError(label, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(label, "permission denied") from None
    except OSError as e:
        raise ImageError(label, f"cannot read file: {e.strerror or e}") from None


def _open(data: bytes, label: str) -> Image.Image:
    """Parses the header, refusing unsupported formats and decompression bombs."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_IMAGE_PIXELS up and raises from twice that; our own limit
            # below decides, so the warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # Broken EXIF metadata is common in edited photos; the pixels are still fine, so use
        # them as stored rather than refusing the image.
        return img


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
    """Maps 16-bit greyscale to 8 bits by scaling (65535 -> 255), not by clipping at 255."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode != "F":
        values = values / 257.0  # 65535 / 255 == 257 exactly
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


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
