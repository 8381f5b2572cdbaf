"""Caption generation for any `Decoder`: batched greedy and beam search.

Both searches run entirely inside one compiled `tf.function` per call: the decoder steps with
carried state, one word at a time, and never re-reads the prefix. Beam search drops an image from
the batch once all its beams have ended, so in a batch the images that end early stop costing
steps while the others go on. Decoders that attend return their attention weights at each step;
the searches carry them so every caption comes with one weight map per word.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from captioner import defaults
from captioner.errors import ArgumentError
from captioner.models.base import Decoder
from captioner.vocab import Vocabulary


@dataclasses.dataclass
class Hypothesis:
    """One generated caption with its scores."""

    caption: str
    log_prob: float  # sum of the words' log-probabilities, end token included
    score: float  # log_prob after length normalisation (what beam search ranks by)
    attention: np.ndarray | None = None  # (words, L) weights per generated word; None without attention
    tags: list[Any] | None = None  # the image's ImageNet tags (`captioner.objects.Tag`), best first; None without a classifier


class SearchDecoder:
    """Compiled greedy and beam search over one decoder.

    Args:
        decoder: a trained `Decoder`.
        vocab: its vocabulary.
        max_length: most words generated per caption (end token included); a hard stop.
        block_repeats: never repeat a word trigram in a caption, and never write "X and X".
    """

    def __init__(self, decoder: Decoder, vocab: Vocabulary, max_length: int | None = None, block_repeats: bool = True) -> None:
        self.decoder = decoder
        self.vocab = vocab
        self.max_length = int(max_length or decoder.config.max_length)
        self.block_repeats = block_repeats
        self.and_id = vocab.word_to_id.get("and", -2)  # -2 matches no token
        memory = decoder.encode_image(decoder.dummy_features())
        _, _, attention = decoder.step(memory, tf.fill([1], vocab.start_id), decoder.initial_state(memory))
        self.attends = attention is not None
        feature_spec = tf.TensorSpec((None, *decoder.feature_shape()), tf.float32)
        # The compiled searches are public so an export can put them in its own graph.
        self.compiled_greedy = tf.function(self._greedy_graph, input_signature=[feature_spec])
        self._sample: tf.types.experimental.PolymorphicFunction | None = None  # traced on first use (training only)
        self.compiled_beam = tf.function(
            self._beam_graph,
            input_signature=[feature_spec, tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.float32)],
        )

    # --- graphs -----------------------------------------------------------------------------

    def decoder_step(self, memory: Any, token: tf.Tensor, state: list[tf.Tensor], cells: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """One decoder step; attention (B, L) is zeros (B, 0) for decoders that do not attend."""
        logits, state, attention = self.decoder.step(memory, token, state)
        if attention is None:
            attention = tf.zeros([tf.shape(token)[0], 0])
        return logits, state, tf.reshape(attention, [tf.shape(token)[0], cells])

    def _cells(self, features: tf.Tensor) -> tf.Tensor:
        """L, the number of attention weights per step (0 without attention)."""
        return tf.shape(features)[1] if self.attends else tf.constant(0)

    def next_word_log_probs(self, logits: tf.Tensor, t: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """(N, V) logits at step t after `history` (N, t) -> log-probabilities over the words allowed.

        <pad> and <start> are never valid next words, <unk> says nothing to a reader, and <end>
        is not valid first: a caption has at least one word. With `block_repeats` and a history, a word
        that would repeat a trigram of the caption so far, or make "X and X", is not valid either.
        """
        ids = tf.range(self.decoder.config.vocab_size)
        banned = (ids == self.vocab.pad_id) | (ids == self.vocab.start_id) | (ids == self.vocab.unk_id)
        banned |= (ids == self.vocab.end_id) & (t == 0)
        banned = tf.broadcast_to(banned, tf.shape(logits))
        if self.block_repeats and history is not None:
            banned |= self._repeats(history)
        return tf.nn.log_softmax(tf.where(banned, -np.inf, logits))

    def _repeats(self, history: tf.Tensor) -> tf.Tensor:
        """(N, t) words so far -> (N, V) words that would repeat a trigram or make "X and X"."""
        rows, vocab_size = tf.shape(history)[0], self.decoder.config.vocab_size
        # Trigram (h[j], h[j+1], h[j+2]) whose first two words are the caption's last two: ban h[j+2].
        last = history[:, -2:]
        match = (history[:, :-2] == last[:, :1]) & (history[:, 1:-1] == last[:, 1:])  # (N, t-2)
        where = tf.where(match)  # (k, 2): row, j
        words = tf.cast(tf.gather_nd(history[:, 2:], where), tf.int64)
        counts = tf.scatter_nd(tf.stack([where[:, 0], words], axis=1), tf.ones_like(words), tf.cast([rows, vocab_size], tf.int64))
        # "X and" -> ban X.
        padded = tf.concat([tf.fill([rows, 2], -1), history], axis=1)
        after_and = padded[:, -1] == self.and_id  # (N,)
        x_and_x = tf.one_hot(padded[:, -2], vocab_size, on_value=True, off_value=False) & after_and[:, None]
        return (counts > 0) | x_and_x

    def _greedy_graph(self, features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        batch = tf.shape(features)[0]
        cells = self._cells(features)
        memory = self.decoder.encode_image(features)
        state = self.decoder.initial_state(memory)
        token = tf.fill([batch], self.vocab.start_id)  # (B,)
        finished = tf.zeros([batch], tf.bool)
        log_prob = tf.zeros([batch])
        history = tf.zeros([batch, 0], tf.int32)  # (B, t)
        maps = tf.TensorArray(tf.float32, size=self.max_length, element_shape=tf.TensorShape([None, None]))
        t = tf.constant(0)
        while t < self.max_length and not tf.reduce_all(finished):
            tf.autograph.experimental.set_loop_options(shape_invariants=[(history, tf.TensorShape([None, None]))])
            logits, state, attention = self.decoder_step(memory, token, state, cells)
            log_probs = self.next_word_log_probs(logits, t, history)  # (B, V)
            token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
            token = tf.where(finished, self.vocab.pad_id, token)
            log_prob += tf.where(finished, 0.0, tf.reduce_max(log_probs, axis=-1))
            history = tf.concat([history, token[:, None]], axis=1)
            maps = maps.write(t, attention)
            finished |= token == self.vocab.end_id
            t += 1
        attention = tf.transpose(maps.stack()[:t], [1, 0, 2])  # (B, t, L)
        return history, log_prob, attention

    def _beam_graph(self, features: tf.Tensor, beam_size: tf.Tensor, length_penalty: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        batch = tf.shape(features)[0]
        cells = self._cells(features)
        vocab_size = self.decoder.config.vocab_size
        # Every beam of an image starts from the same memory and initial state.
        memory = tf.nest.map_structure(lambda m: tf.repeat(m, beam_size, axis=0), self.decoder.encode_image(features))
        state = self.decoder.initial_state(memory)
        token = tf.fill([batch * beam_size], self.vocab.start_id)  # (A*K,)
        # Only beam 0 is live at the start, so the first step does not pick K copies of one word.
        first = tf.concat([[0.0], tf.fill([beam_size - 1], -np.inf)], axis=0)
        log_prob = tf.tile(first[None, :], [batch, 1])  # (A, K)
        finished = tf.zeros([batch, beam_size], tf.bool)
        length = tf.zeros([batch, beam_size])
        history = tf.zeros([batch, beam_size, 0], tf.int32)  # (A, K, t)
        maps = tf.zeros([batch, beam_size, 0, cells])  # (A, K, t, L)
        # The search holds only the A images still searching: in a batch, an image whose beams have
        # all ended is written to the results and dropped, rather than stepped on writing padding.
        active = tf.range(batch)  # (A,) their places in the batch
        results = self._empty_results(batch, beam_size, cells)
        # A finished beam may only continue with padding, at no cost.
        pad_only = tf.where(tf.range(vocab_size) == self.vocab.pad_id, 0.0, -np.inf)  # (V,)
        t = tf.constant(0)
        while t < self.max_length and tf.size(active) > 0:
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(history, tf.TensorShape([None, None, None])), (maps, tf.TensorShape([None, None, None, None]))]
                + self._shrinking(active, token, log_prob, finished, length, memory, state)
            )
            images = tf.size(active)
            logits, state, attention = self.decoder_step(memory, token, state, cells)
            log_probs = self.next_word_log_probs(logits, t, tf.reshape(history, [images * beam_size, -1]))
            log_probs = tf.reshape(log_probs, [images, beam_size, vocab_size])
            log_probs = tf.where(finished[:, :, None], pad_only[None, None, :], log_probs)
            candidates = tf.reshape(log_prob[:, :, None] + log_probs, [images, beam_size * vocab_size])
            log_prob, index = tf.math.top_k(candidates, k=beam_size)  # (A, K)
            parent = index // vocab_size  # (A, K) which beam each survivor extends
            token_2d = index % vocab_size
            finished = tf.gather(finished, parent, batch_dims=1)
            length = tf.gather(length, parent, batch_dims=1) + tf.where(finished, 0.0, 1.0)
            history = tf.concat([tf.gather(history, parent, batch_dims=1), token_2d[:, :, None]], axis=2)
            step_maps = tf.gather(tf.reshape(attention, [images, beam_size, cells]), parent, batch_dims=1)
            maps = tf.concat([tf.gather(maps, parent, batch_dims=1), step_maps[:, :, None, :]], axis=2)
            finished |= token_2d == self.vocab.end_id
            rows = tf.reshape(parent + tf.range(images)[:, None] * beam_size, [images * beam_size])
            state = [tf.gather(s, rows) for s in state]
            token = tf.reshape(token_2d, [images * beam_size])
            done = tf.reduce_all(finished, axis=1)  # (A,)
            if tf.reduce_any(done):
                results = self._write_results(results, done, active, history, log_prob, length, maps)
                (active, log_prob, finished, length, history, maps), (memory, state, token) = self._drop_images(
                    done, beam_size, (active, log_prob, finished, length, history, maps), (memory, state, token)
                )
            t += 1
        # Images still searching when max_length stopped the search.
        history, log_prob, length, maps = self._write_results(results, tf.ones_like(active, tf.bool), active, history, log_prob, length, maps)
        history, maps = history[:, :, :t], maps[:, :, :t]
        score = log_prob / tf.maximum(length, 1.0) ** length_penalty
        order = tf.argsort(score, axis=1, direction="DESCENDING", stable=True)
        return (
            tf.gather(history, order, batch_dims=1),
            tf.gather(log_prob, order, batch_dims=1),
            tf.gather(score, order, batch_dims=1),
            tf.gather(maps, order, batch_dims=1),
        )

    def _empty_results(self, batch: tf.Tensor, beams: tf.Tensor, cells: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Where a search writes each image's finished beams: history (B, K, max_length), log_prob and length (B, K), maps (B, K, max_length, L)."""
        return (
            tf.fill([batch, beams, self.max_length], self.vocab.pad_id),
            tf.zeros([batch, beams]),
            tf.zeros([batch, beams]),
            tf.zeros([batch, beams, self.max_length, cells]),
        )

    def _write_results(
        self, results: tuple[tf.Tensor, ...], done: tf.Tensor, active: tf.Tensor, history: tf.Tensor, log_prob: tf.Tensor, length: tf.Tensor, maps: tf.Tensor
    ) -> tuple[tf.Tensor, ...]:
        """`results` with the beams of the active images where `done` (A,) is True written at their places in the batch."""
        at = tf.boolean_mask(active, done)[:, None]
        steps = tf.shape(history)[2]
        history = tf.pad(tf.boolean_mask(history, done), [[0, 0], [0, 0], [0, self.max_length - steps]], constant_values=self.vocab.pad_id)
        out_history, out_log_prob, out_length, out_maps = results
        if self.attends:  # without attention the maps are (B, K, T, 0): nothing to write
            maps = tf.pad(tf.boolean_mask(maps, done), [[0, 0], [0, 0], [0, self.max_length - steps], [0, 0]])
            out_maps = tf.tensor_scatter_nd_update(out_maps, at, maps)
        return (
            tf.tensor_scatter_nd_update(out_history, at, history),
            tf.tensor_scatter_nd_update(out_log_prob, at, tf.boolean_mask(log_prob, done)),
            tf.tensor_scatter_nd_update(out_length, at, tf.boolean_mask(length, done)),
            out_maps,
        )

    @staticmethod
    def _drop_images(
        done: tf.Tensor, rows_per_image: tf.Tensor, per_image: tuple[Any, ...], per_row: tuple[Any, ...]
    ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Keeps the images where `done` (A,) is False: in the `per_image` tensors (A, ...), and their
        `rows_per_image` rows each in the `per_row` nests (A*R, ...)."""
        rows = tf.repeat(~done, rows_per_image)  # (A*R,)
        return tuple(tf.boolean_mask(x, ~done) for x in per_image), tf.nest.map_structure(lambda x: tf.boolean_mask(x, rows), per_row)

    @staticmethod
    def _shrinking(*tensors: Any) -> list[tuple[tf.Tensor, tf.TensorShape]]:
        """Loop shape invariants for (nests of) tensors whose first axis shrinks as images finish."""
        return [(x, tf.TensorShape([None]).concatenate(x.shape[1:])) for x in tf.nest.flatten(tensors)]

    def _sample_graph(self, features: tf.Tensor, num_samples: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """`num_samples` captions per image drawn from the model's distribution: tokens (B*K, T)."""
        batch = tf.shape(features)[0]
        flat = batch * num_samples
        memory = tf.nest.map_structure(lambda m: tf.repeat(m, num_samples, axis=0), self.decoder.encode_image(features))
        state = self.decoder.initial_state(memory)
        token = tf.fill([flat], self.vocab.start_id)
        finished = tf.zeros([flat], tf.bool)
        history = tf.zeros([flat, 0], tf.int32)
        t = tf.constant(0)
        while t < self.max_length and not tf.reduce_all(finished):
            tf.autograph.experimental.set_loop_options(shape_invariants=[(history, tf.TensorShape([None, None]))])
            logits, state, _ = self.decoder.step(memory, token, state)
            log_probs = self.next_word_log_probs(logits, t)  # structural bans only: the policy itself
            token = tf.random.stateless_categorical(log_probs, 1, seed=tf.stack([seed, t]), dtype=tf.int32)[:, 0]
            token = tf.where(finished, self.vocab.pad_id, token)
            history = tf.concat([history, token[:, None]], axis=1)
            finished |= token == self.vocab.end_id
            t += 1
        return history

    def sample(self, features: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        """Word ids (B * num_samples, T) sampled from the model, <end> included, padded after it.

        Sample k of image b is row b * num_samples + k. The same seed gives the same samples.
        """
        if self._sample is None:
            self._sample = tf.function(
                self._sample_graph,
                input_signature=[tf.TensorSpec((None, *self.decoder.feature_shape()), tf.float32), tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32)],
            )
        return self._sample(tf.convert_to_tensor(features, tf.float32), tf.constant(num_samples), tf.constant(seed)).numpy()

    # --- public API -------------------------------------------------------------------------

    def _hypothesis(self, tokens: np.ndarray, log_prob: float, score: float, maps: np.ndarray) -> Hypothesis:
        words = int(np.sum((tokens != self.vocab.pad_id) & (tokens != self.vocab.end_id)))
        return Hypothesis(self.vocab.decode(tokens), float(log_prob), float(score), maps[:words] if self.attends else None)

    def greedy_tokens(self, features: np.ndarray) -> np.ndarray:
        """Greedy word ids (B, T) for a batch of features, <end> included, padded after it."""
        return self.compiled_greedy(tf.convert_to_tensor(features, tf.float32))[0].numpy()

    def greedy(self, features: np.ndarray) -> list[Hypothesis]:
        """Greedy captions for a batch of features; one `Hypothesis` per image."""
        tokens, log_prob, maps = self.compiled_greedy(tf.convert_to_tensor(features, tf.float32))
        return [self._hypothesis(row, lp, lp, m) for row, lp, m in zip(tokens.numpy(), log_prob.numpy(), maps.numpy())]

    def beam(
        self, features: np.ndarray, beam_size: int = defaults.BEAM_SIZE, num_captions: int = 1, length_penalty: float = defaults.LENGTH_PENALTY
    ) -> list[list[Hypothesis]]:
        """Beam search for a batch of features; the `num_captions` best hypotheses per image, best first."""
        check_search(beam_size, num_captions)
        history, log_prob, score, maps = (
            x.numpy() for x in self.compiled_beam(tf.convert_to_tensor(features, tf.float32), tf.constant(beam_size), tf.constant(float(length_penalty)))
        )
        return [[self._hypothesis(history[b, k], log_prob[b, k], score[b, k], maps[b, k]) for k in range(num_captions)] for b in range(len(history))]

    def caption(
        self, features: np.ndarray, beam_size: int = defaults.BEAM_SIZE, num_captions: int = 1, length_penalty: float = defaults.LENGTH_PENALTY
    ) -> list[list[Hypothesis]]:
        """Greedy when `beam_size` is 1, else beam search; always a list of hypotheses per image."""
        check_search(beam_size, num_captions)
        if beam_size == 1:
            return [[h] for h in self.greedy(features)]
        return self.beam(features, beam_size, num_captions, length_penalty)


def check_search(beam_size: int, num_captions: int) -> None:
    """`ArgumentError` unless 1 <= num_captions <= beam_size."""
    if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ArgumentError(f"beam size must be at least 1, got {beam_size}")
    if not 1 <= num_captions <= beam_size:
        raise ArgumentError(f"number of captions must be between 1 and the beam size ({beam_size}), got {num_captions}")
