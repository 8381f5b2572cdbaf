"""Training the merge decoder on cached image features, with checkpoints and exact resume.

One example per caption (teacher forcing over the whole caption, padding masked out of the loss),
batches of similar-length captions to waste little work on padding, a `tf.data` pipeline that
gathers features on the fly, validation loss every epoch, early stopping on it.

A run directory holds:

    train_config.json   the `TrainConfig` of the run
    vocab.json          the vocabulary built from the training split
    checkpoint.npz      model + optimizer variables + progress after the last finished epoch
    model/              the best model so far (by validation loss), a complete captioner

Resuming restores model, optimizer (moments and step count) and dropout random state, and every
epoch's batch order is a function of (seed, epoch), so an interrupted run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from captioner import atomic
from captioner.artifacts import CaptionerConfig, save_captioner
from captioner.data import CaptionDataset, load_dataset
from captioner.features import DEFAULT_ENCODER, FeatureCache, default_cache_dir
from captioner.models.merge import MergeConfig, MergeDecoder, build_decoder
from captioner.vocab import Vocabulary

CONFIG_FILE = "train_config.json"
VOCAB_FILE = "vocab.json"
CHECKPOINT_FILE = "checkpoint.npz"
MODEL_DIR = "model"
BUCKET_BATCHES = 32  # batches per length-sorting window: similar lengths, still well shuffled


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run, saved as `train_config.json` in the run directory."""

    data: str  # dataset folder or file (any format `captioner.data.load_dataset` reads)
    output: str  # run directory
    data_format: str = "auto"
    image_dir: str | None = None  # override where images live (Karpathy JSON / CSV)
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str | None = "imagenet"
    cache_dir: str | None = None  # feature cache; default under ~/.cache/captioner
    train_split: str = "train"
    val_split: str = "dev"
    limit_images: int | None = None  # use only the first N images of each split (quick runs)
    min_word_count: int = 5  # rarer training words map to <unk>
    max_length: int = 40  # tokens per caption including <start>/<end>; longer captions are cut
    embedding_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch
    label_smoothing: float = 0.0
    clip_norm: float | None = 5.0
    patience: int = 3  # stop after this many epochs without a better validation loss
    seed: int = 0

    def save(self, path: Path) -> None:
        atomic.write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls(**json.loads(Path(path).read_text()))


@dataclasses.dataclass
class CaptionArrays:
    """Captions of one split as arrays, ready for `tf.data`."""

    image_index: np.ndarray  # (N,) row of each caption's image in the feature table
    tokens: np.ndarray  # (N, max_length) int32, <start> ... <end> then padding
    features: np.ndarray  # (I, D) float32, one row per image

    @property
    def lengths(self) -> np.ndarray:
        return (self.tokens != 0).sum(axis=1)


def encode_captions(captions: dict[str, list[str]], vocab: Vocabulary, max_length: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cleaned captions per image -> (image keys, image index (N,), tokens (N, max_length))."""
    keys = list(captions)
    index, rows = [], []
    for i, key in enumerate(keys):
        for caption in captions[key]:
            ids = vocab.encode(caption)
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + [vocab.end_id]
            rows.append(ids + [vocab.pad_id] * (max_length - len(ids)))
            index.append(i)
    return keys, np.asarray(index, np.int32), np.asarray(rows, np.int32).reshape(-1, max_length)


def epoch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Example order for one epoch: shuffled, then length-sorted inside windows, batches shuffled.

    A pure function of (seed, epoch), which is what makes resume exact.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_BATCHES
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        order[start : start + window] = chunk[np.argsort(lengths[chunk], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rest = [b for b in batches if len(b) < batch_size]
    return np.concatenate([full[i] for i in rng.permutation(len(full))] + rest) if batches else order


def make_dataset(arrays: CaptionArrays, batch_size: int, order: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of ((features (B, D), inputs (B, T)), targets (B, T)), T = longest caption in the batch."""
    order = np.arange(len(arrays.tokens)) if order is None else order
    feature_table = tf.constant(arrays.features)

    def to_batch(image_index, tokens):
        length = tf.reduce_max(tf.reduce_sum(tf.cast(tokens != 0, tf.int32), axis=1))
        tokens = tokens[:, :length]
        return (tf.gather(feature_table, image_index), tokens[:, :-1]), tokens[:, 1:]

    return (
        tf.data.Dataset.from_tensor_slices((arrays.image_index[order], arrays.tokens[order]))
        .batch(batch_size)
        .map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def masked_loss(targets, logits, label_smoothing: float = 0.0):
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

    def __init__(self, decoder: MergeDecoder, config: TrainConfig):
        self.decoder = decoder
        self.config = config
        kwargs = {"global_clipnorm": config.clip_norm} if config.clip_norm else {}
        self.optimizer = keras.optimizers.Adam(config.learning_rate, **kwargs)
        self.optimizer.build(decoder.trainable_variables)
        spec = (
            (tf.TensorSpec((None, decoder.config.feature_dim), tf.float32), tf.TensorSpec((None, None), tf.int32)),
            tf.TensorSpec((None, None), tf.int32),
        )
        self.train_step = tf.function(self._train_step, input_signature=spec)
        self.eval_step = tf.function(self._eval_step, input_signature=spec)

    def _train_step(self, inputs, targets):
        with tf.GradientTape() as tape:
            logits = self.decoder(inputs, training=True)
            loss = masked_loss(targets, logits, self.config.label_smoothing)
        grads = tape.gradient(loss, self.decoder.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.decoder.trainable_variables))
        return loss

    def _eval_step(self, inputs, targets):
        logits = self.decoder(inputs, training=False)
        tokens = tf.reduce_sum(tf.cast(targets != 0, tf.float32))
        return masked_loss(targets, logits) * tokens, tokens

    def evaluate(self, arrays: CaptionArrays) -> float:
        """Validation loss: mean cross-entropy per target word (no label smoothing)."""
        total, count = 0.0, 0.0
        for inputs, targets in make_dataset(arrays, 256):
            loss_sum, tokens = self.eval_step(inputs, targets)
            total += float(loss_sum)
            count += float(tokens)
        return total / max(count, 1.0)

    # Checkpoints hold every variable (dropout seed state included) plus progress as JSON text.
    def save_checkpoint(self, path: Path, progress: dict) -> None:
        arrays = {f"model_{i:03d}": np.asarray(v) for i, v in enumerate(self.decoder.variables)}
        arrays.update({f"optimizer_{i:03d}": np.asarray(v) for i, v in enumerate(self.optimizer.variables)})
        arrays["progress"] = np.array(json.dumps(progress))
        with atomic.atomic_path(path) as tmp:
            np.savez(tmp, **arrays)

    def load_checkpoint(self, path: Path) -> dict:
        with np.load(path, allow_pickle=False) as archive:
            for prefix, variables in (("model", self.decoder.variables), ("optimizer", self.optimizer.variables)):
                names = sorted(n for n in archive.files if n.startswith(prefix + "_"))
                if len(names) != len(variables):
                    raise ValueError(f"{path}: checkpoint does not match this model ({len(names)} vs {len(variables)} {prefix} variables)")
                for name, variable in zip(names, variables):
                    variable.assign(archive[name])
            return json.loads(str(archive["progress"]))


def _split_arrays(dataset: CaptionDataset, split: str, vocab: Vocabulary, config: TrainConfig, cache: FeatureCache) -> CaptionArrays:
    captions = _cleaned(dataset, split, config.limit_images)
    report = cache.update({k: dataset.image_path(k) for k in captions})
    if report.encoded or report.failed:
        print(f"{split}: {report}", file=sys.stderr)
    captions = {k: v for k, v in captions.items() if k not in report.failed}
    keys, image_index, tokens = encode_captions(captions, vocab, config.max_length)
    found, features = cache.load(keys)
    if len(found) != len(keys):
        raise RuntimeError(f"feature cache {cache.directory} is missing {len(keys) - len(found)} images of the {split} split")
    return CaptionArrays(image_index, tokens, features.astype(np.float32))


def _cleaned(dataset: CaptionDataset, split: str, limit: int | None) -> dict[str, list[str]]:
    captions = dataset.cleaned(split)
    if limit:
        captions = dict(list(captions.items())[:limit])
    return captions


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Trains a captioner and returns the directory of the best model.

    Args:
        config: run settings (ignored on resume except `epochs`, which may be raised).
        resume: continue the run in `config.output` from its last checkpoint.
        progress: show progress bars.
    """
    run_dir = Path(config.output)
    checkpoint = run_dir / CHECKPOINT_FILE
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"{run_dir}: nothing to resume ({CHECKPOINT_FILE} missing)")
        epochs = config.epochs
        config = TrainConfig.load(run_dir / CONFIG_FILE)
        config.epochs = max(config.epochs, epochs)
    elif checkpoint.exists():
        raise FileExistsError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / CONFIG_FILE)

    dataset = load_dataset(config.data, config.data_format, image_dir=config.image_dir)
    if resume:
        vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    else:
        train_captions = _cleaned(dataset, config.train_split, config.limit_images)
        vocab = Vocabulary.build((c for cs in train_captions.values() for c in cs), min_count=config.min_word_count)
        vocab.save(run_dir / VOCAB_FILE)

    cache_dir = default_cache_dir(dataset.image_dir, config.encoder, weights=config.encoder_weights, root=config.cache_dir)
    cache = FeatureCache(cache_dir, config.encoder, config.encoder_weights)
    train_arrays = _split_arrays(dataset, config.train_split, vocab, config, cache)
    val_arrays = _split_arrays(dataset, config.val_split, vocab, config, cache)

    keras.utils.set_random_seed(config.seed)
    decoder_config = MergeConfig(len(vocab), config.max_length, train_arrays.features.shape[1], config.embedding_dim, config.units, config.dropout)
    decoder = build_decoder(decoder_config)
    trainer = Trainer(decoder, config)
    progress_state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "history": []}
    if resume:
        progress_state = trainer.load_checkpoint(checkpoint)
        print(f"resuming {run_dir} after epoch {progress_state['epoch']}", file=sys.stderr)

    n_train = len(train_arrays.tokens)
    print(f"training on {len(train_arrays.features)} images / {n_train} captions, validating on {len(val_arrays.tokens)} captions; vocabulary {len(vocab)} words", file=sys.stderr)
    for epoch in range(progress_state["epoch"], config.epochs):
        if epoch - progress_state["best_epoch"] >= config.patience:
            break
        trainer.optimizer.learning_rate.assign(config.learning_rate * config.lr_decay**epoch)
        order = epoch_order(train_arrays.lengths, config.batch_size, config.seed, epoch)
        started = time.perf_counter()
        bar = tqdm(make_dataset(train_arrays, config.batch_size, order), total=math.ceil(n_train / config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        total, batches = 0.0, 0
        for inputs, targets in bar:
            loss = float(trainer.train_step(inputs, targets))
            total, batches = total + loss, batches + 1
            bar.set_postfix(loss=f"{total / batches:.3f}")
        bar.close()
        seconds = time.perf_counter() - started
        val_loss = trainer.evaluate(val_arrays)
        improved = val_loss < progress_state["best_val_loss"]
        record = {"epoch": epoch + 1, "train_loss": total / max(batches, 1), "val_loss": val_loss, "seconds": seconds, "captions_per_s": n_train / seconds}
        progress_state["history"].append(record)
        progress_state["epoch"] = epoch + 1
        if improved:
            progress_state.update(best_val_loss=val_loss, best_epoch=epoch + 1)
            training_info = {"dataset": config.data, "train_split": config.train_split, "epochs": epoch + 1, "seed": config.seed, "val_loss": val_loss, "train_captions": n_train}
            save_captioner(run_dir / MODEL_DIR, decoder, vocab, CaptionerConfig(config.encoder, decoder_config, config.encoder_weights, training=training_info))
        trainer.save_checkpoint(checkpoint, progress_state)
        print(f"epoch {epoch + 1:>2}/{config.epochs}  train loss {record['train_loss']:.4f}  val loss {val_loss:.4f}{'  *best*' if improved else ''}  {seconds:.0f}s ({record['captions_per_s']:.0f} captions/s)", file=sys.stderr)
    return run_dir / MODEL_DIR
