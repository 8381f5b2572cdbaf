"""Shared fixtures: tiny generated datasets in every layout, and the real Flickr8k when present.

The generated images are colour-coded so that captions are learnable: image i shows a square of
one colour on a background of another, and its five captions name both colours in different
words, capitals and punctuation. A model that learns anything should learn those colour words.

Fixtures:
    make_image: factory writing one image file (any mode / format Pillow can save).
    make_flickr8k, tiny_flickr8k: the classic layout (token file, split lists, image folder).
    make_kaggle, tiny_kaggle: captions.txt (CSV) + Images/.
    make_karpathy: a Karpathy dataset_*.json + images/.
    flickr8k_dir: the real shared Flickr8k (skips the test when absent).
    flickr8k_dataset: that dataset loaded once per session.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "orange": (250, 140, 20),
    "purple": (130, 40, 160),
}
_COLOR_NAMES = list(COLORS)

# Five ways to say the same thing, with the capitals and punctuation real captions have.
CAPTION_TEMPLATES = (
    "A {fg} square on a {bg} background .",
    "a {fg} box in front of {bg}, in the middle",
    "The {bg} picture has a {fg} square in its centre",
    "{Fg} square , {bg} background !",
    "A small {fg} block sits on {bg} .",
)

REAL_FLICKR8K = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"


@dataclass
class TinyDataset:
    """What a dataset fixture wrote.

    Attributes:
        root: the dataset directory (pass it to `load_dataset`).
        image_dir: the image folder.
        caption_file: the caption file (token file, captions.txt or JSON).
        captions: image key -> the raw captions written, in file order.
        splits: split -> image keys ("train", "dev", "test"; only those written or implied).
        colors: image key -> (foreground colour name, background colour name).
    """

    root: Path
    image_dir: Path
    caption_file: Path
    captions: dict[str, list[str]]
    splits: dict[str, list[str]] = field(default_factory=dict)
    colors: dict[str, tuple[str, str]] = field(default_factory=dict)


def image_colors(index: int) -> tuple[str, str]:
    """(foreground, background) colour names of generated image `index`; never the same colour."""
    n = len(_COLOR_NAMES)
    offset = 1 + (index // n) % (n - 1)  # 1..n-1, so the two colours differ: n * (n - 1) pairs
    return _COLOR_NAMES[(index + offset) % n], _COLOR_NAMES[index % n]


def captions_for(fg: str, bg: str) -> list[str]:
    return [t.format(fg=fg, bg=bg, Fg=fg.capitalize()) for t in CAPTION_TEMPLATES]


def write_image(
    path: Path,
    size: tuple[int, int] = (64, 48),
    color=(128, 128, 128),
    mode: str = "RGB",
    format: str | None = None,
    square: tuple[int, int, int] | None = None,
    **save_kwargs,
) -> Path:
    """Writes a solid image (optionally with a centred square of another colour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if square is not None:
        w, h = size
        img.paste(square, (w // 4, h // 4, w - w // 4, h - h // 4))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=format, **save_kwargs)
    return path


def _image_key(index: int) -> str:
    # Shaped like the real Flickr8k names ("1000268201_693b08cb0e.jpg").
    return f"{1000000000 + index * 7919}_{index * 2654435761 % 16**10:010x}.jpg"


def _split_sizes(n: int, with_test: bool) -> dict[str, int]:
    held_out = max(1, n // 5)
    sizes = {"dev": held_out, "test": held_out if with_test else 0}
    sizes["train"] = n - sizes["dev"] - sizes["test"]
    if sizes["train"] < 1:
        raise ValueError(f"{n} images are too few for a train split")
    return {s: sizes[s] for s in ("train", "dev", "test") if sizes[s]}


def _write_images(image_dir: Path, n_images: int, image_size: tuple[int, int]) -> tuple[dict, dict]:
    captions, colors = {}, {}
    for i in range(n_images):
        key = _image_key(i)
        fg, bg = image_colors(i)
        write_image(image_dir / key, image_size, COLORS[bg], square=COLORS[fg], quality=95)
        captions[key] = captions_for(fg, bg)
        colors[key] = (fg, bg)
    return captions, colors


def _write_text(path: Path, lines: list[str], final_newline: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")


def write_train_dev_flickr8k(root: Path, n_images: int, n_train: int) -> Path:
    """The classic Flickr8k layout with a train and a dev split (no test split); returns `root`."""
    captions, _ = _write_images(root / "Flicker8k_Dataset", n_images, (64, 48))
    _write_text(root / "Flickr8k.token.txt", [f"{k}#{n}\t{c}" for k, cs in captions.items() for n, c in enumerate(cs)], True)
    keys = list(captions)
    _write_text(root / "Flickr_8k.trainImages.txt", keys[:n_train], False)
    _write_text(root / "Flickr_8k.devImages.txt", keys[n_train:], False)
    return root


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Runs `captioner ARGV...` in this process; returns (exit code, stdout, stderr)."""
    from captioner.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tiny_train_args(data_root: Path, tmp_path: Path, *more) -> list:
    """`captioner train` arguments for a one-epoch run of a tiny model on a tiny data set."""
    return [
        "train",
        "--data",
        data_root,
        "--output",
        tmp_path / "run",
        "--cache-dir",
        tmp_path / "cache",
        "--epochs",
        "1",
        "--units",
        "8",
        "--embedding-dim",
        "8",
        "--min-word-count",
        "1",
        "--no-progress",
        *more,
    ]


@pytest.fixture
def make_image(tmp_path):
    """Factory: make_image(name_or_path, size=(64, 48), color=(r, g, b), mode="RGB", format=None,
    square=None, **save_kwargs) -> Path. Relative names go under tmp_path; the format follows the
    extension unless given."""

    def make(name, size=(64, 48), color=(128, 128, 128), mode="RGB", format=None, square=None, **save_kwargs):
        path = Path(name) if Path(name).is_absolute() else tmp_path / name
        return write_image(path, size, color, mode, format, square, **save_kwargs)

    return make


@pytest.fixture
def make_flickr8k(tmp_path):
    """Factory writing the classic Flickr8k layout; returns a `TinyDataset`.

    make_flickr8k(n_images=10, with_test=True, root=None, text_subdir=True,
                  image_dir_name="Flicker8k_Dataset", final_newline=False, image_size=(64, 48))

    Split lists hold 1/5 of the images each for dev and test (at least one), the rest train;
    like the originals they end without a final newline unless `final_newline`.
    """
    counter = itertools.count()

    def make(n_images=10, with_test=True, root=None, text_subdir=True, image_dir_name="Flicker8k_Dataset", final_newline=False, image_size=(64, 48)):
        root = Path(root) if root is not None else tmp_path / f"flickr8k_{next(counter)}"
        image_dir = root / image_dir_name
        text_dir = root / "Flickr8k_text" if text_subdir else root
        captions, colors = _write_images(image_dir, n_images, image_size)
        token_lines = [f"{key}#{n}\t{c}" for key, caps in captions.items() for n, c in enumerate(caps)]
        token_file = text_dir / "Flickr8k.token.txt"
        _write_text(token_file, token_lines, final_newline=True)
        keys, splits, start = list(captions), {}, 0
        for split, count in _split_sizes(n_images, with_test).items():
            splits[split] = keys[start : start + count]
            start += count
            _write_text(text_dir / f"Flickr_8k.{split}Images.txt", splits[split], final_newline)
        return TinyDataset(root, image_dir, token_file, captions, splits, colors)

    return make


@pytest.fixture
def tiny_flickr8k(make_flickr8k) -> TinyDataset:
    """10 images (6 train, 2 dev, 2 test), 5 captions each, classic Flickr8k layout."""
    return make_flickr8k()


@pytest.fixture
def make_kaggle(tmp_path):
    """Factory writing the Kaggle layout (captions.txt + Images/); returns a `TinyDataset`.

    make_kaggle(n_images=10, root=None, image_size=(64, 48)). Captions containing commas are
    quoted, as in the real file. `splits` is empty: the loader makes a hashed split.
    """
    counter = itertools.count()

    def make(n_images=10, root=None, image_size=(64, 48)):
        root = Path(root) if root is not None else tmp_path / f"kaggle_{next(counter)}"
        image_dir = root / "Images"
        captions, colors = _write_images(image_dir, n_images, image_size)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "caption"])
        writer.writerows([key, c] for key, caps in captions.items() for c in caps)
        caption_file = root / "captions.txt"
        caption_file.write_text(buffer.getvalue(), encoding="utf-8")
        return TinyDataset(root, image_dir, caption_file, captions, {}, colors)

    return make


@pytest.fixture
def tiny_kaggle(make_kaggle) -> TinyDataset:
    """10 images with 5 captions each in the Kaggle layout."""
    return make_kaggle()


@pytest.fixture
def make_karpathy(tmp_path):
    """Factory writing a Karpathy split JSON and its images; returns a `TinyDataset`.

    make_karpathy(n_images=10, root=None, coco=False). Splits cycle train, restval, val, test
    (so `splits` maps to train/dev/test as the loader should). With coco=True, entries carry a
    "filepath" ("train2014"/"val2014") and images live in those subfolders of images/.
    """
    counter = itertools.count()
    raw_splits = ("train", "restval", "val", "test")
    canonical = {"train": "train", "restval": "train", "val": "dev", "test": "test"}

    def make(n_images=10, root=None, coco=False):
        root = Path(root) if root is not None else tmp_path / f"karpathy_{next(counter)}"
        image_dir = root / "images"
        entries, captions, colors, splits = [], {}, {}, {}
        for i in range(n_images):
            raw_split = raw_splits[i % len(raw_splits)]
            filepath = ("val2014" if raw_split in ("val", "test") else "train2014") if coco else None
            filename = _image_key(i)
            key = f"{filepath}/{filename}" if filepath else filename
            fg, bg = image_colors(i)
            write_image(image_dir / key, (64, 48), COLORS[bg], square=COLORS[fg])
            caps = captions_for(fg, bg)
            entry = {"filename": filename, "imgid": i, "split": raw_split, "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": i} for c in caps]}
            if filepath:
                entry["filepath"] = filepath
            entries.append(entry)
            captions[key], colors[key] = caps, (fg, bg)
            splits.setdefault(canonical[raw_split], []).append(key)
        name = "coco" if coco else "flickr8k"
        caption_file = root / f"dataset_{name}.json"
        caption_file.write_text(json.dumps({"images": entries, "dataset": name}), encoding="utf-8")
        ordered = {s: splits[s] for s in ("train", "dev", "test") if s in splits}
        return TinyDataset(root, image_dir, caption_file, captions, ordered, colors)

    return make


def _real_flickr8k_path() -> Path:
    return Path(os.environ.get("CAPTIONER_FLICKR8K") or REAL_FLICKR8K)


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    """The real Flickr8k (../shared/flickr8k, or $CAPTIONER_FLICKR8K); skips the test if absent."""
    path = _real_flickr8k_path()
    if not (path / "Flickr8k_text" / "Flickr8k.token.txt").is_file() and not (path / "Flickr8k.token.txt").is_file():
        pytest.skip(f"real Flickr8k not found at {path} (set CAPTIONER_FLICKR8K)")
    return path


@pytest.fixture(scope="session")
def flickr8k_dataset(flickr8k_dir):
    """The real Flickr8k loaded once per session (a `captioner.data.CaptionDataset`)."""
    from captioner.data import load_dataset

    return load_dataset(flickr8k_dir)
