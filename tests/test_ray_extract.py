"""`captioner extract --ray` on a two-node Ray cluster on 127.0.0.1: same features as in process, reruns skip finished shards."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'captioner[ray]')")

import ray

from captioner.features import FeatureStore, default_cache_dir
from captioner.features.ray_extract import LocalCluster
from conftest import run_cli
from shard_writers import write_webdataset


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head` plus a second node process, both on this machine, 2 CPUs each."""
    with LocalCluster(nodes=2, cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray"))) as running:
        yield running
        ray.shutdown()  # the test process's driver connection, before its cluster goes


def _store(data, cache):
    return FeatureStore(default_cache_dir(data, "efficientnet_lite0", root=cache))


def test_ray_extraction_equals_in_process_and_a_rerun_skips_finished_shards(cluster, tmp_path, capsys):
    data = tmp_path / "wds"
    keys = write_webdataset(data, 20, per_shard=5, extra={7: {"image": b"broken"}})
    code, out, err = run_cli(
        capsys, "extract", "--data", data, "--cache-dir", tmp_path / "ray", "--ray", cluster.address, "--ray-workers", "2", "--batch-size", "4"
    )
    assert code == 0, err
    assert "19 images encoded" in out and "1 skipped" in out
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    by_ray = _store(data, tmp_path / "ray")
    writers = {p.name.rsplit("-", 1)[0] for p in (by_ray.directory / "shards").glob("*.npy")}
    assert 1 <= len(writers) <= 2  # each encoder actor writes shards of its own (with this little work one may do all of it)
    assert len(list((by_ray.directory / "sources").glob("*.json"))) == 4

    code, out, err = run_cli(capsys, "extract", "--data", data, "--cache-dir", tmp_path / "local", "--batch-size", "4")
    assert code == 0, err
    in_process = _store(data, tmp_path / "local")
    wanted = [k for k in keys if k != keys[7]]
    assert sorted(by_ray.keys()) == sorted(in_process.keys()) == sorted(wanted)
    a = by_ray.load(wanted)[1].astype(np.float32)
    b = in_process.load(wanted)[1].astype(np.float32)
    # Equal up to float16 rounding: the encoder's last float32 bits depend on which images share its
    # batch, which can move a stored float16 by one step (rel. 2**-10). Measured: 0 or 1 of 24,320 values differ.
    np.testing.assert_allclose(a, b, rtol=2**-10, atol=2**-14)
    assert np.mean(a != b) < 1e-3

    # A job killed in the third shard: its marker was never written. The rerun encodes only that shard.
    marker = next(p for p in (by_ray.directory / "sources").glob("00002.tar*.json"))
    marker.unlink()
    code, out, err = run_cli(capsys, "extract", "--data", data, "--cache-dir", tmp_path / "ray", "--ray", cluster.address, "--batch-size", "4")
    assert code == 0, err
    assert "5 images encoded" in out and "14 reused" in out
    assert marker.exists()


@pytest.mark.slow  # a second Ray pipeline on the same cluster: ~20 s more, beyond the fast suite's budget
def test_ray_extraction_of_a_folder_of_image_files(cluster, tmp_path, capsys, make_image):
    from captioner.features import extract_features

    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30), (10, 10, 10)]
    for i, color in enumerate(colors):
        make_image(f"pics/{i}.jpg", size=(80, 60), color=color, square=colors[-1 - i])
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"not a jpeg")
    code, out, err = run_cli(capsys, "extract", "--data", tmp_path / "pics", "--cache-dir", tmp_path / "ray", "--ray", cluster.address, "--batch-size", "2")
    assert code == 0, err
    assert "5 images encoded" in out and "1 skipped" in out
    store = _store(tmp_path / "pics", tmp_path / "ray")
    keys = [f"{i}.jpg" for i in range(5)]
    local = extract_features(tmp_path / "pics", cache_dir=tmp_path / "local", progress=False)
    np.testing.assert_allclose(store.load(keys)[1].astype(np.float32), np.stack([local[k] for k in keys]), rtol=2**-10, atol=2**-14)
    code, out, err = run_cli(capsys, "extract", "--data", tmp_path / "pics", "--cache-dir", tmp_path / "ray", "--ray", cluster.address)
    assert code == 0, err
    assert "0 images encoded" in out and "5 reused" in out  # each image carries its file's (size, mtime)


@pytest.mark.slow  # a third Ray job on the cluster, killed and rerun: ~40 s more
def test_ray_extraction_killed_by_sigkill_resumes_at_unfinished_shards(cluster, tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "wds"
    write_webdataset(data, 64, per_shard=4)
    command = [sys.executable, "-m", "captioner.cli", "extract", "--data", str(data), "--cache-dir", str(tmp_path / "c"), "--ray", cluster.address]
    command += ["--ray-workers", "1", "--batch-size", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sources = tmp_path / "c"

    def markers() -> int:  # finished source shards; not a marker's temporary file (".NAME.XXXX.tmp.json") a kill interrupted
        return sum(not p.name.startswith(".") for p in sources.glob("features/*/*/sources/*.json"))

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None and not markers():
        time.sleep(0.05)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)  # the driver dies; Ray ends its job's tasks and actors
    process.wait()
    finished = markers()
    assert finished >= 1
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    encoded, reused = (int(n) for n in re.search(r"(\d+) images encoded, (\d+) reused", done.stdout).groups())
    # Every finished shard is reused; so may be images stored before the kill whose shard was not marked yet.
    assert encoded + reused == 64 and reused >= 4 * finished, done.stdout
    assert markers() == 16
    assert len(_store(data, tmp_path / "c")) == 64
