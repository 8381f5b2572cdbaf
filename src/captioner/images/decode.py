"""Bytes to a decoded Pillow image within the memory budget, and `load_image`.

Only JPEG (MPO included), PNG, BMP and WebP are opened; decompression bombs (more than
`MAX_PIXELS` pixels, or a decode estimated to need more than `MAX_DECODE_BYTES`) are refused
before decoding; big JPEGs are decoded at reduced size (libjpeg's DCT scaling via `draft`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from captioner.images.files import MAX_FILE_BYTES, ImageError, first_line, read_file
from captioner.images.pixels import conversion_bytes, exif_orientation, rgb_pixels

logger = logging.getLogger("captioner.images")  # the package's logger, as before it was split

# Enough for a 108-megapixel phone photo; a bigger "photo" is far more likely to be a
# decompression bomb than a picture someone wants captioned.
MAX_PIXELS = 120_000_000

# Estimated memory one decode may use (decoder buffers plus our copies; the encoded file, at most
# MAX_FILE_BYTES, comes on top): keeps a process's peak for any accepted image well under 1 GB.
MAX_DECODE_BYTES = 512 * 2**20

# Pillow format names that IMAGE_EXTENSIONS correspond to. Multi-picture JPEGs that many
# cameras write come back from the JPEG opener with format "MPO".
_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")

_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")

# Bytes per pixel of Pillow's own storage; every other mode (RGB included) takes 4.
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}

# libwebp's animation decoder keeps two canvases and hands Pillow a third copy of the frame.
_WEBP_EXTRA_COPIES = 3


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
        data = read_file(source, label)
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
            raise ImageError(
                label, f"image too large to decode ({width}x{height} {img.mode} needs about {needed // 2**20} MiB; limit {MAX_DECODE_BYTES // 2**20} MiB)"
            )
        # Force the full decode now: Pillow decodes lazily, and a truncated file must fail
        # here with a clear message rather than later or, worse, as half an image.
        img.load()
    except ImageError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(label, _decode_problem(e)) from None

    transpose = exif_orientation(img)
    try:
        return rgb_pixels(img, size, transpose, extent)
    except MemoryError:
        raise ImageError(label, "not enough memory to decode the image") from None
    except Exception as e:
        raise ImageError(label, f"cannot convert image ({img.mode}): {first_line(e)}") from None


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
            # Blocks of 8x8 samples: ceil(ceil(width * h / h_max) / 8), which is -(-a // b // 8).
            blocks_x = -(-full_width * h // h_max // 8)
            blocks_y = -(-full_height * v // v_max // 8)
            total += blocks_x * blocks_y * 64 * 2
    elif img.format == "WEBP":
        total += _WEBP_EXTRA_COPIES * width * height * 4
    return total + conversion_bytes(width, height, size)


def _jpeg_stored_size(img: Image.Image) -> tuple[int, int]:
    """A JPEG's size before `draft` (the draft box is (0, 0, width / scale, height / scale))."""
    scale = (getattr(img, "decoderconfig", None) or (1,))[0] or 1
    width, height = img.size
    return width * scale, height * scale


def _decode_problem(e: Exception) -> str:
    text = first_line(e)
    if "truncated" in text.lower():
        return f"truncated image file ({text})"
    if isinstance(e, MemoryError):
        return "not enough memory to decode the image"
    return f"corrupt or unreadable image data ({text})"
