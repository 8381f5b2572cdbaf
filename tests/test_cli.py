"""The `captioner` command as a user meets it: captions, JSON, folders, and one-line errors."""

import json

import pytest

from captioner.training import TrainConfig, train
from conftest import run_cli as run
from conftest import tiny_train_args


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from conftest import write_train_dev_flickr8k

    root = tmp_path_factory.mktemp("cli_data")
    write_train_dev_flickr8k(root, 10, 8)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_root):
    root = data_root
    out = tmp_path_factory.mktemp("cli_run")
    config = TrainConfig(
        data=str(root),
        output=str(out / "run"),
        cache_dir=str(out / "cache"),
        min_word_count=1,
        embedding_dim=16,
        units=16,
        epochs=2,
        batch_size=4,
        learning_rate=1e-2,
    )
    return train(config, progress=False)


@pytest.fixture
def photos(tmp_path, make_image):
    for i in range(3):
        make_image(tmp_path / "photos" / f"p{i}.png", color=(200, 40 * i, 30), square=(0, 0, 200))
    return tmp_path / "photos"


def test_caption_one_image_prints_one_caption(capsys, model_dir, photos):
    code, out, err = run(capsys, "caption", photos / "p0.png", "--model", model_dir)
    assert code == 0 and len(out.strip().splitlines()) == 1 and out.strip()


def test_caption_folder_as_json(capsys, model_dir, photos):
    code, out, _ = run(capsys, "caption", photos, "--model", model_dir, "--json", "--beam-size", "3")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["image"].split("/")[-1] for r in rows] == ["p0.png", "p1.png", "p2.png"]
    assert all(isinstance(r["caption"], str) for r in rows)


def test_caption_n_best_with_scores(capsys, model_dir, photos):
    code, out, _ = run(capsys, "caption", photos / "p1.png", "--model", model_dir, "--num-captions", "3", "--json")
    row = json.loads(out)
    assert code == 0 and len(row["captions"]) == 3
    assert [c["score"] for c in row["captions"]] == sorted((c["score"] for c in row["captions"]), reverse=True)
    assert row["caption"] == row["captions"][0]["caption"]


def test_one_bad_image_among_good_ones_is_reported_not_fatal(capsys, model_dir, photos):
    (photos / "junk.jpg").write_text("not an image")
    code, out, err = run(capsys, "caption", photos, "--model", model_dir)
    assert code == 0 and len(out.splitlines()) == 3
    assert "junk.jpg" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "make_args, expected",
    [
        (lambda p, m: ["caption", p / "nope.jpg", "--model", m], "nope.jpg: no such file"),
        (lambda p, m: ["caption", p / "text.jpg", "--model", m], "text.jpg"),
        (lambda p, m: ["caption", p / "empty", "--model", m], "no images in this folder"),
        (lambda p, m: ["caption", p / "p0.png", "--model", p], "not a captioner model directory"),
        (lambda p, m: ["caption", p / "p0.png", "--model", p / "nothing-here"], "model directory not found"),
        (lambda p, m: ["train", "--data", p / "nothing-here", "--output", p / "run"], "nothing-here"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_nonzero_exit(capsys, model_dir, photos, make_args, expected):
    (photos / "text.jpg").write_text("plain text, not a JPEG")
    (photos / "empty").mkdir()
    code, out, err = run(capsys, *make_args(photos, model_dir))
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("captioner: error:", "error:")) and expected in lines[0], err


def test_train_command_uses_imagenet_features_and_exports_the_model(capsys, data_root, tmp_path):
    code, out, err = run(capsys, *tiny_train_args(data_root, tmp_path, "--export", tmp_path / "exported"))
    assert code == 0, err
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["encoder"] == "efficientnet_lite0" and config["encoder_weights"] == "imagenet"
    assert config["decoder"]["units"] == 8
    assert "epoch  1/1" in err


def test_evaluate_writes_metrics_and_captions(capsys, monkeypatch, data_root, model_dir, tmp_path):
    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path / "cache"))
    code, out, err = run(
        capsys, "evaluate", model_dir, "--data", data_root, "--split", "dev", "--beam-size", "2", "--no-java", "--output-dir", tmp_path / "eval"
    )
    assert code == 0, err
    assert "BLEU-4" in out and "CIDEr-D" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "dev" and metrics["decoding"]["beam_size"] == 2
    assert 0.0 <= metrics["metrics"]["BLEU-1"] <= 1.0 and "METEOR" in metrics["skipped"]
    captions = json.loads((tmp_path / "eval" / "captions.json").read_text())
    assert len(captions) == 2 and all(isinstance(c, str) and c for c in captions.values())
