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


def test_ray_flag_on_a_folder_of_files_is_a_one_line_error(tmp_path, capsys, make_image):
    make_image("pics/a.jpg")
    code, out, err = run_cli(capsys, "extract", "--data", tmp_path / "pics", "--ray")
    assert code == 1
    assert "--ray encodes WebDataset or Parquet shards" in err and "Traceback" not in err
