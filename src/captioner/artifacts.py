"""A trained captioner on disk: a directory with `config.json`, `vocab.json` and `weights.npz`.

Loading reads JSON and a numpy archive with `allow_pickle=False`: it never unpickles and never
deserialises code. Weights are stored as float16 (half the size; captions unchanged, see tests).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from captioner import __version__, atomic
from captioner.models.merge import MergeConfig, MergeDecoder, build_decoder
from captioner.vocab import Vocabulary

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1  # bump when the directory layout changes


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or not a captioner."""


@dataclasses.dataclass
class CaptionerConfig:
    """Everything needed to rebuild a captioner, saved as `config.json`."""

    encoder: str  # name in `captioner.encoders`, e.g. "efficientnet_lite0"
    decoder: MergeConfig
    encoder_weights: str | None = "imagenet"  # None: random encoder weights (tests only)
    format_version: int = FORMAT_VERSION
    captioner_version: str = __version__
    training: dict = dataclasses.field(default_factory=dict)  # dataset, epochs, seed, losses

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "CaptionerConfig":
        data = dict(data)
        data["decoder"] = MergeConfig(**data["decoder"])
        return cls(**data)


def decoder_weights(decoder: MergeDecoder) -> list[np.ndarray]:
    """The decoder's weights in a fixed order (random-seed state excluded)."""
    return [np.asarray(w) for w in decoder.weights]


def save_captioner(directory: str | os.PathLike, decoder: MergeDecoder, vocab: Vocabulary, config: CaptionerConfig) -> Path:
    """Writes a complete model directory, replacing any old one in a single rename."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        atomic.write_json(staging / CONFIG_FILE, config.to_json())
        vocab.save(staging / VOCAB_FILE)
        arrays = {f"w{i:03d}": w.astype(np.float16) if w.dtype.kind == "f" else w for i, w in enumerate(decoder_weights(decoder))}
        np.savez(staging / WEIGHTS_FILE, **arrays)
        os.chmod(staging, atomic.default_mode(directory=True))
        old = directory.with_name(f".{directory.name}.old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def read_config(directory: str | os.PathLike) -> CaptionerConfig:
    """Reads and validates `config.json`; raises `ModelDirError` with a one-line reason."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: model directory not found")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(f"{directory}: not a captioner model directory ({CONFIG_FILE} missing)")
    try:
        config = CaptionerConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as err:
        raise ModelDirError(f"{path}: not a valid captioner config ({err})") from None
    if config.format_version > FORMAT_VERSION:
        raise ModelDirError(f"{path}: made by a newer captioner (format {config.format_version}); upgrade captioner")
    return config


def load_captioner(directory: str | os.PathLike) -> tuple[MergeDecoder, Vocabulary, CaptionerConfig]:
    """Rebuilds the decoder from its config and loads its weights (float32 in memory)."""
    directory = Path(directory)
    config = read_config(directory)
    for name in (VOCAB_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise ModelDirError(f"{directory}: incomplete model directory ({name} missing)")
    vocab = Vocabulary.load(directory / VOCAB_FILE)
    if len(vocab) != config.decoder.vocab_size:
        raise ModelDirError(f"{directory}: {VOCAB_FILE} has {len(vocab)} words but the model expects {config.decoder.vocab_size}")
    decoder = build_decoder(config.decoder)
    try:
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as archive:
            arrays = [archive[f"w{i:03d}"] for i in range(len(archive.files))]
    except (OSError, ValueError, KeyError) as err:
        raise ModelDirError(f"{directory / WEIGHTS_FILE}: unreadable weights ({err})") from None
    expected = [tuple(w.shape) for w in decoder.weights]
    if [a.shape for a in arrays] != expected:
        raise ModelDirError(f"{directory / WEIGHTS_FILE}: weight shapes do not match {CONFIG_FILE}")
    for variable, array in zip(decoder.weights, arrays):
        variable.assign(array.astype(variable.dtype))
    return decoder, vocab, config
