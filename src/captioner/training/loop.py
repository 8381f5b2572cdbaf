"""Training any registered decoder on stored image features, with checkpoints and exact resume.

A run directory holds:

    train_config.json   the `TrainConfig` of the run
    vocab.json          the vocabulary built from the training split
    checkpoint.npz      model + optimizer variables + progress after the last finished epoch
    model/              the best model so far (by validation loss), a complete captioner
    captions/           a sharded dataset's (WebDataset, Parquet) captions encoded on disk
                        (`captioner.training.stream`), rebuilt at every start

Resuming restores model, optimizer (moments and step count) and dropout random state, and every
epoch's batch order is a function of (seed, epoch), so an interrupted run continues exactly as an
uninterrupted one would. It continues the run as it was configured; only `epochs` may be changed,
and only when asked for.

A sharded dataset is never held in memory: its captions are streamed from the shards once per
start into `captions/` and read from there a pool of rows at a time, so that training's memory
does not grow with the number of images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from captioner import atomic
from captioner.artifacts import CaptionerConfig, save_captioner
from captioner.data import CaptionDataset, ShardedSource, is_sharded, load_dataset, open_sharded
from captioner.data.skipped import log_skipped_lines
from captioner.errors import ArgumentError, FileError, UserError
from captioner.features import FeatureStore, default_cache_dir, update_features, update_shard_features
from captioner.models.base import Decoder, build_decoder, decoder_class, make_config
from captioner.training.batches import CaptionArrays, CaptionRows, FeatureReader, encode_captions
from captioner.training.config import TrainConfig
from captioner.training.stream_build import StreamedSplits, build_caption_files, open_caption_files
from captioner.vocab import Vocabulary

if TYPE_CHECKING:
    from captioner.training.distributed import GroupTrainer, WorkerGroup

log = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
VOCAB_FILE = "vocab.json"
CHECKPOINT_FILE = "checkpoint.npz"
MODEL_DIR = "model"
CAPTIONS_DIR = "captions"
EVAL_BATCH_SIZE = 256


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; nothing from that epoch is kept."""


def masked_loss(targets: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Mean cross-entropy over non-padding positions. targets (B, T) int, logits (B, T, V)."""
    mask = tf.cast(targets != 0, logits.dtype)
    if label_smoothing:
        one_hot = tf.one_hot(targets, tf.shape(logits)[-1], dtype=logits.dtype)
        per_token = keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=label_smoothing)
    else:
        per_token = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return tf.reduce_sum(per_token * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class Trainer:
    """Owns the decoder, its optimizer and the compiled train/validation steps."""

    is_chief = True  # writes checkpoints and the model (in a worker group only worker 0 does)

    def __init__(self, decoder: Decoder, config: TrainConfig) -> None:
        self.decoder = decoder
        self.config = config
        kwargs = {"global_clipnorm": config.clip_norm} if config.clip_norm else {}
        self.optimizer = keras.optimizers.Adam(config.learning_rate, **kwargs)
        self.optimizer.build(decoder.trainable_variables)
        spec = (
            (tf.TensorSpec((None, *decoder.feature_shape()), tf.float32), tf.TensorSpec((None, None), tf.int32)),
            tf.TensorSpec((None, None), tf.int32),
        )
        self.train_step = tf.function(self._train_step, input_signature=spec)
        self.eval_step = tf.function(self._eval_step, input_signature=spec)

    def _train_step(self, inputs: tuple[tf.Tensor, tf.Tensor], targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.decoder(inputs, training=True)
            loss = masked_loss(targets, logits, self.config.label_smoothing)
            if self.decoder.losses:  # a decoder's own regularisers (e.g. attention's)
                loss += tf.add_n(self.decoder.losses)
        grads = tape.gradient(loss, self.decoder.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.decoder.trainable_variables))
        return loss

    def batches(self, rows: CaptionRows, reader: FeatureReader, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        """One epoch's training batches (its order a function of seed and epoch): the arguments of `train_step`."""
        return rows.dataset(reader, batch_size, seed, epoch)

    def _eval_step(self, inputs: tuple[tf.Tensor, tf.Tensor], targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = self.decoder(inputs, training=False)
        tokens = tf.reduce_sum(tf.cast(targets != 0, tf.float32))
        return masked_loss(targets, logits) * tokens, tokens

    def evaluate(self, dataset: tf.data.Dataset) -> float:
        """Validation loss: mean cross-entropy per target word (no label smoothing)."""
        total, count = 0.0, 0.0
        for inputs, targets in dataset:
            loss_sum, tokens = self.eval_step(inputs, targets)
            total += float(loss_sum)
            count += float(tokens)
        return total / max(count, 1.0)

    # Checkpoints: model weights by name; optimizer and dropout-RNG state in creation order (the
    # same code creates them the same way); progress as JSON text.
    def save_checkpoint(self, path: Path, progress: dict) -> None:
        named = self.decoder.variable_names()
        weights = {id(v) for v in named.values()}
        arrays = {f"model/{name}": np.asarray(v) for name, v in named.items()}
        arrays.update({f"rng_{i:03d}": np.asarray(v) for i, v in enumerate(v for v in self.decoder.variables if id(v) not in weights)})
        arrays.update({f"optimizer_{i:03d}": np.asarray(v) for i, v in enumerate(self.optimizer.variables)})
        arrays["progress"] = np.array(json.dumps(progress))
        with atomic.atomic_path(path) as tmp:
            np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stubs reject **arrays

    def load_checkpoint(self, path: Path) -> dict:
        named = self.decoder.variable_names()
        weights = {id(v) for v in named.values()}
        groups: dict[str, list[tuple[Any, Any]]] = {
            "model/": list(named.items()),
            "rng_": list(enumerate(v for v in self.decoder.variables if id(v) not in weights)),
            "optimizer_": list(enumerate(self.optimizer.variables)),
        }
        try:
            with np.load(path, allow_pickle=False) as archive:
                for prefix, variables in groups.items():
                    names = sorted(n for n in archive.files if n.startswith(prefix))
                    if len(names) != len(variables):
                        raise FileError(path, f"checkpoint does not match this model ({len(names)} vs {len(variables)} {prefix.rstrip('_/')} variables)")
                    for key, variable in variables:
                        name = f"{prefix}{key}" if prefix == "model/" else f"{prefix}{key:03d}"
                        variable.assign(archive[name])
                return json.loads(str(archive["progress"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, FileError):
                raise
            raise FileError(path, f"unreadable checkpoint ({type(err).__name__}); start a new run with another --output") from None


def _cleaned(dataset: CaptionDataset, split: str, limit: int | None) -> dict[str, list[str]]:
    captions = dataset.cleaned(split)
    if limit:
        captions = dict(list(captions.items())[:limit])
    return captions


def _split_arrays(dataset: CaptionDataset, split: str, vocab: Vocabulary, config: TrainConfig, store: FeatureStore, progress: bool) -> CaptionArrays:
    """A split of a dataset of image files, in memory; its missing features are extracted first."""
    captions = _cleaned(dataset, split, config.limit_images)
    report = update_features(store, {k: dataset.image_path(k) for k in captions}, progress=progress)
    if report.encoded or report.failed:
        log.info("%s: %s", split, report)
    captions = {k: v for k, v in captions.items() if k not in report.failed}
    keys, image_index, tokens = encode_captions(captions, vocab, config.max_length)
    return CaptionArrays(image_index, tokens, keys, store.positions(keys))


def _stream_captions(config: TrainConfig, source: ShardedSource, store: FeatureStore, vocab: Vocabulary | None, chief: bool, verbose: bool) -> StreamedSplits:
    """A sharded dataset's splits on disk: the chief writes them (and a new run's vocabulary), every worker opens them."""
    run_dir = Path(config.output)
    if chief:
        fresh = vocab is None
        vocab, report = build_caption_files(
            source,
            store,
            run_dir / CAPTIONS_DIR,
            train_split=config.train_split,
            val_split=config.val_split,
            max_length=config.max_length,
            min_word_count=config.min_word_count,
            vocab=vocab,
            limit_images=config.limit_images,
            allow_outside_paths=config.allow_outside_paths,
            given=config.data,
        )
        summary = report.summary(verbose)
        if summary:
            log.warning("%s", summary)
        if fresh:
            vocab.save(run_dir / VOCAB_FILE)
    else:  # after the chief: its vocabulary and files
        vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    return open_caption_files(run_dir / CAPTIONS_DIR, store, vocab)


def _prepare_run(config: TrainConfig, resume: bool, epochs: int | None, chief: bool = True) -> TrainConfig:
    run_dir = Path(config.output)
    checkpoint = run_dir / CHECKPOINT_FILE
    if resume:
        if not checkpoint.exists():
            raise FileError(run_dir, f"nothing to resume ({CHECKPOINT_FILE} missing)")
        config = TrainConfig.load(run_dir / CONFIG_FILE)
        if epochs is not None:
            log.info("resume: epochs changed from %d to %d as asked", config.epochs, epochs)
            config.epochs = epochs
    elif checkpoint.exists():
        raise FileError(run_dir, "already holds a run; pass --resume to continue it or choose another --output")
    elif run_dir.exists() and not run_dir.is_dir():
        raise FileError(run_dir, "exists and is not a folder; choose another --output")
    config.validate()
    decoder_class(config.decoder)
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        config.save(run_dir / CONFIG_FILE)
    return config


def _worker_group() -> WorkerGroup | None:
    """The multi-worker group TF_CONFIG describes, or None (no TF_CONFIG: the distributed code is not even imported)."""
    if not os.environ.get("TF_CONFIG"):
        return None
    from captioner.training.distributed import group_from_env

    return group_from_env()


def train(config: TrainConfig, resume: bool = False, progress: bool = True, epochs: int | None = None, verbose: bool = False) -> Path:
    """Trains a captioner and returns the directory of the best model.

    Args:
        config: run settings (on resume, read from the run directory instead).
        resume: continue the run in `config.output` from its last checkpoint, as it was configured.
        progress: show progress bars.
        epochs: on resume, change the planned number of epochs (None: keep the run's plan).
        verbose: log every skipped dataset line, not just the first few.
    """
    group = _worker_group()  # before any TensorFlow operation: a TF_CONFIG group joins here
    chief = group is None or group.is_chief
    config = _prepare_run(config, resume, epochs, chief)
    run_dir = Path(config.output)
    sharded = is_sharded(config.data, config.data_format)
    source: ShardedSource | None = None
    vocab: Vocabulary | None = Vocabulary.load(run_dir / VOCAB_FILE) if resume else None
    if sharded:  # WebDataset / Parquet: images are inside the shards; captions are streamed to disk below
        source = open_sharded(config.data, config.data_format)
        image_dir = Path(config.image_dir) if config.image_dir else source.root
    else:
        dataset = load_dataset(config.data, config.data_format, image_dir=config.image_dir, allow_outside_paths=config.allow_outside_paths)
        log_skipped_lines(dataset, verbose)
        dataset_info = dataset.describe(config.data)
        image_dir = dataset.image_dir
        if vocab is None:
            train_captions = _cleaned(dataset, config.train_split, config.limit_images)
            if not train_captions:
                raise ArgumentError(f"{config.data}: the {config.train_split!r} split has no usable captions")
            vocab = Vocabulary.build((c for cs in train_captions.values() for c in cs), min_count=config.min_word_count)
            del train_captions  # _split_arrays cleans them again; two copies would double this peak
            if chief:
                vocab.save(run_dir / VOCAB_FILE)

    kind = decoder_class(config.decoder).features
    store = FeatureStore(
        default_cache_dir(image_dir, config.encoder, kind == "grid", config.encoder_weights, config.cache_dir),
        config.encoder,
        config.encoder_weights,
        spatial=kind == "grid",
        index_keys=not sharded,  # a sharded set's images are found a source shard at a time
    )
    train_rows: CaptionRows
    val_rows: CaptionRows
    with group.chief_first() if group is not None else contextlib.nullcontext():  # the chief extracts, the others then find it done
        if source is not None:  # images are encoded a shard at a time, then captions streamed to disk
            report = update_shard_features(store, source, progress=progress)
            if report.encoded or report.failed:
                log.info("features: %s", report)
            store.refresh()
            streamed = _stream_captions(config, source, store, vocab, chief, verbose)
            vocab, train_rows, val_rows, dataset_info = streamed.vocab, streamed.train, streamed.val, streamed.dataset_info
        else:
            assert vocab is not None
            store.refresh()
            train_rows = _split_arrays(dataset, config.train_split, vocab, config, store, progress)
            val_rows = _split_arrays(dataset, config.val_split, vocab, config, store, progress)
    if source is not None and not streamed.listed_train_images:
        raise ArgumentError(f"{config.data}: the {config.train_split!r} split has no usable captions")
    if not len(train_rows):
        raise ArgumentError(f"{config.data}: no training image could be read")
    if not len(val_rows):
        log.warning("the %r split has no usable captions: training without model selection (the last epoch's model is kept)", config.val_split)

    keras.utils.set_random_seed(config.seed)
    decoder_config = make_config(
        config.decoder,
        vocab_size=len(vocab),
        max_length=config.max_length,
        feature_dim=store.shape[-1],
        embedding_dim=config.embedding_dim,
        units=config.units,
        projection_dim=config.projection_dim,
        dropout=config.dropout,
    )
    with group.scope() if group is not None else contextlib.nullcontext():
        decoder = build_decoder(decoder_config)
        trainer: Trainer | GroupTrainer = group.trainer(decoder, config) if group is not None else Trainer(decoder, config)
    state: dict[str, Any] = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "history": []}
    if resume:
        state = trainer.load_checkpoint(run_dir / CHECKPOINT_FILE)
        log.info("resuming %s after epoch %d of %d", run_dir, state["epoch"], config.epochs)
    train_reader = train_rows.reader(store, kind)
    val_data = val_rows.dataset(val_rows.reader(store, kind), EVAL_BATCH_SIZE) if len(val_rows) else None

    n_train = len(train_rows)
    log.info(
        "training the %s decoder on %d images / %d captions, validating on %d captions; vocabulary %d words",
        config.decoder,
        train_rows.images,
        n_train,
        len(val_rows),
        len(vocab),
    )
    for epoch in range(state["epoch"], config.epochs):
        if val_data is not None and epoch - state["best_epoch"] >= config.patience:
            break
        trainer.optimizer.learning_rate.assign(config.learning_rate * config.lr_decay**epoch)
        started = time.perf_counter()
        bar = tqdm(
            trainer.batches(train_rows, train_reader, config.batch_size, config.seed, epoch),
            total=math.ceil(n_train / config.batch_size),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        total, batches = 0.0, 0
        for batch in bar:
            loss = float(trainer.train_step(*batch))
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch + 1} (loss {loss}); the last good checkpoint is kept: lower --learning-rate or --clip-norm"
                )
            total, batches = total + loss, batches + 1
            bar.set_postfix(loss=f"{total / batches:.3f}")
        bar.close()
        seconds = time.perf_counter() - started
        val_loss = trainer.evaluate(val_data) if val_data is not None else None
        improved = val_loss is None or val_loss < state["best_val_loss"]
        record = {"epoch": epoch + 1, "train_loss": total / max(batches, 1), "val_loss": val_loss, "seconds": seconds, "captions_per_s": n_train / seconds}
        state["history"].append(record)
        state["epoch"] = epoch + 1
        if improved:
            state.update(best_val_loss=val_loss if val_loss is not None else math.inf, best_epoch=epoch + 1)
            training_info = {
                "dataset": dataset_info,
                "train_split": config.train_split,
                "epochs": epoch + 1,
                "seed": config.seed,
                "val_loss": val_loss,
                "train_captions": n_train,
            }
        if improved and chief:  # in a worker group only the chief writes
            save_captioner(
                run_dir / MODEL_DIR,
                decoder,
                vocab,
                CaptionerConfig(config.encoder, decoder_config, config.encoder_weights, training=training_info),
                extra_json={CONFIG_FILE: config.portable()},
            )
        trainer.save_checkpoint(run_dir / CHECKPOINT_FILE, state)
        shown = f"val loss {val_loss:.4f}{'  *best*' if improved else ''}" if val_loss is not None else "no validation"
        log.info(
            "epoch %2d/%d  train loss %.4f  %s  %.0fs (%.0f captions/s)",
            epoch + 1,
            config.epochs,
            record["train_loss"],
            shown,
            seconds,
            record["captions_per_s"],
        )
    if chief and not (run_dir / MODEL_DIR).is_dir():
        raise ArgumentError(f"{run_dir}: no epoch finished, so there is no model (epochs {config.epochs})")
    return run_dir / MODEL_DIR
