"""`captioner extract --ray`: encoding a sharded dataset on a Ray cluster, straight into the feature store.

The pipeline is Ray Data's, not ours:

    from_items(unfinished source shards)                       one row per .tar / .parquet
      .flat_map(read_and_decode)     Ray tasks                 one row per image: key, uint8 pixels
      .map_batches(EncoderActor)     an actor pool, one model  encode, write a store shard, return keys
      .iter_batches()                the driver                counts each source shard's images back

Each encoder actor builds the encoder once and owns a `ShardWriter`, so actors on any node write
collision-free shards into the same store directory (which must be on a filesystem every node
sees: NFS, EFS, a GCS/S3 FUSE mount; the dataset's shards likewise). The reading task adds a last
row per source shard with its image count; when the driver has seen that many images of a shard
come back from the actors, every one of them is written, and it marks the shard done in the store
(`FeatureStore.mark_source_done`). A killed job rerun therefore skips finished shards, as the
in-process `update_shard_features` does, and the two write the same store.

Ray is an optional extra (``pip install 'captioner[ray]'``) imported only here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from captioner.data.base import LoadReport
from captioner.data.registry import get_format
from captioner.encoders import encoder_info
from captioner.errors import ArgumentError
from captioner.features.extract import DEFAULT_BATCH_SIZE, ExtractionReport
from captioner.features.sharded import decode_samples, pending_shards
from captioner.features.store import FeatureStore, ShardWriter, rows_per_shard, source_fingerprint
from captioner.images import ImageError, load_image

log = logging.getLogger(__name__)

__all__ = ["LocalCluster", "RayStats", "connect", "ray_update_features", "ray_update_file_features"]

IMAGE, FAILED, END = 0, 1, 2  # row kinds
READ_CHUNK = 32  # images decoded per chunk in a reading task
FILES_PER_TASK = 256  # image files per reading task (datasets of files)
_REPORT_COUNTS = ("records", "skipped_lines", "missing_images", "missing_captions", "empty_captions", "unknown_splits")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ArgumentError("--ray needs Ray: pip install 'captioner[ray]'") from None
    return ray


def connect(address: str | None = "auto") -> bool:
    """Connects this process to a Ray cluster; returns whether it started a local one instead.

    Args:
        address: "auto" (the cluster `ray start` runs on this machine, else a new local one), or a
            cluster address such as "127.0.0.1:6379" or "ray://head:10001".
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    try:
        ray.init(address=address or "auto", **quiet)
        return False
    except ConnectionError as err:
        if address not in (None, "auto"):
            raise ArgumentError(f"--ray {address}: cannot connect to a Ray cluster ({str(err).splitlines()[0]})") from None
    ray.init(**quiet)
    return True


def _read_files(item: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    """A Ray task's work for a dataset of image files: a list of (key, path) -> decoded images."""
    blank = np.zeros((size, size, 3), np.uint8)
    for key, path in json.loads(item["files"]):
        fingerprint = json.dumps(source_fingerprint(path))  # before reading: a later change makes it stale
        try:
            yield {"kind": IMAGE, "shard": item["name"], "key": key, "pixels": load_image(path, size), "info": "", "source": fingerprint}
        except ImageError as err:
            yield {"kind": FAILED, "shard": item["name"], "key": key, "pixels": blank, "info": str(err), "source": fingerprint}


def _read_and_decode(item: dict[str, Any], format: str, size: int) -> Iterator[dict[str, Any]]:
    """A Ray task's work: one source shard -> its images decoded to `size`, then one END row."""
    shard = Path(item["shard"])
    fmt = get_format(format)
    assert fmt is not None and fmt.open_shards is not None
    report = LoadReport(unit="sample")
    source = fmt.open_shards(shard)
    count = 0
    blank = np.zeros((size, size, 3), np.uint8)

    def rows(chunk: list) -> Iterator[dict[str, Any]]:
        decoded = decode_samples(chunk, size)
        for key, pixels in zip(decoded.keys, decoded.pixels):
            yield {"kind": IMAGE, "shard": item["name"], "key": key, "pixels": pixels, "info": "", "source": item["source"]}
        for key, reason in decoded.failed.items():
            yield {"kind": FAILED, "shard": item["name"], "key": key, "pixels": blank, "info": reason, "source": item["source"]}

    chunk = []
    for sample in source.samples(shard, report=report):
        chunk.append(sample)
        count += 1
        if len(chunk) == READ_CHUNK:
            yield from rows(chunk)
            chunk = []
    if chunk:
        yield from rows(chunk)
    counts = {name: getattr(report, name) for name in _REPORT_COUNTS}
    yield {
        "kind": END,
        "shard": item["name"],
        "key": "",
        "pixels": blank,
        "info": json.dumps({"images": count, "counts": counts, "messages": report.messages[:5]}),
        "source": item["source"],
    }


class EncoderActor:
    """One encoder model per Ray actor; each batch becomes one store shard written by this actor."""

    def __init__(self, store_dir: str, encoder: str, weights: str | None, spatial: bool, batch_size: int) -> None:
        from captioner.encoders import get_encoder

        started = time.perf_counter()
        self.encoder = get_encoder(encoder, weights=weights)
        self.writer = ShardWriter(store_dir)
        self.spatial = spatial
        self.batch_size = batch_size
        self.setup_seconds = time.perf_counter() - started

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        images = batch["kind"] == IMAGE
        if images.any():
            keys = [str(k) for k in batch["key"][images]]
            features = self.encoder.encode(np.asarray(batch["pixels"][images], dtype=np.uint8), spatial=self.spatial, batch_size=self.batch_size)
            self.writer.write(keys, [json.loads(str(s)) for s in batch["source"][images]], features)
        seconds = np.full(len(images), (time.perf_counter() - started) / max(int(images.sum()), 1))
        return {"kind": batch["kind"], "shard": batch["shard"], "key": batch["key"], "info": batch["info"], "encode_seconds": seconds}


class RayStats:
    """Timings of the last `ray_update_features` run (for benchmarks): wall time and encoder time per image."""

    wall_seconds: float = 0.0
    encode_seconds: float = 0.0  # summed over images: time inside the actors' encoder calls
    images: int = 0
    workers: int = 0


def ray_update_features(
    store: FeatureStore,
    source: Any,
    address: str | None = "auto",
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    stats: RayStats | None = None,
) -> ExtractionReport:
    """Encodes the source shards the store has not finished, on a Ray cluster.

    Args:
        store: the feature store (a directory every node can write).
        source: the `ShardedSource` (its files on a path every node can read).
        address: see `connect`.
        workers: encoder actors (one model each); default one per alive node.
        batch_size: images per encoder call and per store shard.
        progress: Ray Data's progress bars.
        stats: filled with timings if given.
    """
    ray = _import_ray()
    todo, reused = pending_shards(store, source)
    report = ExtractionReport(reused=reused)
    if not todo:
        return report
    started_here = connect(address)
    try:
        workers = min(workers or max(1, sum(1 for node in ray.nodes() if node.get("Alive"))), len(todo))
        _quiet_ray_data(ray, progress)
        size = encoder_info(store.encoder).input_size
        names = {source.shard_name(p): p for p in todo}
        fingerprints = {name: source.fingerprint(path) for name, path in names.items()}
        items = [{"shard": str(path.resolve()), "name": name} for name, path in names.items()]
        for item, name in zip(items, names):
            item["source"] = json.dumps(fingerprints[name])
        started = time.perf_counter()
        dataset = _pipeline(ray, store, items, _read_and_decode, {"format": source.format, "size": size}, workers, batch_size)
        seen: dict[str, int] = {}
        expected: dict[str, int] = {}
        failed: dict[str, int] = {}
        encode_seconds = 0.0
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            for kind, shard, key, text, seconds in zip(batch["kind"], batch["shard"], batch["key"], batch["info"], batch["encode_seconds"]):
                shard = str(shard)
                if kind == END:
                    end = json.loads(str(text))
                    expected[shard] = int(end["images"])
                    _merge_report(source.report, end)
                elif kind == FAILED:
                    failed[shard] = failed.get(shard, 0) + 1
                    seen[shard] = seen.get(shard, 0) + 1
                    report.skip(str(key), str(text))
                else:
                    seen[shard] = seen.get(shard, 0) + 1
                    report.encoded += 1
                    encode_seconds += float(seconds)
                if shard in expected and seen.get(shard, 0) == expected[shard]:
                    done = expected.pop(shard)
                    store.mark_source_done(shard, fingerprints[shard], done - failed.get(shard, 0), failed.get(shard, 0))
        wall = time.perf_counter() - started
        if stats is not None:
            stats.wall_seconds, stats.encode_seconds, stats.images, stats.workers = wall, encode_seconds, report.encoded, workers
    finally:
        if started_here:
            ray.shutdown()
    report.log_total()
    return report  # not refreshed: see update_shard_features


def _quiet_ray_data(ray: Any, progress: bool) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    if not log.isEnabledFor(logging.DEBUG):  # Ray Data's status tables every few seconds: with --debug only
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def _pipeline(ray: Any, store: FeatureStore, items: list[dict], reader: Any, reader_kwargs: dict, workers: int, batch_size: int) -> Any:
    """from_items(items) -> flat_map(reader) in tasks -> map_batches(EncoderActor) on `workers` actors."""
    return (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(reader, fn_kwargs=reader_kwargs, num_cpus=1)
        .map_batches(
            EncoderActor,
            fn_constructor_kwargs={
                "store_dir": str(Path(store.directory).resolve()),
                "encoder": store.encoder,
                "weights": store.weights,
                "spatial": store.spatial,
                "batch_size": batch_size,
            },
            # ~1 MiB store shards from each actor call (pooled: 409 images, ~60 MB of pixels); the encoder runs batch_size at a time
            batch_size=max(batch_size, rows_per_shard(store.shape) // 32),
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            batch_format="numpy",
        )
    )


def ray_update_file_features(
    store: FeatureStore,
    images: dict[str, Path],
    address: str | None = "auto",
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> ExtractionReport:
    """`update_features` on a Ray cluster: image files (key -> path) the store lacks or holds for an older file.

    Files are handed to reading tasks in lists of `FILES_PER_TASK`; each stored image carries its
    file's (size, mtime), so a rerun, like the in-process one, encodes only what is missing or changed.
    The files must be at the same paths on every node.
    """
    ray = _import_ray()
    todo = [(key, str(Path(path).resolve())) for key, path in images.items() if not store.is_current(key, path)]
    report = ExtractionReport(reused=len(images) - len(todo), stale=sum(key in store for key, _ in todo))
    if not todo:
        return report
    started_here = connect(address)
    try:
        chunks = [todo[i : i + FILES_PER_TASK] for i in range(0, len(todo), FILES_PER_TASK)]
        workers = min(workers or max(1, sum(1 for node in ray.nodes() if node.get("Alive"))), len(chunks))
        _quiet_ray_data(ray, progress)
        items = [{"files": json.dumps(chunk), "name": f"files-{i}"} for i, chunk in enumerate(chunks)]
        dataset = _pipeline(ray, store, items, _read_files, {"size": encoder_info(store.encoder).input_size}, workers, batch_size)
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            for kind, key, text in zip(batch["kind"], batch["key"], batch["info"]):
                if kind == FAILED:
                    report.skip(str(key), str(text))
                elif kind == IMAGE:
                    report.encoded += 1
    finally:
        if started_here:
            ray.shutdown()
    report.log_total()
    store.refresh()
    return report


def _merge_report(report: LoadReport, end: dict) -> None:
    for name, value in end.get("counts", {}).items():
        setattr(report, name, getattr(report, name) + int(value))
    for message in end.get("messages", []):
        report.note(message)


class LocalCluster:
    """A Ray cluster of `nodes` node processes on 127.0.0.1 (`ray start --head` plus `ray start --address`).

    For tests and benchmarks: each node is a `ray start --block` process in its own process group,
    stopped by that group's id (never `ray stop`, which stops every Ray process on the machine).

    Args:
        nodes: node processes, the head included.
        cpus: CPUs each node offers to Ray's scheduler.
        temp_dir: Ray's session folder (default: a new one under /tmp).
    """

    def __init__(self, nodes: int = 2, cpus: int = 2, temp_dir: str | None = None) -> None:
        self.nodes = nodes
        self.cpus = cpus
        self.temp_dir = temp_dir
        self.address = ""
        self._processes: list[subprocess.Popen] = []

    def __enter__(self) -> LocalCluster:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--disable-usage-stats", "--block"]
        head = [*ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
        if self.temp_dir:
            head.append(f"--temp-dir={self.temp_dir}")
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
        try:
            self._start(head, env)
            for _ in range(self.nodes - 1):
                self._start([*ray_cli, "start", f"--address={self.address}", *common], env)
            self._wait_for_nodes(self.nodes)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, command: list[str], env: dict) -> None:
        self._processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def _wait_for_nodes(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        host, port = self.address.split(":")
        while time.monotonic() < deadline:  # the head's port first: cheap to poll
            if any(p.poll() is not None for p in self._processes):
                raise RuntimeError(f"a Ray node process exited while starting the cluster at {self.address}")
            with socket.socket() as probe:
                if probe.connect_ex((host, int(port))) == 0:
                    break
            time.sleep(0.2)
        script = (
            f"import ray, time; ray.init(address={self.address!r}, logging_level='ERROR')\n"
            f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.monotonic() < {deadline}: time.sleep(0.2)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or result.stdout.strip().splitlines()[-1:] != [str(count)]:
            raise RuntimeError(f"the Ray cluster at {self.address} did not reach {count} nodes in {timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        # Ray starts some workers in sessions of their own: note every descendant before stopping.
        descendants = _descendants({p.pid for p in self._processes})
        for process in reversed(self._processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Ray's own daemons (raylet, GCS, agents) were started in the same process groups.
        for process in self._processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._processes = []


def _descendants(roots: set[int]) -> set[int]:
    """Process ids below `roots` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
