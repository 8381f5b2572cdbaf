"""The encoder on TensorFlow vs on LiteRT (XNNPACK): milliseconds per image, and whether the features agree.

For each encoder, in this one process: build it (`captioner.encoders.get_encoder`), convert it to
TFLite (`captioner.litert.convert`, timed, no cache), then on the same real Flickr8k images (or
random pixels with `--random`), alternating the two runtimes round by round so that machine load
hits both alike:

- TensorFlow: the encoder's compiled `tf.function` (what `CAPTIONER_ENCODER_RUNTIME=tensorflow` runs);
- LiteRT:     the converted flatbuffer on the XNNPACK delegate (the default), which takes a
              batch `captioner.litert.CHUNK` images per interpreter call.

Reported: median ms per image at each batch size, the speed-up, the conversion time, and the
largest absolute difference between the two runtimes' grids (and the largest grid value, for
scale). Xception is built with random weights (its ImageNet weights need a download; speed does
not depend on them).

Usage:
    python benchmarks/encoder_runtime.py [--encoders efficientnet_lite0 efficientnet_lite2] [--batch-sizes 1 8 32]
"""

from __future__ import annotations

import time

import numpy as np

import _common


def images_for(size: int, count: int, data, random: bool) -> np.ndarray:
    """(count, size, size, 3) uint8: Flickr8k images squashed to the encoder's size, or random pixels."""
    if random or not (data / "Images").is_dir():
        return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    from captioner.images import load_image

    paths = sorted((data / "Images").glob("*.jpg"))[:count]
    return np.stack([load_image(p, size) for p in paths])


def main() -> None:
    parser = _common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2", "xception"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per runtime and batch size")
    parser.add_argument("--random", action="store_true", help="random pixels instead of Flickr8k images")
    args = parser.parse_args()
    info = _common.print_machine()

    from captioner import litert
    from captioner.encoders import get_encoder

    rows, results = [], {}
    for name in args.encoders:
        encoder = get_encoder(name, weights=None if name == "xception" else "imagenet")
        started = time.perf_counter()
        lite = litert.LiteFunction(litert.convert(encoder._forward))
        convert_s = time.perf_counter() - started
        images = images_for(encoder.info.input_size, max(args.batch_sizes), args.data, args.random).astype(np.float32)
        runtimes = {"tensorflow": encoder._tf_forward, "litert": lite}
        grids = {r: f(images) for r, f in runtimes.items()}  # also the warm-up at the largest batch
        difference = float(np.abs(grids["tensorflow"] - grids["litert"]).max())
        scale = float(np.abs(grids["tensorflow"]).max())
        for batch in args.batch_sizes:
            x = images[:batch]
            for f in runtimes.values():
                f(x)  # warm-up at this batch size
            times: dict[str, list[float]] = {r: [] for r in runtimes}
            for _ in range(args.rounds):
                for r, f in runtimes.items():
                    t = time.perf_counter()
                    f(x)
                    times[r].append(1000 * (time.perf_counter() - t) / batch)
            tf_ms, lite_ms = _common.median(times["tensorflow"]), _common.median(times["litert"])
            rows.append([name, batch, tf_ms, lite_ms, f"{tf_ms / lite_ms:.2f}x"])
            results[f"{name}/{batch}"] = {"tensorflow_ms": tf_ms, "litert_ms": lite_ms}
        results[name] = {"convert_s": convert_s, "max_abs_difference": difference, "max_abs_value": scale}
        print(f"{name}: converted in {convert_s:.1f} s; grids differ by at most {difference:.2g} (values up to {scale:.2g})", flush=True)
    _common.print_table(["encoder", "batch", "TensorFlow ms/img", "LiteRT ms/img", "speed-up"], rows, title="median ms per image")
    _common.write_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
