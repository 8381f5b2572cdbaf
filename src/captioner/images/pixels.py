"""Decoded image to upright uint8 RGB pixels: EXIF orientation, mode conversion, resizing.

The conversion runs tile by tile, each tile reduced by whole factors (a box filter, never below
`REDUCING_GAP` times the target) before it is stored, so the only full-size buffer is the
decoder's own; Lanczos resampling then squashes the result to the target size.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from PIL import Image

logger = logging.getLogger("captioner.images")  # the package's logger, as before it was split

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# Whole-factor reduction (Image.reduce, a box filter) stops while the image is still at least this
# many times the target size, and Lanczos does the rest; Pillow's docs call a gap of 3
# indistinguishable from Lanczos all the way.
REDUCING_GAP = 3

# Pixels converted to RGB at a time: bounds the scratch memory of the conversion.
_TILE_PIXELS = 1 << 20

# Upper bound of scratch bytes per tile pixel: crop, RGBA copy, white page, composite, RGB result,
# NumPy copies of 16-bit values.
_TILE_BYTES_PER_PIXEL = 32

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
_SWAPS_SIDES = frozenset({Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90})


def conversion_bytes(width: int, height: int, size: int | None) -> int:
    """Estimated peak memory of `rgb_pixels` on a decoded `width` x `height` image, besides the image.

    The conversion's tile scratch, the result at reduced size, and (with `size`) the final Lanczos
    image and array.
    """
    x_factor, y_factor = _reduce_factors(width, height, size)
    tile_width, tile_height = _tile_shape(width, height, x_factor, y_factor)
    total = tile_width * tile_height * _TILE_BYTES_PER_PIXEL
    reduced = -(-width // x_factor) * -(-height // y_factor)
    total += reduced * 3
    if size is not None:
        total += reduced * 4 + size * size * 7  # Image.fromarray copy, Lanczos result, final array
    return total


def _reduce_factors(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Whole factors to reduce by, keeping each side at least `REDUCING_GAP` x `size`."""
    if size is None:
        return 1, 1
    target = REDUCING_GAP * size
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


def exif_orientation(img: Image.Image) -> Image.Transpose | None:
    """The transposition that makes `img` upright according to its EXIF orientation, if any."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data"; we ignore it on purpose
            return _ORIENTATIONS.get(img.getexif().get(0x0112, 1))
    except Exception:
        # Broken EXIF metadata is common in edited photos; the pixels are still fine, so use
        # them as stored rather than refusing the image.
        return None


def rgb_pixels(img: Image.Image, size: int | None, transpose: Image.Transpose | None, extent: tuple[float, float]) -> np.ndarray:
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
    region: tuple[float, float, float, float] | None = None
    if covered != (reduced_width, reduced_height):
        region = _upright_box(covered, (reduced_width, reduced_height), transpose)
    resized = Image.fromarray(out).resize((size, size), Image.Resampling.LANCZOS, box=region)
    return np.array(resized, dtype=np.uint8)


def _upright_box(covered: tuple[float, float], shape: tuple[int, int], transpose: Image.Transpose | None) -> tuple[float, float, float, float]:
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
