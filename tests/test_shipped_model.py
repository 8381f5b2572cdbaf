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

# What the shipped model says with the default search (beam 5, length penalty 1.0). The weights
# were re-saved by variable name (format 2) from the creation-order file (format 1): same captions.
PINNED = {
    "astronaut.jpg": "a man in a red jacket is holding a red and red helmet",
    "chelsea.jpg": "a man in a blue shirt is standing in front of a blue building",
    "coffee.jpg": "a woman in a red jacket is sitting on a wooden bench",
}


@pytest.fixture(scope="module")
def shipped():
    return Captioner()


def test_the_shipped_model_lives_inside_the_package(shipped):
    assert shipped.model_dir == defaults.PRETRAINED_DIR / defaults.SHIPPED_MODEL
    assert (Path(defaults.__file__).parent / "pretrained" / "flickr8k" / "weights.npz").is_file()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_captions(shipped, name):
    assert shipped.caption(EXAMPLES / name)[0].caption == PINNED[name]


def test_the_cli_and_python_give_the_same_caption(shipped, capsys):
    assert main(["caption", str(EXAMPLES / "coffee.jpg")]) == 0
    assert capsys.readouterr().out.strip() == shipped.caption(EXAMPLES / "coffee.jpg")[0].caption


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom captioner.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--decoder" in done.stdout and "TF False False" in done.stdout, done.stdout + done.stderr


def test_no_tensorflow_start_up_lines_reach_the_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "captioner.cli", "caption", str(EXAMPLES / "coffee.jpg")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == PINNED["coffee.jpg"]
    assert done.stderr == "", done.stderr
