"""The `captioner` command: caption, train, extract, evaluate, encoders.

Exit codes: 0 done; 1 a user's mistake (a missing file, an image that is not one, a folder that is
not a model, a bad flag value), printed as one line; 2 a command line argparse could not parse;
3 a bug (one line, `--debug` for the traceback); 130 interrupted.

`captioner --help` and argument errors answer without importing TensorFlow, and TensorFlow's C++
start-up lines never reach the terminal unless `--debug` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captioner import __version__, defaults
from captioner.console import quiet_native_stderr, setup_logging
from captioner.export import command as export_command  # flags only; TensorFlow loads when it runs
from captioner.flags import fraction, nonnegative_int, positive_float, positive_int
from captioner.serve import command as serve_command  # flags only; FastAPI and TensorFlow load when it runs

if TYPE_CHECKING:  # annotations only: the CLI imports TensorFlow lazily
    from captioner.data import CaptionDataset
    from captioner.decoding import Hypothesis
    from captioner.pipeline import Captioner

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130

log = logging.getLogger("captioner")


# --- flag values, checked at parse time ---------------------------------------------------------

_TRAIN_FLAG_TYPES = {
    "seed": nonnegative_int,
    "projection_dim": nonnegative_int,
    "dropout": fraction,
    "label_smoothing": fraction,
    "clip_norm": positive_float,
    "learning_rate": positive_float,
    "lr_decay": positive_float,
}


# --- the parser (no TensorFlow) -----------------------------------------------------------------------


def _add_objects_flag(p: argparse.ArgumentParser) -> None:
    """`--objects/--no-objects`, for the commands that caption (None: `Captioner`'s default)."""
    p.add_argument(
        "--objects",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="name the object the encoder's ImageNet classifier is sure of (default: on); --no-objects gives the plain caption",
    )


def _add_caption(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption images (files or folders)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory or shipped model name, see `captioner models` (default: the shipped default model, or $CAPTIONER_MODEL)",
    )
    p.add_argument("--beam-size", type=positive_int, default=None, help=f"beam width; 1 is greedy (default: {defaults.BEAM_SIZE}, tuned on Flickr8k dev)")
    p.add_argument("--num-captions", type=positive_int, default=1, help="show the N best captions with scores")
    p.add_argument("--batch-size", type=positive_int, default=defaults.CAPTION_BATCH_SIZE)
    p.add_argument("--recursive", action="store_true", help="also caption images in subfolders")
    p.add_argument("--strict", action="store_true", help="exit 1 if any image could not be read (default: report it and go on)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image, with its ImageNet tags (attention models: with their weights)")
    p.add_argument("--attention-map", type=Path, metavar="PNG", help="attention models, one image: write the photo with one heat map per word")
    _add_objects_flag(p)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from captioner.training.config import TrainConfig, available_presets

    p = sub.add_parser("train", help="train a captioner on a dataset")
    p.add_argument("--preset", choices=available_presets(), help="tuned settings from captioner/configs/, e.g. flickr8k")
    p.add_argument("--data", help="dataset folder or file (Flickr8k, Kaggle captions.txt, Karpathy JSON, CSV, JSONL)")
    p.add_argument("--output", help="run directory for checkpoints and the model (default: runs/<preset or 'run'>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --output from its last checkpoint, as it was configured (only --epochs may change)"
    )
    p.add_argument("--export", type=Path, help="copy the best model here when training ends (an empty folder, or an older model to replace)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")
    p.add_argument(
        "--workers", type=positive_int, default=1, help="train with N worker processes on this machine (MultiWorkerMirroredStrategy; see docs/scale-out.md)"
    )
    p.add_argument("--scst", action="store_true", help="self-critical training (CIDEr-D reward) starting from --init")
    p.add_argument("--init", type=Path, help="with --scst: the cross-entropy run (or model directory) to start from")
    p.add_argument("--scst-samples", type=positive_int, default=None, help="with --scst: captions sampled per image (default: 5)")
    p.add_argument(
        "--scst-baseline",
        choices=("mean", "greedy"),
        default=None,
        help="with --scst: mean reward of the other samples, or the greedy caption's (default: mean)",
    )
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("data", "output", "preset"):
            continue
        flag = f"--{field.name.replace('_', '-')}"
        if str(field.type) == "bool":
            p.add_argument(flag, action="store_true", default=None, help=f"(default: {field.default})")
            continue
        parsers: dict[str, Callable[[str], Any]] = {"int": positive_int, "int | None": positive_int, "float": positive_float}
        kind = _TRAIN_FLAG_TYPES.get(field.name) or parsers.get(str(field.type), str)
        p.add_argument(flag, type=kind, default=None, help=f"(default: {field.default})")


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="store encoder features for a dataset or a folder of images")
    p.add_argument("--data", required=True, help="dataset folder/file, or a folder of images")
    p.add_argument("--encoder", default=None, help=f"encoder name (see `captioner encoders`; default {defaults.ENCODER})")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--spatial", action="store_true", help="store the spatial grid (for attention models)")
    p.add_argument("--recursive", action="store_true", help="for a folder of images: include subfolders")
    p.add_argument("--cache-dir", default=None, help="store root (default: ~/.cache/captioner)")
    p.add_argument("--allow-outside-paths", action="store_true", help="let dataset rows name images outside the dataset folder")
    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="encode on a Ray cluster (default: the one running here, else a local one)",
    )
    p.add_argument("--ray-workers", type=positive_int, default=None, help="with --ray: encoder actors, one model each (default: one per node)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model with BLEU, METEOR, ROUGE-L, CIDEr-D (coco-caption)")
    p.add_argument("model", type=Path, nargs="?", default=None, help="model directory or shipped model name (default: the shipped default model)")
    p.add_argument("--data", required=True, help="dataset folder or file")
    p.add_argument("--split", default="dev", help="split to score (default: %(default)s)")
    p.add_argument("--beam-size", type=positive_int, default=defaults.BEAM_SIZE, help="beam width; 1 is greedy (default: %(default)s)")
    p.add_argument("--limit-images", type=positive_int, default=None, help="score only the first N images")
    p.add_argument("--output-dir", type=Path, default=None, help="where to write metrics.json and captions.json (default: runs/eval/<model>-<split>-beam<K>)")
    p.add_argument("--no-java", action="store_true", help="skip the Java-based PTB tokenizer and METEOR")
    _add_objects_flag(p)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--allow-outside-paths", action="store_true", help="let dataset rows name images outside the dataset folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Image captioning: CNN encoder + LSTM decoder.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's own log lines")
    parser.add_argument("--verbose", action="store_true", help="list every skipped dataset line, not just the first few")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    _add_caption(sub)
    _add_train(sub)
    _add_extract(sub)
    _add_evaluate(sub)
    sub.add_parser("encoders", help="list the available image encoders")
    p = sub.add_parser("models", help="list the shipped models and those trained here, with their model cards' summaries")
    p.add_argument("dirs", nargs="*", type=Path, help="where to look for trained models (default: ./runs)")
    serve_command.add_parser(sub)
    export_command.add_parser(sub)
    return parser


# --- commands -------------------------------------------------------------------------------------------


def _image_paths(inputs: list[Path], recursive: bool) -> list[Path]:
    from captioner.errors import FileError
    from captioner.images import scan_images

    paths = []
    for item in inputs:
        if item.is_dir():
            listing = scan_images(item, recursive=recursive)
            for path, reason in listing.skipped:
                log.warning("skipped %s: %s", path, reason)
            if listing.subfolders:
                log.warning("%s: %d subfolder(s) not searched (use --recursive)", item, listing.subfolders)
            if not listing.paths:
                raise FileError(item, "no images in this folder (looked for .jpg, .jpeg, .png, .bmp, .webp)")
            paths.extend(listing.paths)
        elif item.exists() or item.is_symlink():
            paths.append(item)
        else:
            raise FileError(item, "no such file or folder")
    return paths


def cmd_caption(args: argparse.Namespace) -> int:
    from captioner.errors import ArgumentError
    from captioner.pipeline import Captioner

    paths = _image_paths(args.images, args.recursive)
    beam_size = args.beam_size or max(args.num_captions, defaults.BEAM_SIZE)
    if args.attention_map and len(paths) != 1:
        raise ArgumentError(f"--attention-map draws one image; got {len(paths)}")
    captioner = Captioner(args.model, name_objects=args.objects)
    if args.attention_map:
        return _caption_with_attention_map(captioner, paths[0], beam_size, args)
    failures = 0
    for path, result in captioner.caption_files(paths, beam_size, args.num_captions, args.batch_size):
        if isinstance(result, Exception):
            failures += 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(result)}), flush=True)
            else:
                log.error("error: %s", result)
            continue
        if args.json:
            print(json.dumps(_json_row(path, result, args.num_captions)), flush=True)
        elif args.num_captions > 1:
            print(f"{path}:")
            for rank, h in enumerate(result, 1):
                print(f"  {rank}. {h.caption}  (score {h.score:.3f}, log-prob {h.log_prob:.3f})")
        else:
            prefix = f"{path}: " if len(paths) > 1 else ""
            print(f"{prefix}{result[0].caption}", flush=True)
    if failures and len(paths) > 1:
        log.warning("captioned %d of %d images; %d could not be read", len(paths) - failures, len(paths), failures)
    return EXIT_ERROR if failures == len(paths) or (failures and args.strict) else 0


def _json_row(path: Path, result: list[Hypothesis], num_captions: int) -> dict:
    row: dict[str, Any] = {"image": str(path), "caption": result[0].caption}
    if num_captions > 1:
        row["captions"] = [{"caption": h.caption, "log_prob": round(h.log_prob, 4), "score": round(h.score, 4)} for h in result]
    if result[0].tags is not None:
        row["tags"] = [tag.to_json() for tag in result[0].tags]
    if result[0].attention is not None:
        from captioner.viz import grid_side

        side = grid_side(result[0].attention.shape[1])
        row["attention"] = {"grid": [side, side], "words": result[0].caption.split(), "weights": result[0].attention.round(5).tolist()}
    return row


def _caption_with_attention_map(captioner: Captioner, path: Path, beam_size: int, args: argparse.Namespace) -> int:
    from captioner.errors import ArgumentError
    from captioner.viz import save_attention_figure

    if not captioner.search.attends:
        raise ArgumentError(f"--attention-map needs a model that attends; {captioner.model_dir} has a {captioner.config.decoder.decoder} decoder")
    image = captioner.load(path)
    result = captioner.caption_arrays(image[None], beam_size, args.num_captions)[0]
    assert result[0].attention is not None  # the search attends
    written = save_attention_figure(args.attention_map, image, result[0].caption.split(), result[0].attention)
    print(json.dumps(_json_row(path, result, args.num_captions)) if args.json else result[0].caption, flush=True)
    log.info("attention map: %s", written)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from captioner.artifacts import check_export_target, export_model
    from captioner.errors import ArgumentError
    from captioner.training import TrainConfig, load_preset, train

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("data", "output", "preset") and getattr(args, f.name, None) is not None
    }
    if args.scst or args.init:
        if args.workers > 1:
            raise ArgumentError("--workers is for cross-entropy training; self-critical training (--scst) runs in one process")
        return _train_scst(args, given)
    if args.resume:
        changed = sorted(set(given) - {"epochs"}) + (["preset"] if args.preset else [])
        if changed:
            raise ArgumentError(f"--resume continues the run as it was configured; --{changed[0].replace('_', '-')} cannot change (only --epochs may)")
        if not args.output:
            raise ArgumentError("--resume needs --output RUN (the run directory to continue)")
    elif not args.data:
        raise ArgumentError("--data is required (a Flickr8k folder, captions.txt, Karpathy JSON, CSV or JSONL)")
    if args.export:
        check_export_target(args.export)
    settings = {**(load_preset(args.preset) if args.preset else {}), **given}
    if str(settings.get("encoder_weights", "")).lower() in ("none", "random"):
        settings["encoder_weights"] = None  # random encoder weights: for tests and smoke runs only
    settings["output"] = args.output or f"runs/{args.preset or 'run'}"
    settings["data"] = args.data or ""
    config = TrainConfig(**settings)
    run = dict(resume=args.resume, progress=not args.no_progress, epochs=given.get("epochs") if args.resume else None, verbose=args.verbose)
    if args.workers > 1:  # one process per worker on 127.0.0.1, each with its TF_CONFIG
        from captioner.training.distributed import launch_local

        model_dir = launch_local(config, args.workers, **run)
    else:
        model_dir = train(config, **run)
    print(f"best model: {model_dir}")
    if args.export:
        export_model(model_dir, args.export)
        print(f"exported to {args.export}")
    return 0


def _train_scst(args: argparse.Namespace, given: dict) -> int:
    from captioner.artifacts import check_export_target, export_model
    from captioner.errors import ArgumentError
    from captioner.training.scst import ScstConfig, train_scst

    allowed = {"epochs", "learning_rate", "seed", "limit_images", "clip_norm"}
    if not args.scst or (not args.init and not args.resume) or not args.output:
        raise ArgumentError("self-critical training needs --scst, --init RUN (or --resume) and --output RUN")
    if set(given) - allowed or args.preset:
        raise ArgumentError(f"with --scst only --{', --'.join(sorted(a.replace('_', '-') for a in allowed))} may be set")
    if args.export:
        check_export_target(args.export)
    settings = {k: v for k, v in given.items() if k in allowed}
    if args.scst_samples:
        settings["samples"] = args.scst_samples
    if args.scst_baseline:
        settings["baseline"] = args.scst_baseline
    config = ScstConfig(init=str(args.init or ""), output=args.output, data=args.data, **settings)
    model_dir = train_scst(config, resume=args.resume, progress=not args.no_progress, epochs=given.get("epochs") if args.resume else None)
    print(f"best model: {model_dir}")
    if args.export:
        export_model(model_dir, args.export)
        print(f"exported to {args.export}")
    return 0


def _load_dataset_or_folder(data: Path, recursive: bool, allow_outside_paths: bool) -> tuple[dict[str, Path], Path, CaptionDataset | None]:
    """(images by key, image folder, dataset or None): a dataset if one is there, else a folder of images."""
    from captioner.data import NoDatasetError, load_dataset

    try:
        dataset = load_dataset(data, allow_outside_paths=allow_outside_paths)
    except NoDatasetError:
        if not data.is_dir():
            raise
        paths = _image_paths([data], recursive)
        return {str(p.relative_to(data)): p for p in paths}, data, None
    return {key: dataset.image_path(key) for key in dataset.captions}, dataset.image_dir, dataset


def cmd_extract(args: argparse.Namespace) -> int:
    from captioner.data import is_sharded
    from captioner.data.skipped import log_skipped_lines
    from captioner.features import FeatureStore, default_cache_dir, update_features

    encoder = args.encoder or defaults.ENCODER
    if is_sharded(args.data):
        return _extract_shards(args, encoder)
    images, image_dir, dataset = _load_dataset_or_folder(Path(args.data), args.recursive, args.allow_outside_paths)
    if dataset is not None:
        log_skipped_lines(dataset, args.verbose)
    store = FeatureStore(default_cache_dir(image_dir, encoder, args.spatial, root=args.cache_dir), encoder, spatial=args.spatial)
    if args.ray is not None:  # the same on a Ray cluster (the files at the same paths on every node)
        from captioner.features.ray_extract import ray_update_file_features

        report = ray_update_file_features(store, images, address=args.ray, workers=args.ray_workers, batch_size=args.batch_size)
    else:
        report = update_features(store, images, batch_size=args.batch_size)
    print(f"{report}; store: {store.directory} ({len(store)} images)")
    return 0


def _extract_shards(args: argparse.Namespace, encoder: str) -> int:
    from captioner.data import open_sharded
    from captioner.features import FeatureStore, default_cache_dir, update_shard_features

    source = open_sharded(args.data)
    store = FeatureStore(default_cache_dir(source.root, encoder, args.spatial, root=args.cache_dir), encoder, spatial=args.spatial)
    if args.ray is not None:
        from captioner.features.ray_extract import ray_update_features

        report = ray_update_features(store, source, address=args.ray, workers=args.ray_workers, batch_size=args.batch_size)
    else:
        report = update_shard_features(store, source, batch_size=args.batch_size)
    summary = source.report.summary(args.verbose)
    if summary:
        log.warning("%s", summary)
    print(f"{report}; store: {store.directory} ({report.encoded + report.reused} images of this dataset)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from captioner.report import evaluate_model

    result, output_dir = evaluate_model(
        args.model,
        args.data,
        args.split,
        beam_size=args.beam_size,
        limit_images=args.limit_images,
        output_dir=args.output_dir,
        use_java=False if args.no_java else None,
        batch_size=args.batch_size,
        allow_outside_paths=args.allow_outside_paths,
        verbose=args.verbose,
        name_objects=args.objects,
    )
    print(result.format_table(title=f"{args.split} split, beam size {args.beam_size}"))
    print(f"wrote {output_dir}/metrics.json and {output_dir}/captions.json")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from captioner.encoders import available_encoders, encoder_info

    for name in available_encoders():
        info = encoder_info(name)
        print(f"{name:20s} input {info.input_size}px  feature {info.feature_dim}  grid {info.grid_size}x{info.grid_size}  preprocessing {info.preprocessing}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from captioner.catalog import find_models

    for entry in find_models(args.dirs or None):
        kind = "shipped" if entry.shipped else "local"
        print(f"{entry.name}  ({kind}; {entry.decoder} decoder, {entry.encoder}, trained on {entry.dataset or 'unknown data'})")
        print(f"    {entry.path}")
        if entry.summary:
            print(f"    {entry.summary}")
    return 0


def _version() -> str:
    from importlib import metadata

    def installed(*names: str) -> str:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    return f"captioner {__version__} (TensorFlow {installed('tensorflow-cpu', 'tensorflow')}, Keras {installed('keras')})"


def cmd_serve(args: argparse.Namespace) -> int:
    return serve_command.run(args)


def cmd_export(args: argparse.Namespace) -> int:
    return export_command.run(args)


COMMANDS = {
    "caption": cmd_caption,
    "train": cmd_train,
    "extract": cmd_extract,
    "evaluate": cmd_evaluate,
    "encoders": cmd_encoders,
    "models": cmd_models,
    "serve": cmd_serve,
    "export": cmd_export,
}


# --- quiet start, logging, errors -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from captioner.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    with quiet_native_stderr(not args.debug):
        handler = setup_logging(args.debug)
        try:
            return COMMANDS[args.command](args)
        except KeyboardInterrupt:
            log.error("interrupted")
            return EXIT_INTERRUPTED
        except (UserError, OSError) as err:  # the input is wrong: one line
            if args.debug:
                raise
            log.error("captioner: error: %s", _one_line(err))
            return EXIT_ERROR
        except Exception as err:  # a bug: say so, one line; --debug for the traceback
            if args.debug:
                raise
            log.error("captioner: internal error (a bug; please report it with the output of --debug): %s: %s", type(err).__name__, _one_line(err))
            return EXIT_BUG
        finally:
            log.removeHandler(handler)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
