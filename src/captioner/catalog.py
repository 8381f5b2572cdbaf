"""Finding models: the ones shipped in the package and the ones trained here, with their cards.

Reads JSON and Markdown only, so `captioner models` answers without starting TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from captioner.defaults import PRETRAINED_DIR

CARD_FILE = "README.md"  # a Hugging Face style model card beside the weights


@dataclasses.dataclass
class ModelEntry:
    """One model directory and what its files say about it."""

    name: str
    path: Path
    shipped: bool
    decoder: str
    encoder: str
    dataset: str
    summary: str  # the model card's first paragraph, or "" without a card


def card_summary(card: Path) -> str:
    """The first paragraph of a model card after its YAML front matter and title."""
    try:
        lines = card.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    if lines and lines[0].strip() == "---":
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), 0)
        lines = lines[end + 1 :]
    paragraph: list[str] = []
    for line in lines:
        if line.strip() and not line.lstrip().startswith(("#", "<!--")):
            paragraph.append(line.strip())
        elif paragraph:
            break
    return " ".join(paragraph)


def _entry(path: Path, shipped: bool) -> ModelEntry | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        decoder = config["decoder"].get("decoder", "merge")
        dataset = config.get("training", {}).get("dataset", "")
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    dataset_name = dataset.get("name", "") if isinstance(dataset, dict) else Path(str(dataset)).name
    return ModelEntry(
        path.name if shipped else str(path), path, shipped, decoder, str(config.get("encoder", "?")), dataset_name, card_summary(path / CARD_FILE)
    )


def find_models(search: list[str | os.PathLike] | None = None) -> list[ModelEntry]:
    """Shipped models, then model directories found up to two levels under `search` (default: ./runs)."""
    found = [e for p in sorted(PRETRAINED_DIR.iterdir()) if (e := _entry(p, True))]
    for root in (Path(s) for s in (search if search is not None else ["runs"])):
        candidates = [root, *root.glob("*"), *root.glob("*/*")] if root.is_dir() else []
        found += [e for p in sorted(candidates) if p.is_dir() and (p / "config.json").is_file() and (e := _entry(p, False))]
    return found
