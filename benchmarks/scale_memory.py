"""Peak memory of extraction and training streamed over synthetic WebDataset sets of 10k and 100k images.

For each size N, `_shards.py` writes N small JPEGs (`--size` px) with captions into img2dataset-style
tar shards of `--per-shard` images. Then, each in a fresh process so that the peak resident set size
(`ru_maxrss`) is that step's alone:

- extract: `update_shard_features` over every source shard into a feature store;
- train:   `captioner.training.train` for one epoch on the same WebDataset folder (its features
           are all in the store, so training streams the captions from the shards into caption
           files in the run directory, then reads those a pool of rows at a time and the features
           from the memory-mapped store).

The encoder is a tiny stand-in registered by this script (`bench_tiny`: two strided convolutions,
32 px in, a 64-wide pooled feature), because EfficientNet-Lite0 encodes ~107 images/s on two cores:
100,000 images would take about 16 minutes per run, 300,000 nearly an hour. The code path (decode from the tar, batch,
encode, write store shards, mark source shards done; then stream captions, map features, train) is
the real one; only the network is small. The decoder is small too (`--units`).

Reported: peak RSS of each step at each size and the difference between consecutive sizes, in MiB
and bytes per added image. Flat memory means the difference stays a small fraction of the total.

A training process's RSS also creeps up with the number of training steps for a while (TensorFlow's
allocator and kernel caches: ~6 MiB from 30 to 300 steps here, then flat), whatever the data. So
a control run trains the smallest set for as many epochs as make the largest set's one-epoch step
count (`--no-control` skips it); the largest set against the control is what grows with the set.

Usage:
    python benchmarks/scale_memory.py [--sizes 10000 100000 300000] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import _shards

TINY = "bench_tiny"


def register_tiny_encoder() -> None:
    """Adds `bench_tiny` to the encoder registry of this process (nothing is written to the package)."""
    from captioner import encoders

    def build(weights: str | None):
        import keras

        pixels = keras.Input((32, 32, 3), name="pixels")
        x = keras.layers.Rescaling(1.0 / 255.0)(pixels)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
        return keras.Model(pixels, x, name="bench_tiny")  # (B, 8, 8, 64)

    encoders._INFOS[TINY] = encoders.EncoderInfo(TINY, 32, "x / 255", 64, 8)
    encoders._BUILDERS[TINY] = build


def store_dir(work: Path) -> Path:
    from captioner.features import default_cache_dir

    return default_cache_dir(work / "wds", TINY, False, None, root=work / "cache")


def phase_extract(work: Path, batch_size: int) -> dict:
    from captioner.data import open_sharded
    from captioner.features import FeatureStore, update_shard_features

    started = time.perf_counter()
    store = FeatureStore(store_dir(work), TINY, weights=None)
    report = update_shard_features(store, open_sharded(work / "wds"), batch_size=batch_size, progress=False)
    return {"seconds": time.perf_counter() - started, "encoded": report.encoded, "store_images": len(store)}


def phase_train(work: Path, units: int, batch_size: int, epochs: int = 1) -> dict:
    from captioner.training import TrainConfig, train

    config = TrainConfig(
        data=str(work / "wds"),
        output=str(work / f"run-{time.time_ns()}"),
        encoder=TINY,
        encoder_weights=None,
        cache_dir=str(work / "cache"),
        epochs=epochs,
        patience=epochs,  # every epoch runs, improving or not
        batch_size=batch_size,
        units=units,
        embedding_dim=units,
        min_word_count=1,
        max_length=16,
    )
    started = time.perf_counter()
    train(config, progress=False)
    history = json.loads((Path(config.output) / "train_config.json").read_text())
    return {"seconds": time.perf_counter() - started, "batch_size": history["batch_size"]}


def run_phase(args: argparse.Namespace) -> None:
    register_tiny_encoder()
    work = Path(args.work)
    result = phase_extract(work, args.batch_size) if args.phase == "extract" else phase_train(work, args.units, args.train_batch_size, args.epochs)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32, help="side of the synthetic JPEGs")
    parser.add_argument("--batch-size", type=int, default=256, help="encoder batch")
    parser.add_argument("--train-batch-size", type=int, default=256)
    parser.add_argument("--units", type=int, default=64, help="decoder width (embedding too)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the shards and stores (default: a new temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--no-control", dest="control", action="store_false", help="skip the control run (the smallest set trained for as many steps as the largest)"
    )
    parser.add_argument("--phase", choices=("extract", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    info = _common.print_machine()
    root = args.work or Path(tempfile.mkdtemp(prefix="scale_memory-"))
    results: dict[int, dict] = {}
    for n in args.sizes:
        work = root / f"n{n}"
        started = time.perf_counter()
        if not (work / "wds").is_dir():
            _shards.write_shards(work / "wds", n, args.per_shard, args.size)
        results[n] = {"write_seconds": time.perf_counter() - started}
        for phase in ("extract", "train"):
            results[n][phase] = run_step(args, work, phase)
            print(f"{n:,} images, {phase}: peak RSS {results[n][phase]['peak_rss_mib']:.1f} MiB in {results[n][phase]['seconds']:.0f} s", flush=True)
    sizes = sorted(args.sizes)
    control = None
    if args.control and len(sizes) >= 2:
        epochs = round(sizes[-1] / sizes[0])
        control = run_step(args, root / f"n{sizes[0]}", "train", epochs)
        print(f"{sizes[0]:,} images x {epochs} epochs (control), train: peak RSS {control['peak_rss_mib']:.1f} MiB in {control['seconds']:.0f} s", flush=True)
    rows = []
    for phase in ("extract", "train"):
        for n in args.sizes:
            rows.append([phase, f"{n:,}", results[n][phase]["peak_rss_mib"], results[n][phase]["seconds"], n / results[n][phase]["seconds"]])
    if control is not None:
        rows.append(
            [
                f"train, {control['epochs']} epochs",
                f"{sizes[0]:,}",
                control["peak_rss_mib"],
                control["seconds"],
                sizes[0] * control["epochs"] / control["seconds"],
            ]
        )
    _common.print_table(["step", "images", "peak RSS MiB", "seconds", "images/s"], rows, title=f"bench_tiny encoder (32 px), {args.per_shard} images per shard")
    pairs = list(itertools.pairwise(sizes)) + ([(sizes[0], sizes[-1])] if len(sizes) > 2 else [])
    for phase in ("extract", "train"):
        for small, large in pairs:
            grow = results[large][phase]["peak_rss_mib"] - results[small][phase]["peak_rss_mib"]
            share = 100 * grow / results[small][phase]["peak_rss_mib"]
            per_image = grow * 2**20 / (large - small)
            print(f"{phase}: {small:,} -> {large:,} images: peak RSS {grow:+.1f} MiB ({share:+.1f} %, {per_image:+.1f} bytes per added image)")
    if control is not None:
        grow = results[sizes[-1]]["train"]["peak_rss_mib"] - control["peak_rss_mib"]
        per_image = grow * 2**20 / (sizes[-1] - sizes[0])
        print(
            f"train: {sizes[-1]:,} images x 1 epoch vs {sizes[0]:,} x {control['epochs']} epochs (as many steps): peak RSS {grow:+.1f} MiB "
            f"({100 * grow / control['peak_rss_mib']:+.1f} %, {per_image:+.1f} bytes per added image)"
        )
    if args.json:
        summary = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "results": results, "control": control}
        args.json.write_text(json.dumps(summary, indent=2))


def run_step(args: argparse.Namespace, work: Path, phase: str, epochs: int = 1) -> dict:
    """Runs one step in a fresh process; returns its RESULT (peak RSS, seconds, ...)."""
    command = [sys.executable, __file__, "--phase", phase, "--work", str(work), "--batch-size", str(args.batch_size), "--epochs", str(epochs)]
    command += ["--train-batch-size", str(args.train_batch_size), "--units", str(args.units)]
    done = subprocess.run(command, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"{phase} in {work} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(line[len("RESULT ") :]), "epochs": epochs}


if __name__ == "__main__":
    main()
