"""`captioner evaluate`: caption a dataset split with a trained model and score it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from captioner import __version__, atomic
from captioner.data import load_dataset
from captioner.decoding import DEFAULT_LENGTH_PENALTY
from captioner.evaluation import EvaluationResult, score_captions
from captioner.features import FeatureCache, default_cache_dir
from captioner.pipeline import Captioner


def generate_split_captions(captioner: Captioner, image_dir: Path, images: dict[str, Path], beam_size: int, batch_size: int = 64,
                            cache_root: str | None = None, length_penalty: float = DEFAULT_LENGTH_PENALTY) -> dict[str, str]:
    """Best caption per image key; features come from (and go into) the feature cache."""
    config = captioner.config
    cache = FeatureCache(default_cache_dir(image_dir, config.encoder, weights=config.encoder_weights, root=cache_root), config.encoder, config.encoder_weights)
    report = cache.update(images)
    keys, features = cache.load(images)
    captions: dict[str, str] = {}
    for start in range(0, len(keys), batch_size):
        batch = features[start : start + batch_size].astype(np.float32)
        for key, hyps in zip(keys[start : start + batch_size], captioner.search.caption(batch, beam_size, length_penalty=length_penalty)):
            captions[key] = hyps[0].caption
    if report.failed:
        print(f"{len(report.failed)} images could not be read and are not scored")
    return captions


def evaluate_model(model_dir: str | os.PathLike | None, data: str | os.PathLike, split: str = "dev", beam_size: int = 1,
                   limit_images: int | None = None, output_dir: str | os.PathLike | None = None, use_java: bool | None = None,
                   batch_size: int = 64, cache_root: str | None = None) -> tuple[EvaluationResult, Path]:
    """Captions a split, scores it, writes `metrics.json` and `captions.json`; returns (result, output dir)."""
    dataset = load_dataset(data)
    keys = dataset.split_images(split)[:limit_images]
    captioner = Captioner(model_dir)
    started = time.perf_counter()
    hypotheses = generate_split_captions(captioner, dataset.image_dir, {k: dataset.image_path(k) for k in keys}, beam_size, batch_size, cache_root)
    seconds = time.perf_counter() - started
    references = {k: dataset.captions[k] for k in hypotheses}
    result = score_captions(hypotheses, references, use_java=use_java, spice=True)
    # Not inside the model directory: the shipped model lives in the repository.
    output_dir = Path(output_dir or Path("runs") / "eval" / f"{captioner.model_dir.name}-{split}-beam{beam_size}")
    atomic.write_json(output_dir / "metrics.json", {
        **result.to_dict(),
        "model_dir": str(captioner.model_dir),
        "data": str(data),
        "split": split,
        "decoding": {"beam_size": beam_size, "length_penalty": DEFAULT_LENGTH_PENALTY if beam_size > 1 else None, "max_length": captioner.search.max_length},
        "distinct_captions": len(set(hypotheses.values())),
        "caption_seconds": round(seconds, 2),
        "captioner_version": __version__,
    })
    atomic.write_json(output_dir / "captions.json", hypotheses)
    return result, output_dir
