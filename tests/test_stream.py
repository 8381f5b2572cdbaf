"""Streaming a sharded dataset's captions to disk for training: same encoding as in memory, pooled order, exact resume."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from captioner.data import load_dataset, open_sharded
from captioner.features import FeatureStore
from captioner.features.store import ShardWriter
from captioner.training.batches import CaptionArrays, encode_captions, epoch_order
from captioner.training.stream import NpyRows, pooled_order
from captioner.training.stream_build import build_caption_files, open_caption_files
from captioner.vocab import Vocabulary
from shard_writers import write_webdataset

LONG = "A dog , a cat , a bird and a horse run over the green grass in the sun !"


def _fake_store(directory, source, keys_left_out=(), mixed=False):
    """A store holding random features for the shards' images, as extraction writes it (one writer per source shard).

    mixed: store shards that mix source shards (as Ray writes them), plus an older copy of a key
    encoded from another version of its source shard, which must not be used.
    """
    store = FeatureStore(directory, "efficientnet_lite0", weights=None, verify=False)
    rng = np.random.default_rng(0)
    entries = []
    for shard in source.shards:
        fingerprint = source.fingerprint(shard)
        entries += [(s.key, fingerprint) for s in source.samples(shard, images=False) if s.key not in keys_left_out]
    writer = ShardWriter(directory)
    if mixed:
        writer.write([entries[0][0]], [[1, 2]], rng.normal(size=(1, *store.shape)))  # a stale copy
        cut = [0, 5, 13, len(entries)]
    else:
        cut = [0]
        for shard in source.shards:
            cut.append(cut[-1] + sum(1 for s in source.samples(shard, images=False) if s.key not in keys_left_out))
    for a, b in itertools.pairwise(cut):
        part = entries[a:b]
        writer.write([k for k, _ in part], [f for _, f in part], rng.normal(size=(len(part), *store.shape)))
    return FeatureStore(directory, "efficientnet_lite0", weights=None, verify=False, index_keys=False)


def _streamed_set(tmp_path, train_split):
    """30 images in shards of 7, a store of their features and the caption files: (store, vocabulary, train rows)."""
    write_webdataset(tmp_path / "wds", 30, per_shard=7)
    source = open_sharded(tmp_path / "wds")
    store = _fake_store(tmp_path / "store", source)
    vocab, _ = build_caption_files(source, store, tmp_path / "captions", train_split=train_split, val_split="dev", max_length=12, min_word_count=1)
    return store, vocab, open_caption_files(tmp_path / "captions", store, vocab).train


@pytest.mark.parametrize("mixed", [False, True])
def test_streamed_token_files_equal_the_in_memory_encoding(tmp_path, mixed):
    extra = {2: {"caption": LONG}, 5: {"caption": "!!!"}, 7: {"split": "val"}, 8: {"split": "val"}, 11: {"caption": LONG.upper()}}
    keys = write_webdataset(tmp_path / "wds", 20, per_shard=6, extra=extra)
    source = open_sharded(tmp_path / "wds")
    unreadable = keys[3]  # extraction could not decode it: not in the store
    store = _fake_store(tmp_path / "store", source, {unreadable}, mixed)
    assert not store._index and all(not s.keys for s in store._shards)  # keyless: nothing per image
    with pytest.raises(TypeError):
        store.positions([keys[0]])

    vocab, report = build_caption_files(source, store, tmp_path / "captions", train_split="train", val_split="dev", max_length=8, min_word_count=2)
    assert report.empty_captions == 1 and report.summary() is not None  # sample 5 has no word: skipped

    dataset = load_dataset(tmp_path / "wds")  # the in-memory reading of the same set
    train = dataset.cleaned("train")
    assert vocab == Vocabulary.build([c for cs in train.values() for c in cs], min_count=2)
    keyed = FeatureStore(tmp_path / "store", "efficientnet_lite0", weights=None, verify=False)
    splits = open_caption_files(tmp_path / "captions", store, vocab)
    for split, streamed in (("train", splits.train), ("dev", splits.val)):
        captions = {k: v for k, v in dataset.cleaned(split).items() if k in keyed}
        found, index, tokens = encode_captions(captions, vocab, 8)
        files = tmp_path / "captions" / ("train" if split == "train" else "val")
        np.testing.assert_array_equal(np.load(f"{files}-tokens.npy"), tokens)
        np.testing.assert_array_equal(np.load(f"{files}-lengths.npy"), (tokens != 0).sum(axis=1))
        np.testing.assert_array_equal(np.load(f"{files}-positions.npy"), keyed.positions(found)[index])
        assert streamed.images == len(found) and len(streamed) == len(tokens)
    assert any((splits.train.tokens.range(0, len(splits.train)) == vocab.unk_id).ravel())  # min count 2 left words out
    described = dataset.describe(tmp_path / "wds")
    assert {k: v for k, v in splits.dataset_info.items() if k != "sha256"} == {k: v for k, v in described.items() if k != "sha256"}

    # A resumed run encodes with its saved vocabulary: the same files.
    before = np.load(tmp_path / "captions" / "train-tokens.npy")
    build_caption_files(source, store, tmp_path / "captions", train_split="train", val_split="dev", max_length=8, min_word_count=2, vocab=vocab)
    np.testing.assert_array_equal(np.load(tmp_path / "captions" / "train-tokens.npy"), before)


def test_limit_and_all_split_and_the_description_does_not_depend_on_shard_order(tmp_path):
    write_webdataset(tmp_path / "a", 12, per_shard=4)
    (tmp_path / "b").mkdir()
    for number, shard in enumerate(sorted((tmp_path / "a").glob("*.tar"))):  # the same shards, in the other order
        (tmp_path / "b" / f"{9 - number:05d}.tar").write_bytes(shard.read_bytes())
    infos = []
    for name in ("a", "b"):
        source = open_sharded(tmp_path / name)
        store = _fake_store(tmp_path / f"store-{name}", source)
        vocab, _ = build_caption_files(
            source, store, tmp_path / f"c-{name}", train_split="all", val_split="dev", max_length=12, min_word_count=1, limit_images=5
        )
        splits = open_caption_files(tmp_path / f"c-{name}", store, vocab)
        assert splits.train.images == 5 and splits.listed_train_images == 5
        infos.append(splits.dataset_info)
    assert infos[0]["sha256"] == infos[1]["sha256"] and infos[0]["images"] == 12


def _lengths(n):
    lengths = np.random.default_rng(5).integers(3, 30, size=n)
    return lambda a, b: lengths[a:b], lengths


def test_pooled_order_is_the_global_shuffle_for_a_set_that_fits_one_pool():
    lengths_of, lengths = _lengths(1000)
    batches = list(pooled_order(1000, lengths_of, 10, seed=1, epoch=2))
    np.testing.assert_array_equal(np.concatenate(batches), epoch_order(lengths, 10, seed=1, epoch=2))
    assert [len(b) for b in batches] == [10] * 100


@pytest.mark.parametrize("n", [1000, 1003])
def test_pooled_order_is_a_deterministic_permutation_of_whole_batches_a_pool_at_a_time(n):
    lengths_of, lengths = _lengths(n)
    order = dict(block_rows=64, pool_blocks=3)  # pools of 192 rows: 6 pools
    batches = list(pooled_order(n, lengths_of, 10, seed=1, epoch=0, **order))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(len(b) == 10 for b in batches[:-1]) and len(batches[-1]) == (n % 10 or 10)
    assert np.array_equal(flat, np.concatenate(list(pooled_order(n, lengths_of, 10, seed=1, epoch=0, **order))))
    assert not np.array_equal(flat, np.concatenate(list(pooled_order(n, lengths_of, 10, seed=1, epoch=1, **order))))
    assert not np.array_equal(flat, np.concatenate(list(pooled_order(n, lengths_of, 10, seed=2, epoch=0, **order))))
    # The first pool's batches come from its 3 blocks (and nothing carried in yet); still shuffled across them.
    first = np.concatenate(batches[:19]) // 64
    assert len(set(first.tolist())) == 3
    assert not np.array_equal(flat[:192], np.sort(flat[:192]))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)  # batches still hold captions of similar length


def test_streamed_batches_equal_the_in_memory_batches(tmp_path):
    _, vocab, streamed = _streamed_set(tmp_path, "train")
    keyed = FeatureStore(tmp_path / "store", "efficientnet_lite0", weights=None, verify=False)
    keys, index, tokens = encode_captions(load_dataset(tmp_path / "wds").cleaned("train"), vocab, 12)
    arrays = CaptionArrays(index, tokens, keys, keyed.positions(keys))
    for seed in (None, 4):
        pairs = list(zip(streamed.epoch_batches(4, seed, 1), arrays.epoch_batches(4, seed, 1), strict=True))
        for (p1, t1), (p2, t2) in pairs:
            np.testing.assert_array_equal(p1, p2)
            np.testing.assert_array_equal(t1, t2)


def test_npy_rows_reads_ranges_and_rows(tmp_path):
    array = np.arange(60, dtype=np.int32).reshape(12, 5)
    np.save(tmp_path / "a.npy", array)
    rows = NpyRows(tmp_path / "a.npy")
    np.testing.assert_array_equal(rows.range(3, 7), array[3:7])
    np.testing.assert_array_equal(rows.range(10, 20), array[10:])
    np.testing.assert_array_equal(rows.take(np.array([11, 0, 4, 4])), array[[11, 0, 4, 4]])
    (tmp_path / "b.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-8])
    with pytest.raises(Exception, match="cut short"):
        NpyRows(tmp_path / "b.npy")


def test_resume_on_shards_continues_exactly_across_several_pools(tmp_path, monkeypatch):
    from captioner.training import TrainConfig, stream, train
    from captioner.training.loop import CHECKPOINT_FILE

    monkeypatch.setattr(stream, "BLOCK_ROWS", 4)
    monkeypatch.setattr(stream, "POOL_BLOCKS", 2)  # pools of 8 captions: the ~30 training captions make 4-5 pools
    write_webdataset(tmp_path / "wds", 44, per_shard=8)

    def config(name, epochs):
        return TrainConfig(
            data=str(tmp_path / "wds"),
            output=str(tmp_path / name),
            cache_dir=str(tmp_path / "cache"),
            encoder_weights=None,
            min_word_count=1,
            embedding_dim=8,
            units=8,
            batch_size=5,
            epochs=epochs,
            learning_rate=1e-2,
            patience=5,
            seed=3,
        )

    train(config("straight", 3), progress=False)
    train(config("interrupted", 1), progress=False)
    train(config("interrupted", 3), resume=True, progress=False, epochs=3)
    with np.load(tmp_path / "straight" / CHECKPOINT_FILE) as a, np.load(tmp_path / "interrupted" / CHECKPOINT_FILE) as b:
        names = [n for n in a.files if n != "progress"]
        assert names == [n for n in b.files if n != "progress"]
        for name in names:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
        history = [json.loads(x["progress"].item())["history"] for x in (a, b)]
    assert [h["val_loss"] for h in history[0]] == pytest.approx([h["val_loss"] for h in history[1]], rel=1e-5)
    assert len(np.load(tmp_path / "straight" / "captions" / "train-tokens.npy")) > 16  # more than two pools


def test_a_worker_groups_slices_of_streamed_batches_make_up_the_one_worker_batches(tmp_path):
    from types import SimpleNamespace

    from captioner.models.base import POOLED
    from captioner.training.distributed import GroupTrainer

    store, _, rows = _streamed_set(tmp_path, "all")
    reader = rows.reader(store, POOLED)
    whole = list(rows.dataset(reader, 8, seed=2, epoch=1).as_numpy_iterator())
    parts = [
        list(GroupTrainer.batches(SimpleNamespace(group=SimpleNamespace(rank=r, size=2)), rows, reader, 8, 2, 1).as_numpy_iterator())  # type: ignore[arg-type]
        for r in (0, 1)
    ]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 4  # 30 captions: 3 whole batches and one of 6
    for (inputs, targets), a, b in zip(whole, *parts):
        features = np.concatenate([a[0][0], b[0][0]])
        np.testing.assert_array_equal(features, inputs[0])
        np.testing.assert_array_equal(np.concatenate([a[1], b[1]])[:, : targets.shape[1]], targets)
        assert a[2] == b[2] == (targets != 0).sum() and a[3] + b[3] == pytest.approx(1.0)
