"""Encoded image bytes -> the encoder's square uint8 input, inside a TensorFlow graph.

A graph-only copy of `captioner.images.load_image(data, size)` for exported models, so a server
that loads the SavedModel with TensorFlow alone gets the pixels the Python path gets:

- JPEG: decoded with the accurate integer DCT (`INTEGER_ACCURATE`, libjpeg's `JDCT_ISLOW`, what
  Pillow uses; TensorFlow's default is the fast DCT, about 1.4 grey levels off). A JPEG at least
  twice the target size on both sides is decoded at 1/2, 1/4 or 1/8 scale exactly as Pillow's
  `draft` picks it.
- PNG, BMP, GIF (first frame) and WebP: decoded with their native channels; grey becomes RGB and
  transparency is composited on white, as the Python path does.
- Images more than `REDUCING_GAP` times the target size are first reduced by whole factors (a
  box filter with Pillow's rounding), then squashed (whole image, no crop) to `size` x `size`
  with Lanczos-3 antialiased resampling in two passes, horizontal first, rounding to 8 bits in
  between: Pillow's own resize, except that Pillow sums in fixed point and TensorFlow in float32,
  so a value that lands exactly half-way between two levels may round the other way. On
  Flickr8k dev photos about 0.01 % of the values differ, by one or two levels (mean absolute difference
  0.0001); smooth synthetic gradients, full of exact ties, reach 1 % (`benchmarks/export_speed.py
  --parity` measures it, with the other resize methods tried).

Not done in the graph: EXIF orientation (a phone photo stored sideways stays sideways; rotate it
before sending, or use the Python path), and the Python path's checks on hostile files beyond a
pixel-count limit for JPEG and PNG (an undecodable file fails the whole call with
`InvalidArgumentError`).
"""

from __future__ import annotations

import tensorflow as tf

from captioner.images.decode import MAX_PIXELS
from captioner.images.pixels import REDUCING_GAP

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _round_to_byte(x: tf.Tensor) -> tf.Tensor:
    """Pillow's 8-bit rounding: half up, clipped to [0, 255] (float result)."""
    return tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)


def _check_pixels(height: tf.Tensor, width: tf.Tensor) -> tf.Operation:
    pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
    return tf.debugging.assert_less_equal(pixels, tf.constant(MAX_PIXELS, tf.int64), message=f"image has more than {MAX_PIXELS} pixels")


def _decode_jpeg(contents: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(H, W, 3) uint8 and the extent (w, h) of the stored image in decoded pixels, as Pillow's draft."""
    shape = tf.io.extract_jpeg_shape(contents)  # [h, w, c], read from the header only
    height, width = shape[0], shape[1]
    with tf.control_dependencies([_check_pixels(height, width)]):
        scale = tf.minimum(width // (2 * size), height // (2 * size))
    # Pillow: the largest of 8, 4, 2, 1 not above `scale`.
    index = tf.where(scale >= 8, 3, tf.where(scale >= 4, 2, tf.where(scale >= 2, 1, 0)))
    ratios = (1, 2, 4, 8)
    branches = [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r, dct_method="INTEGER_ACCURATE") for r in ratios]
    image = tf.switch_case(index, branches)
    ratio = tf.gather(tf.constant(ratios, tf.float32), index)
    extent = tf.stack([tf.cast(width, tf.float32) / ratio, tf.cast(height, tf.float32) / ratio])
    return image, extent


def _png_check(contents: tf.Tensor) -> tf.Operation:
    """The IHDR chunk's width and height (big-endian, bytes 16-24) within the pixel limit."""
    header = tf.io.decode_raw(tf.strings.substr(contents, 16, 8), tf.uint8)
    values = tf.cast(tf.reshape(header, [2, 4]), tf.int64)
    width, height = [tf.reduce_sum(values[i] * tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)) for i in (0, 1)]
    return _check_pixels(height, width)


def _composite_on_white(rgba: tf.Tensor) -> tf.Tensor:
    """(H, W, 4) uint8 -> (H, W, 3) float, alpha composited on white (opaque pixels unchanged)."""
    rgba = tf.cast(rgba, tf.float32)
    alpha = rgba[:, :, 3:] / 255.0
    return _round_to_byte(rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha))


def _decode_other(contents: tf.Tensor) -> tf.Tensor:
    """PNG, BMP, GIF, WebP -> (H, W, 3) uint8; grey replicated, transparency on white."""
    is_png = tf.strings.substr(contents, 0, 8) == _PNG_MAGIC
    check = tf.cond(is_png, lambda: _png_check(contents), lambda: tf.no_op())
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(contents, channels=0, expand_animations=False)  # (H, W, C), C in 1..4
    channels = tf.shape(image)[2]

    def grey():
        return tf.cast(tf.image.grayscale_to_rgb(image[:, :, :1]), tf.float32)

    def grey_alpha():
        return _composite_on_white(tf.concat([image[:, :, :1], image[:, :, :1], image[:, :, :1], image[:, :, 1:2]], axis=2))

    def rgb():
        return tf.cast(image[:, :, :3], tf.float32)

    def rgba():
        return _composite_on_white(image[:, :, :4])

    converted = tf.switch_case(tf.clip_by_value(channels - 1, 0, 3), [grey, grey_alpha, rgb, rgba])
    return tf.cast(converted, tf.uint8)


def _reduce(image: tf.Tensor, x_factor: tf.Tensor, y_factor: tf.Tensor) -> tf.Tensor:
    """Pillow's `Image.reduce((x, y))`: block means rounded half up; partial last blocks average what they hold."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    out_h, out_w = -(-height // y_factor), -(-width // x_factor)
    padded = tf.pad(tf.cast(image, tf.int32), [[0, out_h * y_factor - height], [0, out_w * x_factor - width], [0, 0]])
    sums = tf.reduce_sum(tf.reshape(padded, [out_h, y_factor, out_w, x_factor, 3]), axis=[1, 3])
    rows = tf.minimum(y_factor, height - tf.range(out_h) * y_factor)  # pixels in each block row
    columns = tf.minimum(x_factor, width - tf.range(out_w) * x_factor)
    counts = (rows[:, None] * columns[None, :])[:, :, None]
    return tf.cast((sums + counts // 2) // counts, tf.uint8)


def _lanczos_pass(image: tf.Tensor, out_h, out_w, scale_y, scale_x) -> tf.Tensor:
    resized = tf.raw_ops.ScaleAndTranslate(
        images=image[None],
        size=tf.stack([out_h, out_w]),
        scale=tf.stack([scale_y, scale_x]),
        translation=tf.zeros([2]),
        kernel_type="lanczos3",
        antialias=True,
    )[0]
    return _round_to_byte(resized)


def squash(image: tf.Tensor, extent: tf.Tensor, size: int) -> tf.Tensor:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, as `captioner.images.pixels.rgb_pixels` squashes.

    `extent` (w, h) is how much of `image` the stored picture covers (less than its size after a
    JPEG draft whose last row and column are partial).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    target = REDUCING_GAP * size
    x_factor, y_factor = tf.maximum(1, width // target), tf.maximum(1, height // target)
    image = tf.cond((x_factor > 1) | (y_factor > 1), lambda: _reduce(image, x_factor, y_factor), lambda: image)
    covered_w = extent[0] / tf.cast(x_factor, tf.float32)  # the region Pillow resamples from: (0, 0, w, h)
    covered_h = extent[1] / tf.cast(y_factor, tf.float32)
    pixels = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    # Pillow resizes horizontally first and stores that pass as 8-bit pixels.
    pixels = _lanczos_pass(pixels, shape[0], size, 1.0, size / covered_w)
    pixels = _lanczos_pass(pixels, size, size, size / covered_h, 1.0)
    return tf.cast(pixels, tf.uint8)


def decode_and_squash(contents: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded image (scalar tf.string) -> (size, size, 3) uint8."""

    def jpeg():
        image, extent = _decode_jpeg(contents, size)
        return squash(image, extent, size)

    def other():
        image = _decode_other(contents)
        shape = tf.cast(tf.shape(image), tf.float32)
        return squash(image, tf.stack([shape[1], shape[0]]), size)

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    return tf.ensure_shape(image, [size, size, 3])


def decode_batch(images: tf.Tensor, size: int) -> tf.Tensor:
    """(B,) encoded images -> (B, size, size, 3) uint8."""
    return tf.map_fn(
        lambda contents: decode_and_squash(contents, size),
        images,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        parallel_iterations=4,
    )
