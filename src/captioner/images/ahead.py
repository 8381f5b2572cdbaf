"""Read-ahead: load the next batch on a worker thread while the caller uses this one."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

_Batch = TypeVar("_Batch")
_Loaded = TypeVar("_Loaded")


def load_ahead(batches: Sequence[_Batch], load: Callable[[_Batch], _Loaded]) -> Iterator[tuple[_Batch, _Loaded]]:
    """Yields (batch, load(batch)) in order, loading the next batch on a worker thread.

    Decoding JPEGs releases the GIL, so the next batch is read while the caller encodes this one.
    """
    if not batches:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0])
        for i, batch in enumerate(batches):
            loaded = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(load, batches[i + 1])
            yield batch, loaded
