"""Exporting a trained captioner for deployment: a TensorFlow SavedModel or TFLite flatbuffers.

- `captioner.export.savedmodel`: `export_savedmodel(model_dir, out)`, one SavedModel whose serving
  signature takes encoded image bytes and returns captions and scores, everything in the graph
  (TensorFlow Serving, `tf.saved_model.load`; no captioner needed to run it).
- `captioner.export.tflite`: `export_tflite(model_dir, out)`, an image model and a one-word step
  model as TFLite flatbuffers, and `TFLiteCaptioner`, the greedy / beam search over them.
- `captioner.export.preprocess`: Pillow's decode and Lanczos squash as TensorFlow ops.
- `captioner.export.command`: the `captioner export` command (`add_parser`, `run`).
- `captioner.export.target`: the output folder: checked first, written beside, swapped in.

Importing this package, `command` or `target` does not import TensorFlow; the names below load
their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_savedmodel": "captioner.export.savedmodel",
    "CaptionModule": "captioner.export.savedmodel",
    "export_tflite": "captioner.export.tflite",
    "TFLiteCaptioner": "captioner.export.tflite",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'captioner.export' has no attribute {name!r}")
