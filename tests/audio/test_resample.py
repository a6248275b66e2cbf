"""The polyphase resampler against scipy.signal.resample_poly with the identical filter.

Tolerance: ``rtol=1e-5`` with an absolute floor of ``2e-6 x`` the signal's peak for samples
near zero (float32 here, float64 in SciPy; observed <= 7e-7 of the peak).
"""

import jax
import librosa
import numpy as np
import pytest
from scipy.signal import firwin, resample_poly

from svcjax.audio import resample as R
from tests.audio import cases

jax.config.update("jax_default_matmul_precision", "highest")


def close(actual, expected, floor=2e-6):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=floor * np.abs(expected).max())


def scipy_same_filter(x, orig, target, quality):
    up, down = R.rate_ratio(orig, target)
    h = R.design_filter(up, down, R.PRESETS[quality])
    return resample_poly(np.asarray(x, np.float64), up, down, axis=-1, window=h / up)


def snr_db(x, ref):
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((x - ref) ** 2))


def test_scipy_preset_is_scipys_own_filter():
    for up, down in [(441, 160), (160, 441), (2, 1), (147, 160)]:
        m = max(up, down)
        np.testing.assert_array_equal(R.design_filter(up, down, R.PRESETS["scipy"]),
                                      firwin(20 * m + 1, 1.0 / m, window=("kaiser", 5.0)) * up)
    y, sr = cases.voice("kal_16k.wav")
    close(R.resample(y, sr, 44100, quality="scipy"), resample_poly(y.astype(np.float64), 441, 160))


@pytest.mark.parametrize("name,target", [("kal_16k.wav", 44100), ("hts_32k.wav", 44100),
                                         ("rms_22k_stereo.wav", 44100),
                                         ("slt_up5_44k.wav", 16000),
                                         ("slt_up5_44k.wav", 48000)])
def test_matches_scipy_with_identical_filter(name, target):
    y, sr = cases.voice(name)
    got = R.resample(y, sr, target)
    assert got.shape == (R.resampled_length(len(y), sr, target),)
    expected = scipy_same_filter(y, sr, target, "kaiser_best")
    close(got, expected)
    close(R.resample_host(y, sr, target), expected)


def test_both_device_methods_batch_and_awkward_ratio():
    rs = np.random.RandomState(0)
    x = (rs.randn(2, 3001) * 0.3).astype(np.float32)
    for orig, target in [(44100, 16000), (22050, 44100)]:
        expected = scipy_same_filter(x, orig, target, "kaiser_fast")
        for method in ("conv", "taps"):
            close(R.resample(x, orig, target, quality="kaiser_fast", method=method), expected)
    # 44056 -> 44100 Hz reduces to 11025/11014: too big for a dense kernel, runs as taps
    got = R.resample(x[:, :1500], 44056, 44100, quality="scipy")
    close(got, scipy_same_filter(x[:, :1500], 44056, 44100, "scipy"))
    with pytest.raises(ValueError, match="too large"):
        R.resample(x, 44056, 44100, quality="scipy", method="conv")


def test_zero_padding_gives_the_same_samples():
    y, sr = cases.voice("kal_16k.wav")
    n = R.resampled_length(len(y), sr, 44100)
    padded = np.pad(y, (0, 5000))
    close(np.asarray(R.resample(padded, sr, 44100))[:n], R.resample(y, sr, 44100))


def test_lengths_identity_and_jit():
    assert R.resampled_length(16000, 16000, 44100) == 44100
    assert R.resampled_length(1, 44100, 16000) == 1
    assert R.resampled_length(1000, 22050, 44100) == 2000
    x = np.random.RandomState(1).randn(2, 800).astype(np.float32)
    np.testing.assert_array_equal(R.resample(x, 44100, 44100), x)
    R.resample(x, 32000, 44100)
    before = R._resample_jit._cache_size()
    R.resample(x * 2, 32000, 44100)
    jax.jit(lambda v: R.resample(v, 32000, 44100))(x)
    assert R._resample_jit._cache_size() == before
    assert R.resample(x[:, :0], 32000, 44100).shape == (2, 0)


def test_quality_against_soxr_on_real_clips():
    """Not a parity check: a different high-quality resampler should agree closely."""
    for name, target, min_snr in [("kal_16k.wav", 44100, 70.0), ("hts_32k.wav", 44100, 55.0),
                                  ("slt_up5_44k.wav", 16000, 45.0)]:
        y, sr = cases.voice(name)
        ref = librosa.resample(y, orig_sr=sr, target_sr=target, res_type="soxr_hq")
        got = np.asarray(R.resample(y, sr, target))
        assert got.shape == ref.shape
        assert snr_db(got, ref) > min_snr, (name, snr_db(got, ref))


def test_bad_arguments():
    x = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="orig_sr"):
        R.resample(x, 0, 44100)
    with pytest.raises(ValueError, match="target_sr"):
        R.resample(x, 16000, 44100.5)
    with pytest.raises(ValueError, match="quality"):
        R.resample(x, 16000, 44100, quality="best")
    with pytest.raises(ValueError, match="method"):
        R.resample(x, 16000, 44100, method="fft")
    with pytest.raises(ValueError, match="rolloff"):
        R.resample(x, 16000, 44100, quality=R.ResampleFilter(8, 5.0, 1.5))
