"""FCPE (svcjax.models.fcpe) against So-VITS-SVC's FCPE and torchfcpe's CFNaiveMelPE.

Fixtures: tests/fixtures/make_fcpe.py. ``fcpe_sovits.pt`` is the reference's network (reduced
widths, calibrated random weights) saved in the real ``pretrain/fcpe.pt`` format, with the
reference's outputs in ``fcpe_sovits.npz``; ``fcpe_torchfcpe.npz`` holds torchfcpe's own f0
on the test voices, compared here with svcjax running the weights inside the installed wheel.

Tolerances (float32 at "highest" matmul precision, conftest): the salience is a sigmoid in
[0, 1] after about a dozen layers whose float32 rounding (~1e-7 relative per op, amplified by
the log-mel's dynamic range and the normalisations) stays well below 1e-4, so 1e-4 absolute
bounds it; f0 is compared on frames whose argmax and threshold decisions are determined at
that precision (top-two gap and distance to the threshold > 1e-4), where the 9-bin weighted
mean moves by far less than 1 cent. The mel front-end is compared on its own (float32 FFT
rounding is relative to a frame's energy), the network on the reference's own mel, then the
whole path with the salience bound the mel's rounding leaves (1e-3).
"""

import importlib.util
import os

import jax
import numpy as np
import pytest

from svcjax.audio import f0 as F
from svcjax.models import fcpe

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SOVITS_PT = os.path.join(FIX, "fcpe", "fcpe_sovits.pt")
REF = np.load(os.path.join(FIX, "fcpe", "fcpe_sovits.npz"))
CLIPS = ("slt", "kal", "rms", "short")
SAL_TOL = 1e-4
E2E_TOL = 1e-3


def _cents(a, b):
    return 1200 * np.abs(np.log2(np.asarray(a, np.float64) / np.asarray(b, np.float64)))


def _decided(sal, threshold, tol):
    """Frames whose argmax and voicing are fixed at salience tolerance ``tol``."""
    top = np.sort(sal, axis=-1)
    return ((top[:, -1] - top[:, -2]) > tol) & (np.abs(top[:, -1] - threshold) > tol)


@pytest.fixture(scope="module")
def sovits():
    runner = F.fcpe_runner(SOVITS_PT)  # the runner extract_f0 uses (compiled once)
    return runner.conf, runner


def test_sovits_checkpoint_is_read_with_its_config(sovits):
    conf, _ = sovits
    assert conf.kind == "pcmer" and conf.hidden == 32 and conf.n_layers == 2
    assert conf.n_mels == 128 and conf.out_dims == 360 and conf.n_heads == 8
    assert conf.nb_features == 266 and not conf.conv_only and conf.threshold == 0.05


def test_sovits_mel_front_end_matches_reference():
    """The log-mel of each clip (the 400-sample one zero-padded as the reference pads it),
    compared in power-free magnitude units relative to the frame's largest mel bin: float32
    FFT rounding is relative to the frame's energy (~1e-7 x sqrt(n_fft) x max), so a tiny bin
    can differ by a visible amount in the log while its magnitude agrees to ~1e-6."""
    conf = fcpe.load_fcpe(SOVITS_PT)[0]
    audio = [REF[f"{c}_audio"] for c in CLIPS]
    mel, frames = fcpe.log_mel(audio, [len(a) for a in audio], conf)
    for i, c in enumerate(CLIPS):
        ref = REF[f"{c}_mel"]
        assert frames[i] == ref.shape[0]
        got = np.exp(mel[i, :frames[i]].astype(np.float64))
        want = np.exp(ref.astype(np.float64))
        err = np.abs(got - want) / want.max(axis=1, keepdims=True)
        assert err.max() < 1e-5, (c, err.max())


def test_sovits_network_matches_reference_batched(sovits):
    """The network on the reference's own mel, all clips in one padded batch (masks): salience
    within 1e-4 and the decoded f0 within 1 cent."""
    conf, _ = sovits
    _, params, table = fcpe.load_fcpe(SOVITS_PT)
    mels = [REF[f"{c}_mel"] for c in CLIPS]
    n = max(m.shape[0] for m in mels) + 5
    x = np.zeros((len(mels), n, conf.n_mels), np.float32)
    mask = np.zeros((len(mels), n), np.float32)
    for i, m in enumerate(mels):
        x[i, :m.shape[0]], mask[i, :m.shape[0]] = m, 1.0
    sal = np.asarray(jax.jit(fcpe.FCPENet(conf).apply)({"params": params}, x, mask))
    f0 = np.asarray(fcpe.decode_local_argmax(sal, table, 0.05))
    decided = []
    for i, c in enumerate(CLIPS):
        k = mels[i].shape[0]
        np.testing.assert_allclose(sal[i, :k], REF[f"{c}_sal"], atol=SAL_TOL, err_msg=c)
        ok = _decided(REF[f"{c}_sal"], 0.05, SAL_TOL)
        decided.append(ok)
        ref_f0 = REF[f"{c}_f0"]
        np.testing.assert_array_equal(f0[i, :k][ok] > 0, ref_f0[ok] > 0, err_msg=c)
        v = ok & (ref_f0 > 0)
        assert _cents(f0[i, :k][v], ref_f0[v]).max() < 1.0, c
    assert np.concatenate(decided).mean() > 0.95
    assert (REF["slt_f0"] == 0).mean() > 0.1  # the fixture has unvoiced frames to interpolate


def test_sovits_fcpe_end_to_end_matches_reference(sovits):
    """Audio to So-VITS's post-processed (f0, uv), all clips in one padded batch. The mel's
    float32 rounding (above) reaches the salience as up to ~2e-4, so decisions are compared
    where the reference's margins exceed 1e-3."""
    _, runner = sovits
    audio = [REF[f"{c}_audio"] for c in CLIPS]
    _, frames, sal = runner(audio, [len(a) for a in audio], 0.05, raw=True)
    n_out = [REF[f"{c}_pf0"].shape[0] for c in CLIPS]
    pf0, puv = F.fcpe_f0_16k(audio, [len(a) for a in audio], n_out, weights=SOVITS_PT)
    decided = []
    for i, c in enumerate(CLIPS):
        k, t = frames[i], n_out[i]
        np.testing.assert_allclose(sal[i, :k], REF[f"{c}_sal"], atol=E2E_TOL, err_msg=c)
        ok = _decided(REF[f"{c}_sal"], 0.05, E2E_TOL)[F.nearest_index(int(k), t)]
        decided.append(ok)
        np.testing.assert_array_equal(puv[i, :t][ok], REF[f"{c}_puv"][ok], err_msg=c)
        # interpolated values depend on neighbouring decided frames: all frames compared
        # when every frame is decided, else the decided voiced ones
        v = ok & (REF[f"{c}_puv"] > 0) if not ok.all() else np.ones(t, bool)
        if v.any():
            assert _cents(pf0[i, :t][v], REF[f"{c}_pf0"][v]).max() < 1.0, c
        assert not pf0[i, t:].any() and not puv[i, t:].any()
    assert np.concatenate(decided).mean() > 0.9


def test_runner_splits_batches_over_devices(sovits):
    conf, single = sovits
    _, params, table = fcpe.load_fcpe(SOVITS_PT)
    from svcjax.runtime import sharding as shd

    multi = fcpe.FCPERunner(conf, params, table, mesh=shd.make_mesh(devices=jax.devices()[:2]))
    audio = [REF["kal_audio"], REF["rms_audio"], REF["slt_audio"][:5000]]
    a, fa = single(audio, [len(x) for x in audio], 0.05)
    b, fb = multi(audio, [len(x) for x in audio], 0.05)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_extract_f0_fcpe_44k_batch_equals_single_clips(monkeypatch):
    monkeypatch.setenv("SVCJAX_FCPE", SOVITS_PT)
    import librosa

    a = librosa.resample(REF["kal_audio"], orig_sr=16000, target_sr=44100)
    b = a[:-2500]  # padding a 57 ms shorter clip; same compiled shapes as the full one
    batch = np.zeros((2, a.shape[0]), np.float32)
    batch[0], batch[1, :b.shape[0]] = a, b
    f0, uv = F.extract_f0(batch, 44100, "fcpe", lengths=[a.shape[0], b.shape[0]])
    fa, ua = F.extract_f0(a, 44100, "fcpe")
    fb, ub = F.extract_f0(b, 44100, "fcpe")
    ta, tb = F.num_frames(a.shape[0], 44100), F.num_frames(b.shape[0], 44100)
    assert f0.shape == (2, ta) and fa.shape == (ta,) and fb.shape == (tb,)
    np.testing.assert_allclose(f0[0], fa, rtol=1e-5)
    np.testing.assert_allclose(f0[1, :tb], fb, rtol=1e-5)
    np.testing.assert_array_equal(uv[1, :tb], ub)
    assert not f0[1, tb:].any() and ua.mean() > 0.5


def test_loader_refuses_other_files(tmp_path):
    from svcjax.interop import torch_save

    other = tmp_path / "other.pt"
    torch_save.save({"model": {"conv1.weight": np.zeros((4, 1, 3), np.float32)}}, str(other))
    with pytest.raises(fcpe.FCPEWeightsError, match="matches neither"):
        fcpe.load_fcpe(other)
    flat = tmp_path / "flat.pt"
    torch_save.save({"conv1.weight": np.zeros((4, 1, 3), np.float32)}, str(flat))
    with pytest.raises(fcpe.FCPEWeightsError, match="is not an FCPE checkpoint"):
        fcpe.load_fcpe(flat)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(fcpe.FCPEWeightsError, match="cannot read FCPE weights"):
        fcpe.load_fcpe(junk)
    with pytest.raises(fcpe.FCPEWeightsError, match="not found"):
        F.extract_f0(np.zeros(4096), 44100, "fcpe", weights=str(tmp_path / "none.pt"))


def test_default_weights_need_env_or_torchfcpe(monkeypatch):
    monkeypatch.delenv("SVCJAX_FCPE", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(fcpe.FCPEWeightsError, match="SVCJAX_FCPE is not set and torchfcpe"):
        F.extract_f0(np.zeros(4096), 44100, "fcpe")
    monkeypatch.setenv("SVCJAX_FCPE", "gone/fcpe.pt")
    with pytest.raises(fcpe.FCPEWeightsError, match="SVCJAX_FCPE names FCPE weights 'gone"):
        F.extract_f0(np.zeros(4096), 44100, "fcpe")


def _torchfcpe_weights():
    try:
        return fcpe.find_torchfcpe_weights()
    except fcpe.FCPEWeightsError as e:
        pytest.skip(f"torchfcpe's bundled weights are unavailable ({e})")


def test_torchfcpe_real_weights_match_torchfcpe_on_real_voices():
    """svcjax with the weights inside torchfcpe's wheel vs torchfcpe's own f0 (fixture):
    within 1 cent on every frame both call voiced, the same voicing where it is decided."""
    import soundfile as sf

    path = _torchfcpe_weights()
    conf, params, table = fcpe.load_fcpe(path)
    assert conf.kind == "cfnaive" and conf.conv_only and conf.threshold == 0.006
    ref = np.load(os.path.join(FIX, "fcpe", "fcpe_torchfcpe.npz"))
    runner = F.fcpe_runner(path)
    audio = []
    for name in ("slt", "kal", "rms"):
        x, sr = sf.read(os.path.join(FIX, "voices", f"{name}_16k.wav"), dtype="float32")
        assert sr == 16000
        audio.append(x)
    f0, frames = runner(audio, [len(x) for x in audio], 0.006)
    for i, name in enumerate(("slt", "kal", "rms")):
        rf0, peak = ref[f"{name}_f0"], ref[f"{name}_peak"]
        assert frames[i] == rf0.shape[0]
        got = f0[i, :frames[i]]
        decided = np.abs(peak - 0.006) > SAL_TOL
        np.testing.assert_array_equal(got[decided] > 0, rf0[decided] > 0, err_msg=name)
        both = (got > 0) & (rf0 > 0)
        assert both.mean() > 0.6
        assert _cents(got[both], rf0[both]).max() < 1.0, name
