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
each tile reduced by whole factors (a box filter, never below `REDUCING_GAP` times the target)
before it is stored, so the only full-size buffer is the decoder's own. Images no bigger than
`REDUCING_GAP` x `size` on a side take exactly the straightforward path (convert, then Lanczos).

Modules (each imports only those listed before it): `files` (reading a path safely, folder
listings, `ImageError`), `pixels` (EXIF orientation, conversion to RGB, resizing), `decode`
(opening with Pillow, the memory budget, `load_image`), and `ahead` (`load_ahead`, read-ahead on a
worker thread). Everything logs to the "captioner.images" logger.
"""

from __future__ import annotations

import logging

from captioner.images.ahead import load_ahead
from captioner.images.decode import MAX_DECODE_BYTES, MAX_PIXELS, load_image
from captioner.images.files import IMAGE_EXTENSIONS, MAX_FILE_BYTES, ImageError, ImageListing, list_images, scan_images

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

logger = logging.getLogger(__name__)  # "captioner.images", which every module logs to
