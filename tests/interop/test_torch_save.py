"""Files written by svcjax.interop.torch_save load in PyTorch and in svcjax's reader."""

import collections

import ml_dtypes
import numpy as np
import pytest

from svcjax.interop import torch_pickle, torch_save


def _obj():
    rs = np.random.RandomState(0)
    return {"model": collections.OrderedDict([
        ("enc.weight_v", rs.randn(4, 3, 5).astype(np.float32)),
        ("emb.weight", rs.randn(2, 7).astype(np.float64)),
        ("count", np.array(3, np.int64)),
        ("empty", np.zeros((0, 4), np.float32)),
        ("half", rs.randn(3).astype(ml_dtypes.bfloat16)),
        ("flag", np.array([True, False])),
    ]), "iteration": 12, "optimizer": None, "learning_rate": 1e-4, "note": ("a", [1, 2.5])}


def test_round_trip_through_svcjax_reader(tmp_path):
    obj = _obj()
    path = torch_save.save(obj, tmp_path / "G_12.pth")
    back = torch_pickle.load(path)
    assert list(back["model"]) == list(obj["model"])
    for k, v in obj["model"].items():
        assert back["model"][k].dtype == v.dtype and back["model"][k].shape == v.shape, k
        np.testing.assert_array_equal(back["model"][k], v)
    assert back["iteration"] == 12 and back["optimizer"] is None and back["note"] == ("a", [1, 2.5])
    assert not list(tmp_path.glob("*.tmp-*"))


def test_torch_loads_it_safely(tmp_path):
    torch = pytest.importorskip("torch")
    obj = _obj()
    path = torch_save.save(obj, tmp_path / "D_12.pth")
    for mmap in (False, True):
        t = torch.load(path, weights_only=True, mmap=mmap)
        for k, v in obj["model"].items():
            got = t["model"][k]
            assert tuple(got.shape) == v.shape, k
            np.testing.assert_array_equal(got.float().numpy(), v.astype(np.float32))
        assert t["iteration"] == 12 and t["learning_rate"] == 1e-4


def test_unsupported_dtype_is_one_clear_error(tmp_path):
    with pytest.raises(TypeError, match="complex64"):
        torch_save.save({"x": np.zeros(2, np.complex64)}, tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())
