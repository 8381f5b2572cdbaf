"""Multi-worker training: two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy) against one worker.

Two workers with global batch B take the same steps as one worker with batch B: each reads its half
of every batch from the feature store, the loss is scaled by the whole batch's token count, and the
summed gradients are clipped once. With dropout 0 the weights agree to float rounding; the tolerance
below (1e-5 absolute after 2 epochs of Adam) is ~100x what was measured, to leave room for
summation order (measured: merge 1.2e-7, attention 1.6e-7). The group's run is also stopped after
epoch 1 and resumed by a new group.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from captioner.errors import ArgumentError
from captioner.training.distributed import _cluster_from_env
from conftest import run_cli, tiny_train_args, write_train_dev_flickr8k


def _weights(run):
    with np.load(run / "checkpoint.npz") as archive:
        return {name: archive[name] for name in archive.files if name.startswith("model/")}, json.loads(str(archive["progress"]))


# The attention decoder adds its own regulariser (a batch mean, so each worker's is weighted by its
# share of the batch) and runs on grids; slow, since the merge case already covers the machinery.
@pytest.mark.parametrize("decoder", ["merge", pytest.param("attention", marks=pytest.mark.slow)])
def test_two_workers_match_one_worker_with_the_same_global_batch_and_resume_as_a_group(tmp_path, capsys, decoder):
    data = write_train_dev_flickr8k(tmp_path / "data", 24, 20)
    common = ["--encoder-weights", "none", "--dropout", "0", "--batch-size", "16", "--patience", "5", "--decoder", decoder]
    one = tiny_train_args(data, tmp_path, *common, "--epochs", "2")
    code, out, err = run_cli(capsys, *one)
    assert code == 0, err

    group = [a if a != tmp_path / "run" else tmp_path / "group" for a in tiny_train_args(data, tmp_path, *common)]
    code, out, err = run_cli(capsys, *group, "--workers", "2")  # epoch 1 of 2, then stop
    assert code == 0, err
    assert (tmp_path / "group" / "worker-1.log").exists()
    assert _weights(tmp_path / "group")[1]["epoch"] == 1
    code, out, err = run_cli(capsys, "train", "--resume", "--output", tmp_path / "group", "--epochs", "2", "--workers", "2", "--no-progress")
    assert code == 0, err

    a, progress_a = _weights(tmp_path / "run")
    b, progress_b = _weights(tmp_path / "group")
    assert progress_b["epoch"] == 2 and sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-5, err_msg=name)
    for x, y in zip(progress_a["history"], progress_b["history"]):
        assert y["train_loss"] == pytest.approx(x["train_loss"], abs=1e-5)
        assert y["val_loss"] == pytest.approx(x["val_loss"], abs=1e-5)
    assert (tmp_path / "group" / "model" / "config.json").exists()


def test_tf_config_parsing(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert _cluster_from_env() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}))
    assert _cluster_from_env() is None  # one worker: an ordinary run
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 2}}))
    assert _cluster_from_env() == (2, 3)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ArgumentError, match="TF_CONFIG is not valid"):
        _cluster_from_env()


def test_workers_with_self_critical_training_is_refused(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--scst", "--init", tmp_path / "run", "--output", tmp_path / "scst", "--workers", "2")
    assert code == 1
    assert "--workers is for cross-entropy training" in err and "Traceback" not in err
