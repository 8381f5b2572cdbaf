"""A trained captioner as one TensorFlow SavedModel: encoded image bytes in, captions out.

Everything runs inside the graph: decoding and squashing the image (`captioner.export.preprocess`,
Pillow's pixels), the encoder, the decoder with `SearchDecoder`'s compiled greedy or beam search
(the same bans on <pad>, <start> and <unk>, the same length penalty), and the word ids joined into
a caption string over a constant vocabulary. Loading it needs TensorFlow only:

    import tensorflow as tf
    model = tf.saved_model.load("exported/1")
    out = model.signatures["serving_default"](image_bytes=tf.constant([open("photo.jpg", "rb").read()]))
    out["captions"][0].numpy().decode()

Signatures (all take `image_bytes`, a (B,) tf.string of JPEG/PNG/BMP/GIF/WebP files):

- `serving_default`: `captions` (B,) string, `scores` (B,) float32 (the length-normalised
  log-probability beam search ranks by), `log_probs` (B,) float32. Beam width and length penalty
  are fixed at export time (greedy when the width is 1).
- `greedy`: the same outputs from greedy search (scores equal log_probs).
- `preprocess`: `pixels` (B, S, S, 3) uint8, what the encoder sees (for checking a deployment).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace  # tf.Module does not look inside one for things to save
from typing import Any

import tensorflow as tf

from captioner import defaults
from captioner.artifacts import load_captioner
from captioner.decoding import SearchDecoder, check_search
from captioner.encoders import get_encoder
from captioner.export import preprocess
from captioner.export.target import check_target, manifest_header, staging_dir, swap_in, write_manifest
from captioner.models.base import GRID

INPUT_NAME = "image_bytes"  # TF Serving and Vertex AI treat inputs named *_bytes as binary (base64 in JSON)


def _tf_variable(variable) -> tf.Variable:
    """The `tf.Variable` behind a Keras 3 variable (what traced functions capture)."""
    return variable.value if isinstance(variable.value, tf.Variable) else variable


class CaptionModule(tf.Module):
    """The exported graph: encoder, decoder and search over one model, with its vocabulary as a constant."""

    def __init__(self, model_dir: str | os.PathLike, beam_size: int = defaults.BEAM_SIZE, length_penalty: float = defaults.LENGTH_PENALTY):
        super().__init__(name="captioner")
        check_search(beam_size, 1)
        decoder, vocab, config = load_captioner(model_dir)
        encoder = get_encoder(config.encoder, weights=config.encoder_weights)
        self.config = config
        self.input_size = encoder.info.input_size
        self.beam_size = int(beam_size)
        self.length_penalty = float(length_penalty)
        self.grid = decoder.features == GRID
        # The Keras models stay out of the saved object graph (saving them would trace every layer
        # again, doubling the export time); their variables are saved as a plain list instead.
        self._keras = SimpleNamespace(encoder=encoder.model, decoder=decoder)
        self.weights = [_tf_variable(v) for v in [*encoder.model.weights, *decoder.weights]]
        self._search = SearchDecoder(decoder, vocab)
        self._vocab = vocab
        self._words = tf.constant(vocab.id_to_word)
        spec = tf.TensorSpec([None], tf.string, name=INPUT_NAME)
        # Saved as signatures only: as tracked attributes they would be traced a second time on save.
        # Decoding and encoding are functions of their own, so each is traced once and shared.
        pixels_spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.uint8)
        self._functions = SimpleNamespace(
            pixels=tf.function(self._decode, input_signature=[spec]),
            features=tf.function(self._encode, input_signature=[pixels_spec]),
            caption=tf.function(self._caption, input_signature=[spec]),
            greedy=tf.function(self._caption_greedy, input_signature=[spec]),
            preprocess=tf.function(self._preprocess, input_signature=[spec]),
        )

    # --- graph pieces -------------------------------------------------------------------------

    def _pixels(self, image_bytes):
        return self._functions.pixels(image_bytes)

    def _features(self, pixels):
        return self._functions.features(pixels)

    def _decode(self, image_bytes):
        return preprocess.decode_batch(image_bytes, self.input_size)

    def _encode(self, pixels):
        """(B, S, S, 3) uint8 -> what the decoder takes, as `Captioner.features` computes it."""
        grid = self._keras.encoder(tf.cast(pixels, tf.float32), training=False)  # (B, g, g, D)
        if self.grid:
            return tf.reshape(grid, [tf.shape(grid)[0], -1, grid.shape[-1]])  # (B, L, D)
        return tf.reduce_mean(grid, axis=[1, 2])  # (B, D)

    def _text(self, tokens):
        """(B, T) word ids -> (B,) captions, as `Vocabulary.decode`: stop at <end>, skip <pad> and <start>."""
        vocab = self._vocab
        before_end = tf.cumsum(tf.cast(tokens == vocab.end_id, tf.int32), axis=1) == 0
        keep = before_end & (tokens != vocab.pad_id) & (tokens != vocab.start_id)
        words = tf.ragged.boolean_mask(tf.gather(self._words, tokens), keep)
        return tf.strings.reduce_join(words, axis=1, separator=" ")

    def _greedy(self, features):
        tokens, log_prob, _ = self._search.compiled_greedy(features)
        return {"captions": self._text(tokens), "scores": log_prob, "log_probs": log_prob}

    def _beam(self, features):
        history, log_prob, score, _ = self._search.compiled_beam(features, tf.constant(self.beam_size), tf.constant(self.length_penalty))
        return {"captions": self._text(history[:, 0]), "scores": score[:, 0], "log_probs": log_prob[:, 0]}

    # --- signatures -------------------------------------------------------------------------

    def _or_empty(self, image_bytes, search):
        """`search(features)`, or empty outputs for an empty batch (the encoder refuses batch 0)."""
        empty = {"captions": tf.zeros([0], tf.string), "scores": tf.zeros([0]), "log_probs": tf.zeros([0])}
        return tf.cond(tf.size(image_bytes) > 0, lambda: search(self._features(self._pixels(image_bytes))), lambda: empty)

    def _caption(self, image_bytes):
        return self._or_empty(image_bytes, self._greedy if self.beam_size == 1 else self._beam)

    def _caption_greedy(self, image_bytes):
        return self._or_empty(image_bytes, self._greedy)

    def _preprocess(self, image_bytes):
        return {"pixels": self._pixels(image_bytes)}

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self._functions.caption.get_concrete_function(),
            "greedy": self._functions.greedy.get_concrete_function(),
            "preprocess": self._functions.preprocess.get_concrete_function(),
        }

    def manifest(self) -> dict[str, Any]:
        config = self.config
        return {
            **manifest_header("savedmodel", config, self.input_size, self.beam_size, self.length_penalty, self._search.max_length),
            "signatures": {
                "serving_default": {
                    "inputs": {INPUT_NAME: "string [B]"},
                    "outputs": {"captions": "string [B]", "scores": "float32 [B]", "log_probs": "float32 [B]"},
                },
                "greedy": {"inputs": {INPUT_NAME: "string [B]"}, "outputs": {"captions": "string [B]", "scores": "float32 [B]", "log_probs": "float32 [B]"}},
                "preprocess": {"inputs": {INPUT_NAME: "string [B]"}, "outputs": {"pixels": f"uint8 [B, {self.input_size}, {self.input_size}, 3]"}},
            },
            "not_in_graph": ["EXIF orientation"],
        }


def export_savedmodel(
    model_dir: str | os.PathLike, out: str | os.PathLike, beam_size: int = defaults.BEAM_SIZE, length_penalty: float = defaults.LENGTH_PENALTY
) -> Path:
    """Writes the SavedModel of `model_dir` to `out` atomically (built beside it, then renamed into place).

    `out` may be missing, empty, or an earlier export; anything else is refused before work starts.
    """
    out = check_target(out)
    started = time.perf_counter()
    module = CaptionModule(model_dir, beam_size, length_penalty)
    staging = staging_dir(out)
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        write_manifest(staging, {**module.manifest(), "export_seconds": round(time.perf_counter() - started, 1)})
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
