"""`captioner export`: a SavedModel that runs with TensorFlow alone and TFLite flatbuffers, both
captioning as the Python path does, for the shipped merge model and an attention model.

The shipped model is exported once per module (about 15 s on 2 cores) and loaded in a fresh
process where importing `captioner` is impossible.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.errors import ArgumentError, FileError
from captioner.export import command
from captioner.export.target import MANIFEST, check_target, read_manifest, staging_dir, swap_in, write_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captioner")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["export", *argv])


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_images() -> dict[str, bytes]:
    """The example photos plus generated files that take the other decoding paths."""
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (12, 16, 3), np.uint8)).resize((1200, 900), Image.Resampling.BICUBIC))
    rgba = np.dstack([smooth[:300, :400], rng.integers(0, 256, (300, 400), np.uint8)])
    images = {p.name: p.read_bytes() for p in sorted(EXAMPLES.glob("*.jpg"))}
    images["big.jpg"] = encoded(smooth, "JPEG", quality=90)  # decoded at 1/2 scale (libjpeg DCT scaling)
    images["transparent.png"] = encoded(rgba, "PNG")  # composited on white
    images["grey.png"] = encoded(smooth[:240, :320, 0], "PNG")
    return images


test_images.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="module")
def python_path():
    from captioner.pipeline import Captioner

    return Captioner(name_objects=False)  # exports carry the decoder's own search, not captioner.objects' naming


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "captioner" / "1"
    assert command.run(parse("default", str(out), "--format", "savedmodel")) == 0
    return out


# --- the command line --------------------------------------------------------------------------


def test_the_command_does_not_import_tensorflow():
    code = textwrap.dedent(
        """
        import argparse, sys
        from captioner.export import command
        parser = argparse.ArgumentParser(prog="captioner")
        command.add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["export", "default", "out", "--format", "tflite", "--beam-size", "3", "--quantize"])
        print(args.format, args.beam_size, args.quantize, "tensorflow" in sys.modules, "keras" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["tflite", "3", "True", "False", "False"], done.stdout + done.stderr


@pytest.mark.parametrize("argv", [["m", "o"], ["m", "o", "--format", "onnx"], ["m", "o", "--format", "tflite", "--beam-size", "0"]])
def test_bad_command_lines_do_not_parse(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(*argv)
    assert stop.value.code == 2


def test_a_folder_that_is_not_an_export_is_refused_before_anything_loads(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileError, match="not an earlier export"):
        command.run(parse("default", str(tmp_path), "--format", "savedmodel"))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FileError, match="not a folder"):
        command.run(parse("default", str(file), "--format", "tflite"))
    with pytest.raises(FileError, match="captioner model"):
        command.run(parse(str(tmp_path), str(tmp_path / "out"), "--format", "tflite"))
    with pytest.raises(ArgumentError, match="--quantize"):
        command.run(parse("default", str(tmp_path / "out"), "--format", "savedmodel", "--quantize"))


def test_an_earlier_export_is_replaced_in_one_rename(tmp_path):
    out = tmp_path / "out"
    for generation in (1, 2):
        check_target(out)
        staging = staging_dir(out)
        write_manifest(staging, {"kind": "test", "generation": generation})
        swap_in(staging, out)
        assert read_manifest(out)["generation"] == generation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left behind
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]


# --- the SavedModel ------------------------------------------------------------------------------

LOADER = """
import json, sys
sys.modules["captioner"] = None  # importing captioner now fails: the SavedModel must not need it
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
names = json.loads(sys.argv[2])
images = tf.constant([open(f"{sys.argv[3]}/{name}", "rb").read() for name in names])
beam = model.signatures["serving_default"](image_bytes=images)
greedy = model.signatures["greedy"](image_bytes=images)
np.save(f"{sys.argv[3]}/pixels.npy", model.signatures["preprocess"](image_bytes=images)["pixels"].numpy())
empty = model.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
try:
    model.signatures["serving_default"](image_bytes=tf.constant([b"not an image"]))
    refused = False
except tf.errors.InvalidArgumentError:
    refused = True
print(json.dumps({
    "signatures": sorted(model.signatures),
    "beam": [c.decode() for c in beam["captions"].numpy()],
    "beam_scores": beam["scores"].numpy().tolist(),
    "greedy": [c.decode() for c in greedy["captions"].numpy()],
    "empty_batch": {name: t.shape.as_list() for name, t in empty.items()},
    "not_an_image_refused": refused,
    "captioner_imported": any(m == "captioner" or m.startswith("captioner.") for m, v in sys.modules.items() if v is not None),
}))
"""


def test_the_savedmodel_runs_with_tensorflow_alone_and_captions_as_the_python_path(savedmodel, python_path, tmp_path):
    from captioner.images import load_image

    images = test_images()
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-c", LOADER, str(savedmodel), json.dumps(list(images)), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["captioner_imported"]
    assert result["signatures"] == ["greedy", "preprocess", "serving_default"]
    assert result["empty_batch"] == {"captions": [0], "scores": [0], "log_probs": [0]}
    assert result["not_an_image_refused"]
    manifest = read_manifest(savedmodel)
    assert manifest["kind"] == "savedmodel" and manifest["beam_size"] == 5 and manifest["input_size"] == 260

    # Pixels: the in-graph decode and squash give Pillow's but for rounding ties (about 0.01 % of a
    # photo's values, up to 1 % on smooth synthetic gradients), off by one or two levels.
    pixels = np.load(tmp_path / "pixels.npy").astype(np.float32)
    for i, (name, data) in enumerate(images.items()):
        expected = load_image(data, python_path.input_size).astype(np.float32)
        difference = np.abs(pixels[i] - expected)
        assert difference.mean() < 0.05 and difference.max() <= 2, f"{name}: mean {difference.mean():.4f}, max {difference.max()}"

    # Captions: beam 5 and greedy, as `Captioner.caption`.
    for i, (name, data) in enumerate(images.items()):
        beam = python_path.caption(data)[0]
        assert result["beam"][i] == beam.caption, name
        assert result["beam_scores"][i] == pytest.approx(beam.score, abs=0.01)  # pixel ties move features slightly
        assert result["greedy"][i] == python_path.caption(data, beam_size=1)[0].caption, name


def test_check_compares_the_export_with_the_python_path(savedmodel, capsys, tmp_path):
    from captioner import defaults

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = command._check(savedmodel, "savedmodel", defaults.default_model_dir(), [EXAMPLES / "coffee.jpg", broken], defaults.BEAM_SIZE)
    out = capsys.readouterr().out
    assert code == 1  # the broken file is reported, and makes the exit code 1
    assert "coffee.jpg: a " in out and "(Python path:" not in out and "1 of 1 captions equal the Python path's" in out


# --- TFLite --------------------------------------------------------------------------------------


DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"


@pytest.fixture(scope="module")
def tflite_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tflite") / "tflite"
    assert command.run(parse("default", str(out), "--format", "tflite")) == 0
    return out


def test_tflite_export_captions_as_the_python_path(tflite_export, python_path):
    from captioner.export.tflite import TFLiteCaptioner

    assert sorted(p.name for p in tflite_export.iterdir()) == [MANIFEST, "image.tflite", "step.tflite", "vocab.json"]
    tflite = TFLiteCaptioner(tflite_export)
    for path in sorted(EXAMPLES.glob("*.jpg")):
        for beam_size in (5, 1):
            expected, got = python_path.caption(path, beam_size=beam_size)[0], tflite.caption(path, beam_size=beam_size)[0]
            assert got.caption == expected.caption, (path.name, beam_size)
            assert got.score == pytest.approx(expected.score, abs=1e-3)


def test_the_reference_loop_in_the_docs_runs_without_captioner(tflite_export, python_path):
    text = DOCS.read_text(encoding="utf-8")
    loop = text.split("<!-- reference-loop -->")[1].split("<!-- /reference-loop -->")[0]
    code = loop.strip().removeprefix("```python").removesuffix("```")
    photo = EXAMPLES / "coffee.jpg"
    code = code.replace('"out/tflite"', repr(str(tflite_export))).replace('"photo.jpg"', repr(str(photo)))
    code = 'import sys\nsys.modules["captioner"] = None\n' + code
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == python_path.caption(photo, beam_size=1)[0].caption


# --- any decoder: attention over the grid ---------------------------------------------------------


@pytest.fixture(scope="module")
def attention_model(tmp_path_factory) -> Path:
    """A small attention decoder with sharp random weights over a random-weight Lite0 encoder."""
    from captioner.artifacts import CaptionerConfig, save_captioner
    from captioner.models.base import build_decoder, make_config
    from captioner.vocab import Vocabulary

    vocab = Vocabulary.build(["a dog runs on the grass", "a cat sits on a red mat", "two men ride bikes down the street"], min_count=1)
    config = make_config("attention", vocab_size=len(vocab), max_length=10, feature_dim=1280, embedding_dim=16, units=16, attention_dim=8, dropout=0.0)
    decoder = build_decoder(config)
    rng = np.random.default_rng(1)
    for weight in decoder.weights:
        weight.assign(rng.normal(scale=3.0 / np.sqrt(max(weight.shape[0], 1)), size=weight.shape).astype("float32"))
    directory = tmp_path_factory.mktemp("attention") / "model"
    save_captioner(directory, decoder, vocab, CaptionerConfig("efficientnet_lite0", config, encoder_weights=None))
    return directory


def test_an_attention_decoder_exports_to_both_formats(attention_model, tmp_path):
    import tensorflow as tf

    from captioner.export.savedmodel import export_savedmodel
    from captioner.export.tflite import TFLiteCaptioner, export_tflite
    from captioner.pipeline import Captioner

    python = Captioner(attention_model, name_objects=False)
    rng = np.random.default_rng(2)
    images = [encoded(rng.integers(0, 256, (40 + 20 * i, 60, 3), np.uint8), "PNG") for i in range(3)]
    saved = tf.saved_model.load(str(export_savedmodel(attention_model, tmp_path / "saved", beam_size=3)))
    beam = saved.signatures["serving_default"](image_bytes=tf.constant(images))
    greedy = saved.signatures["greedy"](image_bytes=tf.constant(images))
    tflite = TFLiteCaptioner(export_tflite(attention_model, tmp_path / "tflite", beam_size=3))
    for i, data in enumerate(images):
        expected = python.caption(data, beam_size=3)[0]
        assert beam["captions"][i].numpy().decode() == expected.caption
        assert float(beam["scores"][i]) == pytest.approx(expected.score, abs=1e-3)
        assert tflite.caption(data)[0].caption == expected.caption
        expected = python.caption(data, beam_size=1)[0]
        assert greedy["captions"][i].numpy().decode() == expected.caption
        assert tflite.caption(data, beam_size=1)[0].caption == expected.caption
