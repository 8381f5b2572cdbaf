"""Caption generation: batched greedy and beam search, plus the seed's `generate_desc`.

Both searches run entirely inside one compiled `tf.function` per call: the decoder steps its LSTM
with carried state, one word at a time, and never re-reads the prefix.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from captioner.models.merge import MergeDecoder, pad_prefix
from captioner.vocab import END, START, Vocabulary

DEFAULT_BEAM_SIZE = 5  # chosen by measurement on Flickr8k dev (README, "Quality")
DEFAULT_LENGTH_PENALTY = 1.0  # beam score = log-prob / length**alpha; chosen on Flickr8k dev; 0 ranks by raw log-prob


@dataclasses.dataclass
class Hypothesis:
    """One generated caption with its scores."""

    caption: str
    log_prob: float  # sum of the words' log-probabilities, end token included
    score: float  # log_prob after length normalisation (what beam search ranks by)


class SearchDecoder:
    """Compiled greedy and beam search over one decoder.

    Args:
        decoder: a trained `MergeDecoder`.
        vocab: its vocabulary.
        max_length: most words generated per caption (end token included); a hard stop.
    """

    def __init__(self, decoder: MergeDecoder, vocab: Vocabulary, max_length: int | None = None):
        self.decoder = decoder
        self.vocab = vocab
        self.max_length = int(max_length or decoder.config.max_length)
        feature_spec = tf.TensorSpec((None, decoder.config.feature_dim), tf.float32)
        self._greedy = tf.function(self._greedy_graph, input_signature=[feature_spec])
        self._beam = tf.function(
            self._beam_graph,
            input_signature=[feature_spec, tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.float32)],
        )

    # --- graphs -----------------------------------------------------------------------------

    def _next_word_log_probs(self, logits, t):
        """(B, V) logits at step t -> log-probabilities over the words allowed there.

        <pad> and <start> are never valid next words, <unk> says nothing to a reader, and <end>
        is not valid first: a caption has at least one word.
        """
        ids = tf.range(self.decoder.config.vocab_size)
        banned = (ids == self.vocab.pad_id) | (ids == self.vocab.start_id) | (ids == self.vocab.unk_id)
        banned |= (ids == self.vocab.end_id) & (t == 0)
        return tf.nn.log_softmax(tf.where(banned, -np.inf, logits))

    def _greedy_graph(self, features):
        batch = tf.shape(features)[0]
        image = self.decoder.encode_image(features)  # (B, units)
        state = self.decoder.initial_state(batch)
        token = tf.fill([batch], self.vocab.start_id)  # (B,)
        finished = tf.zeros([batch], tf.bool)
        log_prob = tf.zeros([batch])
        length = tf.zeros([batch])
        words = tf.TensorArray(tf.int32, size=self.max_length)
        t = tf.constant(0)
        while t < self.max_length and not tf.reduce_all(finished):
            logits, state = self.decoder.step(image, token, state)
            log_probs = self._next_word_log_probs(logits, t)  # (B, V)
            token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
            token = tf.where(finished, self.vocab.pad_id, token)
            log_prob += tf.where(finished, 0.0, tf.reduce_max(log_probs, axis=-1))
            length += tf.where(finished, 0.0, 1.0)
            words = words.write(t, token)
            finished |= token == self.vocab.end_id
            t += 1
        tokens = tf.transpose(words.stack()[:t])  # (B, t)
        return tokens, log_prob, length

    def _beam_graph(self, features, beam_size, length_penalty):
        batch = tf.shape(features)[0]
        vocab_size = self.decoder.config.vocab_size
        flat = batch * beam_size
        # Every beam of an image starts from the same image feature and a zero state.
        image = tf.repeat(self.decoder.encode_image(features), beam_size, axis=0)  # (B*K, units)
        state = self.decoder.initial_state(flat)
        token = tf.fill([flat], self.vocab.start_id)  # (B*K,)
        # Only beam 0 is live at the start, so the first step does not pick K copies of one word.
        first = tf.concat([[0.0], tf.fill([beam_size - 1], -np.inf)], axis=0)
        log_prob = tf.tile(first[None, :], [batch, 1])  # (B, K)
        finished = tf.zeros([batch, beam_size], tf.bool)
        length = tf.zeros([batch, beam_size])
        history = tf.zeros([batch, beam_size, 0], tf.int32)  # (B, K, t)
        # A finished beam may only continue with padding, at no cost.
        pad_only = tf.where(tf.range(vocab_size) == self.vocab.pad_id, 0.0, -np.inf)  # (V,)
        t = tf.constant(0)
        while t < self.max_length and not tf.reduce_all(finished):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(history, tf.TensorShape([None, None, None]))]
            )
            logits, state = self.decoder.step(image, token, state)
            log_probs = tf.reshape(self._next_word_log_probs(logits, t), [batch, beam_size, vocab_size])
            log_probs = tf.where(finished[:, :, None], pad_only[None, None, :], log_probs)
            candidates = tf.reshape(log_prob[:, :, None] + log_probs, [batch, beam_size * vocab_size])
            log_prob, index = tf.math.top_k(candidates, k=beam_size)  # (B, K)
            parent = index // vocab_size  # (B, K) which beam each survivor extends
            token_2d = index % vocab_size
            finished = tf.gather(finished, parent, batch_dims=1)
            length = tf.gather(length, parent, batch_dims=1) + tf.where(finished, 0.0, 1.0)
            history = tf.concat([tf.gather(history, parent, batch_dims=1), token_2d[:, :, None]], axis=2)
            finished |= token_2d == self.vocab.end_id
            rows = tf.reshape(parent + tf.range(batch)[:, None] * beam_size, [flat])
            state = [tf.gather(s, rows) for s in state]
            token = tf.reshape(token_2d, [flat])
            t += 1
        score = log_prob / tf.maximum(length, 1.0) ** length_penalty
        order = tf.argsort(score, axis=1, direction="DESCENDING", stable=True)
        return (
            tf.gather(history, order, batch_dims=1),
            tf.gather(log_prob, order, batch_dims=1),
            tf.gather(score, order, batch_dims=1),
        )

    # --- public API -------------------------------------------------------------------------

    def greedy(self, features: np.ndarray) -> list[Hypothesis]:
        """Greedy captions for (B, D) features; one `Hypothesis` per image."""
        tokens, log_prob, _ = self._greedy(tf.convert_to_tensor(features, tf.float32))
        return [
            Hypothesis(self.vocab.decode(row), float(lp), float(lp))
            for row, lp in zip(tokens.numpy(), log_prob.numpy())
        ]

    def beam(self, features: np.ndarray, beam_size: int = DEFAULT_BEAM_SIZE, num_captions: int = 1,
             length_penalty: float = DEFAULT_LENGTH_PENALTY) -> list[list[Hypothesis]]:
        """Beam search for (B, D) features; the `num_captions` best hypotheses per image, best first."""
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {beam_size}")
        if not 1 <= num_captions <= beam_size:
            raise ValueError(f"number of captions must be between 1 and the beam size ({beam_size}), got {num_captions}")
        history, log_prob, score = self._beam(
            tf.convert_to_tensor(features, tf.float32), tf.constant(beam_size), tf.constant(float(length_penalty))
        )
        history, log_prob, score = history.numpy(), log_prob.numpy(), score.numpy()
        return [
            [Hypothesis(self.vocab.decode(history[b, k]), float(log_prob[b, k]), float(score[b, k])) for k in range(num_captions)]
            for b in range(len(history))
        ]

    def caption(self, features: np.ndarray, beam_size: int = 1, num_captions: int = 1,
                length_penalty: float = DEFAULT_LENGTH_PENALTY) -> list[list[Hypothesis]]:
        """Greedy when `beam_size` is 1, else beam search; always a list of hypotheses per image."""
        if beam_size == 1 and num_captions == 1:
            return [[h] for h in self.greedy(features)]
        return self.beam(features, beam_size, num_captions, length_penalty)


def _decoder_of(model) -> MergeDecoder | None:
    """The `MergeDecoder` itself, or the one a `define_model` model wraps; None otherwise."""
    decoder = model if isinstance(model, MergeDecoder) else getattr(model, "decoder", None)
    return decoder if isinstance(decoder, MergeDecoder) else None


def _search_decoder(decoder: MergeDecoder, vocab: Vocabulary, max_length: int) -> SearchDecoder:
    """One `SearchDecoder` per (decoder, vocabulary, max length), kept on the decoder.

    Building one traces its graphs; the seed calls `generate_desc` once per photo.
    """
    searches = decoder.__dict__.setdefault("_captioner_searches", {})
    key = (id(vocab), max_length)
    if key not in searches or searches[key].vocab is not vocab:
        searches[key] = SearchDecoder(decoder, vocab, max_length)
    return searches[key]


def generate_desc(model, tokenizer, photo: np.ndarray, max_length: int) -> str:
    """The seed's function: greedy caption for one photo, as "<start> a dog runs <end>".

    A model from `define_model` (or a `MergeDecoder`) is decoded with the fast stepping decoder;
    any other model taking (photo, pre-padded prefix) is run the seed's way, one `predict` per word.

    Args:
        model: the captioning model.
        tokenizer: our `Vocabulary` (or anything with `texts_to_sequences` and `index_word`).
        photo: (D,) or (1, D) image feature.
        max_length: longest prefix the model takes.
    """
    photo = np.asarray(photo, dtype="float32").reshape(1, -1)
    decoder = _decoder_of(model)
    if decoder is not None and isinstance(tokenizer, Vocabulary):
        tokens, _, _ = _search_decoder(decoder, tokenizer, max_length)._greedy(tf.constant(photo))
        ids = [int(i) for i in tokens.numpy()[0] if i != tokenizer.pad_id]
        return " ".join(tokenizer.id_to_word[i] for i in [tokenizer.start_id, *ids])
    return generate_desc_by_prefix(model, tokenizer, photo, max_length)


def generate_desc_by_prefix(model, tokenizer, photo: np.ndarray, max_length: int) -> str:
    """The seed's original loop: re-run the whole padded prefix through `model.predict` per word."""
    in_text = START
    for _ in range(max_length):
        sequence = pad_prefix(tokenizer.texts_to_sequences([in_text])[0], max_length)[None, :]
        next_id = int(np.argmax(model.predict([photo, sequence], verbose=0)))
        word = tokenizer.index_word.get(next_id)
        if word is None:
            break
        in_text += " " + word
        if word == END:
            break
    return in_text
