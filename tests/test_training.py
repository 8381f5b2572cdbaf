"""Training: learns, checkpoints, resumes exactly, and writes a loadable model directory."""

import json

import numpy as np
import pytest

from captioner.artifacts import load_captioner
from captioner.decoding import SearchDecoder
from captioner.errors import FileError
from captioner.features import FeatureStore, default_cache_dir
from captioner.models.base import build_decoder
from captioner.training import TrainConfig, train
from captioner.training.batches import encode_captions, epoch_order
from captioner.training.loop import CHECKPOINT_FILE
from captioner.vocab import Vocabulary


def tiny_config(dataset, tmp_path, name, **overrides):
    settings = dict(
        data=str(dataset.root),
        output=str(tmp_path / name),
        cache_dir=str(tmp_path / "cache"),
        min_word_count=1,
        embedding_dim=32,
        units=32,
        dropout=0.2,
        batch_size=16,
        epochs=2,
        learning_rate=1e-2,
        patience=5,
        seed=3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from conftest import write_train_dev_flickr8k  # the colour-square images of conftest

    root = tmp_path_factory.mktemp("train_data")
    write_train_dev_flickr8k(root, 20, 16)

    class Tiny:
        pass

    Tiny.root = root
    return Tiny


def test_epoch_order_is_a_shuffled_length_bucketed_permutation():
    lengths = np.random.default_rng(0).integers(3, 30, size=1000)
    order = epoch_order(lengths, batch_size=10, seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(1000))
    assert np.array_equal(order, epoch_order(lengths, 10, seed=1, epoch=0))
    assert not np.array_equal(order, epoch_order(lengths, 10, seed=1, epoch=1))
    spread = np.mean([np.ptp(lengths[order[i : i + 10]]) for i in range(0, 1000, 10)])
    assert spread < 0.3 * np.ptp(lengths)  # batches hold captions of similar length


def test_encode_captions_cuts_long_captions_but_keeps_the_end_token():
    vocab = Vocabulary.build(["a b c d e f"], min_count=1)
    keys, index, tokens = encode_captions({"x.jpg": ["a b c d e f", "a b"]}, vocab, max_length=5)
    assert keys == ["x.jpg"] and index.tolist() == [0, 0]
    assert tokens[0].tolist() == vocab.encode("a b c")[:-1] + [vocab.end_id] and len(tokens[0]) == 5
    assert tokens[1].tolist() == vocab.encode("a b") + [vocab.pad_id]


def test_training_learns_and_writes_a_model_directory(dataset, tmp_path):
    model_dir = train(tiny_config(dataset, tmp_path, "run", epochs=8, batch_size=8), progress=False)
    history = json.loads(np.load(tmp_path / "run" / CHECKPOINT_FILE)["progress"].item())["history"]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    decoder, vocab, config = load_captioner(model_dir)
    assert config.encoder == "efficientnet_lite0" and config.decoder.vocab_size == len(vocab)
    # The model directory stores float16; it must say what the float32 model said.
    assert min(history, key=lambda h: h["val_loss"]) is history[-1]  # so the checkpoint is the best model
    full_precision = build_decoder(config.decoder)
    with np.load(tmp_path / "run" / CHECKPOINT_FILE) as checkpoint:
        for name, variable in full_precision.variable_names().items():
            variable.assign(checkpoint[f"model/{name}"])
    cache = FeatureStore(default_cache_dir(dataset.root / "Flicker8k_Dataset", "efficientnet_lite0", root=tmp_path / "cache"))
    _, features = cache.load()
    features = features.astype("float32")
    assert [h.caption for h in SearchDecoder(decoder, vocab).greedy(features)] == [h.caption for h in SearchDecoder(full_precision, vocab).greedy(features)]


def test_resume_continues_exactly_like_an_uninterrupted_run(dataset, tmp_path):
    train(tiny_config(dataset, tmp_path, "straight", epochs=3), progress=False)
    train(tiny_config(dataset, tmp_path, "interrupted", epochs=1), progress=False)
    train(tiny_config(dataset, tmp_path, "interrupted"), resume=True, progress=False, epochs=3)
    with np.load(tmp_path / "straight" / CHECKPOINT_FILE) as a, np.load(tmp_path / "interrupted" / CHECKPOINT_FILE) as b:
        names = [n for n in a.files if n != "progress"]
        assert names == [n for n in b.files if n != "progress"]
        for name in names:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert [h["val_loss"] for h in json.loads(a["progress"].item())["history"]] == pytest.approx(
            [h["val_loss"] for h in json.loads(b["progress"].item())["history"]], rel=1e-5
        )


def test_a_run_is_never_overwritten_and_resume_needs_a_checkpoint(dataset, tmp_path):
    with pytest.raises(FileError, match="nothing to resume"):
        train(tiny_config(dataset, tmp_path, "empty"), resume=True, progress=False)
    train(tiny_config(dataset, tmp_path, "once", epochs=1), progress=False)
    with pytest.raises(FileError, match="--resume"):
        train(tiny_config(dataset, tmp_path, "once", epochs=1), progress=False)


def test_a_model_records_its_dataset_by_name_and_fingerprint_not_by_path(dataset, tmp_path):
    model_dir = train(tiny_config(dataset, tmp_path, "portable", epochs=1), progress=False)
    saved = (model_dir / "config.json").read_text() + (model_dir / "train_config.json").read_text()
    assert str(tmp_path) not in saved and str(dataset.root) not in saved
    described = json.loads((model_dir / "config.json").read_text())["training"]["dataset"]
    assert described["name"] == dataset.root.name and described["format"] == "flickr8k" and len(described["sha256"]) == 64
    assert json.loads((model_dir / "train_config.json").read_text())["data"] == dataset.root.name
