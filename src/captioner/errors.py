"""One error hierarchy: a user's mistake versus a bug.

    CaptionerError
    └── UserError              the input is wrong: CLI prints one line and exits 1, HTTP answers 4xx
        ├── FileError          "<path>: <problem>" (images, datasets, vocabularies, caches, models)
        └── ArgumentError      a bad value for a flag or parameter

Anything else that escapes the library is a bug: the CLI says so (with `--debug` for the traceback)
and an HTTP layer answers 500.
"""

from __future__ import annotations

import os
from typing import Self


class CaptionerError(Exception):
    """Base of every error this package raises on purpose."""


class UserError(CaptionerError, ValueError):
    """The input (a file, a model directory, an argument) is wrong; the message says how, on one line."""


class ArgumentError(UserError):
    """A parameter value that cannot be used, e.g. a beam size of 0."""


class FileError(UserError):
    """A file that cannot be used; `str(e)` is "<path>: <problem>".

    Attributes:
        path: the file (or the name given for in-memory data).
        problem: what is wrong with it, one line.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[Self], tuple[str, str]]:
        # The default reduce would call cls(message), which lacks `problem`; worker processes
        # hand these back to their parent, so they must pickle.
        return (type(self), (self.path, self.problem))


def check_positive(name: str, value: int | float | None, allow_none: bool = True, allow_zero: bool = False) -> None:
    """Raises `ArgumentError` unless `value` is a positive number (or None where allowed)."""
    if value is None:
        if allow_none:
            return
        raise ArgumentError(f"{name} is required")
    if value < 0 or (value == 0 and not allow_zero):
        raise ArgumentError(f"{name} must be {'zero or more' if allow_zero else 'at least 1'}, got {value}")
