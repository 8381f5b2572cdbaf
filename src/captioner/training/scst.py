"""Self-critical sequence training (Rennie et al. 2017): REINFORCE with a CIDEr-D reward.

Starting from a cross-entropy run's best model, each step samples `samples` captions per image from
the model, scores each with CIDEr-D against the image's training references (document frequencies
of the whole training corpus, computed once), and raises the log-probability of the samples that
beat the baseline:

    loss = -mean_i (reward_i - baseline_i) * sum_t log p(w_it | w_<t, image)

The baseline is the mean reward of the image's other samples ("mean", Luo 2020) or the reward of the
model's own greedy caption ("greedy", Rennie et al.). Every epoch scores greedy captions of the dev
split with CIDEr-D; the best epoch's model is kept. A run directory holds `scst_config.json`,
`vocab.json`, `checkpoint.npz` and `model/`, and `--resume` continues it exactly (samples are drawn
with seeds derived from (seed, epoch, step)).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from captioner import atomic
from captioner.artifacts import load_captioner, save_captioner
from captioner.data import load_dataset
from captioner.decoding import SearchDecoder
from captioner.errors import ArgumentError, FileError, check_positive
from captioner.features import FeatureStore, default_cache_dir, update_features
from captioner.metrics import CiderD
from captioner.models.base import GRID, Decoder
from captioner.training.batches import FeatureReader
from captioner.training.config import TrainConfig
from captioner.training.loop import CHECKPOINT_FILE, CONFIG_FILE, MODEL_DIR, VOCAB_FILE, Trainer

log = logging.getLogger(__name__)

SCST_CONFIG_FILE = "scst_config.json"
BASELINES = ("mean", "greedy")


@dataclasses.dataclass
class ScstConfig:
    """Settings of a self-critical run, saved as `scst_config.json`."""

    init: str  # the cross-entropy run directory (or a model directory, with `data`) to start from
    output: str  # this run's directory
    data: str | None = None  # the data set, when `init` is a model directory (a run knows its own)
    epochs: int = 5
    learning_rate: float = 5e-5
    samples: int = 5  # captions sampled per image
    baseline: str = "mean"  # "mean" of the other samples, or the "greedy" caption's reward
    images_per_batch: int = 16  # images per step (x samples = sequences per step)
    clip_norm: float = 5.0
    seed: int = 0
    limit_images: int | None = None  # train on the first N training images only (quick runs)

    def validate(self) -> ScstConfig:
        for name in ("epochs", "learning_rate", "samples", "images_per_batch", "clip_norm", "limit_images"):
            check_positive(name.replace("_", "-"), getattr(self, name))
        if self.baseline not in BASELINES:
            raise ArgumentError(f"scst baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.baseline == "mean" and self.samples < 2:
            raise ArgumentError("the 'mean' baseline needs at least 2 samples per image")
        return self


def _init_model_dir(init: Path) -> Path:
    """A run directory's best model, or a model directory itself."""
    return init / MODEL_DIR if (init / MODEL_DIR / "config.json").is_file() else init


class ScstTrainer(Trainer):
    """A `Trainer` whose step is the policy gradient on sampled captions."""

    def __init__(self, decoder: Decoder, config: TrainConfig) -> None:
        super().__init__(decoder, config)
        spec = [
            tf.TensorSpec((None, *decoder.feature_shape()), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None,), tf.float32),
        ]
        self.policy_step = tf.function(self._policy_step, input_signature=spec)

    def _policy_step(self, features: tf.Tensor, inputs: tf.Tensor, targets: tf.Tensor, advantages: tf.Tensor) -> tf.Tensor:
        """features (N, ...), inputs/targets (N, T), advantages (N,) -> mean loss."""
        with tf.GradientTape() as tape:
            logits = self.decoder((features, inputs), training=False)  # the policy that sampled them
            mask = tf.cast(targets != 0, logits.dtype)
            log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)  # (N, T)
            sequence_log_prob = tf.reduce_sum(log_probs * mask, axis=1)  # (N,)
            loss = -tf.reduce_mean(advantages * sequence_log_prob)
        grads = tape.gradient(loss, self.decoder.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.decoder.trainable_variables))
        return loss


def _teacher_forcing(tokens: np.ndarray, start_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Sampled word ids (N, T) -> decoder inputs ([<start>, w1, ...]) and targets ([w1, ..., <end>])."""
    inputs = np.concatenate([np.full((len(tokens), 1), start_id, np.int32), tokens[:, :-1]], axis=1)
    inputs[tokens == 0] = 0  # nothing is read after <end>
    return inputs, tokens.astype(np.int32)


def _advantages(rewards: np.ndarray, samples: int, greedy_rewards: np.ndarray | None) -> np.ndarray:
    """(B*K,) rewards -> reward minus baseline, per sample."""
    per_image = rewards.reshape(-1, samples)
    if greedy_rewards is not None:
        baseline = np.repeat(greedy_rewards, samples)
    else:
        baseline = ((per_image.sum(axis=1, keepdims=True) - per_image) / (samples - 1)).reshape(-1)
    return (rewards - baseline).astype(np.float32)


def dev_cider(search: SearchDecoder, reader: FeatureReader, keys: list[str], scorer: CiderD, batch_size: int = 128) -> float:
    """CIDEr-D of greedy captions of the dev images (dev corpus document frequencies, as coco-caption)."""
    captions = {}
    for start in range(0, len(keys), batch_size):
        rows = np.arange(start, min(start + batch_size, len(keys)))
        for key, hypothesis in zip(keys[start : start + batch_size], search.greedy(reader.read(rows))):
            captions[key] = hypothesis.caption
    return float(scorer.score(captions)[0])


def train_scst(config: ScstConfig, resume: bool = False, progress: bool = True, epochs: int | None = None) -> Path:
    """Fine-tunes a cross-entropy model with self-critical training; returns the best model's directory."""
    run_dir = Path(config.output)
    if resume:
        if not (run_dir / CHECKPOINT_FILE).exists():
            raise FileError(run_dir, f"nothing to resume ({CHECKPOINT_FILE} missing)")
        config = ScstConfig(**json.loads((run_dir / SCST_CONFIG_FILE).read_text()))
        config.epochs = epochs or config.epochs
    elif (run_dir / CHECKPOINT_FILE).exists():
        raise FileError(run_dir, "already holds a run; pass --resume to continue it or choose another --output")
    config.validate()
    init_dir = _init_model_dir(Path(config.init))
    decoder, vocab, captioner_config = load_captioner(init_dir)
    # A run directory's train_config.json names the data set; a model's copy has no local paths.
    settings_file = Path(config.init) / CONFIG_FILE if (Path(config.init) / CONFIG_FILE).is_file() else init_dir / CONFIG_FILE
    if not settings_file.is_file():
        raise FileError(init_dir, f"no {CONFIG_FILE}: self-critical training needs the settings the model was trained with")
    run_config = TrainConfig.load(settings_file)
    if config.data:
        run_config.data = config.data
    if not Path(run_config.data).exists():
        raise ArgumentError(f"the data set {run_config.data!r} the model was trained on is not here; pass --data")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(run_dir / SCST_CONFIG_FILE, dataclasses.asdict(config))
    vocab.save(run_dir / VOCAB_FILE)

    dataset = load_dataset(run_config.data, run_config.data_format, image_dir=run_config.image_dir, allow_outside_paths=run_config.allow_outside_paths)
    grid = decoder.features == GRID
    store = FeatureStore(
        default_cache_dir(dataset.image_dir, captioner_config.encoder, grid, captioner_config.encoder_weights, run_config.cache_dir),
        captioner_config.encoder,
        captioner_config.encoder_weights,
        spatial=grid,
    )
    train_refs = dataset.cleaned(run_config.train_split)
    if config.limit_images:
        train_refs = dict(list(train_refs.items())[: config.limit_images])
    dev_refs = dataset.cleaned(run_config.val_split)
    for refs in (train_refs, dev_refs):
        failed = update_features(store, {k: dataset.image_path(k) for k in refs}, progress=progress).failed
        for key in failed:
            refs.pop(key)
    if not dev_refs:
        raise ArgumentError(f"{run_config.data}: the {run_config.val_split!r} split has no usable captions to select epochs by")
    train_keys, dev_keys = list(train_refs), list(dev_refs)
    train_reader = FeatureReader(store, store.positions(train_keys), decoder.features)
    dev_reader = FeatureReader(store, store.positions(dev_keys), decoder.features)
    reward = CiderD(train_refs)
    dev_scorer = CiderD(dev_refs)
    search = SearchDecoder(decoder, vocab)
    # The greedy baseline is the policy's own argmax (no repetition blocking); only built when used.
    plain = SearchDecoder(decoder, vocab, block_repeats=False) if config.baseline == "greedy" else None

    settings = dataclasses.replace(run_config, learning_rate=config.learning_rate, clip_norm=config.clip_norm)
    trainer = ScstTrainer(decoder, settings)
    state: dict[str, Any] = {"epoch": 0, "best_cider": -math.inf, "best_epoch": 0, "history": []}
    if resume:
        state = trainer.load_checkpoint(run_dir / CHECKPOINT_FILE)
    else:
        start_cider = dev_cider(search, dev_reader, dev_keys, dev_scorer)
        state["history"].append({"epoch": 0, "dev_cider": start_cider})
        state["best_cider"] = start_cider
        log.info("start: dev CIDEr-D %.1f (greedy, the cross-entropy model)", 100 * start_cider)

    steps_per_epoch = math.ceil(len(train_keys) / config.images_per_batch)
    for epoch in range(state["epoch"], config.epochs):
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_keys))
        started = time.perf_counter()
        rewards_seen, losses = [], []
        bar = tqdm(range(steps_per_epoch), desc=f"scst epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        for step in bar:
            rows = order[step * config.images_per_batch : (step + 1) * config.images_per_batch]
            features = train_reader.read(rows)
            tokens = search.sample(features, config.samples, seed=(config.seed * 1_000_003 + epoch) * 100_003 + step)
            keys = [train_keys[r] for r in rows for _ in range(config.samples)]
            rewards = reward.score_pairs(keys, [vocab.decode(row) for row in tokens])
            greedy_rewards = None
            if plain is not None:
                greedy_rewards = reward.score_pairs([train_keys[r] for r in rows], [h.caption for h in plain.greedy(features)])
            inputs, targets = _teacher_forcing(tokens, vocab.start_id)
            repeated = np.repeat(features, config.samples, axis=0)
            loss = float(trainer.policy_step(repeated, inputs, targets, _advantages(rewards, config.samples, greedy_rewards)))
            if not math.isfinite(loss):
                raise ArgumentError(f"self-critical training diverged at epoch {epoch + 1}; lower --learning-rate")
            rewards_seen.append(float(np.mean(rewards)))
            losses.append(loss)
            bar.set_postfix(reward=f"{100 * np.mean(rewards_seen[-50:]):.1f}")
        bar.close()
        minutes = (time.perf_counter() - started) / 60
        cider = dev_cider(search, dev_reader, dev_keys, dev_scorer)
        improved = cider > state["best_cider"]
        state["history"].append(
            {"epoch": epoch + 1, "dev_cider": cider, "train_reward": float(np.mean(rewards_seen)), "loss": float(np.mean(losses)), "minutes": minutes}
        )
        state["epoch"] = epoch + 1
        if improved:
            state.update(best_cider=cider, best_epoch=epoch + 1)
            training = {**captioner_config.training, "scst": {"epochs": epoch + 1, "baseline": config.baseline, "samples": config.samples, "dev_cider": cider}}
            save_captioner(
                run_dir / MODEL_DIR, decoder, vocab, dataclasses.replace(captioner_config, training=training), extra_json={CONFIG_FILE: run_config.portable()}
            )
        trainer.save_checkpoint(run_dir / CHECKPOINT_FILE, state)
        log.info(
            "scst epoch %2d/%d  train reward %.1f  dev CIDEr-D %.1f%s  %.1f min",
            epoch + 1,
            config.epochs,
            100 * np.mean(rewards_seen),
            100 * cider,
            "  *best*" if improved else "",
            minutes,
        )
    if not (run_dir / MODEL_DIR).is_dir():
        save_captioner(run_dir / MODEL_DIR, decoder, vocab, captioner_config, extra_json={CONFIG_FILE: run_config.portable()})  # no epoch beat the start
    return run_dir / MODEL_DIR
