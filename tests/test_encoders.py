"""Encoders: the EfficientNet-Lite conversion is right, and the registry's shapes hold.

The conversion is proved twice: the checkpoints' own ImageNet heads name the objects in
scikit-image's bundled photos (catches gross errors), and the first layers agree with a plain
numpy computation straight from the torch tensors (catches subtle ones the classifier shrugs
off: symmetric instead of TF padding, a BatchNorm epsilon of 1e-5, kernels transposed).
Nothing here touches the network: Xception is only built with random weights.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from captioner import effnet_lite  # noqa: E402
from captioner.encoders import available_encoders, encoder_info, get_encoder  # noqa: E402

# ImageNet-1k class ids.
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO_OR_CUP = {967, 968}
TRIPOD = {872}  # skimage's cameraman stands behind a camera on a tripod
MOPED_OR_SCOOTER = {665, 670}
ROCKET_LIKE = {657, 744, 812}  # missile, projectile, space shuttle
# Photo -> (classes the top-1 must be in, or None, classes the top-5 must meet).
LITE0_EXPECTED = {
    "chelsea": (CATS, CATS),
    "coffee": (ESPRESSO_OR_CUP, ESPRESSO_OR_CUP),
    "camera": (TRIPOD, TRIPOD),
    "stereo_motorcycle": (MOPED_OR_SCOOTER, MOPED_OR_SCOOTER),
    "rocket": (None, ROCKET_LIKE),  # top-1 is "drilling platform": the gantry is in view
}
# Weights of the encoders that shape tests build: no download for Xception.
TEST_WEIGHTS = {"xception": None}


def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample squashed to (size, size, 3) uint8, as the project preprocesses."""
    image = getattr(skimage_data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    return np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), Image.BILINEAR))


def top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-logits)[:5]]


def assert_classified(name: str, logits: np.ndarray, top1_in: set[int] | None, top5_meets: set[int]) -> None:
    best = top5(logits)
    if top1_in is not None:
        assert best[0] in top1_in, f"{name}: top-5 {best}, expected top-1 in {sorted(top1_in)}"
    assert set(best) & top5_meets, f"{name}: top-5 {best}, expected one of {sorted(top5_meets)}"


@pytest.fixture(scope="module")
def lite0_classifier():
    return effnet_lite.build_efficientnet_lite(0, weights="imagenet", include_top=True)


@pytest.fixture(scope="module")
def lite0_state():
    return effnet_lite.read_torch_state_dict(effnet_lite.imagenet_weights_path(0))


# ----------------------------------------------------------------------------------------------
# The conversion


def test_lite0_imagenet_head_names_photos(lite0_classifier):
    size = effnet_lite.INPUT_SIZES[0]
    images = np.stack([photo(name, size) for name in LITE0_EXPECTED])  # (5, 224, 224, 3) uint8
    x = (images.astype(np.float32) - effnet_lite.INPUT_MEAN) / effnet_lite.INPUT_STD
    logits = np.asarray(lite0_classifier(x, training=False))  # (5, 1000)
    assert logits.shape == (len(LITE0_EXPECTED), 1000)
    for (name, (top1_in, top5_meets)), row in zip(LITE0_EXPECTED.items(), logits):
        assert_classified(name, row, top1_in, top5_meets)


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    # TF 'same': the odd extra pixel goes to the bottom/right.
    pads = []
    for n in x.shape[:2]:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [*pads, (0, 0)])


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    padded = _same_pad(x, kernel, stride)
    return np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(0, 1))[::stride, ::stride]


def _conv(x, w, stride):  # x (H, W, C), w torch (out, in, kh, kw) -> (H', W', out)
    return np.einsum("hwcij,ocij->hwo", _windows(x, w.shape[-1], stride), w, optimize=True)


def _depthwise(x, w, stride):  # x (H, W, C), w torch (C, 1, kh, kw) -> (H', W', C)
    return np.einsum("hwcij,cij->hwc", _windows(x, w.shape[-1], stride), w[:, 0], optimize=True)


def _bn(x, sd, name):
    return (x - sd[f"{name}.running_mean"]) / np.sqrt(sd[f"{name}.running_var"] + 1e-3) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def test_lite0_first_layers_match_numpy_reference(lite0_classifier, lite0_state):
    """Stem (3x3/2 conv), block 0 (depthwise 3x3/1) and block 1 (depthwise 3x3/2) against numpy."""
    import keras

    sd = {k: v.astype(np.float64) for k, v in lite0_state.items()}
    x = (photo("chelsea", 224).astype(np.float64) - 127.0) / 128.0  # (224, 224, 3)
    h = _relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))  # (112, 112, 32)
    h = _relu6(_bn(_depthwise(h, sd["_blocks.0._depthwise_conv.weight"], 1), sd, "_blocks.0._bn1"))
    h = _bn(_conv(h, sd["_blocks.0._project_conv.weight"], 1), sd, "_blocks.0._bn2")  # (112, 112, 16)
    h = _relu6(_bn(_conv(h, sd["_blocks.1._expand_conv.weight"], 1), sd, "_blocks.1._bn0"))  # (112, 112, 96)
    h = _relu6(_bn(_depthwise(h, sd["_blocks.1._depthwise_conv.weight"], 2), sd, "_blocks.1._bn1"))  # (56, 56, 96)
    expected = _bn(_conv(h, sd["_blocks.1._project_conv.weight"], 1), sd, "_blocks.1._bn2")  # (56, 56, 24)

    upto = keras.Model(lite0_classifier.input, lite0_classifier.get_layer("blocks_1_bn2").output)
    got = np.asarray(upto(x[None].astype(np.float32), training=False))[0]
    assert got.shape == expected.shape == (56, 56, 24)
    # float32 vs float64: ~5e-5 at values up to ~45. A BatchNorm epsilon of 1e-5 moves it by 0.09
    # (some channels have running_var exactly 0), symmetric padding or flipped kernels by units.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_wrong_variant_weights_are_refused_before_any_assignment(lite0_classifier):
    before = lite0_classifier.get_layer("conv_stem").get_weights()[0].copy()
    lite1 = effnet_lite.read_torch_state_dict(effnet_lite.imagenet_weights_path(1))
    with pytest.raises(effnet_lite.WeightsFileError, match=r"lite1\.pth: .*wrong variant"):
        effnet_lite.load_torch_weights(lite0_classifier, lite1, source="lite1.pth")
    np.testing.assert_array_equal(lite0_classifier.get_layer("conv_stem").get_weights()[0], before)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_encoders_classify_through_pooled_features(variant):
    """The encoder path the project uses (uint8 in, preprocessing inside, pooled out) + the fc head."""
    encoder = get_encoder(f"efficientnet_lite{variant}")
    state = effnet_lite.read_torch_state_dict(effnet_lite.imagenet_weights_path(variant))
    names = ["chelsea", "coffee", "camera"]
    images = np.stack([photo(n, encoder.info.input_size) for n in names])
    logits = encoder.encode(images) @ state["_fc.weight"].T + state["_fc.bias"]  # (3, 1000)
    for name, row in zip(names, logits):
        top1_in, top5_meets = LITE0_EXPECTED[name]
        assert_classified(f"lite{variant} {name}", row, top1_in, top5_meets)


# ----------------------------------------------------------------------------------------------
# The registry


@pytest.mark.parametrize("name", available_encoders())
def test_encode_shapes_and_pooling(name):
    info = encoder_info(name)
    encoder = get_encoder(name, weights=TEST_WEIGHTS.get(name, "imagenet"))
    assert encoder is get_encoder(name, weights=TEST_WEIGHTS.get(name, "imagenet"))  # cached
    g, d = info.grid_size, info.feature_dim
    assert tuple(encoder.model.output.shape) == (None, g, g, d)

    images = np.random.default_rng(0).integers(0, 256, (3, info.input_size, info.input_size, 3), dtype=np.uint8)
    pooled = encoder.encode(images)
    grid = encoder.encode(images, spatial=True, batch_size=2)  # also crosses a batch boundary
    assert pooled.shape == (3, d) and pooled.dtype == np.float32
    assert grid.shape == (3, g, g, d) and grid.dtype == np.float32
    np.testing.assert_allclose(pooled, grid.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)  # batch sizes differ
    assert encoder.encode(images[:0]).shape == (0, d)
    with pytest.raises(ValueError, match=r"expects images of shape"):
        encoder.encode(images[:, :-1])


def test_registry_names_and_info():
    assert available_encoders() == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "xception"]
    assert encoder_info("efficientnet_lite1").grid_size == 8
    assert encoder_info("xception").preprocessing == "x / 127.5 - 1"
    with pytest.raises(ValueError, match=r"unknown encoder 'vgg16'.*efficientnet_lite0.*xception"):
        encoder_info("vgg16")
    with pytest.raises(ValueError, match=r"available"):
        get_encoder("resnet")


def test_info_and_weight_reading_do_not_import_tensorflow(tmp_path):
    code = (
        "import sys; from captioner import encoders, effnet_lite\n"
        "encoders.encoder_info('xception'); encoders.available_encoders()\n"
        "effnet_lite.read_torch_state_dict(effnet_lite.imagenet_weights_path(0))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


# ----------------------------------------------------------------------------------------------
# Reading weights files safely


def test_state_dict_reader_matches_structure(lite0_state):
    assert lite0_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert lite0_state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert lite0_state["_fc.weight"].shape == (1000, 1280)
    assert lite0_state["_bn0.running_var"].min() >= 0  # some channels are dead: exactly 0
    assert all(v.flags.c_contiguous for v in lite0_state.values())


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, "truncated"])
def test_corrupted_weights_file_gives_clear_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "truncated":
        content = open(effnet_lite.imagenet_weights_path(0), "rb").read()[:200_000]
    path.write_bytes(content)
    with pytest.raises(effnet_lite.WeightsFileError, match=r"corrupted .*weights\.pth") as err:
        effnet_lite.read_torch_state_dict(path)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(effnet_lite.WeightsFileError, match=r"not found: .*nope\.pth"):
        effnet_lite.read_torch_state_dict(tmp_path / "nope.pth")


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))  # would create the file if unpickled naively


def test_reader_never_runs_code_from_the_file(tmp_path):
    path, target = tmp_path / "evil.pth", tmp_path / "pwned"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"x": _Exploit(target)}):
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(effnet_lite.WeightsFileError, match=r"not allowed"):
        effnet_lite.read_torch_state_dict(path)
    assert not target.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        # LONG_BINPUT 2**21: the C unpickler would size its memo by this index (up to 2**32).
        (b"\x80\x02Nr" + (1 << 21).to_bytes(4, "little") + b".", "memo index"),
        (pickle.dumps(bytearray(b"x"), protocol=5), "opcode BYTEARRAY8"),
    ],
)
def test_reader_refuses_hostile_opcodes(tmp_path, payload, message):
    path = tmp_path / "hostile.pth"
    path.write_bytes(payload)
    with pytest.raises(effnet_lite.WeightsFileError, match=message):
        effnet_lite.read_torch_state_dict(path)
