"""captioner: image captioning with a pretrained CNN encoder and an LSTM decoder.

The five functions of the classic Keras tutorial stay importable from the package root:
`extract_features`, `create_sequences`, `data_generator`, `define_model`, `generate_desc`.
They are imported lazily so `import captioner` does not start TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# TensorFlow's C++ start-up chatter is noise for a command-line tool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_TUTORIAL = ("extract_features", "create_sequences", "data_generator", "define_model", "generate_desc")

__all__ = [*_TUTORIAL, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _TUTORIAL:
        return getattr(importlib.import_module("captioner.tutorial"), name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
