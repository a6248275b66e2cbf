"""svcjax.load_sovits / SovitsModel.infer: buckets, masks, sharding, trace counts, errors."""

import json
import os

import jax
import numpy as np
import pytest

import svcjax
from svcjax.runtime import buckets
from svcjax.runtime.sovits import SovitsModel

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "sovits")
TINY = os.path.join(FIX, "tiny")  # vol embedding, automatic F0, depthwise WN, shared flow


def _inputs(b, t, seed=0):
    rs = np.random.RandomState(seed)
    f0 = rs.uniform(150, 400, (b, t)).astype(np.float32)
    uv = (rs.rand(b, t) > 0.2).astype(np.float32)
    return dict(units=rs.randn(b, t, 20).astype(np.float32), f0=f0 * uv, uv=uv,
                vol=rs.uniform(0, 0.3, (b, t)).astype(np.float32))


@pytest.fixture(scope="module")
def sharded():
    return svcjax.load_sovits(os.path.join(TINY, "G_1.pth"), os.path.join(TINY, "config.json"))


def test_sharded_equals_single_device_and_padded_equals_alone(sharded):
    assert sharded.n_devices == jax.device_count() == 8
    single = SovitsModel(sharded.params, sharded.config, devices=[jax.devices()[0]])
    x = _inputs(3, 50)
    lengths = [50, 37, 21]
    key = jax.random.PRNGKey(7)
    kw = dict(speaker=["alto", "bass", 1], vol=x["vol"], noise_scale=0.5, rng=key,
              lengths=lengths)
    wav_m, f0_m = sharded.infer(x["units"], x["f0"], x["uv"], **kw)
    wav_s, f0_s = single.infer(x["units"], x["f0"], x["uv"], **kw)
    assert wav_m.shape == (3, 50 * 512)
    np.testing.assert_allclose(wav_m, wav_s, atol=1e-5, rtol=0)
    for i, n in enumerate(lengths):
        assert not wav_m[i, n * 512:].any() and not f0_m[i, n:].any()
    assert np.abs(wav_m[1, :37 * 512]).max() > 0.05

    # The first clip alone, unpadded (50 frames, no bucket), same key: the same samples,
    # random draws included (they are keyed per example and frame).
    mod = sharded.module
    alone, _ = jax.jit(lambda p: mod.apply(
        {"params": p}, x["units"][:1], x["f0"][:1], x["uv"][:1], np.zeros(1, np.int32),
        np.ones((1, 50), np.float32), x["vol"][:1], noise_scale=0.5, method="infer",
        rngs={"noise": key}))(single.params)
    assert buckets.bucket_length(50) == 64  # the API padded it
    np.testing.assert_allclose(wav_m[0], np.asarray(alone)[0], atol=1e-5, rtol=0)
    # The key matters (the comparison above can fail).
    other, _ = single.infer(x["units"], x["f0"], x["uv"], **dict(kw, rng=jax.random.PRNGKey(8)))
    assert np.abs(other - wav_s).max() > 1e-3

    # Another length in the same bucket, another noise scale and key: no new trace.
    traces = sharded.trace_count
    y = _inputs(3, 60, seed=1)
    sharded.infer(y["units"], y["f0"], y["uv"], speaker=0, vol=y["vol"], noise_scale=0.3,
                  rng=jax.random.PRNGKey(9))
    assert sharded.trace_count == traces


def test_clear_errors(sharded):
    x = _inputs(1, 10)
    traces = sharded.trace_count
    with pytest.raises(ValueError, match=r"speaker 'bob' not in model; known: alto, tenor, bass"):
        sharded.infer(x["units"], x["f0"], x["uv"], speaker="bob")
    with pytest.raises(ValueError, match=r"speaker id 3 out of range.*3 speaker"):
        sharded.infer(x["units"], x["f0"], x["uv"], speaker=3)
    with pytest.raises(ValueError, match=r"units have 7 channels, the model expects 20"):
        sharded.infer(np.zeros((1, 10, 7)), x["f0"], x["uv"])
    with pytest.raises(ValueError, match=r"f0 must be \(B, T\) = \(1, 10\)"):
        sharded.infer(x["units"], x["f0"][:, :5], x["uv"])
    with pytest.raises(ValueError, match=r"mixing weights must be \(B, T, n_speakers\)"):
        sharded.infer(x["units"], x["f0"], x["uv"], speaker=np.ones((1, 10, 2)))
    with pytest.raises(ValueError, match=r"lengths must be 1 values"):
        sharded.infer(x["units"], x["f0"], x["uv"], lengths=[11])
    tflow = svcjax.load_sovits(os.path.join(FIX, "tflow", "G_1.pth"))
    with pytest.raises(ValueError, match="predict_f0=True needs a model trained with"):
        tflow.infer(x["units"], x["f0"], x["uv"], predict_f0=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        svcjax.load_sovits(os.path.join(FIX, "nope.pth"))
    assert sharded.trace_count == traces  # every error is raised before anything is traced


def test_import_cli_and_model_dir(tmp_path, capsys):
    from svcjax import cli
    from svcjax.train import checkpoint

    out = tmp_path / "tiny"
    rc = cli.main(["import-sovits", os.path.join(TINY, "G_1.pth"),
                   os.path.join(TINY, "config.json"), str(out)])
    assert rc == 0 and "3 speaker(s) [alto, tenor, bass]" in capsys.readouterr().out
    params, cfg = checkpoint.load_model_dir(out)
    assert cfg.kind == "sovits" and cfg.has_enc_q and "enc_q" in params
    assert cfg.model.vol_embedding and cfg.spk.to_dict() == {"alto": 0, "tenor": 1, "bass": 2}
    direct = svcjax.load_sovits(os.path.join(TINY, "G_1.pth"))
    loaded = svcjax.load_sovits(out)
    assert loaded.module == direct.module and loaded.speakers == direct.speakers
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(direct.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # An existing directory is not overwritten without --overwrite; one clear line.
    rc = cli.main(["import-sovits", os.path.join(TINY, "G_1.pth"),
                   os.path.join(TINY, "config.json"), str(out)])
    assert rc == 1 and "exists; pass --overwrite" in capsys.readouterr().err
    rc = cli.main(["import-sovits", os.path.join(TINY, "G_1_release_half.pth"),
                   os.path.join(TINY, "config.json"), str(out), "--overwrite"])
    assert rc == 0 and "absent (inference only)" in capsys.readouterr().out
    _, cfg = checkpoint.load_model_dir(out)
    assert not cfg.has_enc_q
    assert sorted(os.listdir(tmp_path)) == ["tiny"]
    # Speaker names are folder names; dots and non-ASCII survive the model directory.
    with open(os.path.join(TINY, "config.json")) as f:
        cj = json.load(f)
    cj["spk"] = {"alto.v2": 0, "初音": 1, "bass": 2}
    (tmp_path / "config.json").write_text(json.dumps(cj))
    out2 = tmp_path / "dotted"
    svcjax_import = ["import-sovits", os.path.join(TINY, "G_1.pth"), str(tmp_path / "config.json"),
                     str(out2)]
    assert cli.main(svcjax_import) == 0
    m = svcjax.load_sovits(out2)
    assert m.speakers == {"alto.v2": 0, "初音": 1, "bass": 2}
    assert m.speaker_index("alto.v2") == 0
