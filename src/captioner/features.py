"""Image features from a pretrained encoder, cached on disk.

A cache is a directory:

    meta.json            encoder, weights, input size, preprocessing, feature shape, dtype
    features.npz         keys (N,) and features (N, ...) float16, once extraction is complete
    part-00000.npz ...   one file per finished batch while extraction is in progress

Each file is written atomically, so a run killed at any moment loses at most the batch in flight;
the next run reads what is there and encodes only what is missing. A cache is refused, never
silently reused, when its `meta.json` names another encoder, weights, preprocessing or shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from captioner import atomic
from captioner.encoders import encoder_info, get_encoder
from captioner.images import ImageError, list_images, load_ahead, load_image

DEFAULT_ENCODER = "efficientnet_lite0"  # best speed/quality trade-off measured on 2 CPU cores
DEFAULT_BATCH_SIZE = 32
CACHE_DTYPE = np.float16  # pooled features lose < 0.1% relative precision; half the disk and RAM
META_FILE = "meta.json"
FEATURES_FILE = "features.npz"
MAX_REPORTED_FAILURES = 20  # one line each on stderr; the rest are only counted


class FeatureCacheError(ValueError):
    """A cache directory that cannot be used for the requested encoder."""


def default_cache_root() -> Path:
    """`$CAPTIONER_CACHE`, else `$XDG_CACHE_HOME/captioner`, else `~/.cache/captioner`."""
    if os.environ.get("CAPTIONER_CACHE"):
        return Path(os.environ["CAPTIONER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "captioner"


def default_cache_dir(image_dir: str | os.PathLike, encoder: str, spatial: bool = False, weights: str | None = "imagenet", root: str | os.PathLike | None = None) -> Path:
    """One cache per image folder and encoder setting: `<root>/features/<folder>-<hash>/<encoder>-<kind>`."""
    image_dir = Path(image_dir).resolve()
    digest = hashlib.sha1(str(image_dir).encode()).hexdigest()[:10]
    kind = ("grid" if spatial else "pooled") + ("" if weights == "imagenet" else f"-{weights or 'random'}")
    return Path(root or default_cache_root()) / "features" / f"{image_dir.name}-{digest}" / f"{encoder}-{kind}"


@dataclasses.dataclass
class ExtractionReport:
    """What one call to `FeatureCache.update` did."""

    encoded: int = 0
    reused: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> reason

    def __str__(self) -> str:
        return f"{self.encoded} images encoded, {self.reused} reused from cache, {len(self.failed)} skipped"


class FeatureCache:
    """Features of one encoder for one set of images, stored in a directory.

    Args:
        directory: the cache directory (created if missing).
        encoder: encoder name, e.g. "efficientnet_lite0".
        weights: "imagenet" or None (random weights, for tests).
        spatial: store the (g, g, D) grid instead of the pooled (D,) vector.
    """

    def __init__(self, directory: str | os.PathLike, encoder: str = DEFAULT_ENCODER, weights: str | None = "imagenet", spatial: bool = False):
        self.directory = Path(directory)
        self.encoder = encoder
        self.weights = weights
        self.spatial = spatial
        info = encoder_info(encoder)
        shape = [info.grid_size, info.grid_size, info.feature_dim] if spatial else [info.feature_dim]
        self.meta = {
            "encoder": encoder,
            "weights": weights,
            "input_size": info.input_size,
            "preprocessing": info.preprocessing,
            "feature_shape": shape,
            "dtype": np.dtype(CACHE_DTYPE).name,
        }
        self._check_or_write_meta()
        self._keys, self._arrays = self._read_all()
        self._index_cache: dict[str, tuple[int, int]] | None = None

    def _check_or_write_meta(self) -> None:
        path = self.directory / META_FILE
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except ValueError:
                raise FeatureCacheError(f"{path}: unreadable cache metadata; delete the folder to rebuild it") from None
            diff = [f"{k}: cache has {found.get(k)!r}, wanted {v!r}" for k, v in self.meta.items() if found.get(k) != v]
            if diff:
                raise FeatureCacheError(f"{self.directory}: feature cache made with other settings ({'; '.join(diff)}); use another cache folder or delete this one")
        else:
            atomic.write_json(path, self.meta)

    def _read_all(self) -> tuple[list[str], list[np.ndarray]]:
        keys: list[str] = []
        arrays: list[np.ndarray] = []
        files = [self.directory / FEATURES_FILE] + sorted(self.directory.glob("part-*.npz"))
        for path in files:
            if not path.exists():
                continue
            try:
                with np.load(path, allow_pickle=False) as archive:
                    keys.extend(archive["keys"].tolist())
                    arrays.append(archive["features"])
            except (OSError, ValueError, KeyError) as err:
                # A file we did not finish writing would be a temp name; this one is damaged.
                print(f"warning: {path}: unreadable cache file skipped ({err})", file=sys.stderr)
        return keys, arrays

    def __len__(self) -> int:
        return len(self._index())

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def _index(self) -> dict[str, tuple[int, int]]:
        """key -> (array number, row); rebuilt only after the arrays change."""
        if self._index_cache is not None:
            return self._index_cache
        index: dict[str, tuple[int, int]] = {}
        position = 0
        for a, array in enumerate(self._arrays):
            for row in range(len(array)):
                index[self._keys[position]] = (a, row)
                position += 1
        self._index_cache = index
        return index

    def update(self, images: dict[str, Path], batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True) -> ExtractionReport:
        """Encodes every image not yet cached; bad images are reported and skipped.

        Args:
            images: key -> image path. Keys are what `load` returns (e.g. file names).
            batch_size: images per encoder call.
            progress: show a progress bar.
        """
        done = self._index()
        todo = [(key, Path(path)) for key, path in images.items() if key not in done]
        report = ExtractionReport(reused=len(images) - len(todo))
        if not todo:
            return report
        encoder = get_encoder(self.encoder, weights=self.weights)
        size = encoder.info.input_size
        next_part = len(list(self.directory.glob("part-*.npz")))
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        bar = tqdm(total=len(todo), desc=f"features {self.encoder}", unit="img", disable=not progress)

        def load_batch(batch):
            loaded, keys = [], []
            for key, path in batch:
                try:
                    loaded.append(load_image(path, size))
                    keys.append(key)
                except ImageError as err:
                    report.failed[key] = str(err)
                    if len(report.failed) <= MAX_REPORTED_FAILURES:
                        tqdm.write(f"skipped {err}", file=sys.stderr)
            return keys, loaded

        for batch, (keys, loaded) in load_ahead(batches, load_batch):
            if keys:
                features = encoder.encode(np.stack(loaded), spatial=self.spatial).astype(CACHE_DTYPE)
                path = self.directory / f"part-{next_part:05d}.npz"
                with atomic.atomic_path(path) as tmp:
                    np.savez(tmp, keys=np.array(keys), features=features)
                next_part += 1
                self._keys.extend(keys)
                self._arrays.append(features)
                self._index_cache = None
                report.encoded += len(keys)
            bar.update(len(batch))
        bar.close()
        if len(report.failed) > MAX_REPORTED_FAILURES:
            print(f"skipped {len(report.failed)} unreadable images in all", file=sys.stderr)
        self.consolidate()
        return report

    def consolidate(self) -> None:
        """Merges the per-batch files into one `features.npz` (atomically), then removes them."""
        parts = sorted(self.directory.glob("part-*.npz"))
        if not parts:
            return
        keys, features = self.load()
        with atomic.atomic_path(self.directory / FEATURES_FILE) as tmp:
            np.savez(tmp, keys=np.array(keys), features=features)
        for part in parts:
            part.unlink(missing_ok=True)
        self._keys, self._arrays = keys, [features]
        self._index_cache = None

    def load(self, keys: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Returns (keys, features (N, ...) float16); with `keys`, only those found, in that order."""
        index = self._index()
        wanted = list(index) if keys is None else [k for k in keys if k in index]
        shape = tuple(self.meta["feature_shape"])
        out = np.empty((len(wanted), *shape), dtype=CACHE_DTYPE)
        for i, key in enumerate(wanted):
            a, row = index[key]
            out[i] = self._arrays[a][row]
        return wanted, out


def extract_features(
    directory: str | os.PathLike,
    encoder: str = DEFAULT_ENCODER,
    batch_size: int = DEFAULT_BATCH_SIZE,
    spatial: bool = False,
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = "imagenet",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The seed's function: features of every image in a folder, as {file name: float32 feature}.

    Unlike the seed it is batched, cached (a second call reads the cache) and skips bad images with
    a message instead of stopping. The seed used VGG16 fc2 (4096,); the default here is
    EfficientNet-Lite0's pooled (1280,) vector.

    Args:
        directory: folder of images (JPEG, PNG, BMP, WebP).
        encoder: name from `captioner.encoders.available_encoders()`.
        batch_size: images per encoder call.
        spatial: return the (g, g, D) grid (for attention models) instead of the pooled vector.
        cache_dir: where to cache; default under `~/.cache/captioner` (see `default_cache_dir`).
        weights: "imagenet", or None for random weights (testing).
        progress: show a progress bar.
    """
    paths = list_images(directory)
    cache = FeatureCache(cache_dir or default_cache_dir(directory, encoder, spatial, weights), encoder, weights, spatial)
    cache.update({p.name: p for p in paths}, batch_size=batch_size, progress=progress)
    keys, features = cache.load([p.name for p in paths])
    return {key: feature.astype(np.float32) for key, feature in zip(keys, features)}
