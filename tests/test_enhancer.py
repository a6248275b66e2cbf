"""The NSF-HiFiGAN enhancer (``svcjax convert --enhance``) against the reference's ``Enhancer``.

Fixture: tests/fixtures/enhancer/enhancer.npz (tests/fixtures/make_enhancer.py): the
reference's ``modules/enhancer.py`` with the vocoder fixture's random weights
(tests/fixtures/vocoder/model) on two sung tones, ``adaptive_key`` 0, 2 and -3, every random
draw zero.
"""

from pathlib import Path

import numpy as np
import pytest

from svcjax.audio import resample
from svcjax.runtime.enhancer import Enhancer, adaptive_sample_rate
from svcjax.runtime.vocoder import GriffinLimVocoder, load_vocoder

FIX = Path(__file__).parent / "fixtures"
# The loosest link is the vocoder itself: its parity bound with the reference is 1e-4 at this
# amplitude (tests/test_vocoder.py; float32 convolutions ~64 channels wide, ~15 layers deep).
# The mel analysis (a 2048-point float32 FFT, log of mel sums) and the two resamplings
# (float32 sums of ~300 taps of |x| < 1, and torchaudio's float32 rounding of its output
# phase, ~2^-24 of b = 0.99 * 441 zero crossings) add ~1e-5 at most.
TOL = 1e-4


@pytest.fixture(scope="module")
def enhancer():
    return Enhancer(load_vocoder(FIX / "vocoder" / "model"))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "enhancer" / "enhancer.npz"))


def test_adaptive_rates_are_the_references():
    assert [adaptive_sample_rate(44100, k) for k in (0, 2, -3, 12, 1)] == \
        [44100, 49500, 37100, 88200, 46700]


def test_batch_matches_reference_for_each_key(enhancer, ref):
    """Two clips of different lengths in one padded batch: each gives the reference's
    output for that clip alone, at every adaptive key."""
    a, b = ref["audio_a"], ref["audio_b"]
    audio = np.zeros((2, len(a)), np.float32)
    audio[0], audio[1, :len(b)] = a, b
    f0 = np.zeros((2, len(ref["f0_a"])), np.float32)
    f0[0], f0[1, :len(ref["f0_b"])] = ref["f0_a"], ref["f0_b"]
    errors = {}
    for key in (0, 2, -3):
        outs, sr = enhancer.enhance(audio, 44100, f0, 512, key, lengths=[len(a), len(b)])
        assert sr == 44100
        for name, got in zip("ab", outs):
            want = ref[f"out_{name}_{key}"]
            assert got.shape == want.shape, (key, name)
            assert np.abs(want).max() > 0.3
            errors[f"{name}/{key}"] = e = float(np.abs(got - want).max())
            assert e <= TOL, (key, name, e)
        if key:   # the shift changes the output
            assert float(np.abs(outs[0][:20000] - ref["out_a_0"][:20000]).max()) > 1e-2
        # the converter's form: each clip cut or zero-padded at its end to its input length
        fitted = enhancer(audio, f0, adaptive_key=key, lengths=[len(a), len(b)])
        assert fitted.shape == audio.shape and not fitted[1, len(b):].any()
        for i, o in enumerate(outs):
            m = min(len(o), [len(a), len(b)][i])
            np.testing.assert_array_equal(fitted[i, :m], o[:m])
    print("\nenhancer max |error| vs reference:", {k: f"{v:.1e}" for k, v in errors.items()})


def test_torchaudio_resampler_preset():
    """The preset the enhancer resamples with: unit gain at DC, a tone below the cutoff keeps
    its amplitude, the device and host paths agree, equal rates pass through."""
    x = np.sin(2 * np.pi * 440.0 * np.arange(8000) / 44100).astype(np.float32)[None]
    for up_to in (49500, 37100):
        y = np.asarray(resample.resample(x, 44100, up_to, quality="torchaudio_hann128"))
        host = resample.resample_host(x, 44100, up_to, quality="torchaudio_hann128")
        np.testing.assert_allclose(y, host, rtol=0, atol=2e-6)
        mid = y[0, 1000:-1000]
        assert abs(float(np.abs(mid).max()) - 1.0) < 1e-3
    h = resample.design_filter(55, 49, resample.PRESETS["torchaudio_hann128"])
    assert abs(float(h.sum()) / 55 - 1.0) < 1e-3       # gain `up`, as the other designs
    same = np.asarray(resample.resample(x, 44100, 44100, quality="torchaudio_hann128"))
    np.testing.assert_array_equal(same, x)
    with pytest.raises(ValueError, match="invalid resampling filter"):
        resample.resample(x, 44100, 48000, quality=resample.HannSincFilter(0, 0.99))


def test_bad_inputs_are_one_clear_sentence(enhancer):
    with pytest.raises(ValueError, match="the enhancer needs the NSF-HiFiGAN vocoder's weights"):
        Enhancer(GriffinLimVocoder())
    with pytest.raises(ValueError, match=r"audio \(B, L\) and f0 \(B, T\)"):
        enhancer.enhance(np.zeros((2, 4096)), 44100, np.zeros((1, 8)), 512)
    with pytest.raises(ValueError, match="lengths must be 1 values in 1..4096"):
        enhancer.enhance(np.zeros((1, 4096)), 44100, np.zeros((1, 8)), 512, lengths=[5000])
    with pytest.raises(ValueError, match="the enhancer's vocoder runs at 44100 Hz, the audio "
                                         "is at 32000 Hz"):
        enhancer(np.zeros((1, 4096)), np.zeros((1, 8)), sample_rate=32000)
