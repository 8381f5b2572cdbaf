"""Model directories: weights by name, older layouts still load, damage is named."""

import json
import shutil

import numpy as np
import pytest

from captioner.artifacts import ModelDirError, load_captioner
from captioner.decoding import SearchDecoder
from captioner.defaults import default_model_dir
from captioner.features import FeatureCacheError, FeatureStore


@pytest.fixture(scope="module")
def shipped():
    return load_captioner(default_model_dir())


def test_a_format_1_directory_weights_in_creation_order_still_loads(shipped, tmp_path):
    decoder, vocab, _ = shipped
    old = tmp_path / "old"
    shutil.copytree(default_model_dir(), old)
    np.savez(old / "weights.npz", **{f"w{i:03d}": np.asarray(v) for i, v in enumerate(decoder.variable_names().values())})
    config = json.loads((old / "config.json").read_text())
    config["format_version"] = 1
    (old / "config.json").write_text(json.dumps(config))
    loaded, _, _ = load_captioner(old)
    features = np.random.default_rng(0).normal(size=(4, 1280)).astype("float32")
    assert [h.caption for h in SearchDecoder(loaded, vocab).greedy(features)] == [h.caption for h in SearchDecoder(decoder, vocab).greedy(features)]


def test_a_directory_from_a_newer_captioner_is_refused(tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(default_model_dir(), newer)
    config = json.loads((newer / "config.json").read_text())
    config["format_version"] = 99
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="newer captioner"):
        load_captioner(newer)


def test_an_unknown_decoder_name_is_a_clear_error(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(default_model_dir(), other)
    config = json.loads((other / "config.json").read_text())
    config["decoder"]["decoder"] = "transformer-xl"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="unknown decoder 'transformer-xl'"):
        load_captioner(other)


def test_a_feature_cache_from_captioner_0_1_is_refused_with_how_to_rebuild(tmp_path):
    (tmp_path / "old-cache").mkdir()
    np.savez(tmp_path / "old-cache" / "features.npz", keys=np.array(["a.jpg"]), features=np.zeros((1, 1280), np.float16))
    with pytest.raises(FeatureCacheError, match="rm -r"):
        FeatureStore(tmp_path / "old-cache")
