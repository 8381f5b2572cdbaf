"""The settings of a training run and the presets that fill them (no TensorFlow import here)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from captioner import atomic, defaults
from captioner.errors import ArgumentError, FileError, check_positive

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run, saved as `train_config.json` in the run and in its model."""

    data: str  # dataset folder or file (any format `captioner.data.load_dataset` reads)
    output: str  # run directory
    data_format: str = "auto"
    image_dir: str | None = None  # override where images live (Karpathy JSON / CSV)
    allow_outside_paths: bool = False  # let CSV/JSONL/Karpathy rows name images outside the dataset folder
    decoder: str = "merge"  # name in the decoder registry (`captioner.models.base`)
    encoder: str = defaults.ENCODER
    encoder_weights: str | None = "imagenet"
    cache_dir: str | None = None  # feature store root; default under ~/.cache/captioner
    train_split: str = "train"
    val_split: str = "dev"
    limit_images: int | None = None  # use only the first N images of each split (quick runs)
    min_word_count: int = 5  # rarer training words map to <unk>
    max_length: int = 40  # tokens per caption including <start>/<end>; longer captions are cut
    embedding_dim: int = 256
    units: int = 256
    projection_dim: int = 0  # attention decoder: project grid cells to this size once per image (0: no projection)
    dropout: float = 0.5
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch
    label_smoothing: float = 0.0
    clip_norm: float | None = 5.0
    patience: int = 3  # stop after this many epochs without a better validation loss
    seed: int = 0
    preset: str | None = None  # the preset these settings started from, if any

    def validate(self) -> TrainConfig:
        """Raises `ArgumentError` on a value that cannot work (checked before any work starts)."""
        for name in ("min_word_count", "max_length", "embedding_dim", "units", "batch_size", "epochs", "patience", "limit_images"):
            check_positive(name.replace("_", "-"), getattr(self, name))
        for name in ("learning_rate", "lr_decay", "clip_norm"):
            check_positive(name.replace("_", "-"), getattr(self, name))
        if self.max_length < 3:
            raise ArgumentError(f"max-length must be at least 3 (start, one word, end), got {self.max_length}")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ArgumentError(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.seed < 0:
            raise ArgumentError(f"seed must be zero or more, got {self.seed}")
        return self

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def portable(self) -> dict[str, Any]:
        """The settings without this machine's paths (saved next to a model that may be shared)."""
        return {
            **self.to_json(),
            "data": Path(self.data).resolve().name,
            "output": None,
            "cache_dir": None,
            "image_dir": None if self.image_dir is None else Path(self.image_dir).name,
        }

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError) as err:
            raise FileError(path, f"not a readable training config ({type(err).__name__})") from None


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> dict[str, Any]:
    """The settings of a preset file (`captioner/configs/<name>.json`), comments dropped."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise ArgumentError(f"unknown preset {name!r} (available: {', '.join(available_presets())})")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")} | {"preset": name}
