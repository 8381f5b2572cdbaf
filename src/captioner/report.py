"""`captioner evaluate`: caption a dataset split with a trained model and score it."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from captioner import __version__, atomic, defaults
from captioner.data import load_dataset
from captioner.data.skipped import log_skipped_lines
from captioner.errors import ArgumentError
from captioner.features import FeatureStore, default_cache_dir, update_features
from captioner.metrics import EvaluationResult, score_captions
from captioner.models.base import GRID
from captioner.pipeline import Captioner
from captioner.training.batches import FeatureReader

log = logging.getLogger(__name__)


def generate_split_captions(
    captioner: Captioner,
    image_dir: Path,
    images: dict[str, Path],
    beam_size: int,
    batch_size: int = 64,
    cache_root: str | None = None,
    length_penalty: float = defaults.LENGTH_PENALTY,
) -> dict[str, str]:
    """Best caption per image key; features come from (and go into) the feature store."""
    config = captioner.config
    grid = captioner.decoder.features == GRID
    store = FeatureStore(
        default_cache_dir(image_dir, config.encoder, grid, config.encoder_weights, cache_root), config.encoder, config.encoder_weights, spatial=grid
    )
    report = update_features(store, images)
    keys = [k for k in images if k not in report.failed]
    reader = FeatureReader(store, store.positions(keys), captioner.decoder.features)
    captions: dict[str, str] = {}
    for start in range(0, len(keys), batch_size):
        rows = np.arange(start, min(start + batch_size, len(keys)))
        for key, hyps in zip(keys[start : start + batch_size], captioner.search.caption(reader.read(rows), beam_size, length_penalty=length_penalty)):
            captions[key] = hyps[0].caption
    if report.failed:
        log.warning("%d images could not be read and are not scored", len(report.failed))
    return captions


def evaluate_model(
    model_dir: str | os.PathLike | None,
    data: str | os.PathLike,
    split: str = "dev",
    beam_size: int = defaults.BEAM_SIZE,
    limit_images: int | None = None,
    output_dir: str | os.PathLike | None = None,
    use_java: bool | None = None,
    batch_size: int = 64,
    cache_root: str | None = None,
    allow_outside_paths: bool = False,
    verbose: bool = False,
    name_objects: bool | None = None,
) -> tuple[EvaluationResult, Path]:
    """Captions a split, scores it, writes `metrics.json` and `captions.json`; returns (result, output dir).

    `name_objects` is `Captioner`'s (None: its default).
    """
    dataset = load_dataset(data, allow_outside_paths=allow_outside_paths)
    log_skipped_lines(dataset, verbose)
    keys = dataset.split_images(split)[:limit_images]
    if not keys:
        raise ArgumentError(f"{data}: the {split!r} split has no images to score")
    captioner = Captioner(model_dir, name_objects=name_objects)
    started = time.perf_counter()
    hypotheses = generate_split_captions(captioner, dataset.image_dir, {k: dataset.image_path(k) for k in keys}, beam_size, batch_size, cache_root)
    seconds = time.perf_counter() - started
    references = {k: dataset.captions[k] for k in hypotheses}
    result = score_captions(hypotheses, references, use_java=use_java, spice=True)
    # Not inside the model directory: the shipped model lives in the package.
    output_dir = Path(output_dir or Path("runs") / "eval" / f"{captioner.model_dir.name}-{split}-beam{beam_size}")
    atomic.write_json(
        output_dir / "metrics.json",
        {
            **result.to_dict(),
            "model_dir": str(captioner.model_dir),
            "data": str(data),
            "split": split,
            "decoding": {
                "beam_size": beam_size,
                "length_penalty": defaults.LENGTH_PENALTY if beam_size > 1 else None,
                "max_length": captioner.search.max_length,
                "name_objects": bool(getattr(captioner.search, "name_objects", False)),
            },
            "distinct_captions": len(set(hypotheses.values())),
            "caption_seconds": round(seconds, 2),
            "captioner_version": __version__,
        },
    )
    atomic.write_json(output_dir / "captions.json", hypotheses)
    return result, output_dir
