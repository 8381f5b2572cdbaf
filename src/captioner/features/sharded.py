"""Encoding a sharded dataset (WebDataset, Parquet) into a `FeatureStore`, one source shard at a time.

Images are decoded from the shard's bytes on a read-ahead thread while the encoder runs, written as
store shards of `batch_size` features, and once every image of a source shard is written the store
records it (`FeatureStore.mark_source_done`). A run that was killed therefore starts again at the
first unfinished source shard: finished ones are skipped without being opened, and the images of
the one in flight are encoded again (the store keeps the newest copy of a key). A source shard whose
file changed since is encoded again.

Memory is one batch of decoded images plus one batch read ahead, and up to one store shard of
features (~32 MiB, `rows_per_shard`), whatever the size of the set.
`captioner.features.ray_extract` does the same on a Ray cluster.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from captioner.data.shards import Sample, ShardedSource
from captioner.features.extract import DEFAULT_BATCH_SIZE, ExtractionReport
from captioner.features.store import STORE_DTYPE, FeatureStore, ShardWriter, rows_per_shard
from captioner.images import ImageError, load_image

__all__ = ["Decoded", "decode_samples", "pending_shards", "update_shard_features"]


@dataclass
class Decoded:
    """A batch of samples decoded to the encoder's size."""

    keys: list[str]
    pixels: np.ndarray  # (N, S, S, 3) uint8
    failed: dict[str, str]  # key -> why it could not be decoded


def decode_samples(samples: list[Sample], size: int) -> Decoded:
    """Decodes samples' image bytes, squashed to `size`; unreadable images are listed in `failed`."""
    keys, arrays, failed = [], [], {}
    for sample in samples:
        try:
            if sample.image is None:
                raise ImageError(sample.where, "no image bytes")
            arrays.append(load_image(sample.image, size, name=sample.where))
        except ImageError as err:
            failed[sample.key] = str(err)
            continue
        keys.append(sample.key)
    pixels = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return Decoded(keys, pixels, failed)


def pending_shards(store: FeatureStore, source: ShardedSource) -> tuple[list[Path], int]:
    """(source shards not yet complete in the store, images in the complete ones)."""
    todo: list[Path] = []
    reused = 0
    for shard in source.shards:
        done = store.source_done(source.shard_name(shard), source.fingerprint(shard))
        if done is None:
            todo.append(shard)
        else:
            reused += int(done.get("images", 0))
    return todo, reused


def _batches(source: ShardedSource, shard: Path, batch_size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in source.samples(shard):
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ahead(batches: Iterator[list[Sample]], size: int, pool: concurrent.futures.ThreadPoolExecutor) -> Iterator[Decoded]:
    """Decodes the next batch on the pool's thread while the caller encodes this one."""
    pending = None
    for batch in batches:
        future = pool.submit(decode_samples, batch, size)
        if pending is not None:
            yield pending.result()
        pending = future
    if pending is not None:
        yield pending.result()


def update_shard_features(store: FeatureStore, source: ShardedSource, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True) -> ExtractionReport:
    """Encodes every source shard the store has not finished; returns what was done.

    `report.reused` counts the images of source shards finished earlier (skipped unopened).
    """
    from captioner.encoders import get_encoder

    todo, reused = pending_shards(store, source)
    report = ExtractionReport(reused=reused)
    if not todo:
        return report
    encoder = get_encoder(store.encoder, weights=store.weights)
    writer = ShardWriter(store.directory)
    per_shard = rows_per_shard(store.shape)
    bar = tqdm(total=len(source.shards), initial=len(source.shards) - len(todo), desc=f"shards {store.encoder}", unit="shard", disable=not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for shard in todo:
            name, fingerprint = source.shard_name(shard), source.fingerprint(shard)
            encoded, failed = 0, 0
            keys: list[str] = []
            parts: list[np.ndarray] = []
            for decoded in _ahead(_batches(source, shard, batch_size), encoder.info.input_size, pool):
                for key, reason in decoded.failed.items():
                    report.skip(key, reason)
                failed += len(decoded.failed)
                if decoded.keys:
                    parts.append(encoder.encode(decoded.pixels, spatial=store.spatial).astype(STORE_DTYPE))
                    keys.extend(decoded.keys)
                    encoded += len(decoded.keys)
                if len(keys) >= per_shard:  # store shards of ~32 MiB: few files, few memory maps
                    writer.write(keys, [fingerprint] * len(keys), np.concatenate(parts))
                    keys, parts = [], []
            if keys:
                writer.write(keys, [fingerprint] * len(keys), np.concatenate(parts))
            store.mark_source_done(name, fingerprint, encoded, failed)
            report.encoded += encoded
            bar.update(1)
    bar.close()
    report.log_total()
    # No store.refresh() here: indexing every key would make extraction's memory grow with the set;
    # whoever reads the store next (training) opens the new shards then.
    return report
