"""Parquet shards as img2dataset writes them: columns, streaming by row group, splits, bad files."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'captioner[parquet]')")

import pyarrow as pa
import pyarrow.parquet as pq

from captioner.data import DatasetError, clean_caption, detect_format, hashed_split, load_dataset, open_sharded
from captioner.images import load_image
from shard_writers import caption_of, write_parquet, write_webdataset


def test_folder_of_parquet_loads_with_hashed_splits(tmp_path):
    keys = write_parquet(tmp_path / "pq", 9, per_shard=4)
    assert detect_format(tmp_path / "pq") == "parquet"
    assert detect_format(tmp_path / "pq" / "00001.parquet") == "parquet"
    dataset = load_dataset(tmp_path / "pq")
    assert dataset.name == "parquet"
    assert list(dataset.captions) == keys
    assert dataset.cleaned("all")[keys[2]] == [clean_caption(caption_of(2))]
    for split, split_keys in dataset.splits.items():
        assert all(hashed_split(k) == split for k in split_keys)


def test_same_samples_as_the_webdataset_copy(tmp_path):
    extra = {1: {"image": None}, 2: {"split": "val"}}
    write_parquet(tmp_path / "pq", 7, per_shard=3, extra=extra)
    write_webdataset(tmp_path / "wds", 7, per_shard=3, extra=extra)
    a, b = load_dataset(tmp_path / "pq"), load_dataset(tmp_path / "wds")
    assert a.captions == b.captions and a.splits == b.splits
    assert a.report.missing_images == b.report.missing_images == 1
    assert "status failed_to_download" in a.report.summary(verbose=True)


def test_streams_row_groups_with_image_bytes(tmp_path):
    write_parquet(tmp_path / "pq", 8, per_shard=8, row_group_size=3)
    source = open_sharded(tmp_path / "pq")
    samples = list(source.samples(source.shards[0]))
    assert len(samples) == 8
    assert load_image(samples[5].image, 16, name=samples[5].key).shape == (16, 16, 3)
    assert all(s.image is None for s in source.samples(source.shards[0], images=False))


def test_webdataset_folder_with_parquet_side_files_is_webdataset(tmp_path):
    write_webdataset(tmp_path / "d", 4)
    pq.write_table(pa.table({"key": ["000000000"], "url": ["http://x"], "caption": ["a dog"]}), tmp_path / "d" / "00000.parquet")
    assert detect_format(tmp_path / "d") == "webdataset"


def test_url_only_parquet_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://x/1.jpg"], "caption": ["a dog"]}), path)
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    assert str(err.value).startswith(str(path)) and "download the images first" in str(err.value)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 nope")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        load_dataset(path)


def test_split_column_and_png_column(tmp_path):
    keys = write_parquet(tmp_path / "pq", 4, extra={0: {"split": "test"}, 1: {"split": "train"}, 2: {"split": "dev"}, 3: {"split": "nope"}}, image_column="png")
    dataset = load_dataset(tmp_path / "pq")
    assert dataset.splits == {"train": ["000000001.png"], "dev": ["000000002.png"], "test": ["000000000.png"]}
    assert dataset.report.unknown_splits == 1
    assert keys[0] == "000000000.jpg"  # the writer's name; the reader keys by the column's format


def test_extract_cli_on_parquet_shards(tmp_path, capsys):
    from conftest import run_cli

    write_parquet(tmp_path / "pq", 6, per_shard=3, extra={4: {"image": None}})
    code, out, err = run_cli(capsys, "extract", "--data", tmp_path / "pq", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "5 images encoded" in out
    assert "1 image not found" in err
