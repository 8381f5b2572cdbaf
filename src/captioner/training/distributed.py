"""Multi-worker training with `tf.distribute.MultiWorkerMirroredStrategy`: a group of processes, one model.

How a run is split, and why the result equals one worker's with the same global batch:

- Every worker reads the same captions (in memory, or a sharded set's caption files on disk that
  the chief wrote) and computes the same epoch order (`epoch_order`, or `pooled_order` for caption
  files) and so the same global batches of `batch_size` captions. Worker r takes the r-th of N near-equal slices
  of each global batch and reads only those images' features from the feature store: each worker
  reads its part of the store, and the parts together are the batch one worker would read.
- A worker's loss is its slice's summed token loss divided by the *global* batch's token count,
  so the sum over workers is exactly one worker's mean loss; gradients are summed across workers
  (all-reduce), clipped by global norm once, then applied: every worker takes the same step.
- Dropout draws its masks on each worker, so with dropout the group follows a different (equally
  good) random path than one worker; with dropout 0 it follows the same path to float rounding.
- Only the chief (worker 0) writes: vocabulary, run config, checkpoints and the model. Every
  worker resumes from the chief's checkpoint, so the run directory (like the feature store) must
  be on a filesystem every machine sees. The number of workers may change between a run and its
  resume: the global batch, not the worker count, defines the run.
- The chief extracts any missing features first while the others wait, then all read the store.

Start a group with `TF_CONFIG` (one process per machine, see docs/scale-out.md) or, on one machine,
`captioner train --workers N`, which starts N processes on 127.0.0.1 with `launch_local`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from captioner.errors import ArgumentError
from captioner.models.base import Decoder
from captioner.training.batches import CaptionRows, FeatureReader
from captioner.training.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["WorkerGroup", "group_from_env", "launch_local"]


def _cluster_from_env() -> tuple[int, int] | None:
    """(this worker's index, number of workers) from TF_CONFIG, or None without a multi-worker TF_CONFIG."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
        workers = list(spec["cluster"].get("worker", [])) + list(spec["cluster"].get("chief", []))
        task = spec["task"]
        index = int(task["index"]) + (len(spec["cluster"].get("chief", [])) if task["type"] == "worker" else 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ArgumentError('TF_CONFIG is not valid: expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}') from None
    if len(workers) < 2:
        return None
    return index, len(workers)


class WorkerGroup:
    """This process's place in a multi-worker group, and the strategy that joins it to the others."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank = rank
        self.size = size
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        self.is_chief = rank == 0

    def scope(self) -> Any:
        return self.strategy.scope()

    def barrier(self) -> None:
        """Returns once every worker has called it (an all-reduce of one number)."""
        self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    @contextlib.contextmanager
    def chief_first(self) -> Iterator[None]:
        """The chief runs the block first (e.g. feature extraction), then the others run it."""
        if not self.is_chief:
            self.barrier()
        yield
        if self.is_chief:
            self.barrier()

    def trainer(self, decoder: Decoder, config: TrainConfig) -> GroupTrainer:
        return GroupTrainer(decoder, config, self)


def group_from_env() -> WorkerGroup | None:
    """The worker group TF_CONFIG describes; None for an ordinary one-process run.

    Must be called before TensorFlow runs any operation in this process (the strategy sets up
    the collective ops then).
    """
    place = _cluster_from_env()
    if place is None:
        return None
    group = WorkerGroup(*place)
    log.info("worker %d of %d (chief: %s)", group.rank + 1, group.size, "yes" if group.is_chief else "no")
    return group


class GroupTrainer:
    """The `Trainer` of a worker in a group (see the module notes for the loss and gradient rules)."""

    def __init__(self, decoder: Decoder, config: TrainConfig, group: WorkerGroup) -> None:
        from captioner.training.loop import Trainer

        self.group = group
        self.decoder = decoder
        self.config = config
        self.is_chief = group.is_chief
        self.optimizer = keras.optimizers.Adam(config.learning_rate)  # clipped here, after the all-reduce
        self.optimizer.build(decoder.trainable_variables)
        self._base = Trainer.__new__(Trainer)  # evaluation and checkpoints: the one-worker code
        self._base.decoder, self._base.config, self._base.optimizer = decoder, config, self.optimizer
        spec = (
            (tf.TensorSpec((None, *decoder.feature_shape()), tf.float32), tf.TensorSpec((None, None), tf.int32)),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32),
        )
        self._step = tf.function(self._distributed_step, input_signature=spec)
        self._base.eval_step = tf.function(self._base._eval_step)

    def _replica_step(self, inputs: tuple[tf.Tensor, tf.Tensor], targets: tf.Tensor, global_tokens: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
        variables = self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.decoder(inputs, training=True)
            mask = tf.cast(targets != 0, logits.dtype)
            if self.config.label_smoothing:
                one_hot = tf.one_hot(targets, tf.shape(logits)[-1], dtype=logits.dtype)
                per_token = keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=self.config.label_smoothing)
            else:
                per_token = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            loss = tf.reduce_sum(per_token * mask) / tf.maximum(global_tokens, 1.0)
            if self.decoder.losses:  # batch means on each slice: weighted by the slice's share of the batch
                loss += tf.add_n(self.decoder.losses) * share
        grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v) for g, v in zip(tape.gradient(loss, variables), variables)]
        context = tf.distribute.get_replica_context()
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if self.config.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm)
        # Keras' optimizer sums gradients across workers once more: hand it 1/N of the total each.
        grads = [g / float(self.group.size) for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss

    def _distributed_step(self, inputs: tuple[tf.Tensor, tf.Tensor], targets: tf.Tensor, global_tokens: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
        per_worker = self.group.strategy.run(self._replica_step, args=(inputs, targets, global_tokens, share))
        return self.group.strategy.reduce(tf.distribute.ReduceOp.SUM, per_worker, axis=None)

    def train_step(self, inputs: tuple[tf.Tensor, tf.Tensor], targets: tf.Tensor, global_tokens: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
        return self._step(inputs, targets, global_tokens, share)

    def batches(self, rows: CaptionRows, reader: FeatureReader, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        """This worker's slices of the epoch's global batches: ((features, inputs), targets, global tokens, share)."""
        rank, size = self.group.rank, self.group.size
        shape = reader.shape[1:]

        def slices() -> Iterator[tuple[np.ndarray, np.ndarray, np.int32, np.float32, np.float32]]:
            for positions, tokens in rows.epoch_batches(batch_size, seed, epoch):  # (B, 2), (B, T)
                if len(tokens) < size:  # too small to give every worker a caption: skipped by all alike
                    continue
                local = np.array_split(np.arange(len(tokens)), size)[rank]
                # Padded to the whole batch's longest caption, as one worker pads it: a decoder whose
                # regulariser counts padded steps (attention's counts the step fed <end>) sees the same.
                length = np.int32((tokens != 0).sum(axis=1).max())
                yield positions[local], tokens[local], length, np.float32((tokens[:, 1:] != 0).sum()), np.float32(len(local) / len(tokens))

        def to_batch(positions: tf.Tensor, tokens: tf.Tensor, length: tf.Tensor, global_tokens: tf.Tensor, share: tf.Tensor) -> tuple:
            tokens = tokens[:, :length]
            features = tf.ensure_shape(reader.tf_read_at(positions), [None, *shape])
            return (features, tokens[:, :-1]), tokens[:, 1:], global_tokens, share

        signature = (
            tf.TensorSpec((None, 2), tf.int64),
            tf.TensorSpec((None, rows.max_length), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32),
        )
        return tf.data.Dataset.from_generator(slices, output_signature=signature).map(to_batch).prefetch(2)

    def evaluate(self, dataset: tf.data.Dataset) -> float:
        """Validation loss, computed by every worker on the whole validation split (same number on all)."""
        return self._base.evaluate(dataset)

    def save_checkpoint(self, path: Path, progress: dict) -> None:
        if self.is_chief:
            self._base.save_checkpoint(path, progress)

    def load_checkpoint(self, path: Path) -> dict:
        return self._base.load_checkpoint(path)


# --- starting a group on this machine -------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local(config: TrainConfig, workers: int, resume: bool = False, epochs: int | None = None, progress: bool = True, verbose: bool = False) -> Path:
    """Trains with `workers` processes on 127.0.0.1 (TF_CONFIG set for each); returns the chief's model directory.

    Worker 0 (the chief) writes to this process's terminal; the others to `<output>/worker-<i>.log`.
    If any worker fails, the others are stopped and the failure is raised as one line.
    """
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(workers)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="captioner-workers-", delete=False) as spec_file:
        json.dump({"config": config.to_json(), "resume": resume, "epochs": epochs, "progress": progress, "verbose": verbose}, spec_file)
    processes: list[subprocess.Popen] = []
    logs = []
    try:
        for index in range(workers):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})}
            command = [sys.executable, "-m", "captioner.training.worker", spec_file.name]
            if index == 0:  # sys.stderr, not descriptor 2: the CLI points that away from the terminal while it runs
                processes.append(subprocess.Popen(command, env=env, stderr=_stderr_target()))
            else:
                logs.append(open(run_dir / f"worker-{index}.log", "w"))
                processes.append(subprocess.Popen(command, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
        failed = _wait_all(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for handle in logs:
            handle.close()
        os.unlink(spec_file.name)
    if failed is not None:
        where = "above" if failed == 0 else f"in {run_dir / f'worker-{failed}.log'}"
        raise ArgumentError(
            f"training worker {failed} of {workers} failed (exit {processes[failed].returncode}; its message is {where}); the others were stopped"
        )
    from captioner.training.loop import MODEL_DIR

    return run_dir / MODEL_DIR


def _stderr_target() -> Any:
    """Where the chief's messages go: this process's `sys.stderr` if it has a descriptor, else descriptor 2."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    return sys.stderr


def _wait_all(processes: list[subprocess.Popen]) -> int | None:
    """Waits for every process; returns the index of the first to fail (the rest are then stopped), or None."""
    while True:
        codes = [p.poll() for p in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                return index
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)
