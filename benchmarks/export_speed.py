"""Exported models against the Python path: one-image latency, batch throughput, and parity.

Exports the model (default: the shipped one) as a SavedModel and as TFLite flatbuffers into a
temporary folder (the export times are reported), loads all three in this process, and on
Flickr8k dev images measures, taking turns image by image (or batch by batch) so a busy machine
slows all three alike:

(a) Latency of one image, end to end from the file's bytes (decode, squash, encode, beam search):
    - Python path: `Captioner(model, name_objects=False).caption(data, beam_size=K)` (Pillow, Keras encoder, compiled search);
    - SavedModel: `signatures["serving_default"](image_bytes=[data])`, everything in one graph;
    - TFLite: `TFLiteCaptioner(export).caption(data, beam_size=K)` (Pillow, image.tflite, NumPy
      search over step.tflite).
    Median and 90th percentile over `--images` images, after `--warmup` untimed calls.
(b) Throughput: `--batches` batches of `--batch-size` images, bytes in, captions out (Python:
    `load` each image, then `caption_arrays`; TFLite likewise; SavedModel: one call per batch).
(c) With `--parity N`: on the first N dev images, how many captions of each export equal the
    Python path's (same beam), and how close in-graph decoding and resizing come to Pillow's
    pixels (mean absolute difference over all values, 0-255, and the share of values that
    differ) for every resize tried; the export uses the last one ("two passes, 8-bit between").

Usage:
    python benchmarks/export_speed.py [--model DIR] [--beam-size 5] [--images 30] [--parity 200] [--json out.json]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import _common


def latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"median_ms": _common.median(ms), "p90_ms": _common.percentile(ms, 90)}


def resize_methods(size: int) -> dict:
    """Name -> function (H, W, 3) float32 image tensor -> (size, size, 3) float32 before rounding."""
    import tensorflow as tf

    from captioner.export import preprocess

    def resize(method: str, antialias: bool):
        return lambda image: tf.image.resize(image, [size, size], method, antialias=antialias)

    def two_pass(image):
        shape = tf.cast(tf.shape(image), tf.float32)
        return preprocess.squash(tf.cast(image, tf.uint8), tf.stack([shape[1], shape[0]]), size)

    return {
        "bilinear": resize("bilinear", False),
        "bilinear, antialias": resize("bilinear", True),
        "area": resize("area", False),
        "bicubic, antialias": resize("bicubic", True),
        "lanczos5, antialias": resize("lanczos5", True),
        "lanczos3": resize("lanczos3", False),
        "lanczos3, antialias (one pass)": resize("lanczos3", True),
        "lanczos3, antialias, two passes, 8-bit between (exported)": two_pass,
    }


def pixel_parity(data: list[bytes], size: int) -> list[dict]:
    """Mean |in-graph - Pillow| over every value of every image, per decode and resize method."""
    import numpy as np
    import tensorflow as tf

    from captioner.images import load_image

    expected = [load_image(d, size).astype(np.float32) for d in data]
    rows = []
    for dct in ("INTEGER_ACCURATE", "INTEGER_FAST"):
        for name, method in resize_methods(size).items():
            if dct == "INTEGER_FAST" and "exported" not in name:
                continue

            @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
            def pixels(contents, method=method, dct=dct):
                image = tf.cast(tf.io.decode_jpeg(contents, channels=3, dct_method=dct), tf.float32)
                return tf.clip_by_value(tf.floor(tf.cast(method(image), tf.float32) + 0.5), 0.0, 255.0)

            differences = np.stack([np.abs(pixels(tf.constant(d)).numpy() - e) for d, e in zip(data, expected)])
            rows.append(
                {
                    "decode": f"decode_jpeg {dct}",
                    "resize": name,
                    "mean_abs_difference": float(differences.mean()),
                    "values_differing": float((differences > 0).mean()),
                    "max_difference": float(differences.max()),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=_common.DEFAULT_MODEL, help="trained captioner directory")
    parser.add_argument("--beam-size", type=int, default=5, help="beam width for all three (1: greedy)")
    parser.add_argument("--images", type=int, default=30, help="images timed one by one")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3, help="timed batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--parity", type=int, default=0, metavar="N", help="compare captions and pixels on the first N dev images (0: skip)")
    parser.add_argument("--tflite-threads", type=int, default=os.cpu_count(), help="TFLite interpreter threads")
    parser.add_argument("--quantize", action="store_true", help="also time a dynamic-range quantized TFLite export")
    args = parser.parse_args(argv)
    machine = _common.print_machine()

    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one traced function per resize method is intended, not "retracing"

    from captioner.data import load_dataset
    from captioner.export.savedmodel import export_savedmodel
    from captioner.export.tflite import TFLiteCaptioner, export_tflite
    from captioner.pipeline import Captioner

    dataset = load_dataset(args.data)
    dev = [dataset.image_path(k) for k in dataset.split_images("dev")]
    needed = max(args.images + args.warmup, args.batch_size * (args.batches + 1), args.parity)
    if needed > len(dev):
        sys.exit(f"the dev split has {len(dev)} images, {needed} needed")
    data = [p.read_bytes() for p in dev[:needed]]  # in memory: no disk in the timings

    workdir = Path(tempfile.mkdtemp(prefix="export-speed-"))
    exports = {}
    with _common.Timer() as t:
        saved_dir = export_savedmodel(args.model, workdir / "savedmodel", beam_size=args.beam_size)
    exports["SavedModel"] = t.seconds
    with _common.Timer() as t:
        tflite_dir = export_tflite(args.model, workdir / "tflite", beam_size=args.beam_size)
    exports["TFLite"] = t.seconds
    if args.quantize:
        with _common.Timer() as t:
            quantized_dir = export_tflite(args.model, workdir / "tflite-int8", beam_size=args.beam_size, quantize=True)
        exports["TFLite (int8 weights)"] = t.seconds
    sizes = {name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2**20 for name, d in [("SavedModel", saved_dir), ("TFLite", tflite_dir)]}
    print(
        f"exports: SavedModel {exports['SavedModel']:.1f} s ({sizes['SavedModel']:.1f} MiB), TFLite {exports['TFLite']:.1f} s ({sizes['TFLite']:.1f} MiB)",
        file=sys.stderr,
    )

    python = Captioner(args.model, name_objects=False)  # the exports carry the decoder's own search, not the object naming
    saved = tf.saved_model.load(str(saved_dir)).signatures["serving_default"]
    tflite = TFLiteCaptioner(tflite_dir, num_threads=args.tflite_threads)
    beam = args.beam_size

    def run_python(batch: list[bytes]) -> list[str]:
        images = np.stack([python.load(d) for d in batch])
        return [h[0].caption for h in python.caption_arrays(images, beam_size=beam)]

    def run_saved(batch: list[bytes]) -> list[str]:
        return [c.decode() for c in saved(image_bytes=tf.constant(batch))["captions"].numpy()]

    def run_tflite(batch: list[bytes], captioner=tflite) -> list[str]:
        images = np.stack([captioner.load(d) for d in batch])
        return [h[0].caption for h in captioner.caption_arrays(images, beam_size=beam)]

    paths = {"Python path (Keras + tf.function search)": run_python, "SavedModel (all in graph)": run_saved, "TFLite (+ NumPy search)": run_tflite}
    if args.quantize:
        quantized = TFLiteCaptioner(quantized_dir, num_threads=args.tflite_threads)
        paths["TFLite, int8 weights (+ NumPy search)"] = lambda batch: run_tflite(batch, quantized)

    # (a) one image at a time
    for d in data[-args.warmup :]:
        for run in paths.values():
            run([d])
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for d in data[: args.images]:
        for name, run in paths.items():
            started = time.perf_counter()
            run([d])
            seconds[name].append(time.perf_counter() - started)

    # (b) batches
    batches = [data[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.batches + 1)]
    for run in paths.values():
        run(batches[-1])  # warm-up at this batch size
    batch_seconds = dict.fromkeys(paths, 0.0)
    for batch in batches[:-1]:
        for name, run in paths.items():
            started = time.perf_counter()
            run(batch)
            batch_seconds[name] += time.perf_counter() - started

    results = []
    for name in paths:
        row = {"path": name, **latency_summary(seconds[name]), "images_per_s": args.batches * args.batch_size / batch_seconds[name]}
        results.append(row)
    search = f"beam {beam}" if beam > 1 else "greedy"
    _common.print_table(
        ["path", "1 image: median ms", "1 image: p90 ms", f"batch {args.batch_size}: images/s"],
        [[r["path"], r["median_ms"], r["p90_ms"], r["images_per_s"]] for r in results],
        title=f"Captioning JPEG bytes end to end ({search}), {machine['cpus']} CPUs, load average {_common.machine()['load_average_1min']} at the end; "
        f"{args.images} images one by one, {args.batches} batches of {args.batch_size}",
    )
    output: dict = {
        "benchmark": "export_speed",
        "model": str(args.model),
        "beam_size": beam,
        "export_seconds": exports,
        "export_mib": sizes,
        "results": results,
    }

    # (c) parity
    if args.parity:
        subset = data[: args.parity]
        chunks = [subset[i : i + 16] for i in range(0, len(subset), 16)]
        reference = [python.caption(d, beam_size=beam)[0].caption for d in subset]  # one image per call, as `captioner caption`
        got = {
            "SavedModel": [c for chunk in chunks for c in run_saved(chunk)],
            "TFLite": [tflite.caption(d, beam_size=beam)[0].caption for d in subset],
        }
        if args.quantize:
            got["TFLite, int8 weights"] = [quantized.caption(d, beam_size=beam)[0].caption for d in subset]
        parity = {name: sum(a == b for a, b in zip(captions, reference)) for name, captions in got.items()}
        _common.print_table(
            ["export", "captions equal to the Python path's", "share"],
            [[name, f"{same} of {len(subset)}", f"{100 * same / len(subset):.1f} %"] for name, same in parity.items()],
            title=f"Caption parity on the first {len(subset)} Flickr8k dev images ({search})",
        )
        for name, captions in got.items():
            for a, b, path in zip(captions, reference, dev):
                if a != b:
                    print(f"  {name} differs on {path.name}: {a!r} vs Python {b!r}")
        pixels = pixel_parity(subset, python.input_size)
        _common.print_table(
            ["decode", "resize to the encoder's size", "mean |diff| (0-255)", "values differing", "max diff"],
            [[r["decode"], r["resize"], f"{r['mean_abs_difference']:.4f}", f"{100 * r['values_differing']:.3f} %", r["max_difference"]] for r in pixels],
            title=f"In-graph pixels against Pillow's (load_image), {len(subset)} dev images squashed to {python.input_size}",
        )
        # The dev images are 224 x 224, so they are enlarged to the encoder's size, where antialiasing
        # does nothing; the example photos (451 to 600 pixels wide) are reduced.
        examples = sorted((_common.REPO_ROOT / "examples").glob("*.jpg"))
        reduced = pixel_parity([p.read_bytes() for p in examples], python.input_size)
        _common.print_table(
            ["decode", "resize to the encoder's size", "mean |diff| (0-255)", "values differing", "max diff"],
            [[r["decode"], r["resize"], f"{r['mean_abs_difference']:.4f}", f"{100 * r['values_differing']:.3f} %", r["max_difference"]] for r in reduced],
            title=f"The same on the {len(examples)} example photos (examples/*.jpg, reduced to {python.input_size})",
        )
        output["parity"] = {"images": len(subset), "equal_captions": parity, "pixels": pixels, "pixels_examples": reduced}
    _common.write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
