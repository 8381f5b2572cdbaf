"""WebDataset tar shards as img2dataset writes them: detection, streaming, splits, cleaning, bad shards."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from captioner.data import DatasetError, NoDatasetError, clean_caption, detect_format, hashed_split, is_sharded, load_dataset, open_sharded
from captioner.images import load_image
from shard_writers import caption_of, write_webdataset


def test_folder_of_tars_loads_with_hashed_splits_and_cleaning(tmp_path):
    keys = write_webdataset(tmp_path / "wds", 10, per_shard=4)
    assert detect_format(tmp_path / "wds") == "webdataset"
    assert is_sharded(tmp_path / "wds")
    dataset = load_dataset(tmp_path / "wds")
    assert dataset.name == "webdataset"
    assert list(dataset.captions) == keys
    assert dataset.captions[keys[3]] == [caption_of(3)]
    for split, split_keys in dataset.splits.items():
        assert all(hashed_split(k) == split for k in split_keys)
    assert sum(map(len, dataset.splits.values())) == 10
    cleaned = dataset.cleaned("all")
    assert cleaned[keys[3]] == [clean_caption(caption_of(3))]
    assert dataset.report.problems == 0


def test_one_shard_file_and_streaming_yields_image_bytes(tmp_path):
    write_webdataset(tmp_path / "wds", 6, per_shard=3)
    shard = tmp_path / "wds" / "00001.tar"
    assert detect_format(shard) == "webdataset"
    source = open_sharded(tmp_path / "wds")
    assert [p.name for p in source.shards] == ["00000.tar", "00001.tar"]
    samples = list(source.samples(source.shards[1]))
    assert [s.key for s in samples] == ["000010000.jpg", "000010001.jpg", "000010002.jpg"]
    pixels = load_image(samples[0].image, 32, name=samples[0].key)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert all(s.split in ("train", "dev", "test") for s in samples)
    # captions only: no image bytes held
    assert all(s.image is None and s.has_image for s in source.samples(source.shards[0], images=False))
    single = open_sharded(shard)
    assert [p.name for p in single.shards] == ["00001.tar"]


def test_split_from_json_missing_parts_and_empty_captions_are_counted(tmp_path):
    extra = {0: {"split": "val"}, 1: {"caption": None}, 2: {"image": None}, 3: {"caption": "!!! 123"}, 4: {"split": "holdout"}, 5: {"split": "test"}}
    write_webdataset(tmp_path / "wds", 8, per_shard=8, extra=extra)
    dataset = load_dataset(tmp_path / "wds")
    report = dataset.report
    assert "000000000.jpg" in dataset.splits["dev"]
    assert "000000005.jpg" in dataset.splits["test"]
    assert len(dataset.captions) == 4  # 0, 5, 6, 7
    assert report.missing_images == 1 and report.empty_captions == 1 and report.unknown_splits == 1 and report.skipped_lines == 1
    summary = report.summary(verbose=True)
    assert summary is not None and "holdout" in summary and "000000001: no caption" in summary


def test_caption_from_json_when_there_is_no_txt(tmp_path):
    root = tmp_path / "wds"
    root.mkdir()
    with tarfile.open(root / "00000.tar", "w") as tar:
        from shard_writers import _add, jpeg_bytes

        _add(tar, "./sub/abc.jpg", jpeg_bytes(0))
        _add(tar, "./sub/abc.json", b'{"caption": "A dog runs."}')
    dataset = load_dataset(root)
    assert dataset.captions == {"sub/abc.jpg": ["A dog runs."]}


def test_damaged_and_cut_short_shards_are_reported_and_the_rest_kept(tmp_path):
    root = tmp_path / "wds"
    write_webdataset(root, 12, per_shard=4)
    (root / "00000.tar").write_bytes(b"this is not a tar file at all" * 40)
    data = (root / "00001.tar").read_bytes()
    (root / "00001.tar").write_bytes(data[:2600])  # cut inside a header: tarfile alone would see a normal end
    dataset = load_dataset(root)
    assert len(dataset.captions) == 4  # the third shard
    summary = dataset.report.summary(verbose=True)
    assert "00000.tar: not a tar archive" in summary
    assert "00001.tar: cut short after 0 samples" in summary
    (root / "00001.tar").write_bytes(data[:9000])  # cut inside the third sample's image
    source = open_sharded(root)
    kept = [s.key for s in source.samples(source.shards[1])]
    assert kept == ["000010000.jpg", "000010001.jpg"]
    assert "cut short after 2 samples" in source.report.summary(verbose=True)


def test_a_dataset_of_only_broken_shards_is_one_line_error(tmp_path):
    root = tmp_path / "wds"
    root.mkdir()
    (root / "00000.tar").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    assert str(err.value).startswith(str(root))
    assert "\n" not in str(err.value)


def test_members_that_are_not_files_are_ignored_and_nothing_is_extracted(tmp_path):
    root = tmp_path / "wds"
    root.mkdir()
    from shard_writers import _add, jpeg_bytes

    with tarfile.open(root / "00000.tar", "w") as tar:
        link = tarfile.TarInfo("../../evil.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
        _add(tar, "../../x.jpg", jpeg_bytes(1))
        _add(tar, "../../x.txt", b"a red square")
    dataset = load_dataset(root)
    assert list(dataset.captions) == ["x.jpg"]  # the key drops the leading ../ ; the symlink is skipped
    assert not (tmp_path.parent / "x.jpg").exists()


def test_empty_folder_is_no_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoDatasetError):
        open_sharded(tmp_path / "empty", format="webdataset")


def test_non_sharded_format_is_refused_by_open_sharded(tiny_kaggle):
    with pytest.raises(DatasetError, match="not sharded"):
        open_sharded(tiny_kaggle.root)


def test_gzipped_shard(tmp_path):
    from shard_writers import _add, jpeg_bytes

    root = tmp_path / "wds"
    root.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, "k1.jpg", jpeg_bytes(2))
        _add(tar, "k1.txt", b"a blue box")
    (root / "00000.tar.gz").write_bytes(buffer.getvalue())
    assert load_dataset(root).captions == {"k1.jpg": ["a blue box"]}


# --- extraction and training on shards ------------------------------------------------------------


def test_extract_cli_encodes_shard_by_shard_and_a_rerun_skips_finished_shards(tmp_path, capsys):
    from captioner.features import FeatureStore, default_cache_dir
    from conftest import run_cli

    keys = write_webdataset(tmp_path / "wds", 10, per_shard=4, extra={9: {"image": b"not a jpeg"}})
    cache = tmp_path / "cache"
    code, out, err = run_cli(capsys, "extract", "--data", tmp_path / "wds", "--cache-dir", cache, "--batch-size", "3")
    assert code == 0, err
    assert "9 images encoded" in out and "1 skipped" in out
    store = FeatureStore(default_cache_dir(tmp_path / "wds", "efficientnet_lite0", root=cache))
    assert sorted(store.keys()) == keys[:9]
    markers = sorted((store.directory / "sources").glob("*.json"))
    assert len(markers) == 3
    # A job killed inside the second shard: its marker is missing; the rerun encodes that shard only.
    next(m for m in markers if m.name.startswith("00001.tar")).unlink()
    code, out, err = run_cli(capsys, "extract", "--data", tmp_path / "wds", "--cache-dir", cache)
    assert code == 0, err
    assert "4 images encoded" in out and "5 reused" in out
    # Same features as extracting the same images from files, to float16 rounding: the encoder's last
    # float32 bits depend on the batch it runs in, which can move a stored value by one float16 step.
    from captioner.features import extract_features

    folder = tmp_path / "files"
    folder.mkdir()
    from shard_writers import jpeg_bytes

    (folder / "000000001.jpg").write_bytes(jpeg_bytes(1))
    from_files = extract_features(folder, cache_dir=tmp_path / "cache2", progress=False)["000000001.jpg"]
    store.refresh()
    np.testing.assert_allclose(store.load(["000000001.jpg"])[1][0].astype(np.float32), from_files, rtol=2**-10, atol=2**-14)


def test_train_on_webdataset_shards(tmp_path, capsys):
    from conftest import run_cli, tiny_train_args

    write_webdataset(tmp_path / "wds", 24, per_shard=8)
    code, out, err = run_cli(capsys, *tiny_train_args(tmp_path / "wds", tmp_path, "--encoder-weights", "none", "--patience", "5"))
    assert code == 0, err
    assert (tmp_path / "run" / "model" / "config.json").exists()
    info = __import__("json").loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert info["training"]["dataset"]["format"] == "webdataset"


def test_extraction_killed_mid_way_resumes_at_the_first_unfinished_shard(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    write_webdataset(tmp_path / "wds", 48, per_shard=4)
    command = [sys.executable, "-m", "captioner.cli", "extract", "--data", str(tmp_path / "wds"), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sources = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list((tmp_path / "cache").glob("features/*/*/sources/*.json"))
        if found:
            sources = found[0].parent
            break
        time.sleep(0.05)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert sources is not None, "no source shard finished before the deadline"
    finished = len(list(sources.glob("*.json")))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    if finished < 12:  # killed before the end: the rerun reuses the finished shards' images
        assert f"{4 * finished} reused" in done.stdout or f"{4 * (finished + 1)} reused" in done.stdout
    assert len(list(sources.glob("*.json"))) == 12
    from captioner.features import FeatureStore

    assert len(FeatureStore(sources.parent)) == 48
