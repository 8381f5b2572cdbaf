"""The merge decoder: its three uses share weights and agree with each other."""

import numpy as np
import pytest

from captioner import create_sequences, data_generator, define_model
from captioner.models.merge import MergeConfig, build_decoder
from captioner.tutorial import pad_prefix
from captioner.vocab import Vocabulary

FEATURE_DIM = 12


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.build(["a dog runs", "a cat sits on a mat", "two dogs play"], min_count=1)


def test_step_by_step_equals_teacher_forcing():
    decoder = build_decoder(MergeConfig(vocab_size=30, max_length=8, feature_dim=FEATURE_DIM, embedding_dim=8, units=8))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, FEATURE_DIM)).astype("float32")
    tokens = rng.integers(1, 30, size=(3, 6)).astype("int32")
    full = decoder((features, tokens)).numpy()  # (3, 6, 30)
    image = decoder.encode_image(features)
    state = decoder.initial_state(image)
    for t in range(6):
        logits, state, attention = decoder.step(image, tokens[:, t], state)
        assert attention is None
        np.testing.assert_allclose(logits.numpy(), full[:, t], atol=1e-5)


def test_pad_prefix_matches_keras_pad_sequences_pre():
    assert pad_prefix([5, 6], 4).tolist() == [0, 0, 5, 6]
    assert pad_prefix([1, 2, 3, 4, 5], 3).tolist() == [3, 4, 5]
    assert pad_prefix([], 2).tolist() == [0, 0]


def test_create_sequences_one_example_per_prefix(vocab):
    photo = np.arange(FEATURE_DIM, dtype="float32")[None, :]  # the seed stored (1, D)
    X1, X2, y = create_sequences(vocab, 6, ["<start> a dog runs <end>"], photo, len(vocab))
    # <start> a dog runs <end>: 4 prefixes, each predicting the next word
    assert X1.shape == (4, FEATURE_DIM) and X2.shape == (4, 6) and y.shape == (4, len(vocab))
    assert X2[0].tolist() == [0, 0, 0, 0, 0, vocab.start_id]
    assert [int(i) for i in y.argmax(1)] == vocab.encode("a dog runs")[1:]


def test_seed_model_trains_with_data_generator_and_shares_the_decoder(vocab):
    model = define_model(len(vocab), 8, feature_dim=FEATURE_DIM, embedding_dim=8, units=8)
    descriptions = {"1.jpg": ["<start> a dog runs <end>", "<start> two dogs play <end>"], "2.jpg": ["<start> a cat sits on a mat <end>"]}
    photos = {k: np.random.default_rng(1).normal(size=(FEATURE_DIM,)).astype("float32") for k in descriptions}
    before = [w.copy() for w in model.decoder.get_weights()]
    history = model.fit(data_generator(descriptions, photos, vocab, 8, len(vocab)), steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.decoder.get_weights()))
    # The functional model's next-word softmax is the decoder's last-position output.
    prefix = pad_prefix(vocab.encode("a dog", add_special=True)[:-1], 8)[None, :]
    feature = photos["1.jpg"][None, :]
    seed_probs = model.predict([feature, prefix], verbose=0)[0]
    logits = model.decoder((feature, prefix)).numpy()[0, -1]
    np.testing.assert_allclose(seed_probs, np.exp(logits) / np.exp(logits).sum(), atol=1e-5)
