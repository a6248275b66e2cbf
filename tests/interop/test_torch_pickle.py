"""svcjax reads torch.save files (zip and legacy) without PyTorch, tensors bit-exact, and
never runs code from them: every global outside the allowlist is refused."""

import argparse
import collections
import os
import re
import sys
import types

import numpy as np
import pytest

from svcjax.interop import torch_pickle
from tests.interop import malicious


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("zipfmt", [True, False])
def test_roundtrip(tmp_path, zipfmt, torch):
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


class FairseqLikeConfig:  # pickled as fairseq.testing.FairseqLikeConfig (see fake_fairseq)
    def __init__(self):
        self.label_rate = 50


class Node:  # like omegaconf's config nodes: children point back at their parent
    def __init__(self, parent=None, **content):
        self.parent = parent
        self.content = content


class NotAllowed:  # pickled by reference to this test module: not on the allowlist
    pass


@pytest.fixture
def fake_fairseq(monkeypatch):
    """Register FairseqLikeConfig and Node under fairseq.testing so that torch.save pickles
    them by those names (the reader never imports anything)."""
    pkg, mod = types.ModuleType("fairseq"), types.ModuleType("fairseq.testing")
    for cls in (FairseqLikeConfig, Node):
        monkeypatch.setattr(cls, "__module__", "fairseq.testing")
        setattr(mod, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "fairseq", pkg)
    monkeypatch.setitem(sys.modules, "fairseq.testing", mod)


def test_allowlisted_classes_are_inert_records(tmp_path, torch, fake_fairseq):
    path = tmp_path / "c.pt"
    torch.save({"cfg": FairseqLikeConfig(), "w": torch.ones(2)}, path)
    got = torch_pickle.load(path)
    assert isinstance(got["cfg"], torch_pickle.Opaque) and got["cfg"].label_rate == 50
    assert not isinstance(got["cfg"], FairseqLikeConfig)
    np.testing.assert_array_equal(got["w"], np.ones(2, np.float32))


def test_cyclic_object_graphs(tmp_path, torch, fake_fairseq):
    root = Node(value=torch.ones(3))
    root.content["child"] = Node(parent=root, n=12, items=[root])
    path = tmp_path / "cyclic.pt"
    torch.save({"cfg": root}, path)
    got = torch_pickle.load(path)["cfg"]
    child = got.content["child"]
    assert child.parent is got and child.content["items"][0] is got and child.content["n"] == 12
    np.testing.assert_array_equal(got.content["value"], np.ones(3, np.float32))


@pytest.mark.parametrize("zipfmt", [True, False])
def test_other_classes_are_refused_by_name(tmp_path, torch, zipfmt):
    path = tmp_path / "n.pt"
    torch.save({"x": NotAllowed(), "w": torch.ones(2)}, path,
               _use_new_zipfile_serialization=zipfmt)
    with pytest.raises(torch_pickle.TorchFileError,
                       match=r"n\.pt: refuses to load global [\w.]*NotAllowed;"):
        torch_pickle.load(path)


def test_errors(tmp_path, torch):
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


FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
REAL_FILES = sorted(
    os.path.relpath(os.path.join(d, f), FIXTURES) for d, _, fs in os.walk(FIXTURES) for f in fs
    if f.endswith((".pt", ".pth")) or (f == "model" and d.endswith("vocoder")))


def test_fixture_list_is_complete():
    assert len(REAL_FILES) >= 11 and "content_encoder/contentvec_tiny.pt" in REAL_FILES


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_checkpoints_load_under_the_allowlist(name):
    """The committed reference-format checkpoints (G/D, diffusion, vocoder, HuBERT-Soft and a
    fairseq ContentVec with its omegaconf config) still load."""
    got = torch_pickle.load(os.path.join(FIXTURES, name))
    arrays = []

    def walk(x):
        if isinstance(x, np.ndarray):
            arrays.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
    walk(got)
    assert arrays and all(a.size for a in arrays)


@pytest.mark.parametrize("kind", malicious.PAYLOADS)
def test_payloads_work_against_plain_pickle(tmp_path, kind):
    """The control for the test below: each payload does run under an unrestricted unpickler."""
    assert malicious.run_unsafely(kind, tmp_path / "ran")


@pytest.mark.parametrize("layout", malicious.LAYOUTS)
@pytest.mark.parametrize("kind", malicious.PAYLOADS)
def test_malicious_pickles_are_refused_and_never_run(tmp_path, kind, layout):
    marker = tmp_path / "ran"
    path = malicious.write_malicious(tmp_path / "evil.pth", kind, layout, marker)
    with pytest.raises(torch_pickle.TorchFileError) as err:
        torch_pickle.load(path)
    target = kind.split("/")[0]
    if kind.endswith("BUILD") and layout not in ("zip", "legacy-main"):
        target = "argparse.Namespace"  # header pickles admit no global at all
    msg = str(err.value)
    assert msg.startswith(f"{path}: refuses to load global {target};"), msg
    assert "\n" not in msg
    assert not marker.exists()


def _loads(data: bytes):
    return torch_pickle.TorchUnpickler(__import__("io").BytesIO(data), lambda k, s: None, "x").load()


def test_records_stay_inert_under_build_and_reduce():
    u, g = malicious._u, malicious._g
    # Namespace gets __setstate__ = an allowlisted record class; the next BUILD calls that
    # class, which only stores its argument.
    data = (b"\x80\x02" + g("argparse", "Namespace") + b")RN}" + u("__setstate__")
            + g("fairseq.x", "Cfg") + b"s\x86b" + u("payload") + b"b.")
    ns = _loads(data)
    assert isinstance(ns, argparse.Namespace)
    # A record built by NEWOBJ + BUILD keeps the state as data, even a "__setstate__" key.
    data = (b"\x80\x02" + g("omegaconf.nodes", "AnyNode") + b")\x81}" + u("__setstate__")
            + u("x") + b"sb" + u("second") + b"b.")
    rec = _loads(data)
    assert isinstance(rec, torch_pickle.Opaque) and rec.state == "second"
    # Calling a record instance (REDUCE on it) is not possible.
    data = (b"\x80\x02" + g("omegaconf.nodes", "AnyNode") + b")R(" + u("x") + b"tR.")
    with pytest.raises(TypeError):
        _loads(data)


@pytest.mark.parametrize("data, needle", [
    (b"\x80\x02" + malicious._g("_operator", "getitem") + b"(" + malicious._g("builtins", "dict")
     + malicious._u("k") + b"tR.", "typing annotations only"),
    (b"\x80\x02" + malicious._g("_codecs", "encode") + b"(" + malicious._u("x")
     + malicious._u("rot13") + b"tR.", "latin-1"),
    (b"\x80\x02" + malicious._g("builtins", "bytearray") + b"(\x8a\x05\x00\x00\x00\x00\x01tR.",
     "integer size"),
    (b"\x80\x02" + malicious._g("numpy.core.multiarray", "_reconstruct") + b"("
     + malicious._g("collections", "OrderedDict") + b"K\x00\x85C\x01btR.", "numpy.ndarray only"),
    (b"\x80\x02" + malicious._g("copy_reg", "_reconstructor") + b".", "copyreg._reconstructor"),
    (b"\x80\x02" + malicious._g("__builtin__", "apply") + b".", "builtins.apply"),
])
def test_allowlisted_callables_take_data_only(tmp_path, data, needle):
    with pytest.raises(torch_pickle.TorchFileError, match=needle):
        _loads(data)
    path = malicious.write_legacy(tmp_path / "odd.pth", main=data)  # named in the message
    with pytest.raises(torch_pickle.TorchFileError, match=f"^{re.escape(path)}: .*{needle}"):
        torch_pickle.load(path)


def test_python2_names_map_to_builtins():
    g = malicious._g
    data = (b"\x80\x02(" + g("__builtin__", "unicode") + g("__builtin__", "long")
            + g("__builtin__", "set") + g("__builtin__", "Ellipsis") + b"t.")
    assert _loads(data) == (str, int, set, Ellipsis)


@pytest.mark.parametrize("case, needle", [
    ("empty", "is empty"), ("random", "not a PyTorch checkpoint"),
    ("truncated-zip", "truncated or corrupt zip"), ("truncated-legacy", "truncated")])
def test_broken_files_give_one_sentence(tmp_path, case, needle):
    good = malicious.write_zip(tmp_path / "good.pth", malicious.checkpoint_pickle(None))
    assert torch_pickle.load(good)["model"]["emb_g.weight"].tolist() == [1, 2, 3, 4]
    path = malicious.write_broken(tmp_path / "bad.pth", case, good)
    with pytest.raises(torch_pickle.TorchFileError, match=needle) as err:
        torch_pickle.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(torch_pickle.TorchFileError, match="is a directory"):
        torch_pickle.load(tmp_path)


def test_legacy_checkpoint_reads_without_torch(tmp_path):
    path = malicious.write_legacy(tmp_path / "l.pth")
    assert torch_pickle.load(path)["model"]["emb_g.weight"].tolist() == [1, 2, 3, 4]
