"""svcjax.eval.metrics: metrics on synthetic signals with known answers."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from svcjax.eval import metrics as evaluate

SR = 44100
VOICES = Path(__file__).parent / "fixtures" / "voices"


def _noise(n, seed=0, amp=0.3):
    rng = np.random.default_rng(seed)
    # band-coloured noise with a slowly changing spectrum, so frames differ from each other
    x = rng.standard_normal(n)
    env = 1.0 + 0.5 * np.sin(np.arange(n) / 3000.0)
    return (amp * x * env / 2).astype(np.float32)


def _tone(n, f0=220.0, harmonics=6):
    t = np.arange(n) / SR
    return sum(0.1 / h * np.sin(2 * np.pi * h * f0 * t) for h in range(1, harmonics + 1)
               ).astype(np.float32)


def test_gain_shifts_log_mel_by_its_log_and_leaves_cepstra():
    x = _noise(SR // 2)
    g = 0.5
    for n_mels in (128, 80):
        d = evaluate.mel_distance(x, g * x, n_mels=n_mels)
        assert d["mel_l1"] == pytest.approx(math.log(2.0), abs=2e-4)
        assert d["mel_l2"] == pytest.approx(math.log(2.0), abs=2e-4)
    # a gain changes c_0 only, which MCD leaves out
    assert evaluate.mcd(x, g * x) < 0.02
    assert evaluate.mcd(x, x) == pytest.approx(0.0, abs=1e-6)


def test_cepstra_are_the_orthonormal_dct_without_c0():
    m = np.random.default_rng(1).standard_normal((7, 80)).astype(np.float32)
    want = scipy.fft.dct(m.astype(np.float64), type=2, norm="ortho", axis=-1)[:, 1:25]
    np.testing.assert_allclose(np.asarray(evaluate.mel_cepstra(m)), want, atol=2e-5)


def test_mcd_constant_and_known_distance():
    c = np.zeros((5, 24))
    d = c.copy()
    d[:, 0], d[:, 3] = 3.0, 4.0   # |delta c| = 5 on every frame
    assert evaluate.mcd_from_cepstra(c, d) == pytest.approx(10 / math.log(10) * math.sqrt(2) * 5)
    mask = np.array([1, 0, 0, 0, 0], bool)
    d[1:] = 100.0
    assert evaluate.mcd_from_cepstra(c, d, mask) == pytest.approx(evaluate.MCD_CONSTANT * 5)


def test_dtw_path_and_dtw_alignment_of_a_shifted_clip():
    cost = np.ones((4, 6))
    path = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (3, 5)]
    for i, j in path:
        cost[i, j] = 0.0
    i, j = evaluate.dtw_path(cost)
    assert list(zip(i.tolist(), j.tolist())) == path

    z = _noise(SR + 8 * 512, seed=3) + _tone(SR + 8 * 512)
    ref, est = z[:SR], z[8 * 512:8 * 512 + SR]   # est frame t == ref frame t + 8
    framewise = evaluate.mcd(ref, est, align="frames")
    warped = evaluate.mcd(ref, est, align="dtw")
    assert warped < 0.25 * framewise
    assert evaluate.mel_distance(ref, est, align="dtw")["mel_l1"] < \
        0.25 * evaluate.mel_distance(ref, est)["mel_l1"]


def test_spectral_metrics_of_a_padded_batch_equal_per_clip_values():
    a1, a2 = _noise(20000, 4), _noise(33000, 5)
    b1, b2 = 0.7 * a1 + 0.05 * _tone(20000), _noise(33000, 6)
    L = 40960
    ref = np.stack([np.pad(a1, (0, L - 20000)), np.pad(a2, (0, L - 33000))])
    est = np.stack([np.pad(b1, (0, L - 20000)), np.pad(b2, (0, L - 33000))])
    out = evaluate.spectral_metrics(ref, est, [20000, 33000])
    for k, (r, e) in enumerate([(a1, b1), (a2, b2)]):
        d = evaluate.mel_distance(r, e)
        assert float(out["mel_l1"][k]) == pytest.approx(d["mel_l1"], rel=1e-4)
        assert float(out["mel_l2"][k]) == pytest.approx(d["mel_l2"], rel=1e-4)
        assert float(out["mcd"][k]) == pytest.approx(evaluate.mcd(r, e), rel=1e-4)
    with pytest.raises(ValueError, match="lengths"):
        evaluate.spectral_metrics(ref, est, [20000, 50000])


def test_f0_metrics_known_answers():
    t = 100
    ref = np.full(t, 220.0)
    ref[:10] = 0.0                                    # 10 unvoiced frames
    est = ref * 2 ** (30 / 1200)                      # 30 cents sharp everywhere
    m = evaluate.f0_metrics(ref, est)
    assert m["f0_rmse_cents"] == pytest.approx(30.0)
    assert m["gpe"] == 0.0 and m["vuv_error"] == 0.0 and m["voiced_frames"] == 90

    est = ref.copy()
    est[10:19] *= 2 ** (100 / 1200)                   # 9 of 90 voiced frames a semitone off
    est[95:] = 0.0                                    # 5 voiced frames heard as unvoiced
    m = evaluate.f0_metrics(ref, est)
    assert m["voiced_frames"] == 85
    assert m["gpe"] == pytest.approx(9 / 85)
    assert m["f0_rmse_cents"] == pytest.approx(math.sqrt(9 * 100 ** 2 / 85))
    assert m["vuv_error"] == pytest.approx(5 / 100)

    # explicit voicing (interpolated F0 through unvoiced frames) and a mask
    uv = ref > 0
    filled = np.where(uv, ref, 220.0)
    m = evaluate.f0_metrics(filled, filled, uv, np.ones(t, bool), mask=np.arange(t) < 50)
    assert m["vuv_error"] == pytest.approx(10 / 50) and m["f0_rmse_cents"] == 0.0
    none = evaluate.f0_metrics(np.zeros(5), np.zeros(5))
    assert math.isnan(none["f0_rmse_cents"]) and none["vuv_error"] == 0.0
    with pytest.raises(ValueError, match="same frames"):
        evaluate.f0_metrics(ref, est[:50])


def test_cents_and_rtf_and_summary():
    assert evaluate.cents(440.0, 220.0) == pytest.approx(1200.0)
    assert np.isnan(evaluate.cents(0.0, 220.0))
    assert evaluate.real_time_factor(2.0, 10.0) == 0.2
    with pytest.raises(ValueError):
        evaluate.real_time_factor(1.0, 0.0)
    s = evaluate.summarize([{"a": 1.0, "b": float("nan")}, {"a": 3.0, "b": 2.0, "name": "x"}])
    assert s == {"a": 2.0, "b": 2.0, "b_missing": 1.0}


def test_summary_reports_missing_f0_metrics_as_a_count_not_nan():
    voiced = evaluate.f0_metrics(np.full(20, 220.0), np.full(20, 221.0))
    none = evaluate.f0_metrics(np.full(20, 220.0), np.zeros(20))    # nothing voiced in both
    s = evaluate.summarize([voiced, none, none])
    assert s["f0_rmse_cents"] == pytest.approx(voiced["f0_rmse_cents"])
    assert s["f0_rmse_cents_missing"] == 2.0 and s["gpe_missing"] == 2.0
    assert all(np.isfinite(v) for v in s.values())
    only_none = evaluate.summarize([none, none])
    assert "f0_rmse_cents" not in only_none and "gpe" not in only_none
    assert only_none["f0_rmse_cents_missing"] == 2.0 and np.isfinite(only_none["vuv_error"])
    # the settings summary over speakers sums the counts
    per_speaker = [dict(s), dict(only_none)]
    total = evaluate.summarize(per_speaker)
    assert total["f0_rmse_cents_missing"] == 4.0
    assert total["f0_rmse_cents"] == pytest.approx(voiced["f0_rmse_cents"])


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(ValueError, match="n_mels"):
        evaluate.mel_distance(_noise(4096), _noise(4096), n_mels=64)
    with pytest.raises(ValueError, match="align"):
        evaluate.mcd(_noise(4096), _noise(4096), align="warp")
    with pytest.raises(ValueError, match="at least"):
        evaluate.mcd(_noise(100), _noise(4096))


def test_missing_extras_raise_a_named_error(monkeypatch):
    evaluate._voice_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    monkeypatch.setitem(sys.modules, "speechmos", None)
    with pytest.raises(evaluate.MissingExtraError, match=r"svcjax\[eval\]"):
        evaluate.speaker_similarity(_noise(SR), SR, np.ones(256))
    with pytest.raises(evaluate.MissingExtraError, match="speechmos"):
        evaluate.dnsmos(_noise(SR), SR)
    evaluate._voice_encoder.cache_clear()


def test_speaker_similarity_and_dnsmos_when_installed():
    pytest.importorskip("resemblyzer", reason="speaker similarity needs svcjax[eval]")
    pytest.importorskip("speechmos", reason="DNSMOS needs svcjax[eval]")
    from svcjax.audio import io

    a, sr = io.load_audio(VOICES / "slt_16k.wav")
    b, _ = io.load_audio(VOICES / "rms_16k.wav")
    assert evaluate.speaker_similarity(a, sr, (a, sr)) == pytest.approx(1.0, abs=1e-5)
    assert evaluate.speaker_similarity(a, sr, (b, sr)) < 0.95
    m = evaluate.dnsmos(a, sr)
    assert set(m) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
    assert all(1.0 <= v <= 5.0 for v in m.values())
