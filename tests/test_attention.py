"""The Show, Attend and Tell decoder: consistent stepping, real attention, its regulariser."""

import numpy as np
import pytest
import tensorflow as tf

from captioner.artifacts import CaptionerConfig, load_captioner, save_captioner
from captioner.decoding import SearchDecoder
from captioner.models.attention import AttentionConfig, AttentionDecoder
from captioner.models.base import build_decoder
from captioner.training.loop import masked_loss
from captioner.vocab import Vocabulary

FEATURE_DIM, CELLS = 12, 9


def tiny(dropout=0.0, alpha_c=1.0, projection_dim=0):
    config = AttentionConfig(
        vocab_size=20,
        max_length=8,
        feature_dim=FEATURE_DIM,
        embedding_dim=8,
        units=8,
        dropout=dropout,
        attention_dim=6,
        alpha_c=alpha_c,
        projection_dim=projection_dim,
        decoder="attention",
    )
    return build_decoder(config)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(3, CELLS, FEATURE_DIM)).astype("float32"), rng.integers(1, 20, size=(3, 6)).astype("int32")


@pytest.mark.parametrize("projection_dim", [0, 5])
def test_step_by_step_equals_teacher_forcing_and_weights_sum_to_one(projection_dim):
    decoder = tiny(projection_dim=projection_dim)
    features, tokens = batch()
    full = decoder((features, tokens)).numpy()  # (3, 6, 20)
    memory = decoder.encode_image(features)
    state = decoder.initial_state(memory)
    for t in range(6):
        logits, state, alpha = decoder.step(memory, tokens[:, t], state)
        np.testing.assert_allclose(logits.numpy(), full[:, t], atol=1e-5)
        assert alpha.shape == (3, CELLS)
        np.testing.assert_allclose(alpha.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_the_initial_state_depends_on_the_image():
    decoder = tiny()
    features, _ = batch()
    h, c = decoder.initial_state(decoder.encode_image(features))
    assert not np.allclose(h.numpy()[0], h.numpy()[1])


def test_training_adds_the_doubly_stochastic_regulariser_and_learns():
    decoder = tiny(dropout=0.1)
    features, tokens = batch(1)
    import keras

    optimizer = keras.optimizers.Adam(1e-2)
    losses = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            logits = decoder((features, tokens[:, :-1]), training=True)
            assert len(decoder.losses) == 1 and float(decoder.losses[0]) >= 0.0
            loss = masked_loss(tokens[:, 1:], logits) + tf.add_n(decoder.losses)
        grads = tape.gradient(loss, decoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, decoder.trainable_variables))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    decoder((features, tokens), training=False)
    assert not decoder.losses  # inference adds nothing


def test_save_load_and_search_carry_one_map_per_word(tmp_path):
    vocab = Vocabulary.build(["a dog runs on grass", "a cat sits on a mat"], min_count=1)
    config = AttentionConfig(vocab_size=len(vocab), max_length=8, feature_dim=FEATURE_DIM, embedding_dim=8, units=8, attention_dim=6, decoder="attention")
    decoder = build_decoder(config)
    save_captioner(tmp_path / "m", decoder, vocab, CaptionerConfig("efficientnet_lite0", config))
    loaded, vocab, saved = load_captioner(tmp_path / "m")
    assert isinstance(loaded, AttentionDecoder) and saved.decoder.attention_dim == 6
    features, _ = batch(2)
    search = SearchDecoder(loaded, vocab)
    for hypothesis in search.greedy(features) + [h for hs in search.beam(features, 3, 2) for h in hs]:
        assert hypothesis.attention.shape == (len(hypothesis.caption.split()), CELLS)
        np.testing.assert_allclose(hypothesis.attention.sum(axis=1), 1.0, atol=1e-5)


def test_a_projected_grid_is_what_the_steps_attend_over(tmp_path):
    decoder = tiny(projection_dim=5)
    features, _ = batch()
    grid, keys = decoder.encode_image(features)
    assert grid.shape == (3, CELLS, 5) and keys.shape == (3, CELLS, 6)
    vocab = Vocabulary.build(["a dog runs on grass", "a cat sits on a mat"], min_count=1)
    config = AttentionConfig(vocab_size=len(vocab), max_length=8, feature_dim=FEATURE_DIM, embedding_dim=8, units=8, projection_dim=5, decoder="attention")
    save_captioner(tmp_path / "m", build_decoder(config), vocab, CaptionerConfig("efficientnet_lite0", config))
    loaded, _, saved = load_captioner(tmp_path / "m")
    assert saved.decoder.projection_dim == 5 and "projection/kernel" in loaded.variable_names()
