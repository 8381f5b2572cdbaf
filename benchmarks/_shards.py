"""Synthetic img2dataset-style WebDataset shards for the scale-out benchmarks.

Image i is a JPEG of a coloured square on a background of another colour (with a little noise so
JPEG has something to code), and its caption names both colours, so a decoder has words to learn.
Keys follow img2dataset: 5-digit shard number + 4-digit row. Writing is fast (about 5,000 small
images/s), so a 100,000-image set takes well under a minute.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
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
NAMES = list(COLORS)
TEMPLATES = ("a {fg} square on a {bg} background", "a {fg} box in front of {bg}", "the {bg} picture has a {fg} square in it")


def colors(index: int) -> tuple[str, str]:
    n = len(NAMES)
    return NAMES[(index + 1 + (index // n) % (n - 1)) % n], NAMES[index % n]


def jpeg(index: int, size: int, rng: np.random.Generator) -> bytes:
    fg, bg = colors(index)
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[:] = COLORS[bg]
    q = size // 4
    pixels[q : size - q, q : size - q] = COLORS[fg]
    noise = rng.integers(-12, 13, pixels.shape, dtype=np.int16)
    pixels = np.clip(pixels.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, n_images: int, per_shard: int = 1000, size: int = 64, seed: int = 0) -> list[Path]:
    """Writes ceil(n / per_shard) shards NNNNN.tar under `root`; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    # Few distinct images, reused: encoding cost does not depend on content, and writing stays fast.
    cache = {i: jpeg(i, size, rng) for i in range(len(NAMES) * (len(NAMES) - 1))}
    for shard in range((n_images + per_shard - 1) // per_shard):
        path = root / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(shard * per_shard, min(n_images, (shard + 1) * per_shard)):
                key = f"{shard:05d}{index % per_shard:04d}"
                fg, bg = colors(index)
                _add(tar, f"{key}.jpg", cache[index % len(cache)])
                _add(tar, f"{key}.txt", TEMPLATES[index % len(TEMPLATES)].format(fg=fg, bg=bg).encode())
        paths.append(path)
    return paths
