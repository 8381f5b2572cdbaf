"""Encoding images into a `FeatureStore`: batched, resumable, bad images reported and skipped."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from captioner import defaults
from captioner.encoders import get_encoder
from captioner.features.store import FeatureStore, ShardWriter, default_cache_dir, source_fingerprint
from captioner.images import ImageError, list_images, load_ahead, load_image

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32  # images per encoder call, and per shard
MAX_REPORTED_FAILURES = 20  # one line each; the rest are only counted


@dataclasses.dataclass
class ExtractionReport:
    """What one call to `update_features` did."""

    encoded: int = 0
    reused: int = 0
    stale: int = 0  # encoded again because the file changed after it was encoded
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> reason

    def skip(self, key: str, reason: str) -> None:
        """Records an unreadable image; the first MAX_REPORTED_FAILURES get a warning line each."""
        self.failed[key] = reason
        if len(self.failed) <= MAX_REPORTED_FAILURES:
            log.warning("skipped %s", reason)

    def log_total(self) -> None:
        """The count of skipped images, when there were more than the warning lines showed."""
        if len(self.failed) > MAX_REPORTED_FAILURES:
            log.warning("skipped %d unreadable images in all", len(self.failed))

    def __str__(self) -> str:
        changed = f" ({self.stale} changed since last time)" if self.stale else ""
        return f"{self.encoded} images encoded{changed}, {self.reused} reused from cache, {len(self.failed)} skipped"


def update_features(store: FeatureStore, images: dict[str, Path], batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True) -> ExtractionReport:
    """Encodes every image the store lacks or holds for an older version of its file.

    Args:
        store: where features go.
        images: key -> image path. Keys are what `store.load` returns (e.g. file names).
        batch_size: images per encoder call (and per shard).
        progress: show a progress bar.
    """
    todo = [(key, Path(path)) for key, path in images.items() if not store.is_current(key, path)]
    report = ExtractionReport(reused=len(images) - len(todo), stale=sum(key in store for key, _ in todo))
    if not todo:
        return report
    encoder = get_encoder(store.encoder, weights=store.weights)
    size = encoder.info.input_size
    writer = ShardWriter(store.directory)
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), desc=f"features {store.encoder}", unit="img", disable=not progress)

    def load_batch(batch: list[tuple[str, Path]]) -> tuple[list[str], list[list[int] | None], list[np.ndarray]]:
        loaded: list[np.ndarray] = []
        keys: list[str] = []
        sources: list[list[int] | None] = []
        for key, path in batch:
            fingerprint = source_fingerprint(path)  # before reading: a later change makes it stale
            try:
                loaded.append(load_image(path, size))
            except ImageError as err:
                report.skip(key, str(err))
                continue
            keys.append(key)
            sources.append(fingerprint)
        return keys, sources, loaded

    for batch, (keys, sources, loaded) in load_ahead(batches, load_batch):
        if keys:
            features = encoder.encode(np.stack(loaded), spatial=store.spatial)
            writer.write(keys, sources, features)
            report.encoded += len(keys)
        bar.update(len(batch))
    bar.close()
    report.log_total()
    store.refresh()
    return report


def extract_features(
    directory: str | os.PathLike,
    encoder: str = defaults.ENCODER,
    batch_size: int = DEFAULT_BATCH_SIZE,
    spatial: bool = False,
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = "imagenet",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The seed's function: features of every image in a folder, as {file name: float32 feature}.

    Unlike the seed it is batched, cached (a second call reads the store) and skips bad images with
    a message instead of stopping. The seed used VGG16 fc2 (4096,); the default here is
    EfficientNet-Lite0's pooled (1280,) vector.

    Args:
        directory: folder of images (JPEG, PNG, BMP, WebP).
        encoder: name from `captioner.encoders.available_encoders()`.
        batch_size: images per encoder call.
        spatial: return the (g, g, D) grid (for attention models) instead of the pooled vector.
        cache_dir: the store directory; default under `~/.cache/captioner` (see `default_cache_dir`).
        weights: "imagenet", or None for random weights (testing).
        progress: show a progress bar.
    """
    paths = list_images(directory)
    store = FeatureStore(cache_dir or default_cache_dir(directory, encoder, spatial, weights), encoder, weights, spatial)
    update_features(store, {p.name: p for p in paths}, batch_size=batch_size, progress=progress)
    keys, features = store.load([p.name for p in paths])
    return {key: feature.astype(np.float32) for key, feature in zip(keys, features)}
