"""Captioning speed from a JPEG: the default model against the merge model and the seed's way, and folder throughput.

(a) Latency of one photo, end to end (read and squash the JPEG, encode it, search), on Flickr8k
    dev images, after warm-up calls on other images, with `captioner.pipeline.Captioner.caption`:
    - the default model (`--model`, the shipped attention model) at the default beam;
    - the merge model (`--merge-model`, the shipped `flickr8k-merge`) at the default beam and greedy;
    the two models alternate image by image so that both see the same machine load. Also split
    into load / encode / decode medians;
    - seed: the merge model's load and encode, then `captioner.tutorial.generate_desc_by_prefix`,
      the seed's loop calling `model.predict` on the whole padded prefix once per word, on a
      `captioner.tutorial.define_model` model carrying the merge decoder's weights (copied by
      variable name). It is slow, so it runs on the first `--seed-images` images only; its
      captions are compared with the merge model's plain greedy ones (they should agree).
Both models run as `Captioner` does by default, naming objects (`captioner.objects`).
(b) Throughput captioning a folder with the default model: `Captioner.caption_files(paths,
    batch_size=...)` at the default beam, over `--folder-images` dev images, after a warm-up batch.

Usage:
    python benchmarks/caption_speed.py [--model DIR] [--merge-model DIR] [--images 50] [--seed-images 10]
"""

from __future__ import annotations

import sys
from pathlib import Path

import _common

TARGET_SLOWDOWN = 1.5  # the default model within 1.5x of the merge model's latency, both at the default beam
TARGET_RATIO = 20.0  # the default model at least 20x faster than the seed's way


def latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"images": len(ms), "median_ms": _common.median(ms), "p90_ms": _common.percentile(ms, 90), "mean_ms": sum(ms) / len(ms)}


def main(argv: list[str] | None = None) -> dict:
    from captioner import defaults

    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=_common.DEFAULT_MODEL, help="the default model (default: the shipped default)")
    parser.add_argument("--merge-model", type=Path, default=Path("flickr8k-merge"), help="a merge model (default: the shipped flickr8k-merge)")
    parser.add_argument("--images", type=int, default=50, help="images timed one by one with each model")
    parser.add_argument("--seed-images", type=int, default=10, help="images timed one by one, the seed's way")
    parser.add_argument("--folder-images", type=int, default=300, help="images captioned as a folder")
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
        default, merge = Captioner(args.model), Captioner(args.merge_model)
    except ModelDirError as err:
        sys.exit(f"{err}\n(train one with `captioner train` and pass --model DIR)")
    config = merge.config.decoder
    if config.decoder != "merge":
        sys.exit(f"model {args.merge_model} has a {config.decoder!r} decoder; the seed's way (define_model) needs a merge decoder")
    for name, captioner in (("default", default), ("merge", merge)):
        print(f"{name} model {captioner.model_dir}: {captioner.config.decoder.decoder} decoder, encoder {captioner.config.encoder}", file=sys.stderr)
    beam = defaults.BEAM_SIZE

    # (a) one image at a time, the models alternating image by image
    runs = {"default": (default, beam), "merge": (merge, beam), "merge greedy": (merge, 1)}
    for captioner, beam_size in runs.values():
        for path in warm:
            captioner.caption(path, beam_size=beam_size)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for path in timed:
        for name, (captioner, beam_size) in runs.items():
            with _common.Timer() as t:
                captioner.caption(path, beam_size=beam_size)
            seconds[name].append(t.seconds)
    parts: dict[str, dict[str, list[float]]] = {"default": {"load": [], "encode": [], "decode": []}, "merge": {"load": [], "encode": [], "decode": []}}
    for path in timed:
        for name in parts:
            captioner = runs[name][0]
            with _common.Timer() as load:
                image = captioner.load(path)
            with _common.Timer() as encode:
                features = captioner.features(image[None])
            with _common.Timer() as decode:
                captioner.search.caption(features, beam_size=beam)
            for part, t in (("load", load), ("encode", encode), ("decode", decode)):
                parts[name][part].append(t.seconds * 1000)

    # (a) the seed's way: same load and encode, then one model.predict per word
    seed_model = define_model(config.vocab_size, config.max_length, config.feature_dim, config.embedding_dim, config.units)
    trained = merge.decoder.variable_names()
    for name, variable in seed_model.decoder.variable_names().items():
        variable.assign(trained[name])

    def seed_caption(path: Path) -> str:
        features = merge.features(merge.load(path)[None])
        text = generate_desc_by_prefix(seed_model, merge.vocab, features, config.max_length)
        return " ".join(w for w in text.split() if w not in (START, END))

    for path in warm[:1]:
        seed_caption(path)
    seed_seconds, agree = [], 0
    plain = Captioner(args.merge_model, name_objects=False)  # the seed's loop knows no object naming
    plain_greedy = [plain.caption(path, beam_size=1)[0].caption for path in timed[: args.seed_images]]
    for path, greedy in zip(timed[: args.seed_images], plain_greedy):
        with _common.Timer() as t:
            caption = seed_caption(path)
        seed_seconds.append(t.seconds)
        agree += caption == greedy
    print(f"seed's way: {_common.median(seed_seconds) * 1000:.0f} ms per caption", file=sys.stderr)

    # (b) a folder, in batches, with the default model
    folder = dev[: args.folder_images]
    for _ in default.caption_files(dev[-args.batch_size :], beam_size=beam, batch_size=args.batch_size):
        pass
    with _common.Timer() as folder_time:
        done = sum(1 for _ in default.caption_files(folder, beam_size=beam, batch_size=args.batch_size))

    summary = {name: latency_summary(s) for name, s in seconds.items()}
    seed = latency_summary(seed_seconds)
    slowdown = summary["default"]["median_ms"] / summary["merge"]["median_ms"]
    ratio = seed["median_ms"] / summary["default"]["median_ms"]
    machine = _common.machine()
    labels = {
        "default": f"default ({default.config.decoder.decoder}), beam {beam}",
        "merge": f"merge, beam {beam}",
        "merge greedy": "merge, greedy",
    }
    rows = [[labels[name], s["images"], s["median_ms"], s["p90_ms"], s["mean_ms"]] for name, s in summary.items()]
    rows.append(["seed: generate_desc_by_prefix (merge, predict per word)", seed["images"], seed["median_ms"], seed["p90_ms"], seed["mean_ms"]])
    _common.print_table(
        ["model, search", "images", "median ms", "p90 ms", "mean ms"],
        rows,
        title=f"(a) One JPEG to a caption, {machine['cpus']} CPUs (load average {machine['load_average_1min']} at the end)",
    )
    _common.print_table(
        ["model, part", "median ms", "p90 ms"],
        [[f"{name}: {part}", _common.median(v), _common.percentile(v, 90)] for name, by_part in parts.items() for part, v in by_part.items()],
        title=f"Timed again part by part on the same images (beam {beam})",
    )
    print(f"\nseed's captions equal to the merge model's plain greedy ones (no object naming): {agree} of {len(seed_seconds)}")
    _common.print_table(
        ["method", "images", "batch size", "seconds", "images/s"],
        [[f"default: Captioner.caption_files (beam {beam})", done, args.batch_size, folder_time.seconds, done / folder_time.seconds]],
        title="(b) Captioning a folder",
    )
    verdict = {True: "met", False: "NOT met"}
    print(f"\ntarget: default within {TARGET_SLOWDOWN}x of merge (beam {beam}): {slowdown:.2f}x -> {verdict[slowdown <= TARGET_SLOWDOWN]}")
    print(f"target: default >= {TARGET_RATIO:.0f}x faster than the seed's way: {ratio:.1f}x -> {verdict[ratio >= TARGET_RATIO]}")
    output = {
        "benchmark": "caption_speed",
        "model": str(default.model_dir),
        "merge_model": str(merge.model_dir),
        "beam_size": beam,
        "single_image": {
            **summary,
            "seed": seed,
            "default_over_merge": slowdown,
            "seed_over_default": ratio,
            "seed_agrees_with_merge_greedy": agree,
            "parts_median_ms": {name: {k: _common.median(v) for k, v in by_part.items()} for name, by_part in parts.items()},
        },
        "folder": {"images": done, "batch_size": args.batch_size, "seconds": folder_time.seconds, "images_per_s": done / folder_time.seconds},
    }
    _common.write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
