"""A second decoder, defined here alone, trains, saves, loads, captions and beam-searches.

Nothing outside this file knows about it: it registers itself with `register_decoder`, and the
training loop, the feature store, the model directory, `Captioner` and both searches go through the
`Decoder` interface only. It takes spatial grids and attends over them, so it also exercises the
grid feature store and the attention maps the searches carry.
"""

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers, ops

from captioner.artifacts import load_captioner
from captioner.decoding import SearchDecoder
from captioner.models.base import GRID, Decoder, DecoderConfig, register_decoder
from captioner.pipeline import Captioner
from captioner.training import TrainConfig, train


@dataclasses.dataclass
class TinyGridConfig(DecoderConfig):
    temperature: float = 1.0  # a decoder-specific field: it must survive config.json


@register_decoder("tiny_grid")
class TinyGridDecoder(Decoder):
    """A GRU fed with one attention-weighted summary of the grid (attention from a learned score)."""

    config_class = TinyGridConfig
    features = GRID

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        # Created in the reverse order of use: loading by name must not care.
        self.output_dense = layers.Dense(config.vocab_size, name="output_dense")
        self.gru = layers.GRU(config.units, return_sequences=True, name="gru")
        self.embedding = layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")
        self.score = layers.Dense(1, name="score")
        self.project = layers.Dense(config.units, name="project")

    def encode_image(self, features, training=False):
        cells = self.project(features)  # (B, L, units)
        alpha = ops.softmax(self.score(cells)[:, :, 0] / self.config.temperature, axis=-1)  # (B, L)
        return ops.sum(cells * alpha[:, :, None], axis=1), alpha  # context (B, units), weights (B, L)

    def initial_state(self, memory):
        return [memory[0]]  # from the image

    def step(self, memory, tokens, state):
        context, alpha = memory
        output, new_state = self.gru.cell(ops.concatenate([self.embedding(tokens), context], axis=-1), state)
        return self.output_dense(output), list(new_state) if isinstance(new_state, (list, tuple)) else [new_state], alpha

    def call(self, inputs, training=False):
        features, tokens = inputs
        context, _ = self.encode_image(features, training)
        words = self.embedding(tokens)  # (B, T, E)
        steps = ops.concatenate([words, ops.repeat(context[:, None, :], ops.shape(words)[1], axis=1)], axis=-1)
        return self.output_dense(self.gru(steps, initial_state=[context]))  # (B, T, V)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_train_dev_flickr8k

    root = tmp_path_factory.mktemp("grid_data")
    write_train_dev_flickr8k(root, 12, 10)
    config = TrainConfig(
        data=str(root),
        output=str(root / "run"),
        cache_dir=str(root / "cache"),
        decoder="tiny_grid",
        min_word_count=1,
        embedding_dim=8,
        units=8,
        batch_size=16,
        epochs=2,
        max_length=16,
        seed=1,
    )
    return train(config, progress=False), root


def test_a_registered_decoder_trains_saves_and_loads_by_name_alone(trained):
    model_dir, _ = trained
    decoder, vocab, config = load_captioner(model_dir)
    assert isinstance(decoder, TinyGridDecoder) and config.decoder.decoder == "tiny_grid"
    assert isinstance(config.decoder, TinyGridConfig) and config.decoder.temperature == 1.0
    assert set(np.load(model_dir / "weights.npz").files) == set(decoder.variable_names())


def test_it_captions_with_greedy_and_beam_search_and_carries_attention(trained):
    model_dir, root = trained
    captioner = Captioner(model_dir)
    image = sorted((root / "Flicker8k_Dataset").iterdir())[0]
    greedy = captioner.caption(image, beam_size=1)[0]
    beams = captioner.caption(image, beam_size=3, num_captions=3)
    assert greedy.caption.split() and len(beams) == 3 and beams[0].score >= beams[-1].score
    cells = 7 * 7  # EfficientNet-Lite0's grid
    for hypothesis in [greedy, *beams]:
        words = len(hypothesis.caption.split())
        assert hypothesis.attention.shape == (words, cells)
        np.testing.assert_allclose(hypothesis.attention.sum(axis=1), 1.0, atol=1e-5)


def test_beam_one_equals_greedy_for_it(trained):
    model_dir, root = trained
    decoder, vocab, _ = load_captioner(model_dir)
    features = np.random.default_rng(0).normal(size=(3, 49, 1280)).astype("float32")
    search = SearchDecoder(decoder, vocab)
    assert [h.caption for h in search.greedy(features)] == [hs[0].caption for hs in search.beam(features, beam_size=1)]
    assert keras.backend.backend() == "tensorflow"
