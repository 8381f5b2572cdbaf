"""Argparse types for numeric flags: a value out of range is refused with one line, never changed.

Shared by every subcommand (`cli`, `serve`, `export`); imports nothing heavy.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def number(
    kind: Callable[[str], Any], minimum: float, inclusive: bool = True, maximum: float | None = None, below: float | None = None
) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` (int or float) >= `minimum` (> if not `inclusive`), <= `maximum`, < `below`."""
    bound = f"{'at least' if inclusive else 'more than'} {minimum:g}"
    bound += f" and at most {maximum:g}" if maximum is not None else ""
    bound += f" and below {below:g}" if below is not None else ""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < minimum or (value == minimum and not inclusive) or (maximum is not None and value > maximum) or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse names the type in its messages
    return parse


positive_int = number(int, 1)
nonnegative_int = number(int, 0)
positive_float = number(float, 0, inclusive=False)
nonnegative_float = number(float, 0)
fraction = number(float, 0, below=1)  # dropout, label smoothing
