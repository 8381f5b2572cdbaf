"""A feature store that streams: shards written by any number of writers, memory-mapped when read.

A store is a directory for one encoder setting:

    meta.json                     encoder, weights, input size, preprocessing, feature shape, dtype
    shards/<writer>-<n>.npy       float16 features (N, ...) of one finished batch
    shards/<writer>-<n>.json      its keys, each source file's (size, mtime), CRC-32 of the array
    quarantine/                   damaged shards, set aside (their images are encoded again)
    sources/<name>.json           for sharded datasets (WebDataset, Parquet): one per source shard
                                  whose every image is in the store, with its (size, mtime)

`<writer>` is host name, process id and a random token, so processes and machines writing into one
store never collide. A shard counts once its `.json` exists, which is written (atomically) after
its `.npy`: a writer killed at any moment loses at most the batch in flight. Reading maps each
`.npy` into memory instead of loading it, and a gather releases the pages it touched, so training
on a set far larger than memory (Flickr8k Lite2 grids: 1.7 GB; COCO: 30 GB) keeps a flat RSS.

Opened with `index_keys=False`, a store maps its shards but keeps no per-image bookkeeping (no key
index, no key lists): training on a sharded dataset opens it so, and finds a source shard's images
with `shard_sources` and `shard_entries` a source shard at a time, so that its memory does not
grow with the set.

Each image is recorded with its file's size and modification time; an image changed after it was
encoded is stale and gets encoded again. A store made with another encoder, weights,
preprocessing or shape is refused, never silently reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mmap
import os
import re
import secrets
import socket
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from captioner import atomic
from captioner.defaults import default_cache_root
from captioner.encoders import encoder_info
from captioner.errors import FileError

log = logging.getLogger(__name__)

STORE_DTYPE = np.float16  # pooled features lose < 0.1% relative precision; half the disk and RAM
META_FILE = "meta.json"
SHARD_DIR = "shards"
QUARANTINE_DIR = "quarantine"
SOURCES_DIR = "sources"
LAYOUT_VERSION = 2  # 1 was captioner 0.1's features.npz / part-*.npz


STORE_SHARD_BYTES = 32 << 20  # sharded extraction gathers about this much per store shard
MAX_SHARD_SOURCES = 64  # distinct source fingerprints a keyless store remembers per shard (more: "any")


def rows_per_shard(shape: Sequence[int], limit: int = STORE_SHARD_BYTES) -> int:
    """Rows of features of `shape` in a store shard of about `limit` bytes (32 to 16,384).

    Every open shard holds a memory map (and a file descriptor): a 3-million-image set written 32
    images per shard would need 100,000 of them; at 32 MiB per shard pooled features need ~250.
    """
    row = int(np.prod(shape)) * np.dtype(STORE_DTYPE).itemsize
    return int(min(16_384, max(32, limit // max(row, 1))))


class FeatureCacheError(FileError):
    """A store directory that cannot be used for the requested encoder."""


def default_cache_dir(
    image_dir: str | os.PathLike, encoder: str, spatial: bool = False, weights: str | None = "imagenet", root: str | os.PathLike | None = None
) -> Path:
    """One store per image folder and encoder setting: `<root>/features/<folder>-<hash>/<encoder>-<kind>-v2`."""
    image_dir = Path(image_dir).resolve()
    digest = hashlib.sha1(str(image_dir).encode()).hexdigest()[:10]
    kind = ("grid" if spatial else "pooled") + ("" if weights == "imagenet" else f"-{weights or 'random'}")
    return Path(root or default_cache_root()) / "features" / f"{image_dir.name}-{digest}" / f"{encoder}-{kind}-v{LAYOUT_VERSION}"


def source_fingerprint(path: str | os.PathLike) -> list[int] | None:
    """[size, mtime in ns] of an image file, or None if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def writer_id() -> str:
    """A name no other process, here or on another machine, will use for its shards."""
    host = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclasses.dataclass
class _Shard:
    path: Path  # the .npy file
    keys: list[str]
    sources: list[list[int] | None]
    written: int
    array: np.ndarray  # (N, ...) float16, memory-mapped
    mapping: mmap.mmap
    # A keyless store's summary of `sources` (which are then not kept): the distinct fingerprints, or
    # None when there are more than MAX_SHARD_SOURCES (a store of image files: one per image).
    fingerprints: frozenset[tuple[int, ...]] | None = None

    def release(self) -> None:
        """Drops the pages a gather touched from this process (they stay in the page cache)."""
        self.mapping.madvise(mmap.MADV_DONTNEED)


class ShardWriter:
    """Writes shards of one writer into a store; use one per process (or Ray actor)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.shard_dir = Path(directory) / SHARD_DIR
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.name = writer_id()
        self.count = 0

    def write(self, keys: Sequence[str], sources: Sequence[list[int] | None], features: np.ndarray) -> Path:
        """Writes one shard: features (N, ...) for `keys`, whose files had `sources` fingerprints."""
        features = np.ascontiguousarray(features, dtype=STORE_DTYPE)
        stem = self.shard_dir / f"{self.name}-{self.count:06d}"
        self.count += 1
        with atomic.atomic_path(stem.with_suffix(".npy")) as tmp:
            np.save(tmp, features)
        index = {
            "keys": list(keys),
            "sources": list(sources),
            "rows": len(features),
            "shape": list(features.shape[1:]),
            "crc32": zlib.crc32(features.tobytes()),
            "written": time.time_ns(),
        }
        atomic.write_json(stem.with_suffix(".json"), index)
        return stem.with_suffix(".npy")


class FeatureStore:
    """Features of one encoder for one set of images, stored as shards in a directory.

    Args:
        directory: the store directory (created if missing).
        encoder: encoder name, e.g. "efficientnet_lite0".
        weights: "imagenet" or None (random weights, for tests).
        spatial: store the (g, g, D) grid instead of the pooled (D,) vector.
        verify: check every shard's CRC-32 when opening (reads the whole store once).
        index_keys: keep the key index (`positions`, `keys`, `in`, `load`). False keeps only each
            shard's memory map and the fingerprints of its sources, so memory does not grow with the
            number of images; images are then found with `shard_sources` and `shard_entries`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        encoder: str = "efficientnet_lite0",
        weights: str | None = "imagenet",
        spatial: bool = False,
        verify: bool = True,
        index_keys: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.encoder = encoder
        self.weights = weights
        self.spatial = spatial
        self.verify = verify
        self.index_keys = index_keys
        info = encoder_info(encoder)
        shape = [info.grid_size, info.grid_size, info.feature_dim] if spatial else [info.feature_dim]
        self.meta = {
            "encoder": encoder,
            "weights": weights,
            "input_size": info.input_size,
            "preprocessing": info.preprocessing,
            "feature_shape": shape,
            "dtype": np.dtype(STORE_DTYPE).name,
            "layout": LAYOUT_VERSION,
        }
        self.shape = tuple(shape)
        self._check_or_write_meta()
        self._shards: list[_Shard] = []
        self._seen: set[Path] = set()
        self._index: dict[str, tuple[int, int]] = {}  # key -> (shard, row) of its newest entry
        self.refresh()

    # --- opening -----------------------------------------------------------------------------

    def _check_or_write_meta(self) -> None:
        if (self.directory / "features.npz").exists() or any(self.directory.glob("part-*.npz")):
            raise FeatureCacheError(
                self.directory, f"feature cache made by captioner 0.1, which this version cannot read; delete it to rebuild it (rm -r '{self.directory}')"
            )
        path = self.directory / META_FILE
        if path.exists():
            try:
                found = json.loads(path.read_text())
                if not isinstance(found, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError):
                raise FeatureCacheError(path, "unreadable store metadata; delete the folder to rebuild it") from None
            diff = [f"{k}: store has {found.get(k)!r}, wanted {v!r}" for k, v in self.meta.items() if found.get(k) != v]
            if diff:
                raise FeatureCacheError(
                    self.directory, f"feature store made with other settings ({'; '.join(diff)}); use another cache folder or delete this one"
                )
        else:
            atomic.write_json(path, self.meta)

    def refresh(self) -> None:
        """Opens shards that other writers (or this process) finished since the last look."""
        shard_dir = self.directory / SHARD_DIR
        for index_path in sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []:
            npy = index_path.with_suffix(".npy")
            if npy in self._seen:
                continue
            self._seen.add(npy)
            try:
                shard = self._open_shard(index_path, npy)
            except _DamagedShard as err:
                self._quarantine(index_path, npy, str(err))
                continue
            self._add(shard)

    def _open_shard(self, index_path: Path, npy: Path) -> _Shard:
        try:
            index = json.loads(index_path.read_text())
            keys, sources, rows = index["keys"], index["sources"], int(index["rows"])
            shared: dict[tuple, list[int]] = {}  # a sharded dataset's rows share their source shard's fingerprint
            sources = [shared.setdefault(tuple(s), s) if isinstance(s, list) else s for s in sources]
            if len(keys) != rows or len(sources) != rows:
                raise _DamagedShard("index lists a different number of rows")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError) as err:
            raise _DamagedShard(f"unreadable shard index ({type(err).__name__})") from None
        try:
            with open(npy, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
                if fortran or dtype != np.dtype(STORE_DTYPE) or tuple(shape) != (rows, *self.shape):
                    raise _DamagedShard(f"array is {dtype} {shape}, index expects {STORE_DTYPE.__name__} {(rows, *self.shape)}")
                expected = offset + rows * int(np.prod(self.shape)) * np.dtype(STORE_DTYPE).itemsize
                if os.fstat(f.fileno()).st_size != expected:
                    raise _DamagedShard(f"file is {os.fstat(f.fileno()).st_size} bytes, expected {expected} (truncated?)")
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if rows else None
        except FileNotFoundError:
            raise _DamagedShard("array file missing") from None
        except (ValueError, OSError) as err:
            raise _DamagedShard(f"unreadable array ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        if mapping is None:
            raise _DamagedShard("empty shard")
        array = np.frombuffer(mapping, dtype=STORE_DTYPE, count=rows * int(np.prod(self.shape)), offset=offset).reshape(rows, *self.shape)
        if self.verify and zlib.crc32(array.data) != index.get("crc32"):
            raise _DamagedShard("CRC-32 mismatch (the file was changed or damaged)")
        shard = _Shard(npy, keys, sources, int(index.get("written", 0)), array, mapping)
        if not self.index_keys:  # keyless: a summary of the sources instead of a list per image
            found = {tuple(s) for s in sources if isinstance(s, list)}
            shard.keys, shard.sources = [], []
            shard.fingerprints = frozenset(found) if len(found) <= MAX_SHARD_SOURCES and None not in sources else None
        shard.release()
        return shard

    def _quarantine(self, index_path: Path, npy: Path, reason: str) -> None:
        target = self.directory / QUARANTINE_DIR
        target.mkdir(exist_ok=True)
        for path in (npy, index_path):
            if path.exists():
                os.replace(path, target / path.name)
        log.warning("%s: damaged feature shard set aside in %s (%s); its images will be encoded again", npy, target, reason)

    def _add(self, shard: _Shard) -> None:
        number = len(self._shards)
        self._shards.append(shard)
        for row, key in enumerate(shard.keys):  # a keyless store's shards have no keys here
            current = self._index.get(key)
            if current is None or self._shards[current[0]].written <= shard.written:
                self._index[key] = (number, row)

    # --- source shards (sharded datasets) ---------------------------------------------------

    def _source_marker(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-80:]
        return self.directory / SOURCES_DIR / f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.json"

    def source_done(self, name: str, fingerprint: list[int] | None) -> dict | None:
        """What `mark_source_done` recorded for source shard `name`, if it is unchanged since; else None."""
        try:
            marker = json.loads(self._source_marker(name).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(marker, dict) or fingerprint is None or marker.get("fingerprint") != fingerprint or marker.get("source") != name:
            return None
        return marker

    def mark_source_done(self, name: str, fingerprint: list[int] | None, images: int, failed: int) -> None:
        """Records that every image of source shard `name` is in the store (call after its shards are written)."""
        marker = {"source": name, "fingerprint": fingerprint, "images": images, "failed": failed, "written": time.time_ns()}
        path = self._source_marker(name)
        path.parent.mkdir(exist_ok=True)
        atomic.write_json(path, marker)

    # --- a keyless store: shards, and what they hold, one at a time ----------------------------

    def shard_names(self) -> list[str]:
        """The shard files' names in shard number order (the numbers `positions` and `gather` use)."""
        return [shard.path.name for shard in self._shards]

    def shard_sources(self) -> list[frozenset[tuple[int, ...]] | None]:
        """Per shard number, the fingerprints of the source files its images came from (keyless store).

        None for a shard of more than `MAX_SHARD_SOURCES` sources (or of unknown ones): it may hold
        images of any.
        """
        return [shard.fingerprints for shard in self._shards]

    def shard_entries(self, number: int) -> tuple[list[str], list[list[int] | None], int]:
        """(keys, source fingerprints, time written) of shard `number`, read from its index file again.

        Raises:
            FeatureCacheError: the index file changed or vanished since the store opened it.
        """
        shard = self._shards[number]
        if self.index_keys:
            return shard.keys, shard.sources, shard.written
        index_path = shard.path.with_suffix(".json")
        try:
            index = json.loads(index_path.read_text())
            keys, sources = index["keys"], index["sources"]
            if len(keys) != len(shard.array) or len(sources) != len(keys) or int(index.get("written", 0)) != shard.written:
                raise ValueError("changed")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
            raise FeatureCacheError(index_path, "store shard changed or vanished while in use; run the command again") from None
        return keys, sources, shard.written

    # --- queries -----------------------------------------------------------------------------

    def _keyed(self) -> None:
        if not self.index_keys:
            raise TypeError("this FeatureStore was opened with index_keys=False: it has no key index")

    def __len__(self) -> int:
        self._keyed()
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        self._keyed()
        return key in self._index

    def keys(self) -> list[str]:
        self._keyed()
        return list(self._index)

    def is_current(self, key: str, path: str | os.PathLike) -> bool:
        """True if `key` is stored and its file has not changed since it was encoded."""
        self._keyed()
        if key not in self._index:
            return False
        shard, row = self._index[key]
        recorded = self._shards[shard].sources[row]
        return recorded is not None and recorded == source_fingerprint(path)

    def positions(self, keys: Iterable[str]) -> np.ndarray:
        """(N, 2) int64 (shard, row) of each key, for `gather`; KeyError names a missing key."""
        self._keyed()
        return np.array([self._index[k] for k in keys], dtype=np.int64).reshape(-1, 2)

    def gather(self, positions: np.ndarray, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
        """Features (N, ...) at `positions` (from `positions()`), as `dtype`; touched pages are released."""
        out = np.empty((len(positions), *self.shape), dtype=dtype)
        for shard in np.unique(positions[:, 0]):
            picked = positions[:, 0] == shard
            out[picked] = self._shards[shard].array[positions[picked, 1]]
            self._shards[shard].release()
        return out

    def load(self, keys: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Returns (keys, features (N, ...) float16); with `keys`, only those found, in that order."""
        wanted = self.keys() if keys is None else [k for k in keys if k in self._index]
        return wanted, self.gather(self.positions(wanted), STORE_DTYPE)


class _DamagedShard(Exception):
    """A shard that cannot be trusted (reason in the message)."""
