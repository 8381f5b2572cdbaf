"""The shipped model: found without a checkout, same captions from the CLI and from Python, pinned."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from captioner import defaults
from captioner.cli import main
from captioner.pipeline import Captioner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# What the shipped models say with the default search (beam 5, length penalty 1.0), which names the
# object the encoder's ImageNet classifier is sure of (captioner.objects: a cat, a cup). The default
# model keeps int8 weights (format 3); the merge model's were re-saved by variable name (format 2)
# from the creation-order file (format 1) with the same captions.
PINNED = {
    "flickr8k-attention": {
        "astronaut.jpg": "a boy in a red shirt and a red helmet",
        "chelsea.jpg": "a brown cat is sitting on a wooden table with a white and black and white bag",
        "coffee.jpg": "a black and white dog is sitting on a cup in a park",
    },
    "flickr8k-merge": {
        "astronaut.jpg": "a man in a red jacket is holding a red and white helmet",
        "chelsea.jpg": "a brown and white cat is standing in front of a blue and white building",
        "coffee.jpg": "a woman in a red jacket is looking at a cup",
    },
}
# Without that (name_objects=False): the decoder alone.
PINNED_PLAIN = {
    "flickr8k-attention": {
        "astronaut.jpg": "a boy in a red shirt and a red helmet",
        "chelsea.jpg": "a person is sitting on a wooden bench",
        "coffee.jpg": "a black and white dog is sitting on a wooden bench",
    },
    "flickr8k-merge": {
        "astronaut.jpg": "a man in a red jacket is holding a red and white helmet",
        "chelsea.jpg": "a man in a blue shirt is standing in front of a blue building",
        "coffee.jpg": "a woman in a red jacket is sitting on a wooden bench",
    },
}
SHIPPED = PINNED[defaults.SHIPPED_MODEL]


@pytest.fixture(scope="module")
def shipped():
    return Captioner()


@pytest.fixture(scope="module")
def models(shipped):
    return {defaults.SHIPPED_MODEL: shipped, "flickr8k-merge": Captioner("flickr8k-merge")}


def test_the_shipped_models_live_inside_the_package(shipped, models):
    assert defaults.SHIPPED_MODEL == "flickr8k-attention" and shipped.config.decoder.decoder == "attention"
    assert shipped.model_dir == defaults.PRETRAINED_DIR / defaults.SHIPPED_MODEL
    for name in PINNED:
        assert (Path(defaults.__file__).parent / "pretrained" / name / "weights.npz").is_file()
    assert models["flickr8k-merge"].config.decoder.decoder == "merge"  # by name, from any folder


@pytest.mark.parametrize("model", sorted(PINNED))
def test_pinned_captions(models, model):
    for name, caption in PINNED[model].items():
        assert models[model].caption(EXAMPLES / name)[0].caption == caption


@pytest.mark.parametrize("model", sorted(PINNED))
def test_pinned_captions_without_naming_objects(models, model, monkeypatch):
    monkeypatch.setattr(models[model].search, "name_objects", False)
    for name, caption in PINNED_PLAIN[model].items():
        assert models[model].caption(EXAMPLES / name)[0].caption == caption


def test_the_cli_and_python_give_the_same_caption(shipped, capsys):
    assert main(["caption", str(EXAMPLES / "coffee.jpg")]) == 0
    assert capsys.readouterr().out.strip() == shipped.caption(EXAMPLES / "coffee.jpg")[0].caption


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\nfrom captioner.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--decoder" in done.stdout and "TF False False" in done.stdout, done.stdout + done.stderr


def test_no_tensorflow_start_up_lines_reach_the_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "captioner.cli", "caption", str(EXAMPLES / "coffee.jpg")], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == SHIPPED["coffee.jpg"]
    assert done.stderr == "", done.stderr


def test_models_lists_the_shipped_model_with_its_card(capsys, tmp_path):
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "flickr8k-attention  (shipped; attention decoder, efficientnet_lite2, trained on flickr8k)" in out
    assert "flickr8k-merge  (shipped; merge decoder, efficientnet_lite2, trained on flickr8k)" in out


def test_version_names_tensorflow_and_keras(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    out = capsys.readouterr().out
    assert out.startswith("captioner ") and "TensorFlow " in out and "Keras " in out


def test_an_installed_wheel_carries_the_shipped_model_and_presets(tmp_path):
    import shutil
    import zipfile

    root = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    checkout = Path(__file__).resolve().parents[1]
    shutil.copytree(checkout / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / name, root / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("captioner-*.whl"))).namelist()
    for needed in ("weights.npz", "config.json", "vocab.json", "train_config.json"):
        for model in PINNED:
            assert f"captioner/pretrained/{model}/{needed}" in names
    assert "captioner/configs/flickr8k-merge.json" in names and "captioner/configs/flickr8k-attention.json" in names
