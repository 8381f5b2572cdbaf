"""Attention heat maps: the photo, then one panel per generated word with where the decoder looked.

Drawn with Pillow alone: each word's (L,) weights become a g x g grid, are up-sampled smoothly to
the photo's size, coloured, and blended over the photo.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from captioner import atomic
from captioner.errors import ArgumentError

PANEL = 224  # pixels per panel side
COLUMNS = 5  # panels per row
LABEL_HEIGHT = 24  # pixels under each panel for its word
BLEND = 0.6  # weight of the heat map over the photo
# A perceptually ordered colour ramp (dark blue -> teal -> yellow), as anchors to interpolate.
_RAMP = np.array([[48, 18, 59], [40, 100, 200], [30, 180, 170], [120, 220, 90], [250, 230, 40]], np.float32)


def grid_side(cells: int) -> int:
    """The side g of a square g x g grid of `cells` cells."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise ArgumentError(f"attention over {cells} cells is not a square grid")
    return side


def heat_colors(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float colours from the ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    fraction = (position - low)[..., None]
    return _RAMP[low] * (1 - fraction) + _RAMP[high] * fraction


def overlay(photo: Image.Image, weights: np.ndarray) -> Image.Image:
    """The photo with one word's (L,) attention weights blended over it."""
    side = grid_side(len(weights))
    grid = weights.reshape(side, side).astype(np.float32)
    grid = grid / max(float(grid.max()), 1e-12)  # each panel uses the full ramp
    heat = np.asarray(Image.fromarray(grid, mode="F").resize(photo.size, Image.Resampling.BICUBIC))
    colours = heat_colors(heat)
    blended = (1 - BLEND) * np.asarray(photo, np.float32) + BLEND * colours
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def attention_figure(image: np.ndarray, words: list[str], attention: np.ndarray) -> Image.Image:
    """(S, S, 3) uint8 photo, the caption's words and their (words, L) weights -> one picture.

    The first panel is the photo with the whole caption; then one panel per word.
    """
    if len(words) != len(attention):
        raise ArgumentError(f"{len(words)} words but {len(attention)} attention maps")
    photo = Image.fromarray(image).convert("RGB").resize((PANEL, PANEL), Image.Resampling.BICUBIC)
    panels = [(photo, " ".join(words))] + [(overlay(photo, weights), word) for word, weights in zip(words, attention)]
    rows = math.ceil(len(panels) / COLUMNS)
    figure = Image.new("RGB", (COLUMNS * PANEL, rows * (PANEL + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=14)
    for number, (panel, label) in enumerate(panels):
        x, y = (number % COLUMNS) * PANEL, (number // COLUMNS) * (PANEL + LABEL_HEIGHT)
        figure.paste(panel, (x, y))
        text = (
            label
            if draw.textlength(label, font=font) <= PANEL - 8
            else label[: max(1, len(label) * (PANEL - 8) // int(draw.textlength(label, font=font))) - 1] + "…"
        )
        draw.text((x + 4, y + PANEL + 4), text, fill="black", font=font)
    return figure


def save_attention_figure(path: str | os.PathLike, image: np.ndarray, words: list[str], attention: np.ndarray) -> Path:
    """Writes `attention_figure` as PNG (atomically) and returns the path."""
    path = Path(path)
    with atomic.atomic_path(path.with_suffix(path.suffix or ".png")) as tmp:
        attention_figure(image, words, attention).save(tmp, format="PNG")
    return path.with_suffix(path.suffix or ".png")
