"""Captioning speed from a JPEG: single-image latency (ours against the seed's way) and folder throughput.

(a) Latency of one photo, end to end (read and squash the JPEG, encode it, greedy decode), on
    Flickr8k dev images, after warm-up calls on other images:
    - ours: `captioner.pipeline.Captioner(model).caption(path, beam_size=1)`, over `--images`
      images; also split into load / encode / decode medians;
    - seed: the same load and encode, then `captioner.tutorial.generate_desc_by_prefix`, the
      seed's loop calling `model.predict` on the whole padded prefix once per word, on a
      `captioner.tutorial.define_model` model carrying the same trained decoder weights (copied
      by variable name; the model must have a merge decoder). It is slow, so it runs on
      the first `--seed-images` images only. The captions of both are compared (they should agree).
(b) Throughput captioning a folder: `Captioner.caption_files(paths, batch_size=...)`, greedy, over
    `--folder-images` dev images (loading on a worker thread overlaps encoding), after a warm-up batch.

Usage:
    python benchmarks/caption_speed.py [--model DIR] [--images 50] [--seed-images 10]

The default model is the shipped one (`captioner.defaults.default_model_dir()`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import _common

TARGET_MS = 100.0  # ours: median latency under 100 ms
TARGET_RATIO = 20.0  # ours at least 20x faster than the seed's way


def latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"images": len(ms), "median_ms": _common.median(ms), "p90_ms": _common.percentile(ms, 90), "mean_ms": sum(ms) / len(ms)}


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=_common.DEFAULT_MODEL, help="trained captioner directory")
    parser.add_argument("--images", type=int, default=50, help="images timed one by one, ours")
    parser.add_argument("--seed-images", type=int, default=10, help="images timed one by one, the seed's way")
    parser.add_argument("--folder-images", type=int, default=500, help="images captioned as a folder")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch when captioning a folder")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each timing")
    args = parser.parse_args(argv)
    _common.print_machine()

    from captioner.artifacts import ModelDirError
    from captioner.data import load_dataset
    from captioner.pipeline import Captioner
    from captioner.tutorial import define_model, generate_desc_by_prefix
    from captioner.vocab import END, START

    dataset = load_dataset(args.data)
    dev = [dataset.image_path(k) for k in dataset.split_images("dev")]
    if args.folder_images > len(dev) or max(args.images, args.seed_images) + args.warmup > len(dev):
        sys.exit(f"the dev split has only {len(dev)} images")
    warm, timed = dev[-args.warmup :], dev[: args.images]
    for path in dev[: max(args.images, args.folder_images)]:  # read once: no cold disk cache in the timings
        path.read_bytes()

    try:
        captioner = Captioner(args.model)
    except ModelDirError as err:
        sys.exit(f"{err}\n(train one with `captioner train` and pass --model DIR)")
    config = captioner.config.decoder
    if config.decoder != "merge":
        sys.exit(f"model {args.model} has a {config.decoder!r} decoder; the seed's way (define_model) needs a merge decoder")
    print(f"model {args.model}: encoder {captioner.config.encoder}, vocabulary {config.vocab_size}, max length {config.max_length}", file=sys.stderr)

    # (a) ours, one image at a time
    for path in warm:
        captioner.caption(path, beam_size=1)
    ours_seconds, ours_captions = [], []
    for path in timed:
        with _common.Timer() as t:
            hypothesis = captioner.caption(path, beam_size=1)[0]
        ours_seconds.append(t.seconds)
        ours_captions.append(hypothesis.caption)
    parts: dict[str, list[float]] = {"load": [], "encode": [], "decode": []}
    for path in timed:
        with _common.Timer() as load:
            image = captioner.load(path)
        with _common.Timer() as encode:
            features = captioner.features(image[None])
        with _common.Timer() as decode:
            captioner.search.caption(features, beam_size=1)
        for name, t in (("load", load), ("encode", encode), ("decode", decode)):
            parts[name].append(t.seconds * 1000)

    # (a) the seed's way: same load and encode, then one model.predict per word
    seed_model = define_model(config.vocab_size, config.max_length, config.feature_dim, config.embedding_dim, config.units)
    trained = captioner.decoder.variable_names()
    for name, variable in seed_model.decoder.variable_names().items():
        variable.assign(trained[name])

    def seed_caption(path: Path) -> str:
        features = captioner.features(captioner.load(path)[None])
        text = generate_desc_by_prefix(seed_model, captioner.vocab, features, config.max_length)
        return " ".join(w for w in text.split() if w not in (START, END))

    for path in warm[:1]:
        seed_caption(path)
    seed_seconds, agree = [], 0
    for path, ours in zip(timed[: args.seed_images], ours_captions):
        with _common.Timer() as t:
            caption = seed_caption(path)
        seed_seconds.append(t.seconds)
        agree += caption == ours
    print(f"seed's way: {_common.median(seed_seconds) * 1000:.0f} ms per caption", file=sys.stderr)

    # (b) a folder, in batches
    folder = dev[: args.folder_images]
    for _ in captioner.caption_files(dev[-args.batch_size :], beam_size=1, batch_size=args.batch_size):
        pass
    with _common.Timer() as folder_time:
        done = sum(1 for _ in captioner.caption_files(folder, beam_size=1, batch_size=args.batch_size))

    ours, seed = latency_summary(ours_seconds), latency_summary(seed_seconds)
    ratio = seed["median_ms"] / ours["median_ms"]
    machine = _common.machine()
    _common.print_table(
        ["method", "images", "median ms", "p90 ms", "mean ms"],
        [
            ["ours: Captioner.caption (greedy)", ours["images"], ours["median_ms"], ours["p90_ms"], ours["mean_ms"]],
            ["seed: generate_desc_by_prefix (predict per word)", seed["images"], seed["median_ms"], seed["p90_ms"], seed["mean_ms"]],
        ],
        title=f"(a) One JPEG to a caption, {captioner.config.encoder}, {machine['cpus']} CPUs (load average {machine['load_average_1min']} at the end)",
    )
    _common.print_table(
        ["ours, part", "median ms", "p90 ms"],
        [[name, _common.median(v), _common.percentile(v, 90)] for name, v in parts.items()],
        title="Ours, timed again part by part on the same images",
    )
    print(f"\nseed's captions equal to ours: {agree} of {len(seed_seconds)}")
    _common.print_table(
        ["method", "images", "batch size", "seconds", "images/s"],
        [["Captioner.caption_files (greedy)", done, args.batch_size, folder_time.seconds, done / folder_time.seconds]],
        title="(b) Captioning a folder",
    )
    print(f"\ntarget: ours median < {TARGET_MS:.0f} ms: {ours['median_ms']:.1f} ms -> {'met' if ours['median_ms'] < TARGET_MS else 'NOT met'}")
    print(f"target: ours >= {TARGET_RATIO:.0f}x faster than the seed's way: {ratio:.1f}x -> {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    output = {
        "benchmark": "caption_speed",
        "model": str(args.model),
        "encoder": captioner.config.encoder,
        "single_image": {
            "ours": ours,
            "seed": seed,
            "seed_over_ours": ratio,
            "seed_agrees_with_ours": agree,
            "ours_parts_median_ms": {k: _common.median(v) for k, v in parts.items()},
        },
        "folder": {"images": done, "batch_size": args.batch_size, "seconds": folder_time.seconds, "images_per_s": done / folder_time.seconds},
    }
    _common.write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
