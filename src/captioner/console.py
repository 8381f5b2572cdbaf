"""The terminal side of the CLI: TensorFlow's C++ start-up lines kept off it, and logging set up."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger("captioner")


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool) -> Iterator[None]:
    """Sends what C++ code writes to file descriptor 2 (TensorFlow, absl) to /dev/null.

    Python's own `sys.stderr` keeps writing to the terminal through a copy of the descriptor.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    original = sys.stderr
    try:
        uses_fd2 = original.fileno() == 2
    except (AttributeError, OSError, ValueError):
        uses_fd2 = False  # already redirected in Python (e.g. captured by a test)
    if uses_fd2:
        sys.stderr = open(saved, "w", buffering=1, encoding=original.encoding or "utf-8", errors="backslashreplace", closefd=False)
    try:
        yield
    finally:
        if uses_fd2:
            sys.stderr.flush()
            sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)


def setup_logging(debug: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)
    return handler
