"""svcjax reads torch.save files (zip and legacy) without PyTorch, tensors bit-exact."""

import argparse
import collections

import numpy as np
import pytest

from svcjax.convert import torch_pickle

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("zipfmt", [True, False])
def test_roundtrip(tmp_path, zipfmt):
    t = torch.randn(3, 4, 5)
    sd = collections.OrderedDict(
        a=t, view=t[:, 1], transposed=t.transpose(0, 2), half=torch.randn(7).half(),
        bf16=torch.randn(4).bfloat16(), ints=torch.arange(5), param=torch.nn.Parameter(torch.ones(2)),
        scalar=torch.tensor(3.5), empty=torch.zeros(0, 3))
    obj = {"model": sd, "iteration": 3, "learning_rate": 1e-4,
           "args": argparse.Namespace(label_rate=50, layers=[1, 2]),
           "optimizer": torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()).state_dict()}
    path = tmp_path / "x.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=zipfmt)
    got = torch_pickle.load(path)
    assert isinstance(got["model"], collections.OrderedDict)
    for k, v in sd.items():
        ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        assert got["model"][k].shape == ref.shape, k
        np.testing.assert_array_equal(np.asarray(got["model"][k], ref.dtype), ref)
    assert got["model"]["half"].dtype == np.float16
    assert got["iteration"] == 3 and got["args"].label_rate == 50
    assert got["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)


class FairseqLikeConfig:  # pickled by reference to this test module, which the reader never imports
    def __init__(self):
        self.label_rate = 50


def test_unknown_classes_are_inert(tmp_path):
    Config = FairseqLikeConfig
    path = tmp_path / "c.pt"
    torch.save({"cfg": Config(), "w": torch.ones(2)}, path)
    got = torch_pickle.load(path)
    assert isinstance(got["cfg"], torch_pickle.Opaque) and got["cfg"].label_rate == 50
    np.testing.assert_array_equal(got["w"], np.ones(2, np.float32))


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        torch_pickle.load(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(torch_pickle.TorchFileError, match="bad.pth"):
        torch_pickle.load(bad)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(1000)}, good, _use_new_zipfile_serialization=False)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(torch_pickle.TorchFileError, match="trunc"):
        torch_pickle.load(trunc)


class Node:  # like omegaconf's config nodes: children point back at their parent
    def __init__(self, parent=None, **content):
        self.parent = parent
        self.content = content


def test_cyclic_object_graphs(tmp_path):
    root = Node(value=torch.ones(3))
    root.content["child"] = Node(parent=root, n=12, items=[root])
    path = tmp_path / "cyclic.pt"
    torch.save({"cfg": root}, path)
    got = torch_pickle.load(path)["cfg"]
    child = got.content["child"]
    assert child.parent is got and child.content["items"][0] is got and child.content["n"] == 12
    np.testing.assert_array_equal(got.content["value"], np.ones(3, np.float32))
