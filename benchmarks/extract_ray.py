"""Feature extraction in process vs on Ray with 1 and 2 encoder actors, in one run, on the same shards.

Writes `--images` synthetic WebDataset images (`_shards.py`, `--size` pixels, squashed to the
encoder's 224) in shards of `--per-shard`, starts a Ray cluster of two node processes on 127.0.0.1
(`ray start --head` plus a second `ray start --address`, `--cpus` CPUs each, via
`captioner.features.ray_extract.LocalCluster`), then encodes the set three times into fresh stores:

- in process: `update_shard_features` (decode on a read-ahead thread, encode, write), with the
  encoder already built, as a long `captioner extract` run sees it;
- Ray, 1 actor and Ray, 2 actors: `ray_update_features` (Ray Data reads and decodes in tasks, the
  actors encode and write), timed from submitting the pipeline to the last shard marked done, so
  the actors' start-up (import TensorFlow, build the encoder) is included.

Reported per run: images/s, milliseconds per image, and for Ray the time per image spent inside
the actors' encoder calls. Ray's overhead per image is (Ray wall time x actors - encoder time in the
actors) / images: what a worker slot spends per image on anything but encoding (scheduling,
moving decoded pixels through the object store, reading, start-up spread over the run). Stores are
compared at the end: Ray's features equal the in-process ones to float16 rounding.

Usage:
    python benchmarks/extract_ray.py [--images 768] [--per-shard 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import _common
import _shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=768)
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic JPEGs (decoded, then squashed to 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs each Ray node offers")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    info = _common.print_machine()

    from captioner.data import open_sharded
    from captioner.encoders import get_encoder
    from captioner.features import FeatureStore, update_shard_features
    from captioner.features.ray_extract import LocalCluster, RayStats, ray_update_features

    work = Path(tempfile.mkdtemp(prefix="extract_ray-"))
    _shards.write_shards(work / "wds", args.images, args.per_shard, args.size)
    source = open_sharded(work / "wds")
    rows, results = [], {}

    get_encoder(args.encoder)  # built once, as in a long run
    store = FeatureStore(work / "in_process", args.encoder)
    started = time.perf_counter()
    report = update_shard_features(store, source, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - started
    assert report.encoded == args.images, report
    results["in_process"] = {"seconds": seconds, "images_per_s": args.images / seconds, "ms_per_image": 1000 * seconds / args.images}
    rows.append(["in process", "-", args.images / seconds, 1000 * seconds / args.images, "-", "-"])
    print(f"in process: {args.images / seconds:.1f} images/s", flush=True)

    with LocalCluster(nodes=2, cpus=args.cpus, temp_dir=str(work / "ray")) as cluster:
        for workers in (1, 2):
            stats = RayStats()
            store = FeatureStore(work / f"ray{workers}", args.encoder)
            report = ray_update_features(store, source, address=cluster.address, workers=workers, batch_size=args.batch_size, progress=False, stats=stats)
            assert report.encoded == args.images, report
            overhead = (stats.wall_seconds * workers - stats.encode_seconds) / args.images
            results[f"ray_{workers}"] = {
                "seconds": stats.wall_seconds,
                "images_per_s": args.images / stats.wall_seconds,
                "ms_per_image": 1000 * stats.wall_seconds / args.images,
                "encode_ms_per_image_in_actor": 1000 * stats.encode_seconds / args.images,
                "overhead_ms_per_image_per_worker": 1000 * overhead,
            }
            rows.append(
                [
                    f"Ray, {workers} actor{'s' if workers > 1 else ''}",
                    2,
                    args.images / stats.wall_seconds,
                    1000 * stats.wall_seconds / args.images,
                    1000 * stats.encode_seconds / args.images,
                    1000 * overhead,
                ]
            )
            print(f"Ray {workers} actor(s): {args.images / stats.wall_seconds:.1f} images/s", flush=True)
        import ray

        ray.shutdown()

    keys = sorted(FeatureStore(work / "in_process", args.encoder).keys())
    a = FeatureStore(work / "in_process", args.encoder).load(keys)[1].astype(np.float32)
    b = FeatureStore(work / "ray2", args.encoder).load(keys)[1].astype(np.float32)
    np.testing.assert_allclose(a, b, rtol=2**-10, atol=2**-14)
    differing = int((a != b).sum())
    results["features"] = {"values": int(a.size), "differing": differing, "max_abs_diff": float(np.abs(a - b).max())}
    _common.print_table(
        ["run", "nodes", "images/s", "ms/image (wall)", "encoder ms/image (in actors)", "Ray overhead ms/image per actor"],
        rows,
        title=f"{args.images} images of {args.size}x{args.size} in {len(source.shards)} shards, {args.encoder}, batch {args.batch_size}",
    )
    print(f"\nRay (2 actors) vs in process: {differing} of {a.size:,} feature values differ, by at most {np.abs(a - b).max():.2g} (float16 rounding)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
