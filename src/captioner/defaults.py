"""Defaults that the CLI, the Python API (and later the HTTP service) share.

Importing this module imports nothing heavy: `captioner --help` reads it without TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

BEAM_SIZE = 5  # chosen by measurement on Flickr8k dev (README, "Quality")
LENGTH_PENALTY = 1.0  # beam score = log-prob / length**alpha; chosen on Flickr8k dev; 0 ranks by raw log-prob
CAPTION_BATCH_SIZE = 32  # images per encoder call when captioning many files
ENCODER = "efficientnet_lite0"  # fast on CPU and the design's reference encoder

# Models shipped inside the package (so an installed wheel has them too).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
SHIPPED_MODEL = "flickr8k-attention"  # the default; README, "Attention, self-critical training and heat maps"


def default_model_dir() -> Path:
    """`$CAPTIONER_MODEL` if set, else the shipped default model inside the package."""
    return resolve_model(os.environ.get("CAPTIONER_MODEL") or SHIPPED_MODEL)


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A model directory from a path, a shipped model's name ("flickr8k-merge"), or None for the default."""
    if model is None:
        return default_model_dir()
    path = Path(model)
    if not path.exists() and len(path.parts) == 1 and (PRETRAINED_DIR / path.name).is_dir():
        return PRETRAINED_DIR / path.name
    return path


def default_cache_root() -> Path:
    """`$CAPTIONER_CACHE`, else `$XDG_CACHE_HOME/captioner`, else `~/.cache/captioner`: features, converted encoders."""
    if os.environ.get("CAPTIONER_CACHE"):
        return Path(os.environ["CAPTIONER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "captioner"
