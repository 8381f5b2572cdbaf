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

# What the shipped model says with the default search (beam 5, length penalty 1.0), which names
# the object the encoder's ImageNet classifier is sure of (captioner.objects: a cat, an espresso cup).
PINNED = {
    "astronaut.jpg": "a man in a red jacket is holding a red and white helmet",
    "chelsea.jpg": "a brown and white cat is standing in front of a blue and white building",
    "coffee.jpg": "a woman in a red jacket is looking at a cup",
}
# Without that (name_objects=False): the decoder alone. The weights were re-saved by variable name
# (format 2) from the creation-order file (format 1): same captions.
PINNED_PLAIN = {
    "astronaut.jpg": "a man in a red jacket is holding a red and white helmet",
    "chelsea.jpg": "a man in a blue shirt is standing in front of a blue building",
    "coffee.jpg": "a woman in a red jacket is sitting on a wooden bench",
}


@pytest.fixture(scope="module")
def shipped():
    return Captioner()


def test_the_shipped_model_lives_inside_the_package(shipped):
    assert shipped.model_dir == defaults.PRETRAINED_DIR / defaults.SHIPPED_MODEL
    assert (Path(defaults.__file__).parent / "pretrained" / "flickr8k-merge" / "weights.npz").is_file()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_captions(shipped, name):
    assert shipped.caption(EXAMPLES / name)[0].caption == PINNED[name]


def test_pinned_captions_without_naming_objects(shipped, monkeypatch):
    monkeypatch.setattr(shipped.search, "name_objects", False)
    for name, caption in PINNED_PLAIN.items():
        assert shipped.caption(EXAMPLES / name)[0].caption == caption


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
    assert done.returncode == 0 and done.stdout.strip() == PINNED["coffee.jpg"]
    assert done.stderr == "", done.stderr


def test_models_lists_the_shipped_model_with_its_card(capsys, tmp_path):
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
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
        assert f"captioner/pretrained/flickr8k-merge/{needed}" in names
    assert "captioner/configs/flickr8k-merge.json" in names
