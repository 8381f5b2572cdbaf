"""The encoder's fast path on CPUs: its Keras graph converted to a TFLite flatbuffer and run by XNNPACK.

TensorFlow's own CPU kernels run EfficientNet-Lite's depthwise convolutions slowly: Lite2 takes
~40 ms an image on two cores at any batch size, while the same graph converted to TFLite and run
by the XNNPACK delegate takes ~11 ms, with features equal to within 5e-5 (on values up to 6)
(`python benchmarks/encoder_runtime.py`). Conversion takes a few seconds, so a converted
encoder is kept on disk, named by a hash of its weights, and later processes load it at once.

`LiteFunction` wraps one converted single-input, single-output function: any batch size, run a
few rows at a time (the interpreter is resized when that changes; XNNPACK keeps what it packed),
one call at a time (a lock: the interpreter is not thread-safe).

Encoders run with TensorFlow instead where TensorFlow sees a GPU, or with
`CAPTIONER_ENCODER_RUNTIME=tensorflow` (`=litert` forces LiteRT).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from captioner import atomic
from captioner.defaults import default_cache_root
from captioner.errors import ArgumentError

log = logging.getLogger(__name__)

RUNTIME_ENV = "CAPTIONER_ENCODER_RUNTIME"  # "litert" or "tensorflow"; unset: LiteRT unless there is a GPU
CACHE_FORMAT = 1  # bump when what is converted changes, so older flatbuffers are not reused
CHUNK = 2  # images per interpreter call: XNNPACK ran Lite2 at 11.0 ms an image one at a time, 13.4-14.1 at 8-32 (README)


def wanted() -> bool:
    """Whether encoders should run on LiteRT: as `CAPTIONER_ENCODER_RUNTIME` says, else unless TensorFlow has a GPU.

    LiteRT runs on the CPU here; where TensorFlow sees a GPU (`captioner[gpu]`), the encoder is
    faster on it.
    """
    runtime = os.environ.get(RUNTIME_ENV, "").strip().lower()
    if runtime not in ("", "litert", "tensorflow"):
        raise ArgumentError(f"{RUNTIME_ENV}={runtime!r}: expected 'litert' or 'tensorflow'")
    return runtime == "litert" or (not runtime and not gpu_present())


@functools.cache
def gpu_present() -> bool:
    """Whether TensorFlow sees a GPU (asked once per process)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def default_threads() -> int:
    """The CPUs this process may run on (a container's or `taskset`'s limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def interpreter(model_content: bytes | None = None, model_path: str | os.PathLike | None = None, num_threads: int | None = None) -> Any:
    """A TFLite interpreter: `ai_edge_litert`'s when installed, else TensorFlow's (deprecated in 2.20+, present in 2.21)."""
    threads = num_threads or default_threads()
    path = None if model_path is None else str(model_path)
    try:
        from ai_edge_litert.interpreter import Interpreter  # the maintained runtime, when installed
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated": it still works in TF 2.21
            return tf.lite.Interpreter(model_path=path, model_content=model_content, num_threads=threads)
    return Interpreter(model_path=path, model_content=model_content, num_threads=threads)


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """The converter logs a deprecation notice through absl for every conversion; it is not the user's concern."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        absl.setLevel(level)


def convert(function: Any) -> bytes:
    """A `tf.function` with one input signature -> a TFLite flatbuffer (float32, no quantization).

    The variables are frozen into constants first: given Keras 3 variables, the converter keeps
    them as resource variables without values.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with _quiet_converter():
        frozen = convert_variables_to_constants_v2(function.get_concrete_function())
        return bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())


def weights_digest(variables: list[Any], *extra: object) -> str:
    """A hash of a model's weights (and `extra`, e.g. its input size), naming its converted flatbuffer."""
    import tensorflow as tf

    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((CACHE_FORMAT, tf.__version__, *extra)).encode())
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        digest.update(f"{variable.path if hasattr(variable, 'path') else ''}{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def cached_convert(function: Any, digest: str, name: str, cache_root: str | os.PathLike | None = None) -> bytes:
    """`convert(function)`, kept at `<cache root>/litert/<name>-<digest>.tflite` (written atomically) and reused."""
    path = Path(cache_root or default_cache_root()) / "litert" / f"{name}-{digest}.tflite"
    try:
        return path.read_bytes()
    except OSError:
        pass
    log.info("converting the %s encoder for LiteRT (once; kept at %s)", name, path)
    flatbuffer = convert(function)
    try:
        atomic.write_bytes(path, flatbuffer)
    except OSError as err:  # a read-only cache costs the conversion next time, nothing else
        log.debug("could not keep the converted encoder at %s: %s", path, err)
    return flatbuffer


class LiteFunction:
    """A converted one-input, one-output function, callable on float32 arrays of any batch size.

    Args:
        flatbuffer: from `convert`.
        num_threads: interpreter threads (default: the CPUs this process may use).
    """

    def __init__(self, flatbuffer: bytes, num_threads: int | None = None) -> None:
        self._interpreter = interpreter(model_content=flatbuffer, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(B, ...) float32 -> (B, ...) float32, a fresh array; run `CHUNK` rows at a time."""
        x = np.ascontiguousarray(x, np.float32)
        with self._lock:
            return np.concatenate([self._run(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]) if len(x) else self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input["index"], list(x.shape))
            self._interpreter.allocate_tensors()
            self._shape = x.shape
        self._interpreter.set_tensor(self._input["index"], x)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))
