"""Sharding, length buckets and model directories."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.runtime import buckets, sharding

from svcjax.train import checkpoint


def test_eight_fake_devices():
    assert jax.device_count() == 8


def test_mesh_and_batch_sharding():
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
    mesh2 = sharding.make_mesh(fsdp=2)
    assert dict(mesh2.shape) == {"data": 4, "fsdp": 2}
    x = jax.device_put(jnp.arange(16.0).reshape(8, 2), sharding.batch_sharding(mesh, 2))
    assert len(x.addressable_shards) == 8 and x.addressable_shards[0].data.shape == (1, 2)
    with pytest.raises(ValueError, match="needs 6 devices"):
        sharding.make_mesh(3, 2)


def test_param_sharding_splits_large_params_over_fsdp():
    mesh = sharding.make_mesh(fsdp=2)
    specs = sharding.param_sharding(mesh, {"big": np.zeros((1024, 512)), "small": np.zeros(3)},
                                    min_size=1000)
    assert specs["big"].spec == jax.sharding.PartitionSpec("fsdp", None)
    assert specs["small"].spec == jax.sharding.PartitionSpec()


def test_pad_to_multiple():
    x, n = sharding.pad_to_multiple({"a": np.ones((3, 2)), "b": np.ones(3)}, 8)
    assert n == 3 and x["a"].shape == (8, 2) and x["b"][3:].sum() == 0


def test_global_batch_single_process():
    mesh = sharding.make_mesh()
    g = sharding.global_batch({"x": np.arange(16).reshape(8, 2)}, mesh)
    np.testing.assert_array_equal(np.asarray(g["x"]), np.arange(16).reshape(8, 2))


def test_buckets():
    assert buckets.bucket_length(1) == 64
    assert buckets.bucket_length(64) == 64
    b = buckets.bucket_lengths(2000)
    assert b == sorted(set(b)) and b[-1] >= 2000 and all(x % 16 == 0 for x in b)
    for n in (65, 300, 861, 1999):
        assert n <= buckets.bucket_length(n) <= 1.25 * n + 16
    np.testing.assert_array_equal(buckets.length_mask([1, 3], 4), [[1, 0, 0, 0], [1, 1, 1, 0]])
    assert buckets.pad_axis(np.ones((2, 3)), 5).shape == (2, 5)
    with pytest.raises(ValueError):
        buckets.bucket_length(0)


def test_model_dir_roundtrip_and_atomicity(tmp_path):
    params = {"a": {"kernel": np.random.randn(3, 4).astype(np.float32)}}
    out = tmp_path / "model"
    checkpoint.save_model_dir(out, params, {"kind": "test", "spk": {"alto": 0}})
    assert checkpoint.is_model_dir(out)
    p, c = checkpoint.load_model_dir(out)
    np.testing.assert_array_equal(np.asarray(p["a"]["kernel"]), params["a"]["kernel"])
    assert c.kind == "test" and c.spk.alto == 0
    with pytest.raises(FileExistsError):
        checkpoint.save_model_dir(out, params, {"kind": "test"})
    # A failed save leaves the existing model untouched and no temporary directory behind.
    with pytest.raises((TypeError, ValueError)):
        checkpoint.save_model_dir(out, {"a": object()}, {"kind": "broken"}, overwrite=True)
    assert json.load(open(out / "config.json"))["kind"] == "test"
    assert sorted(os.listdir(tmp_path)) == ["model"]
    with pytest.raises(checkpoint.ModelDirError, match="not an svcjax model directory"):
        checkpoint.load_model_dir(tmp_path)


def test_cli_help(capsys):
    from svcjax import cli
    assert cli.main([]) == 0
    assert "svcjax" in capsys.readouterr().out
