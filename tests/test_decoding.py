"""Greedy and beam search: correct, terminating, and consistent with each other."""

import itertools

import keras
import numpy as np
import pytest

from captioner import generate_desc
from captioner.decoding import SearchDecoder
from captioner.models.attention import AttentionConfig
from captioner.models.merge import MergeConfig, build_decoder
from captioner.tutorial import define_model, generate_desc_by_prefix
from captioner.vocab import Vocabulary

FEATURE_DIM = 10


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.build(["a dog runs", "a cat sits"], min_count=1)  # 4 specials + 5 words


def random_decoder(vocab, max_length=6, seed=0, scale=3.0):
    decoder = build_decoder(MergeConfig(len(vocab), max_length, FEATURE_DIM, embedding_dim=8, units=8, dropout=0.0))
    rng = np.random.default_rng(seed)
    # Sharper random weights give peaked, varied distributions (more like a trained model).
    for w in decoder.weights:
        w.assign(rng.normal(scale=scale / np.sqrt(max(w.shape[0], 1)), size=w.shape).astype("float32"))
    return decoder


def reference_greedy(decoder, vocab, feature, max_length):
    """Word by word through the training graph: re-run the whole prefix each step."""
    tokens = [vocab.start_id]
    for _ in range(max_length):
        logits = decoder((feature[None], np.array([tokens], "int32"))).numpy()[0, -1]
        logits[[vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
        if len(tokens) == 1:
            logits[vocab.end_id] = -np.inf  # at least one word
        tokens.append(int(np.argmax(logits)))
        if tokens[-1] == vocab.end_id:
            break
    return vocab.decode(tokens)


def test_greedy_matches_prefix_rerun_and_stops(vocab):
    decoder = random_decoder(vocab)
    features = np.random.default_rng(1).normal(size=(8, FEATURE_DIM)).astype("float32")
    search = SearchDecoder(decoder, vocab, max_length=6, block_repeats=False)
    got = [h.caption for h in search.greedy(features)]
    assert got == [reference_greedy(decoder, vocab, f, 6) for f in features]
    assert all(len(c.split()) <= 6 for c in got)


def test_beam_size_one_equals_greedy(vocab):
    search = SearchDecoder(random_decoder(vocab, seed=2), vocab, max_length=6)
    features = np.random.default_rng(3).normal(size=(16, FEATURE_DIM)).astype("float32")
    greedy = search.greedy(features)
    beam = search.beam(features, beam_size=1, length_penalty=0.0)
    assert [b[0].caption for b in beam] == [g.caption for g in greedy]
    np.testing.assert_allclose([b[0].log_prob for b in beam], [g.log_prob for g in greedy], rtol=1e-5)


def test_wide_beam_finds_the_exhaustive_best(vocab):
    """With a beam as wide as all sequences, beam search is exact search."""
    max_length = 3
    decoder = random_decoder(vocab, max_length, seed=4, scale=1.0)
    search = SearchDecoder(decoder, vocab, max_length=max_length, block_repeats=False)
    feature = np.random.default_rng(5).normal(size=(1, FEATURE_DIM)).astype("float32")
    words = [i for i in range(len(vocab)) if i not in (vocab.pad_id, vocab.start_id, vocab.unk_id)]
    best, best_lp = None, -np.inf
    for n in range(1, max_length + 1):
        for seq in itertools.product(words, repeat=n):
            # A caption ends at <end>, or is cut at max_length.
            if vocab.end_id in seq[:-1] or (n < max_length and seq[-1] != vocab.end_id):
                continue
            logits = decoder((feature, np.array([[vocab.start_id, *seq[:-1]]], "int32"))).numpy()[0]
            logits[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
            logits[0, vocab.end_id] = -np.inf  # at least one word
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            lp = sum(logp[t, w] for t, w in enumerate(seq))
            if lp > best_lp:
                best, best_lp = seq, lp
    hyp = search.beam(feature, beam_size=len(words) ** max_length, length_penalty=0.0)[0][0]
    assert hyp.caption == vocab.decode(best)
    assert hyp.log_prob == pytest.approx(best_lp, abs=1e-4)


def test_beam_returns_n_best_sorted_and_distinct(vocab):
    search = SearchDecoder(random_decoder(vocab, seed=6), vocab)
    features = np.random.default_rng(7).normal(size=(4, FEATURE_DIM)).astype("float32")
    for hyps in search.beam(features, beam_size=5, num_captions=3):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({h.caption for h in hyps}) == 3
    with pytest.raises(ValueError, match="between 1 and the beam size"):
        search.beam(features, beam_size=2, num_captions=3)


@pytest.mark.parametrize("decoder_name", ["merge", "attention"])
def test_beam_in_a_batch_equals_each_image_alone(vocab, decoder_name):
    """The batched search drops images as their beams all end; what each image gets must not change."""
    rng = np.random.default_rng(8)
    if decoder_name == "merge":
        decoder, features = random_decoder(vocab, seed=9), rng.normal(size=(12, FEATURE_DIM))
    else:
        config = AttentionConfig(len(vocab), 6, FEATURE_DIM, embedding_dim=8, units=8, dropout=0.0, attention_dim=8, decoder="attention")
        decoder, features = build_decoder(config), rng.normal(size=(12, 4, FEATURE_DIM))
        for w in decoder.weights:
            w.assign(rng.normal(scale=3.0 / np.sqrt(max(w.shape[0], 1)), size=w.shape).astype("float32"))
    search = SearchDecoder(decoder, vocab, max_length=6)
    features = features.astype("float32")
    batched = search.beam(features, beam_size=3, num_captions=3)
    lengths = {len(h.caption.split()) for hyps in batched for h in hyps}
    assert len(lengths) > 2 and 6 in lengths  # images end at different steps, some only at max_length
    for image, hyps in zip(features, batched):
        alone = search.beam(image[None], beam_size=3, num_captions=3)[0]
        assert [h.caption for h in hyps] == [h.caption for h in alone]
        np.testing.assert_allclose([h.score for h in hyps], [h.score for h in alone], rtol=1e-5)
        for h, a in zip(hyps, alone):
            if decoder_name == "attention":
                np.testing.assert_allclose(h.attention, a.attention, atol=1e-6)


def test_generate_desc_fast_path_equals_the_seed_loop(vocab):
    # The same model whatever ran before; one whose first word is not <end> (the seed's loop may
    # stop at once, the fast path writes at least one word).
    keras.utils.set_random_seed(1)
    model = define_model(len(vocab), 6, feature_dim=FEATURE_DIM, embedding_dim=8, units=8)
    # Like a trained model, never predict <pad>/<start>/<unk> (the seed's loop has no rule against them).
    bias = model.decoder.output_dense.bias
    bias.assign(bias.numpy() - 50.0 * np.isin(np.arange(len(vocab)), [vocab.pad_id, vocab.start_id, vocab.unk_id]))
    photo = np.random.default_rng(8).normal(size=(1, FEATURE_DIM)).astype("float32")
    fast = generate_desc(model, vocab, photo, 6)
    slow = generate_desc_by_prefix(model, vocab, photo, 6)
    assert fast == slow
    assert fast.startswith("<start>")


def repeats(caption: str) -> bool:
    """True if a word trigram occurs twice, or "X and X" occurs."""
    words = caption.split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    x_and_x = any(words[i] == words[i + 2] and words[i + 1] == "and" for i in range(len(words) - 2))
    return len(set(trigrams)) < len(trigrams) or x_and_x


def test_searches_never_repeat_a_trigram_or_write_x_and_x():
    vocab = Vocabulary.build(["a dog and a cat run and run on grass"], min_count=1)
    decoder = random_decoder(vocab, max_length=14, seed=9, scale=4.0)
    features = np.random.default_rng(10).normal(size=(40, FEATURE_DIM)).astype("float32")
    free = SearchDecoder(decoder, vocab, block_repeats=False)
    blocked = SearchDecoder(decoder, vocab)
    assert sum(repeats(h.caption) for h in free.greedy(features)) > 5  # the rigged decoder does repeat
    for hypothesis in blocked.greedy(features) + [h for hs in blocked.beam(features, 4, 4) for h in hs]:
        assert not repeats(hypothesis.caption), hypothesis.caption
