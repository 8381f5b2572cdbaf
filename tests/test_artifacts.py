"""Model directories: weights by name, older layouts still load, damage is named."""

import json
import shutil

import numpy as np
import pytest

from captioner.artifacts import ModelDirError, load_captioner, save_captioner, save_quantized
from captioner.decoding import SearchDecoder
from captioner.defaults import resolve_model
from captioner.features import FeatureCacheError, FeatureStore

MERGE_DIR = resolve_model("flickr8k-merge")


@pytest.fixture(scope="module")
def shipped():
    return load_captioner(MERGE_DIR)


def test_a_format_1_directory_weights_in_creation_order_still_loads(shipped, tmp_path):
    decoder, vocab, _ = shipped
    old = tmp_path / "old"
    shutil.copytree(MERGE_DIR, old)
    np.savez(old / "weights.npz", **{f"w{i:03d}": np.asarray(v) for i, v in enumerate(decoder.variable_names().values())})
    config = json.loads((old / "config.json").read_text())
    config["format_version"] = 1
    (old / "config.json").write_text(json.dumps(config))
    loaded, _, _ = load_captioner(old)
    features = np.random.default_rng(0).normal(size=(4, 1280)).astype("float32")
    assert [h.caption for h in SearchDecoder(loaded, vocab).greedy(features)] == [h.caption for h in SearchDecoder(decoder, vocab).greedy(features)]


def test_a_directory_from_a_newer_captioner_is_refused(tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(MERGE_DIR, newer)
    config = json.loads((newer / "config.json").read_text())
    config["format_version"] = 99
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="newer captioner"):
        load_captioner(newer)


def test_an_unknown_decoder_name_is_a_clear_error(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(MERGE_DIR, other)
    config = json.loads((other / "config.json").read_text())
    config["decoder"]["decoder"] = "transformer-xl"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="unknown decoder 'transformer-xl'"):
        load_captioner(other)


def test_int8_weights_are_about_half_the_size_and_keep_the_captions(shipped, tmp_path):
    decoder, vocab, _ = shipped
    small = save_quantized(MERGE_DIR, tmp_path / "int8")
    assert (small / "weights.npz").stat().st_size < 0.6 * (MERGE_DIR / "weights.npz").stat().st_size
    loaded, _, config = load_captioner(small)
    assert config.format_version == 3
    features = np.random.default_rng(0).normal(size=(32, 1280)).astype("float32")
    before = [h.caption for h in SearchDecoder(decoder, vocab).greedy(features)]
    after = [h.caption for h in SearchDecoder(loaded, vocab).greedy(features)]
    assert sum(a == b for a, b in zip(before, after)) >= 28, list(zip(before, after))
    resaved = save_captioner(tmp_path / "resaved", loaded, vocab, config)  # e.g. fine-tuning a shipped model
    assert load_captioner(resaved)[2].format_version == 2


def test_an_int8_scale_without_its_matrix_is_named(tmp_path):
    small = save_quantized(MERGE_DIR, tmp_path / "int8")
    arrays = dict(np.load(small / "weights.npz"))
    arrays["embedding/embeddings"] = arrays["embedding/embeddings"].astype(np.float16)
    np.savez(small / "weights.npz", **arrays)
    with pytest.raises(ModelDirError, match="does not fit an int8 matrix embedding/embeddings"):
        load_captioner(small)


def test_a_feature_cache_from_captioner_0_1_is_refused_with_how_to_rebuild(tmp_path):
    (tmp_path / "old-cache").mkdir()
    np.savez(tmp_path / "old-cache" / "features.npz", keys=np.array(["a.jpg"]), features=np.zeros((1, 1280), np.float16))
    with pytest.raises(FeatureCacheError, match="rm -r"):
        FeatureStore(tmp_path / "old-cache")
