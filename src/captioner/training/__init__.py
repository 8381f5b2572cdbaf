"""Training: run settings (`TrainConfig`, presets), batches from the feature store, the loop."""

from typing import Any

from captioner.training.config import TrainConfig, available_presets, load_preset

__all__ = ["TrainConfig", "available_presets", "load_preset", "train"]


def __getattr__(name: str) -> Any:
    # The loop imports TensorFlow; settings and presets must not (the CLI's --help reads them).
    if name == "train":
        from captioner.training.loop import train

        return train
    raise AttributeError(f"module 'captioner.training' has no attribute {name!r}")
