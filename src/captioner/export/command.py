"""`captioner export MODEL --format savedmodel|tflite|captioner OUT`: a trained model for deployment.

`add_parser(subparsers)` adds the command to the CLI's parser and `run(args)` runs it; neither
imports TensorFlow until an export starts, so `captioner --help` stays fast. Errors are
`captioner.errors.UserError`s (one line, exit 1 from the CLI).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from captioner import defaults
from captioner.flags import nonnegative_float, positive_int

log = logging.getLogger("captioner")

FORMATS = ("savedmodel", "tflite", "captioner")
DEFAULT_MODEL = "default"  # MODEL value meaning the shipped model (or $CAPTIONER_MODEL)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds `export` to an argparse subparsers object (the CLI's `add_subparsers()`)."""
    p = subparsers.add_parser(
        "export",
        help="export a model for deployment: a TensorFlow SavedModel (image bytes in, captions out) or TFLite flatbuffers",
        description=(
            "Export a trained captioner. savedmodel: one TensorFlow SavedModel whose serving signature takes encoded images "
            "(a batch of JPEG/PNG bytes) and returns captions and scores, decoding, resizing, encoder, decoder and search all in the graph; "
            "it loads with TensorFlow alone (tf.saved_model.load, TensorFlow Serving). tflite: the encoder and one decoder step as "
            "TFLite flatbuffers, run by captioner.export.tflite.TFLiteCaptioner. captioner: a captioner model directory again, with --quantize "
            "its large matrices as int8 (how the shipped models are made small). OUT is replaced atomically; it must be missing, "
            "empty or an earlier export."
        ),
    )
    p.add_argument("model", metavar="MODEL", help=f"model directory, a shipped model's name, or '{DEFAULT_MODEL}' for the default model (or $CAPTIONER_MODEL)")
    p.add_argument("out", metavar="OUT", type=Path, help="output folder (for TensorFlow Serving: MODEL_BASE/NAME/VERSION, e.g. models/captioner/1)")
    p.add_argument(
        "--format", required=True, choices=FORMATS, help="savedmodel (TensorFlow, TF Serving), tflite (TFLite / LiteRT) or captioner (a model directory)"
    )
    p.add_argument(
        "--beam-size",
        type=positive_int,
        default=defaults.BEAM_SIZE,
        help="beam width; 1 is greedy. savedmodel: fixed in the graph (a 'greedy' signature is there too); tflite: the default (default: %(default)s)",
    )
    p.add_argument("--length-penalty", type=nonnegative_float, default=defaults.LENGTH_PENALTY, help="beam score = log-prob / length**A (default: %(default)s)")
    p.add_argument(
        "--quantize",
        action="store_true",
        help="tflite: dynamic-range quantization; captioner: int8 matrices with per-column scales (int8 weights, smaller; captions may change)",
    )
    p.add_argument(
        "--check",
        action="append",
        type=Path,
        metavar="IMAGE",
        default=None,
        help="after exporting, caption IMAGE with the export and with the Python path and print both (repeatable)",
    )


def model_path(model: str) -> Path:
    """MODEL as given on the command line -> a model directory."""
    return defaults.default_model_dir() if model == DEFAULT_MODEL else defaults.resolve_model(model)


def _size_mib(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 2**20


def run(args: argparse.Namespace) -> int:
    """Runs `captioner export`; returns the exit code (user errors raise `UserError`)."""
    from captioner.errors import ArgumentError
    from captioner.export.target import check_target

    if args.quantize and args.format == "savedmodel":
        raise ArgumentError("--quantize applies to --format tflite and captioner only")
    if args.format == "captioner":
        from captioner.artifacts import check_export_target

        out = check_export_target(args.out)  # before anything heavy: a bad OUT fails in milliseconds
    else:
        out = check_target(args.out)
    model_dir = model_path(args.model)
    from captioner.artifacts import read_config

    read_config(model_dir)  # a one-line error for a folder that is not a model
    started = time.perf_counter()
    if args.format == "savedmodel":
        from captioner.export.savedmodel import export_savedmodel

        export_savedmodel(model_dir, out, args.beam_size, args.length_penalty)
        how = f"beam {args.beam_size}" if args.beam_size > 1 else "greedy"
        print(f"exported SavedModel ({how}) to {out} ({_size_mib(out):.1f} MiB, {time.perf_counter() - started:.1f} s)")
        print(f"signatures: serving_default ({how}), greedy, preprocess; input 'image_bytes' (tf.string [B]); outputs captions, scores, log_probs")
    elif args.format == "captioner":
        from captioner.artifacts import export_model, save_quantized

        (save_quantized if args.quantize else export_model)(model_dir, out)
        print(
            f"exported captioner model{' (int8 weights)' if args.quantize else ''} to {out} ({_size_mib(out):.1f} MiB, {time.perf_counter() - started:.1f} s)"
        )
    else:
        from captioner.export.tflite import export_tflite

        export_tflite(model_dir, out, args.beam_size, args.length_penalty, quantize=args.quantize)
        print(f"exported TFLite models{' (quantized)' if args.quantize else ''} to {out} ({_size_mib(out):.1f} MiB, {time.perf_counter() - started:.1f} s)")
        print("files: image.tflite, step.tflite, vocab.json; run them with captioner.export.tflite.TFLiteCaptioner")
    if args.check:
        return _check(out, args.format, model_dir, args.check, args.beam_size)
    return 0


def _check(out: Path, fmt: str, model_dir: Path, images: list[Path], beam_size: int) -> int:
    """Captions `images` with the export and the Python path; prints both; exit 1 if any image could not be read."""
    from captioner.images import ImageError
    from captioner.images.files import read_file
    from captioner.pipeline import Captioner

    # SavedModel and TFLite graphs hold the decoder's own search, not captioner.objects' naming.
    python = Captioner(model_dir, name_objects=None if fmt == "captioner" else False)
    caption_export = _export_captioner(out, fmt)
    same = failed = 0
    for path in images:
        try:
            data = read_file(path, os.fspath(path))
            expected = python.caption(data, beam_size=beam_size)[0].caption
        except ImageError as err:
            log.error("error: %s", err)
            failed += 1
            continue
        got = caption_export(data)
        same += got == expected
        print(f"{path}: {got}" + ("" if got == expected else f"  (Python path: {expected})"))
    checked = len(images) - failed
    print(f"{same} of {checked} captions equal the Python path's")
    return 1 if failed else 0


def _export_captioner(out: Path, fmt: str):
    """bytes -> caption, through the export just written."""
    if fmt == "captioner":
        from captioner.pipeline import Captioner

        exported = Captioner(out)
        return lambda data: exported.caption(data)[0].caption
    if fmt == "savedmodel":
        import tensorflow as tf

        signature = tf.saved_model.load(str(out)).signatures["serving_default"]
        return lambda data: signature(image_bytes=tf.constant([data]))["captions"][0].numpy().decode()
    from captioner.export.tflite import TFLiteCaptioner

    tflite = TFLiteCaptioner(out)
    return lambda data: tflite.caption(data)[0].caption
