"""Hostile input through the `captioner` command: never lose data, never hang, never lie.

Every case is made by the test itself. The image and dataset corpora are in
test_hostile_images.py and test_data_hostile.py; this file covers models, runs, exports, the
feature store and flags.
"""

import json
import os
import shutil

import numpy as np
import pytest

from captioner.cli import main
from captioner.features import FeatureStore, default_cache_dir, update_features
from captioner.training import TrainConfig, train
from conftest import run_cli as run
from conftest import tiny_train_args


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from conftest import write_train_dev_flickr8k

    root = tmp_path_factory.mktemp("hostile_data")
    write_train_dev_flickr8k(root, 8, 6)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("hostile_run")
    config = TrainConfig(
        data=str(data_root), output=str(out / "run"), cache_dir=str(out / "cache"), min_word_count=1, embedding_dim=8, units=8, epochs=1, batch_size=8
    )
    return train(config, progress=False)


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- exports never destroy a user's files ------------------------------------------------------------


def test_export_refuses_a_folder_of_user_files_before_training(capsys, data_root, tmp_path):
    target = tmp_path / "my-stuff"
    (target / "sub").mkdir(parents=True)
    (target / "thesis.tex").write_text("years of work")
    code, _, err = run(capsys, *tiny_train_args(data_root, tmp_path, "--export", target))
    assert code == 1 and "not empty and is not a captioner model" in one_error_line(err)
    assert (target / "thesis.tex").read_text() == "years of work" and (target / "sub").is_dir()
    assert not (tmp_path / "run").exists()  # refused before any training


def test_export_onto_an_existing_file_fails_before_training(capsys, data_root, tmp_path):
    (tmp_path / "model.out").write_text("a file")
    code, _, err = run(capsys, *tiny_train_args(data_root, tmp_path, "--export", tmp_path / "model.out"))
    assert code == 1 and "not a folder" in one_error_line(err) and not (tmp_path / "run").exists()


def test_export_replaces_an_older_model(capsys, data_root, tmp_path, model_dir):
    shutil.copytree(model_dir, tmp_path / "exported")
    (tmp_path / "exported" / "stale.txt").write_text("from the old model")
    code, _, err = run(capsys, *tiny_train_args(data_root, tmp_path, "--export", tmp_path / "exported"))
    assert code == 0, err
    assert not (tmp_path / "exported" / "stale.txt").exists() and (tmp_path / "exported" / "weights.npz").is_file()


# --- resume continues the run that was planned ---------------------------------------------------------


def test_resume_without_epochs_keeps_the_plan(capsys, data_root, tmp_path):
    assert run(capsys, *tiny_train_args(data_root, tmp_path))[0] == 0
    before = (tmp_path / "run" / "model" / "weights.npz").read_bytes()
    code, _, err = run(capsys, "train", "--resume", "--output", tmp_path / "run", "--no-progress")
    assert code == 0, err
    progress = json.loads(np.load(tmp_path / "run" / "checkpoint.npz")["progress"].item())
    assert progress["epoch"] == 1  # not extended to the default 20
    assert (tmp_path / "run" / "model" / "weights.npz").read_bytes() == before
    code, _, err = run(capsys, "train", "--resume", "--output", tmp_path / "run", "--epochs", "2", "--no-progress")
    assert code == 0 and json.loads(np.load(tmp_path / "run" / "checkpoint.npz")["progress"].item())["epoch"] == 2


def test_resume_refuses_to_change_other_settings(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--resume", "--output", tmp_path / "run", "--learning-rate", "0.1")
    assert code == 1 and "--learning-rate cannot change" in one_error_line(err)


# --- the feature store: changed images, damaged shards --------------------------------------------------


def store_for(data_root, tmp_path):
    return FeatureStore(default_cache_dir(data_root / "Flicker8k_Dataset", "efficientnet_lite0", root=tmp_path / "cache"))


def test_an_image_changed_after_encoding_is_encoded_again(data_root, tmp_path, make_image):
    folder = tmp_path / "imgs"
    a = make_image(folder / "a.jpg", color=(200, 10, 10))
    make_image(folder / "b.jpg", color=(10, 200, 10))
    store = FeatureStore(tmp_path / "store")
    update_features(store, {"a.jpg": a, "b.jpg": folder / "b.jpg"}, progress=False)
    old = store.load(["a.jpg"])[1].copy()
    make_image(folder / "a.jpg", color=(10, 10, 200), size=(80, 60))  # replaced by another photo
    report = update_features(store, {"a.jpg": a, "b.jpg": folder / "b.jpg"}, progress=False)
    assert report.stale == 1 and report.encoded == 1 and report.reused == 1
    assert not np.allclose(store.load(["a.jpg"])[1], old)
    a.write_bytes(b"")  # replaced by a zero-byte file: skipped, never the old features
    report = update_features(store, {"a.jpg": a}, progress=False)
    assert "a.jpg" in report.failed


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "index"])
def test_a_damaged_shard_is_set_aside_and_only_its_images_encoded_again(capsys, caplog, data_root, tmp_path, damage):
    code, _, err = run(capsys, "extract", "--data", data_root, "--cache-dir", tmp_path / "cache", "--batch-size", "3")
    assert code == 0, err
    shards = sorted((store_for(data_root, tmp_path).directory / "shards").glob("*.npy"))
    victim = shards[1]
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        victim.with_suffix(".json").write_text("{not json")
    code, out, err = run(capsys, "extract", "--data", data_root, "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "3 images encoded, 5 reused" in out
    assert victim.name in caplog.text and "set aside" in caplog.text
    assert (victim.parent.parent / "quarantine" / victim.name).exists()


# --- training that would lie ------------------------------------------------------------------------------


def test_a_dev_split_without_usable_captions_trains_without_selection_and_says_so(capsys, data_root, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    (root / "Flickr_8k.devImages.txt").write_text("missing1.jpg\nmissing2.jpg")
    code, _, err = run(capsys, *tiny_train_args(root, tmp_path))
    assert code == 0, err
    assert "training without model selection" in caplog.text
    assert "val loss 0.0000" not in err and (tmp_path / "run" / "model" / "weights.npz").is_file()


def test_a_model_with_nan_weights_is_an_error(capsys, model_dir, tmp_path, make_image):
    broken = tmp_path / "nan-model"
    shutil.copytree(model_dir, broken)
    with np.load(broken / "weights.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["output_dense/bias"] = np.full_like(arrays["output_dense/bias"], np.nan)
    np.savez(broken / "weights.npz", **arrays)
    code, out, err = run(capsys, "caption", make_image(tmp_path / "p.png"), "--model", broken)
    assert code == 1 and out == "" and "NaN" in one_error_line(err) and "weights.npz" in err


def test_an_empty_weights_file_is_named(capsys, model_dir, tmp_path, make_image):
    broken = tmp_path / "empty-weights"
    shutil.copytree(model_dir, broken)
    (broken / "weights.npz").write_bytes(b"")
    code, _, err = run(capsys, "caption", make_image(tmp_path / "p.png"), "--model", broken)
    assert code == 1 and str(broken / "weights.npz") in one_error_line(err) and "empty file" in err


def test_a_model_whose_weights_do_not_match_its_config_fails_clearly(capsys, model_dir, tmp_path, make_image):
    broken = tmp_path / "renamed"
    shutil.copytree(model_dir, broken)
    with np.load(broken / "weights.npz") as archive:
        arrays = {k.replace("hidden_dense", "dense_7"): archive[k] for k in archive.files}
    np.savez(broken / "weights.npz", **arrays)
    code, _, err = run(capsys, "caption", make_image(tmp_path / "p.png"), "--model", broken)
    assert code == 1 and "missing: hidden_dense/bias" in one_error_line(err)


# --- flags are checked before anything runs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["caption", "x.jpg", "--beam-size", "0"], "--beam-size: must be at least 1, got 0"),
        (["caption", "x.jpg", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["caption", "x.jpg", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
        (["caption", "x.jpg", "--num-captions", "two"], "expected a whole number, got 'two'"),
        (["evaluate", "--data", "d", "--limit-images", "-1"], "--limit-images: must be at least 1, got -1"),
        (["train", "--data", "d", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["train", "--data", "d", "--dropout", "1.5"], "--dropout: must be at least 0 and below 1, got 1.5"),
        (["train", "--data", "d", "--learning-rate", "nan"], "--learning-rate: expected a finite number, got 'nan'"),
        (["train", "--data", "d", "--seed", "-3"], "--seed: must be at least 0, got -3"),
    ],
)
def test_bad_numbers_are_refused_at_parse_time(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err.splitlines()[-1]


# --- folders: partial failures are counted, subfolders mentioned ------------------------------------------


def test_a_folder_with_some_bad_images_says_how_many_failed(capsys, caplog, model_dir, tmp_path, make_image):
    make_image(tmp_path / "photos" / "good.png")
    (tmp_path / "photos" / "bad.jpg").write_text("not a photo")
    (tmp_path / "photos" / "nested").mkdir()
    make_image(tmp_path / "photos" / "nested" / "deep.png")
    code, out, _ = run(capsys, "caption", tmp_path / "photos", "--model", model_dir)
    assert code == 0 and len(out.splitlines()) == 1
    assert "captioned 1 of 2 images; 1 could not be read" in caplog.text
    assert "1 subfolder(s) not searched (use --recursive)" in caplog.text
    assert run(capsys, "caption", tmp_path / "photos", "--model", model_dir, "--strict")[0] == 1
    code, out, _ = run(capsys, "caption", tmp_path / "photos", "--model", model_dir, "--recursive")
    assert code == 0 and "deep.png" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_a_folder_never_hangs_the_command(capsys, model_dir, tmp_path, make_image):
    make_image(tmp_path / "photos" / "good.png")
    os.mkfifo(tmp_path / "photos" / "pipe.jpg")
    code, out, err = run(capsys, "caption", tmp_path / "photos", "--model", model_dir, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {r["image"].rsplit("/", 1)[1] for r in rows} <= {"good.png", "pipe.jpg"}
    assert any(r["image"].endswith("good.png") and r["caption"] for r in rows)
