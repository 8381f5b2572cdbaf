"""A trained captioner on disk: a directory with `config.json`, `vocab.json` and `weights.npz`.

Weights are stored by variable name ("lstm/lstm_cell/kernel"), as float16 (half the size;
captions unchanged, see tests), or for a shipped model as int8 with one float32 scale per output
column for the large matrices (a quarter of float32; `captioner export --format captioner --quantize`). Loading reads JSON and a numpy archive with `allow_pickle=False`:
it never unpickles and never deserialises code. Directories are written beside their target and
swapped in, so a reader sees the old model or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from captioner import __version__, atomic
from captioner.errors import FileError
from captioner.models.base import Decoder, DecoderConfig, build_decoder, config_from_json
from captioner.vocab import Vocabulary

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 2  # 2: weights keyed by variable name; 1: keyed by creation order ("w000", ...)
INT8_FORMAT_VERSION = 3  # 3: as 2, large matrices as int8 + "<name>:scale"; older readers refuse it
SCALE_SUFFIX = ":scale"  # per-column scales of an int8 matrix, stored beside it
INT8_MIN_SIZE = 65536  # smaller arrays (biases, small kernels) weigh little and stay float16


class ModelDirError(FileError):
    """A model directory is missing, incomplete, damaged or not a captioner."""


@dataclasses.dataclass
class CaptionerConfig:
    """Everything needed to rebuild a captioner, saved as `config.json`."""

    encoder: str  # name in `captioner.encoders`, e.g. "efficientnet_lite0"
    decoder: DecoderConfig
    encoder_weights: str | None = "imagenet"  # None: random encoder weights (tests only)
    format_version: int = FORMAT_VERSION
    captioner_version: str = __version__
    training: dict = dataclasses.field(default_factory=dict)  # dataset, epochs, seed, losses

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CaptionerConfig:
        data = dict(data)
        data["decoder"] = config_from_json(data["decoder"])
        return cls(**data)


def is_model_dir(directory: str | os.PathLike) -> bool:
    """True if `directory` holds a captioner model's config."""
    return (Path(directory) / CONFIG_FILE).is_file()


def _swap_in(staging: Path, directory: Path) -> None:
    """Replaces `directory` by the finished `staging` directory beside it."""
    os.chmod(staging, atomic.default_mode(directory=True))
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def _staging_dir(directory: Path) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))


def save_captioner(
    directory: str | os.PathLike, decoder: Decoder, vocab: Vocabulary, config: CaptionerConfig, extra_json: dict[str, dict] | None = None
) -> Path:
    """Writes a complete model directory, replacing any old one in a single rename.

    Args:
        extra_json: more JSON files to write beside the model, e.g. the training settings.
    """
    directory = Path(directory)
    config = dataclasses.replace(config, format_version=FORMAT_VERSION)  # float16 weights, whatever the model was loaded from
    staging = _staging_dir(directory)
    try:
        atomic.write_json(staging / CONFIG_FILE, config.to_json())
        for name, content in (extra_json or {}).items():
            atomic.write_json(staging / name, content)
        vocab.save(staging / VOCAB_FILE)
        _write_weights(staging / WEIGHTS_FILE, {name: np.asarray(v) for name, v in decoder.variable_names().items()}, int8=False)
        _swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def quantize_int8(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(in, out) float matrix -> int8 values (in, out) and float32 scales (out,), symmetric per column."""
    scale = np.maximum(np.abs(matrix).max(axis=0), np.finfo(np.float32).tiny) / 127.0
    return np.clip(np.round(matrix / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def _write_weights(path: Path, arrays: dict[str, np.ndarray], int8: bool) -> None:
    stored: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if int8 and array.dtype.kind == "f" and array.ndim == 2 and array.size >= INT8_MIN_SIZE:
            stored[name], stored[name + SCALE_SUFFIX] = quantize_int8(array.astype(np.float32))
        else:
            stored[name] = array.astype(np.float16) if array.dtype.kind == "f" else array
    np.savez(path, **stored)  # type: ignore[arg-type]  # numpy's stubs reject **arrays


def save_quantized(model_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copies a model directory to `target` with its large matrices stored as int8 (about half the size of float16)."""
    target = check_export_target(target)
    decoder, _, config = load_captioner(model_dir)
    config = dataclasses.replace(config, format_version=INT8_FORMAT_VERSION)
    staging = _staging_dir(target)
    try:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        atomic.write_json(staging / CONFIG_FILE, config.to_json())
        _write_weights(staging / WEIGHTS_FILE, {name: np.asarray(v) for name, v in decoder.variable_names().items()}, int8=True)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_export_target(target: str | os.PathLike) -> Path:
    """Refuses a target that is a file, or a non-empty folder that is not a captioner model.

    Called before training starts, so a bad `--export` fails in seconds, not after an hour.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileError(target, "exists and is not a folder; choose another --export path")
    if target.is_dir() and any(target.iterdir()) and not is_model_dir(target):
        raise FileError(target, "folder is not empty and is not a captioner model; refusing to replace it")
    parent = target.parent if target.parent != Path("") else Path(".")
    existing = next(p for p in [parent, *parent.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise FileError(target, f"cannot write here ({existing} is not a writable folder)")
    return target


def export_model(model_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copies a model directory to `target`, replacing an older model there atomically."""
    target = check_export_target(target)
    read_config(model_dir)
    staging = _staging_dir(target)
    try:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_config(directory: str | os.PathLike) -> CaptionerConfig:
    """Reads and validates `config.json`; raises `ModelDirError` with a one-line reason."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(directory, "model directory not found")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(directory, f"not a captioner model directory ({CONFIG_FILE} missing)")
    try:
        config = CaptionerConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as err:
        raise ModelDirError(path, f"not a valid captioner config ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if config.format_version > INT8_FORMAT_VERSION:
        raise ModelDirError(path, f"made by a newer captioner (format {config.format_version}); upgrade captioner")
    return config


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        problem = "empty file" if path.stat().st_size == 0 else (str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise ModelDirError(path, f"unreadable weights ({problem})") from None
    for scale_name in [n for n in arrays if n.endswith(SCALE_SUFFIX)]:
        name = scale_name[: -len(SCALE_SUFFIX)]
        scale = arrays.pop(scale_name)
        if name not in arrays or arrays[name].dtype != np.int8 or arrays[name].shape[-1:] != scale.shape:
            raise ModelDirError(path, f"weight {scale_name} does not fit an int8 matrix {name}")
        arrays[name] = arrays[name].astype(np.float32) * scale
    return arrays


def _match_weights(path: Path, decoder: Decoder, arrays: dict[str, np.ndarray], format_version: int) -> dict[str, np.ndarray]:
    """Arrays by variable name; version-1 files are in creation order."""
    variables = decoder.variable_names()
    if format_version < 2:
        if len(arrays) != len(variables):
            raise ModelDirError(path, f"holds {len(arrays)} arrays but the model has {len(variables)} variables")
        arrays = dict(zip(variables, (arrays[f"w{i:03d}"] for i in range(len(arrays)))))
    missing = sorted(set(variables) - set(arrays))
    unexpected = sorted(set(arrays) - set(variables))
    if missing or unexpected:
        raise ModelDirError(
            path, f"weights do not match {CONFIG_FILE} (missing: {', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(unexpected[:3]) or 'none'})"
        )
    for name, variable in variables.items():
        if tuple(arrays[name].shape) != tuple(variable.shape):
            raise ModelDirError(path, f"weight {name} has shape {arrays[name].shape}, {CONFIG_FILE} implies {tuple(variable.shape)}")
        if arrays[name].dtype.kind == "f" and not np.isfinite(arrays[name]).all():
            raise ModelDirError(path, f"weight {name} contains NaN or infinite values (a diverged training run?)")
    return arrays


def load_captioner(directory: str | os.PathLike) -> tuple[Decoder, Vocabulary, CaptionerConfig]:
    """Rebuilds the decoder from its config and loads its weights (float32 in memory)."""
    directory = Path(directory)
    config = read_config(directory)
    for name in (VOCAB_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise ModelDirError(directory, f"incomplete model directory ({name} missing)")
    vocab = Vocabulary.load(directory / VOCAB_FILE)
    if len(vocab) != config.decoder.vocab_size:
        raise ModelDirError(directory, f"{VOCAB_FILE} has {len(vocab)} words but the model expects {config.decoder.vocab_size}")
    decoder = build_decoder(config.decoder)
    arrays = _match_weights(directory / WEIGHTS_FILE, decoder, _read_weights(directory / WEIGHTS_FILE), config.format_version)
    for name, variable in decoder.variable_names().items():
        variable.assign(arrays[name].astype(variable.dtype))
    return decoder, vocab, config
