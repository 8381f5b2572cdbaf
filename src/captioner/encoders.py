"""Encoder registry: a name -> an ImageNet CNN with its input size, preprocessing and feature shape.

An `Encoder` maps uint8 images, already squashed to `info.input_size`, to either the pooled
feature vector (B, D) or the spatial grid (B, g, g, D) that attention decoders attend over. The
preprocessing lives inside `Encoder.model`, so callers never scale pixels themselves.

`encoder_info` and `available_encoders` do not import TensorFlow; `get_encoder` does.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from captioner.defaults import ENCODER as DEFAULT_ENCODER

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32  # images per model call in encode(): bounds memory, keeps the CPU busy


@dataclass(frozen=True)
class EncoderInfo:
    """What a feature cache and a trained captioner need to know about an encoder."""

    name: str  # registry name, e.g. "efficientnet_lite0"
    input_size: int  # square side in pixels the image is squashed to
    preprocessing: str  # human-readable formula recorded in feature caches
    feature_dim: int  # channels D of the pooled vector and of each grid cell
    grid_size: int  # side g of the spatial grid

    @property
    def feature_shape(self) -> tuple[int]:
        return (self.feature_dim,)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return (self.grid_size, self.grid_size, self.feature_dim)


# Lite grids are ceil(S / 32) because of 'same' padding: 224 -> 7, 240 -> 8, 260 -> 9.
_INFOS = {
    info.name: info
    for info in (
        EncoderInfo("efficientnet_lite0", 224, "(x - 127) / 128", 1280, 7),
        EncoderInfo("efficientnet_lite1", 240, "(x - 127) / 128", 1280, 8),
        EncoderInfo("efficientnet_lite2", 260, "(x - 127) / 128", 1280, 9),
        EncoderInfo("xception", 299, "x / 127.5 - 1", 2048, 10),
    )
}


def available_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(_INFOS)


def encoder_info(name: str) -> EncoderInfo:
    """The encoder's sizes and preprocessing, without building its model.

    Raises:
        ValueError: unknown name; the message lists the available ones.
    """
    try:
        return _INFOS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(available_encoders())}") from None


# ----------------------------------------------------------------------------------------------
# Model builders: each returns a Keras model from (S, S, 3) float pixels in [0, 255] to the grid.


def _efficientnet_lite_builder(variant: int) -> Callable[[str | None], keras.Model]:
    def build(weights: str | None) -> keras.Model:
        import keras

        from captioner import effnet_lite

        size = effnet_lite.INPUT_SIZES[variant]
        backbone = effnet_lite.build_efficientnet_lite(variant, weights=weights, include_top=False)
        pixels = keras.Input((size, size, 3), name="pixels")  # (B, S, S, 3) in [0, 255]
        mean, std = effnet_lite.INPUT_MEAN, effnet_lite.INPUT_STD
        x = keras.layers.Rescaling(1.0 / std, offset=-mean / std, name="preprocess")(pixels)  # (x - 127) / 128
        return keras.Model(pixels, backbone(x), name=f"efficientnet_lite{variant}_encoder")  # (B, g, g, 1280)

    return build


def _build_xception(weights: str | None) -> keras.Model:
    import keras

    size = _INFOS["xception"].input_size
    # Keras downloads the ImageNet weights on first use and caches them under ~/.keras/models.
    # Its progress bar prints to stdout, which would corrupt `--json` output: send it to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        backbone = keras.applications.Xception(include_top=False, weights=weights, input_shape=(size, size, 3))
    pixels = keras.Input((size, size, 3), name="pixels")  # (B, 299, 299, 3) in [0, 255]
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(pixels)  # = xception.preprocess_input
    return keras.Model(pixels, backbone(x), name="xception_encoder")  # (B, 10, 10, 2048)


_BUILDERS: dict[str, Callable[[str | None], keras.Model]] = {
    "efficientnet_lite0": _efficientnet_lite_builder(0),
    "efficientnet_lite1": _efficientnet_lite_builder(1),
    "efficientnet_lite2": _efficientnet_lite_builder(2),
    "xception": _build_xception,
}


# ----------------------------------------------------------------------------------------------
# Encoder


class Encoder:
    """A built encoder: `model` plus a fast forward pass for batched encoding.

    The forward pass runs on LiteRT (XNNPACK), ~2x faster than TensorFlow's own kernels on CPUs
    (`captioner.litert`), and falls back to a compiled `tf.function` of `model`.

    Attributes:
        info: sizes and preprocessing.
        model: Keras model, (B, S, S, 3) float pixels in [0, 255] -> (B, g, g, D) grid; it
            includes the preprocessing.
        pretrained: whether the weights are published ones (random weights never run on LiteRT).
    """

    def __init__(self, info: EncoderInfo, model: keras.Model, pretrained: bool = True) -> None:
        import tensorflow as tf

        self.info = info
        self.model = model
        self.pretrained = pretrained
        s = info.input_size
        # One trace serves every batch size; model.predict would pay a large fixed cost per call.
        # No jit_compile: XLA on CPU ran Lite0 ~8x slower here (its depthwise convolutions).
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, s, s, 3), tf.float32)])
        self._lite: Callable[[np.ndarray], np.ndarray] | None = None  # the LiteRT forward pass, made on first use
        self._lite_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Encoder({self.info})"

    def encode(self, images: np.ndarray, spatial: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Encodes a batch of images.

        Args:
            images: (B, S, S, 3) uint8 (or float in [0, 255]), already squashed to info.input_size.
            spatial: return the grid instead of the pooled vector.
            batch_size: images per model call; larger uses more memory, not much less time.

        Returns:
            (B, D) float32, the global average of the grid, or (B, g, g, D) float32 if spatial.
        """
        images = np.asarray(images)
        s = self.info.input_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"{self.info.name} expects images of shape (B, {s}, {s}, 3), got {images.shape}")
        forward = self.forward()
        grids = [forward(images[i : i + batch_size].astype(np.float32)) for i in range(0, len(images), batch_size)]
        grid = np.concatenate(grids) if grids else np.zeros((0, *self.info.grid_shape), np.float32)  # (B, g, g, D)
        return grid if spatial else grid.mean(axis=(1, 2))  # (B, D)

    @property
    def runtime(self) -> str:
        """What runs the forward pass: "litert" or "tensorflow" (see `captioner.litert`)."""
        from captioner import litert

        return "litert" if isinstance(self.forward(), litert.LiteFunction) else "tensorflow"

    def forward(self) -> Callable[[np.ndarray], np.ndarray]:
        """The forward pass, (B, S, S, 3) float32 -> (B, g, g, D) float32.

        LiteRT for pretrained encoders, unless turned off or unavailable; random weights (tests)
        run on TensorFlow, since every build would need its own conversion.
        """
        from captioner import litert

        if not litert.wanted() or not self.pretrained:
            return self._tf_forward
        with self._lite_lock:
            if self._lite is None:
                try:
                    digest = litert.weights_digest(self.model.weights, self.info)
                    self._lite = litert.LiteFunction(litert.cached_convert(self._forward, digest, self.info.name))
                except Exception as err:  # an encoder LiteRT cannot run is still run, by TensorFlow
                    log.warning("%s runs on TensorFlow: LiteRT could not load it (%s: %s)", self.info.name, type(err).__name__, err)
                    self._lite = self._tf_forward
            return self._lite

    def _tf_forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x).numpy()


_cache: dict[tuple[str, str | None], Encoder] = {}
_cache_lock = threading.Lock()  # the web server may ask from several threads at once


def get_encoder(name: str = DEFAULT_ENCODER, weights: str | None = "imagenet") -> Encoder:
    """Builds (once per process) the named encoder.

    Args:
        name: one of `available_encoders()`.
        weights: "imagenet", or None for random weights (tests; nothing downloaded).

    Raises:
        ValueError: unknown name.
    """
    info = encoder_info(name)
    with _cache_lock:
        if (name, weights) not in _cache:
            _cache[(name, weights)] = Encoder(info, _BUILDERS[name](weights), pretrained=weights is not None)
        return _cache[(name, weights)]
