"""merge-models and compress against the reference's own outputs (tests/fixtures/make_timbre.py:
utils.mix_model; tests/fixtures/make_sovits.py: compress_model.py's fp16 release copy)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from svcjax import cli
from svcjax.interop import torch_pickle

M = os.path.join(os.path.dirname(__file__), "fixtures", "timbre", "merge")
TINY = os.path.join(os.path.dirname(__file__), "fixtures", "sovits", "tiny")


@pytest.mark.parametrize("mode", ["convex", "linear"])
def test_merge_matches_reference_mix_model(mode, tmp_path):
    out = str(tmp_path / "merged.pth")
    assert cli.main(["merge-models", f"{M}/G_0.pth", f"{M}/G_1.pth", "--rates", "30,70",
                     "--mode", mode, out]) == 0
    ours, ref = torch_pickle.load(out), torch_pickle.load(f"{M}/{mode}_30_70.pth")
    assert ours["iteration"] == ref["iteration"] and list(ours["model"]) == list(ref["model"])
    for k, v in ref["model"].items():
        # two float32 products summed; the softmax may differ by an ulp of its inputs
        np.testing.assert_allclose(ours["model"][k], v, rtol=0,
                                   atol=4 * np.finfo(np.float32).eps * np.abs(v).max())


def test_merge_refuses_different_shapes_listing_keys(tmp_path, capsys):
    from svcjax.interop import torch_save
    sd = torch_pickle.load(f"{M}/G_0.pth")
    sd["model"]["emb_g.weight"] = np.zeros((5, 8), np.float32)
    del sd["model"]["dec.conv_pre.bias"]
    other = torch_save.save(sd, str(tmp_path / "other.pth"))
    out = tmp_path / "m.pth"
    assert cli.main(["merge-models", f"{M}/G_0.pth", other, "--rates", "50,50", str(out)]) == 1
    err = capsys.readouterr().err
    assert "emb_g.weight" in err and "dec.conv_pre.bias" in err and not out.exists()
    assert cli.main(["merge-models", f"{M}/G_0.pth", f"{M}/G_1.pth", "--rates", "50",
                     str(out)]) == 1
    assert "one rate per model" in capsys.readouterr().err


def test_merge_model_dirs(tmp_path):
    from svcjax.train import checkpoint
    from svcjax.interop import merge
    p0 = {"a": {"w": np.ones((2, 3), np.float32)}, "b": np.full((4,), 2.0, np.float32)}
    p1 = {"a": {"w": np.full((2, 3), 3.0, np.float32)}, "b": np.zeros((4,), np.float32)}
    cfg = {"model": {"x": 1}}
    d0 = checkpoint.save_model_dir(tmp_path / "m0", p0, cfg)
    d1 = checkpoint.save_model_dir(tmp_path / "m1", p1, cfg)
    out = merge.merge_models([d0, d1], [25, 75], str(tmp_path / "m"), mode="linear")
    params, config = checkpoint.load_model_dir(out)
    np.testing.assert_allclose(params["a"]["w"], 0.25 + 0.75 * 3.0, rtol=1e-6)
    np.testing.assert_allclose(params["b"], 0.5, rtol=1e-6)
    assert config.model.x == 1


@pytest.mark.parametrize("half", [True, False])
def test_compress_writes_what_compress_model_writes(half, tmp_path):
    out = str(tmp_path / "G_1_release.pth")
    args = ["compress", f"{TINY}/G_1.pth", out, "--config", f"{TINY}/config.json"]
    assert cli.main(args + (["--half"] if half else [])) == 0
    ours, full = torch_pickle.load(out), torch_pickle.load(f"{TINY}/G_1.pth")
    ref = torch_pickle.load(f"{TINY}/G_1_release_half.pth")
    assert list(ours["model"]) == list(ref["model"])  # enc_q gone, order kept
    for k, v in ours["model"].items():
        np.testing.assert_array_equal(v, ref["model"][k] if half else full["model"][k])
        assert v.dtype == (np.float16 if half else full["model"][k].dtype)
    assert ours["iteration"] == 0 and ours["learning_rate"] == ref["learning_rate"]
    og, rg = ours["optimizer"]["param_groups"][0], ref["optimizer"]["param_groups"][0]
    assert ours["optimizer"]["state"] == {} and og["params"] == rg["params"]
    assert {k: og[k] for k in ("lr", "betas", "eps", "weight_decay")} == \
        {k: rg[k] for k in ("lr", "betas", "eps", "weight_decay")}
    # loads in svcjax ...
    from svcjax.interop import sovits
    sd = sovits.read_state_dict(out)
    assert "emb_g.weight" in sd and not any("enc_q" in k for k in sd)
    # ... and in the reference's torch (the strict loader too)
    torch = pytest.importorskip("torch")
    t = torch.load(out, weights_only=True)
    assert len(t["optimizer"]["param_groups"][0]["params"]) == len(rg["params"])


def test_compress_bad_input(tmp_path, capsys):
    bad = tmp_path / "G_1.pth"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "o.pth"
    assert cli.main(["compress", str(bad), str(out)]) == 1
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err and not out.exists()
    assert cli.main(["compress", f"{TINY}/G_1.pth", f"{TINY}/G_1.pth"]) == 1
