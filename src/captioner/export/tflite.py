"""A trained captioner as TFLite flatbuffers, and `TFLiteCaptioner`, the search that runs them.

The search loop cannot live in a TFLite flatbuffer, so an export holds two models and the loop
is a few lines of NumPy:

- `image.tflite`: pixels (B, S, S, 3) float32 in [0, 255] (the image squashed to the encoder's
  size) -> the decoder's memory of the image (`memory_0`, ...) and its initial state
  (`state_0`, ...): encoder, pooling (or the grid for attention decoders), `encode_image`,
  `initial_state`.
- `step.tflite`: `memory_*`, `tokens` (B,) int32, `state_*` and `step` () int32 -> `log_probs`
  (B, V) over the words allowed at that step (the same bans as `SearchDecoder`), the new
  `state_*`, and `attention` (B, L) (zero columns for decoders that do not attend).
- `vocab.json` (the vocabulary) and `captioner_export.json` (sizes, tensor names, beam width).

`TFLiteCaptioner` reads the image with `captioner.images.load_image` (Pillow, EXIF orientation,
the hostile-file checks) and runs greedy or beam search over the step model with the semantics
of `captioner.decoding.SearchDecoder` (the same ranking, ties and length penalty). It uses the
`ai_edge_litert` interpreter when installed, else `tf.lite.Interpreter` (deprecated in TensorFlow
2.20+, still present in 2.21).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from captioner import defaults, litert
from captioner.decoding import Hypothesis, check_search
from captioner.export.target import check_target, manifest_header, read_manifest, staging_dir, swap_in, write_manifest
from captioner.vocab import Vocabulary

IMAGE_MODEL = "image.tflite"
STEP_MODEL = "step.tflite"
VOCAB_FILE = "vocab.json"
SIGNATURE = "serving_default"


# --- export ----------------------------------------------------------------------------------


def _allowed_log_probs(search, logits, step, history):
    """`SearchDecoder`'s own ban rule for step `step` after the words `history` (B, step)."""
    return search.next_word_log_probs(logits, step, history)


def _convert(function, workdir: Path, name: str, quantize: bool) -> bytes:
    """A tf.function with an input signature -> TFLite flatbuffer whose signature keeps the tensor names.

    The variables are frozen into constants first: the converter keeps Keras 3 variables as
    resource variables with no values (tiny files that compute garbage) when given them directly.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = function.get_concrete_function()
    names = sorted(concrete.structured_outputs)  # the order tf.nest flattens a dict in
    frozen = convert_variables_to_constants_v2(concrete)
    named = tf.function(lambda *args: dict(zip(names, frozen(*args))), input_signature=function.input_signature)
    path = workdir / name
    tf.saved_model.save(tf.Module(), str(path), signatures={SIGNATURE: named.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[SIGNATURE])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range: int8 weights, float activations
    return converter.convert()


def export_tflite(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    beam_size: int = defaults.BEAM_SIZE,
    length_penalty: float = defaults.LENGTH_PENALTY,
    quantize: bool = False,
) -> Path:
    """Writes `image.tflite`, `step.tflite`, the vocabulary and the manifest to `out`, atomically.

    Args:
        beam_size, length_penalty: what `TFLiteCaptioner` uses unless told otherwise (the search
            runs in Python, so they can change per call).
        quantize: dynamic-range quantization (int8 weights): about 4x smaller files; captions
            may differ (see docs/export.md).
    """
    import keras
    import tensorflow as tf

    from captioner.artifacts import load_captioner
    from captioner.decoding import SearchDecoder
    from captioner.encoders import get_encoder
    from captioner.models.base import GRID

    out = check_target(out)
    check_search(beam_size, 1)
    started = time.perf_counter()
    decoder, vocab, config = load_captioner(model_dir)
    encoder = get_encoder(config.encoder, weights=config.encoder_weights)
    search = SearchDecoder(decoder, vocab)
    size = encoder.info.input_size
    grid = decoder.features == GRID
    cells = encoder.info.grid_size**2

    def features_of(pixels):
        maps = encoder.model(pixels, training=False)  # (B, g, g, D)
        return tf.reshape(maps, [tf.shape(maps)[0], cells, maps.shape[-1]]) if grid else tf.reduce_mean(maps, axis=[1, 2])

    # Shapes of the memory and state nests, from one dummy image (batch left open).
    memory = decoder.encode_image(features_of(tf.zeros([1, size, size, 3])))
    memory_shapes = [tuple(m.shape[1:]) for m in tf.nest.flatten(memory)]
    state_shapes = [tuple(s.shape[1:]) for s in decoder.initial_state(memory)]

    def image_model(pixels):
        memory = decoder.encode_image(features_of(pixels))
        state = decoder.initial_state(memory)
        return {
            **{f"memory_{i}": m for i, m in enumerate(tf.nest.flatten(memory))},
            **{f"state_{i}": s for i, s in enumerate(state)},
        }

    memory_specs = [tf.TensorSpec((None, *shape), tf.float32, name=f"memory_{i}") for i, shape in enumerate(memory_shapes)]
    state_specs = [tf.TensorSpec((None, *shape), tf.float32, name=f"state_{i}") for i, shape in enumerate(state_shapes)]

    def step_model(*args):
        memories = list(args[: len(memory_specs)])
        tokens = args[len(memory_specs)]
        state = list(args[len(memory_specs) + 1 : -2])
        history, step = args[-2], args[-1]
        memory = tf.nest.pack_sequence_as(decoder.encode_image(decoder.dummy_features()), memories)
        logits, state, attention = search.decoder_step(memory, tokens, state, cells if search.attends else 0)
        outputs = {"log_probs": _allowed_log_probs(search, logits, step, history), **{f"state_{i}": s for i, s in enumerate(state)}}
        if search.attends:  # TFLite cannot hand back an empty (B, 0) tensor
            outputs["attention"] = attention
        return outputs

    image_fn = tf.function(image_model, input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")])
    step_fn = tf.function(
        step_model,
        input_signature=[
            *memory_specs,
            tf.TensorSpec((None,), tf.int32, name="tokens"),
            *state_specs,
            tf.TensorSpec((None, None), tf.int32, name="history"),
            tf.TensorSpec((), tf.int32, name="step"),
        ],
    )

    staging = staging_dir(out)
    workdir = Path(tempfile.mkdtemp(prefix="captioner-tflite-"))
    # A step feeds one word, so recurrent layers need no loop: unrolled, they convert to plain
    # TFLite ops (a while loop over the time axis needs TensorFlow's own ops in the flatbuffer).
    recurrent = [layer for layer in decoder._flatten_layers() if isinstance(layer, keras.layers.RNN) and not layer.unroll]
    for layer in recurrent:
        layer.unroll = True
    try:
        (staging / IMAGE_MODEL).write_bytes(_convert(image_fn, workdir, "image", quantize))
        (staging / STEP_MODEL).write_bytes(_convert(step_fn, workdir, "step", quantize))
        vocab.save(staging / VOCAB_FILE)
        write_manifest(
            staging,
            {
                **manifest_header("tflite", config, size, beam_size, length_penalty, search.max_length),
                "quantized": bool(quantize),
                "memory": len(memory_shapes),
                "state": len(state_shapes),
                "attention_cells": cells if search.attends else 0,
                "special_ids": {"pad": vocab.pad_id, "start": vocab.start_id, "end": vocab.end_id, "unk": vocab.unk_id},
                "export_seconds": round(time.perf_counter() - started, 1),
            },
        )
        swap_in(staging, out)
    finally:
        for layer in recurrent:
            layer.unroll = False
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# --- running it ------------------------------------------------------------------------------


class TFLiteCaptioner:
    """Captions with an export made by `export_tflite`: the two flatbuffers plus a NumPy search.

    Args:
        directory: the export folder.
        num_threads: interpreter threads (default: `os.cpu_count()`).
    """

    def __init__(self, directory: str | os.PathLike, num_threads: int | None = None):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        if self.manifest.get("kind") != "tflite":
            from captioner.errors import FileError

            raise FileError(self.directory, f"is a {self.manifest.get('kind')} export, not a TFLite one")
        self.vocab = Vocabulary.load(self.directory / VOCAB_FILE)
        self.input_size = int(self.manifest["input_size"])
        self.beam_size = int(self.manifest["beam_size"])
        self.length_penalty = float(self.manifest["length_penalty"])
        self.max_length = int(self.manifest["max_length"])
        num_threads = num_threads or os.cpu_count() or 1
        self._image = litert.interpreter(model_path=self.directory / IMAGE_MODEL, num_threads=num_threads).get_signature_runner(SIGNATURE)
        self._step = litert.interpreter(model_path=self.directory / STEP_MODEL, num_threads=num_threads).get_signature_runner(SIGNATURE)
        self._memory_names = [f"memory_{i}" for i in range(int(self.manifest["memory"]))]
        self._state_names = [f"state_{i}" for i in range(int(self.manifest["state"]))]

    def load(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """An image file or its bytes -> (S, S, 3) uint8, exactly as the Python path reads it."""
        from captioner.images import load_image

        return load_image(source, self.input_size)

    # --- the two models -------------------------------------------------------------------

    def start(self, images: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(B, S, S, 3) images -> (memory arrays, initial state arrays)."""
        out = self._image(pixels=np.asarray(images, np.float32))
        return [out[name] for name in self._memory_names], [out[name] for name in self._state_names]

    def step(
        self, memory: list[np.ndarray], tokens: np.ndarray, state: list[np.ndarray], history: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """One word for every row after the words `history` (B, t): (log-probabilities (B, V), new state, attention (B, L))."""
        inputs = {**dict(zip(self._memory_names, memory)), **dict(zip(self._state_names, state))}
        history = np.ascontiguousarray(history, np.int32)
        out = self._step(**inputs, tokens=np.asarray(tokens, np.int32), history=history, step=np.array(history.shape[1], np.int32))
        return out["log_probs"], [out[name] for name in self._state_names], out.get("attention", np.zeros((len(tokens), 0), np.float32))

    # --- searches ---------------------------------------------------------------------------

    def greedy_tokens(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy word ids (B, T) and log-probabilities (B,), as `SearchDecoder.compiled_greedy`."""
        vocab = self.vocab
        memory, state = self.start(images)
        batch = len(images)
        token = np.full(batch, vocab.start_id, np.int32)
        finished = np.zeros(batch, bool)
        log_prob = np.zeros(batch, np.float32)
        history = np.zeros((batch, 0), np.int32)
        for _ in range(self.max_length):
            if finished.all():
                break
            log_probs, state, _ = self.step(memory, token, state, history)
            token = np.where(finished, vocab.pad_id, np.argmax(log_probs, axis=-1)).astype(np.int32)
            log_prob += np.where(finished, np.float32(0), log_probs.max(axis=-1))
            history = np.concatenate([history, token[:, None]], axis=1)
            finished |= token == vocab.end_id
        return history, log_prob

    def beam_tokens(self, images: np.ndarray, beam_size: int, length_penalty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Beam search as `SearchDecoder.compiled_beam`: histories (B, K, T), log-probs and scores (B, K), best first."""
        vocab = self.vocab
        memory, state = self.start(images)
        batch, k = len(images), beam_size
        memory = [np.repeat(m, k, axis=0) for m in memory]
        state = [np.repeat(s, k, axis=0) for s in state]
        token = np.full(batch * k, vocab.start_id, np.int32)
        log_prob = np.tile(np.array([0.0] + [-np.inf] * (k - 1), np.float32), (batch, 1))  # only beam 0 is live at first
        finished = np.zeros((batch, k), bool)
        length = np.zeros((batch, k), np.float32)
        history = np.zeros((batch, k, 0), np.int32)
        vocab_size = len(vocab)
        pad_only = np.where(np.arange(vocab_size) == vocab.pad_id, 0.0, -np.inf).astype(np.float32)
        rows_base = (np.arange(batch) * k)[:, None]
        for _ in range(self.max_length):
            if finished.all():
                break
            log_probs, state, _ = self.step(memory, token, state, history.reshape(batch * k, -1))
            log_probs = np.where(finished[:, :, None], pad_only, log_probs.reshape(batch, k, vocab_size))
            candidates = (log_prob[:, :, None] + log_probs).reshape(batch, k * vocab_size)
            # tf.math.top_k: the k largest, ties to the lower index.
            top = np.argpartition(-candidates, k - 1, axis=1)[:, :k] if k < candidates.shape[1] else np.tile(np.arange(candidates.shape[1]), (batch, 1))
            values = np.take_along_axis(candidates, top, axis=1)
            order = np.lexsort((top, -values), axis=1)
            index = np.take_along_axis(top, order, axis=1)
            # argpartition may have cut a tie at the boundary arbitrarily: recheck against the k-th value.
            kth = np.take_along_axis(candidates, index[:, -1:], axis=1)
            if np.any(np.sum(candidates == kth, axis=1) > np.sum(np.take_along_axis(candidates, index, axis=1) == kth, axis=1)):
                index = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
            log_prob = np.take_along_axis(candidates, index, axis=1)
            parent, token_2d = index // vocab_size, (index % vocab_size).astype(np.int32)
            finished = np.take_along_axis(finished, parent, axis=1)
            length = np.take_along_axis(length, parent, axis=1) + np.where(finished, np.float32(0), np.float32(1))
            history = np.concatenate([np.take_along_axis(history, parent[:, :, None], axis=1), token_2d[:, :, None]], axis=2)
            finished |= token_2d == vocab.end_id
            rows = (parent + rows_base).reshape(-1)
            state = [s[rows] for s in state]
            token = token_2d.reshape(-1)
        score = (log_prob / np.maximum(length, np.float32(1)) ** np.float32(length_penalty)).astype(np.float32)
        order = np.argsort(-score, axis=1, kind="stable")
        return (
            np.take_along_axis(history, order[:, :, None], axis=1),
            np.take_along_axis(log_prob, order, axis=1),
            np.take_along_axis(score, order, axis=1),
        )

    def caption_arrays(
        self, images: np.ndarray, beam_size: int | None = None, num_captions: int = 1, length_penalty: float | None = None
    ) -> list[list[Hypothesis]]:
        """(B, S, S, 3) uint8 images -> hypotheses per image, best first (greedy when beam_size is 1)."""
        beam_size = self.beam_size if beam_size is None else beam_size
        length_penalty = self.length_penalty if length_penalty is None else length_penalty
        check_search(beam_size, num_captions)
        if beam_size == 1:
            tokens, log_prob = self.greedy_tokens(images)
            return [[Hypothesis(self.vocab.decode(row), float(lp), float(lp))] for row, lp in zip(tokens, log_prob)]
        history, log_prob, score = self.beam_tokens(images, beam_size, length_penalty)
        return [
            [Hypothesis(self.vocab.decode(history[b, i]), float(log_prob[b, i]), float(score[b, i])) for i in range(num_captions)] for b in range(len(history))
        ]

    def caption(self, source: str | os.PathLike | bytes, beam_size: int | None = None, num_captions: int = 1) -> list[Hypothesis]:
        """Hypotheses for one image file (or its bytes), best first."""
        return self.caption_arrays(self.load(source)[None], beam_size, num_captions)[0]


def describe(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export (for `captioner export` to print)."""
    return json.loads(json.dumps(read_manifest(directory)))
