"""The `captioner` command: caption, train, extract, evaluate.

Every expected failure (a missing file, an image that is not one, a folder that is not a model)
prints one line and exits non-zero; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

EXIT_ERROR = 1
EXIT_USAGE = 2

# Settings of `captioner train --preset NAME`; any flag given on the command line wins.
PRESETS: dict[str, dict] = {
    # The shipped model. Chosen on the Flickr8k dev split (README, "How the shipped model was chosen").
    "flickr8k": {
        "encoder": "efficientnet_lite2",
        "min_word_count": 5,
        "max_length": 40,
        "embedding_dim": 256,
        "units": 256,
        "dropout": 0.5,
        "batch_size": 64,
        "epochs": 16,  # the shipped run's dev loss bottomed at epoch 16 (lr is 3.5e-5 by then)
        "learning_rate": 1e-3,
        "lr_decay": 0.8,
        "label_smoothing": 0.1,
        "patience": 3,
        "seed": 0,
    },
}


def _add_caption(sub) -> None:
    from captioner.decoding import DEFAULT_BEAM_SIZE

    p = sub.add_parser("caption", help="caption images (files or folders)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped Flickr8k model)")
    p.add_argument("--beam-size", type=int, default=None, help=f"beam width; 1 is greedy (default: {DEFAULT_BEAM_SIZE}, tuned on Flickr8k dev)")
    p.add_argument("--num-captions", type=int, default=1, help="show the N best captions with scores")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object per image")


def _add_train(sub) -> None:
    from captioner.training import TrainConfig

    p = sub.add_parser("train", help="train a captioner on a dataset")
    p.add_argument("--preset", choices=sorted(PRESETS), help="tuned settings, e.g. flickr8k")
    p.add_argument("--data", help="dataset folder or file (Flickr8k, Kaggle captions.txt, Karpathy JSON, CSV, JSONL)")
    p.add_argument("--output", help="run directory for checkpoints and the model (default: runs/<preset or 'run'>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--export", type=Path, help="copy the best model here when training ends")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("data", "output"):
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(field.type), str)
        p.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None, help=f"(default: {field.default})")


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="cache encoder features for a dataset or a folder of images")
    p.add_argument("--data", required=True, help="dataset folder/file, or a folder of images")
    p.add_argument("--encoder", default=None, help="encoder name (see `captioner encoders`)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--spatial", action="store_true", help="store the spatial grid (for attention models)")
    p.add_argument("--cache-dir", default=None, help="cache root (default: ~/.cache/captioner)")


def _add_evaluate(sub) -> None:
    from captioner.decoding import DEFAULT_BEAM_SIZE

    p = sub.add_parser("evaluate", help="score a model with BLEU, METEOR, ROUGE-L, CIDEr-D (coco-caption)")
    p.add_argument("model", type=Path, nargs="?", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--data", required=True, help="dataset folder or file")
    p.add_argument("--split", default="dev", help="split to score (default: %(default)s)")
    p.add_argument("--beam-size", type=int, default=None, help=f"beam width; 1 is greedy (default: {DEFAULT_BEAM_SIZE})")
    p.add_argument("--limit-images", type=int, default=None, help="score only the first N images")
    p.add_argument("--output-dir", type=Path, default=None, help="where to write metrics.json and captions.json (default: runs/eval/<model>-<split>-beam<K>)")
    p.add_argument("--no-java", action="store_true", help="skip the Java-based PTB tokenizer and METEOR")
    p.add_argument("--batch-size", type=int, default=64)


def build_parser() -> argparse.ArgumentParser:
    from captioner import __version__

    parser = argparse.ArgumentParser(prog="captioner", description="Image captioning: CNN encoder + LSTM decoder.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_caption(sub)
    _add_train(sub)
    _add_extract(sub)
    _add_evaluate(sub)
    sub.add_parser("encoders", help="list the available image encoders")
    return parser


def _image_paths(inputs: list[Path]) -> list[Path]:
    from captioner.images import list_images

    paths = []
    for item in inputs:
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise FileNotFoundError(f"{item}: no images in this folder (looked for .jpg, .jpeg, .png, .bmp, .webp)")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return paths


def cmd_caption(args) -> int:
    from captioner.decoding import DEFAULT_BEAM_SIZE
    from captioner.pipeline import Captioner

    paths = _image_paths(args.images)
    beam_size = args.beam_size or (DEFAULT_BEAM_SIZE if args.num_captions == 1 else max(args.num_captions, DEFAULT_BEAM_SIZE))
    captioner = Captioner(args.model)
    failures = 0
    for path, result in captioner.caption_files(paths, beam_size, args.num_captions, args.batch_size):
        if isinstance(result, Exception):
            failures += 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(result)}))
            else:
                print(f"error: {result}", file=sys.stderr)
            continue
        if args.json:
            hyps = [{"caption": h.caption, "log_prob": round(h.log_prob, 4), "score": round(h.score, 4)} for h in result]
            print(json.dumps({"image": str(path), "caption": result[0].caption, **({"captions": hyps} if args.num_captions > 1 else {})}))
        elif args.num_captions > 1:
            print(f"{path}:")
            for rank, h in enumerate(result, 1):
                print(f"  {rank}. {h.caption}  (score {h.score:.3f}, log-prob {h.log_prob:.3f})")
        else:
            prefix = f"{path}: " if len(paths) > 1 else ""
            print(f"{prefix}{result[0].caption}")
    return EXIT_ERROR if failures == len(paths) or (failures and len(paths) == 1) else 0


def cmd_train(args) -> int:
    from captioner.training import TrainConfig, train

    settings = dict(PRESETS.get(args.preset, {}))
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            settings[field.name] = value
    if not args.data and not args.resume:
        raise ValueError("--data is required (a Flickr8k folder, captions.txt, Karpathy JSON, CSV or JSONL)")
    if settings.get("encoder_weights") is not None and settings["encoder_weights"].lower() in ("none", "random"):
        settings["encoder_weights"] = None  # random encoder weights: for tests and smoke runs only
    settings.setdefault("output", f"runs/{args.preset or 'run'}")
    settings.setdefault("data", args.data or "")
    config = TrainConfig(**settings)
    model_dir = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"best model: {model_dir}")
    if args.export:
        if args.export.exists():
            shutil.rmtree(args.export)
        shutil.copytree(model_dir, args.export)
        print(f"exported to {args.export}")
    return 0


def cmd_extract(args) -> int:
    from captioner.data import DatasetError, load_dataset
    from captioner.features import DEFAULT_ENCODER, FeatureCache, default_cache_dir
    from captioner.images import list_images

    encoder = args.encoder or DEFAULT_ENCODER
    data = Path(args.data)
    try:
        dataset = load_dataset(data)
        images = {key: dataset.image_path(key) for key in dataset.captions}
        image_dir = dataset.image_dir
    except DatasetError:
        if not data.is_dir():
            raise
        images = {p.name: p for p in list_images(data)}
        image_dir = data
    if not images:
        raise FileNotFoundError(f"{data}: no images found")
    cache = FeatureCache(default_cache_dir(image_dir, encoder, args.spatial, root=args.cache_dir), encoder, spatial=args.spatial)
    report = cache.update(images, batch_size=args.batch_size)
    print(f"{report}; cache: {cache.directory} ({len(cache)} images)")
    return 0


def cmd_evaluate(args) -> int:
    from captioner.decoding import DEFAULT_BEAM_SIZE
    from captioner.report import evaluate_model

    beam_size = args.beam_size or DEFAULT_BEAM_SIZE
    result, output_dir = evaluate_model(
        args.model, args.data, args.split, beam_size=beam_size, limit_images=args.limit_images,
        output_dir=args.output_dir, use_java=False if args.no_java else None, batch_size=args.batch_size,
    )
    print(result.format_table(title=f"{args.split} split, beam size {beam_size}"))
    print(f"wrote {output_dir}/metrics.json and {output_dir}/captions.json")
    return 0


def cmd_encoders(args) -> int:
    from captioner.encoders import available_encoders, encoder_info

    for name in available_encoders():
        info = encoder_info(name)
        print(f"{name:20s} input {info.input_size}px  feature {info.feature_dim}  grid {info.grid_size}x{info.grid_size}  preprocessing {info.preprocessing}")
    return 0


COMMANDS = {"caption": cmd_caption, "train": cmd_train, "extract": cmd_extract, "evaluate": cmd_evaluate, "encoders": cmd_encoders}


def main(argv: list[str] | None = None) -> int:
    import captioner  # noqa: F401  (sets quiet TensorFlow logging before anything imports it)

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line for users; --debug for developers
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"captioner: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
