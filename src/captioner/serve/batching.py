"""A micro-batcher: many concurrent requests, one model, one worker thread.

Requests put decoded images on a queue and get a `concurrent.futures.Future` back. A single
worker thread takes the oldest image, waits at most `max_wait_ms` (counted from that image's
arrival) for up to `max_batch` images in all, groups what it took by search settings
(beam size, number of captions), and runs each group through the model as one batch: the encoder
and the compiled search cost less per image in a batch, so throughput rises with load while a lone
request waits only `max_wait_ms`.

A request that gives up (its timeout passed) cancels its future; the worker drops cancelled images
before running a batch, so an abandoned request costs nothing once it has timed out. The worker
never stops on an error: a failing batch fails only its own futures.

This module imports neither FastAPI nor TensorFlow; the captioner it is given does.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from captioner import defaults

if TYPE_CHECKING:
    from captioner.decoding import Hypothesis  # imports TensorFlow

log = logging.getLogger("captioner.serve")


class Overloaded(Exception):
    """The queue is full (or the batcher is stopping): the request is refused, not queued."""


@dataclasses.dataclass
class BatchResult:
    """What the worker hands back for one image.

    Attributes:
        hypotheses: best first, as `Captioner.caption_arrays` returns them.
        batch_size: how many images shared the model run (all search settings alike).
        queue_ms: from submission until the worker took the image.
        encode_ms: the encoder's time for the whole batch.
        search_ms: the caption search's time for the whole batch.
    """

    hypotheses: list[Hypothesis]
    batch_size: int
    queue_ms: float
    encode_ms: float
    search_ms: float


@dataclasses.dataclass
class _Job:
    image: np.ndarray  # (S, S, 3) uint8
    key: tuple[int, int]  # (beam size, number of captions): images batch together only when these agree
    future: Future
    submitted: float  # time.monotonic()


class MicroBatcher:
    """Batches images from many threads or event loops through one `Captioner`.

    Args:
        captioner: a loaded `captioner.pipeline.Captioner` (anything with `features(images)` and
            `search.caption(features, beam_size, num_captions, length_penalty)`: the two halves of
            `Captioner.caption_arrays`, run separately so each can be timed).
        max_batch: most images per model run; 1 disables batching.
        max_wait_ms: how long to wait for company after the first image arrives.
        max_queue: most images waiting; `submit` raises `Overloaded` beyond it.
        length_penalty: passed to the search (the CLI's default).
    """

    def __init__(self, captioner: Any, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 256, length_penalty: float = defaults.LENGTH_PENALTY):
        self.captioner = captioner
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000
        self.max_queue = int(max_queue)
        self.length_penalty = float(length_penalty)
        self._pending: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Statistics, read by /health and the tests (under self._cond).
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # images per model run -> runs
        self.images_done = 0
        self.cancelled = 0
        self.failed_batches = 0
        self._busy_since: float | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            # A daemon thread: a model call that never returns must not keep the process alive.
            self._thread = threading.Thread(target=self._work, name="captioner-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels what is still queued and stops the worker (after the batch it is running)."""
        with self._cond:
            self._stopping = True
            while self._pending:
                self._pending.popleft().future.cancel()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # --- the requests' side -------------------------------------------------------------------

    def submit(self, image: np.ndarray, beam_size: int, num_captions: int) -> Future:
        """Queues one (S, S, 3) uint8 image; the future resolves to a `BatchResult`.

        Raises:
            Overloaded: `max_queue` images are already waiting, or the batcher is not running.
        """
        future: Future = Future()
        with self._cond:
            if not self.running:
                raise Overloaded("the captioner is not running")
            if len(self._pending) >= self.max_queue:
                raise Overloaded(f"too many images waiting ({len(self._pending)}); try again shortly")
            self._pending.append(_Job(image, (int(beam_size), int(num_captions)), future, time.monotonic()))
            self._cond.notify()
        return future

    def stats(self) -> dict:
        """Queue length, images captioned, batch sizes and how long the current batch has run."""
        with self._cond:
            busy = None if self._busy_since is None else round(time.monotonic() - self._busy_since, 3)
            return {
                "queued": len(self._pending),
                "images": self.images_done,
                "batches": sum(self.batch_sizes.values()),
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
                "cancelled": self.cancelled,
                "failed_batches": self.failed_batches,
                "busy_s": busy,
            }

    def busy_for(self) -> float:
        """Seconds the current model run has taken so far (0 when idle)."""
        with self._cond:
            return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    # --- the worker ---------------------------------------------------------------------------

    def _take(self) -> list[_Job] | None:
        """Blocks for the next batch: the oldest image and whatever joins it within the wait."""
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = self._pending[0].submitted + self.max_wait
            while len(self._pending) < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(self.max_batch, len(self._pending))
            return [self._pending.popleft() for _ in range(count)]

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            groups: dict[tuple[int, int], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for (beam_size, num_captions), group in groups.items():
                self._run(group, beam_size, num_captions)

    def _run(self, group: list[_Job], beam_size: int, num_captions: int) -> None:
        taken = time.monotonic()
        live = [job for job in group if job.future.set_running_or_notify_cancel()]
        if len(live) < len(group):
            with self._cond:
                self.cancelled += len(group) - len(live)
        if not live:
            return
        with self._cond:
            self._busy_since = taken
        try:
            images = np.stack([job.image for job in live])
            started = time.perf_counter()
            features = self.captioner.features(images)
            encoded = time.perf_counter()
            results = self.captioner.search.caption(features, beam_size, num_captions, self.length_penalty)
            searched = time.perf_counter()
        except BaseException as err:
            with self._cond:
                self._busy_since = None
                self.failed_batches += 1
            for job in live:
                job.future.set_exception(err)
            if not isinstance(err, Exception):
                raise
            return
        encode_ms, search_ms = (encoded - started) * 1000, (searched - encoded) * 1000
        with self._cond:
            self._busy_since = None
            self.batch_sizes[len(live)] += 1
            self.images_done += len(live)
        for job, hypotheses in zip(live, results):
            queue_ms = (taken - job.submitted) * 1000
            job.future.set_result(BatchResult(hypotheses, len(live), queue_ms, encode_ms, search_ms))
