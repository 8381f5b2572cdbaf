"""The one error shape users see: a file and what is wrong with it, on one line."""

from __future__ import annotations

import os


class FileError(ValueError):
    """A file that cannot be used; `str(e)` is "<path>: <problem>".

    Attributes:
        path: the file (or the name given for in-memory data).
        problem: what is wrong with it, one line.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # The default reduce would call cls(message), which lacks `problem`; worker processes
        # hand these back to their parent, so they must pickle.
        return (type(self), (self.path, self.problem))
