"""Attention maps from the command line: one panel per word, weights that sum to one, the encoder's grid."""

import json

import numpy as np
import pytest
from PIL import Image

from captioner.artifacts import CaptionerConfig, save_captioner
from captioner.cli import main
from captioner.models.attention import AttentionConfig
from captioner.models.base import build_decoder
from captioner.viz import COLUMNS, LABEL_HEIGHT, PANEL, attention_figure, heat_colors
from captioner.vocab import Vocabulary


@pytest.fixture(scope="module")
def attention_model(tmp_path_factory):
    vocab = Vocabulary.build(["a red square on a blue background", "a green box in front of yellow"], min_count=1)
    config = AttentionConfig(vocab_size=len(vocab), max_length=8, feature_dim=1280, embedding_dim=8, units=8, attention_dim=8, decoder="attention")
    directory = tmp_path_factory.mktemp("att") / "model"
    save_captioner(directory, build_decoder(config), vocab, CaptionerConfig("efficientnet_lite0", config))
    return directory


def test_caption_writes_one_heat_map_per_word_and_json_weights(capsys, attention_model, tmp_path, make_image):
    photo = make_image(tmp_path / "p.png", size=(120, 90), color=(200, 30, 30), square=(20, 20, 200))
    out = tmp_path / "maps.png"
    assert main(["caption", str(photo), "--model", str(attention_model), "--attention-map", str(out), "--json", "--beam-size", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    words = row["caption"].split()
    weights = np.array(row["attention"]["weights"])
    assert row["attention"]["grid"] == [7, 7] and row["attention"]["words"] == words  # EfficientNet-Lite0: 7x7 cells
    assert weights.shape == (len(words), 49)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)
    panels = 1 + len(words)  # the photo, then one per word
    rows = -(-panels // COLUMNS)
    assert Image.open(out).size == (COLUMNS * PANEL, rows * (PANEL + LABEL_HEIGHT))


def test_attention_map_needs_an_attending_model_and_one_image(capsys, tmp_path, make_image):
    photo = make_image(tmp_path / "p.png")
    assert main(["caption", str(photo), "--attention-map", str(tmp_path / "m.png"), "--model", "flickr8k-merge"]) == 1
    assert "needs a model that attends" in capsys.readouterr().err
    assert main(["caption", str(photo), str(photo), "--attention-map", str(tmp_path / "m.png")]) == 1
    assert "draws one image; got 2" in capsys.readouterr().err
    assert main(["caption", str(photo), "--attention-map", str(tmp_path / "m.png")]) == 0  # the default model attends
    assert Image.open(tmp_path / "m.png").size[0] > 0


def test_the_hot_cell_is_where_the_heat_is():
    photo = np.full((224, 224, 3), 128, np.uint8)
    weights = np.zeros((1, 49))
    weights[0, 0] = 1.0  # all attention on the top-left cell
    figure = np.asarray(attention_figure(photo, ["dog"], weights))
    panel = figure[:PANEL, PANEL : 2 * PANEL].astype(float)
    hot, cold = heat_colors(np.array(1.0)), heat_colors(np.array(0.0))
    assert np.abs(panel[5, 5] - (0.4 * 128 + 0.6 * hot)).max() < 20
    assert np.abs(panel[-5, -5] - (0.4 * 128 + 0.6 * cold)).max() < 20
