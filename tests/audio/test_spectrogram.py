"""Spectrograms against NumPy/librosa (float64) and against the reference's torch functions.

Tolerance: spectra are compared on the linear (energy) scale with ``rtol=1e-5`` and an
absolute floor of ``2e-6 x`` the array's peak. Float32 FFTs from different libraries agree to
~4e-7 of the peak, so the quietest bins (1e5 below the peak, at the 1e-3 / 3e-5 magnitude
floors) differ by up to ~1% relative; on the log scale that is up to ~5e-3 there, which is
what the looser log-domain check allows.
"""

import librosa
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.audio import spectrogram as S
from tests.audio import cases

jax.config.update("jax_default_matmul_precision", "highest")
pytestmark = pytest.mark.filterwarnings("ignore:stft with return_complex=False")


def assert_spec_close(actual, expected, log=False, rtol=1e-5, floor=2e-6):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    if log:
        np.testing.assert_allclose(actual, expected, atol=1e-2)
        actual, expected = np.exp(actual), np.exp(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=floor * np.abs(expected).max())


# ------------------------------------------------------------------ float64 definitions


def stft64(y, n_fft, hop, win, left, right, mode):
    yp = np.pad(np.asarray(y, np.float64), (left, right), mode=mode)
    t = (len(yp) - n_fft) // hop + 1
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    w = np.pad(w, ((n_fft - win) // 2, n_fft - win - (n_fft - win) // 2))
    frames = np.stack([yp[i * hop:i * hop + n_fft] for i in range(t)]) * w
    return np.fft.rfft(frames, axis=-1)


def linear64(y):
    return np.sqrt(np.abs(stft64(y, 2048, 512, 2048, 768, 768, "reflect")) ** 2 + 1e-6)


def mel64(spec, n_mels=80, fmin=0.0, fmax=22050.0, sr=44100, n_fft=2048):
    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return np.log(np.maximum(spec @ fb.T.astype(np.float64), 1e-5))


def vocoder64(y, keyshift=0.0, speed=1.0):
    factor = 2 ** (keyshift / 12)
    n_new, win_new = int(np.round(2048 * factor)), int(np.round(2048 * factor))
    hop = int(np.round(512 * speed))
    left = (win_new - hop) // 2
    right = max((win_new - hop + 1) // 2, win_new - len(y) - left)
    mode = "reflect" if right < len(y) else "constant"
    mag = np.sqrt(np.abs(stft64(y, n_new, hop, win_new, left, right, mode)) ** 2 + 1e-9)
    if keyshift != 0:
        if mag.shape[1] < 1025:
            mag = np.pad(mag, ((0, 0), (0, 1025 - mag.shape[1])))
        mag = mag[:, :1025] * 2048 / win_new
    return mel64(mag, 128, 40.0, 16000.0)


@pytest.fixture(scope="module")
def clip44():
    """The fixture's 0.25 s clip: sharing its shape keeps compilations few."""
    return cases.mel_clip()


# ------------------------------------------------------------------ definitions


def test_linear_spectrogram_matches_numpy_and_librosa(clip44):
    got = np.asarray(S.linear_spectrogram(clip44))
    assert got.shape == (11025 // 512, 1025)
    assert_spec_close(got, linear64(clip44))
    # librosa.stft on the reference's reflect-padded signal, no further centring
    lib = librosa.stft(np.pad(clip44, 768, mode="reflect"), n_fft=2048, hop_length=512,
                       win_length=2048, window="hann", center=False)
    assert_spec_close(got, np.sqrt(np.abs(lib.T.astype(np.complex128)) ** 2 + 1e-6))


def test_mel_spectrogram_and_spec_to_mel(clip44):
    expected = mel64(linear64(clip44))
    got = S.mel_spectrogram(clip44)
    assert got.shape == (11025 // 512, 80)
    assert_spec_close(got, expected, log=True)
    np.testing.assert_allclose(S.spec_to_mel(S.linear_spectrogram(clip44)), got, rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("keyshift,speed", [(0.0, 1.0), (2.7, 1.0), (-4.3, 1.0), (12.0, 1.0),
                                            (-12.0, 1.0), (0.0, 1.25), (1.5, 0.8)])
def test_vocoder_mel_static_matches_numpy(clip44, keyshift, speed):
    got = S.vocoder_mel(clip44, keyshift=keyshift, speed=speed)
    assert got.shape == (11025 // round(512 * speed), 128)
    assert_spec_close(got, vocoder64(clip44, keyshift, speed), log=True)


@pytest.mark.parametrize("keyshift", [0.0, 2.7, -4.3, 12.0, -12.0])
def test_vocoder_mel_traced_keyshift_matches_numpy(clip44, keyshift):
    got = S.vocoder_mel(clip44, keyshift=jnp.float32(keyshift),
                        max_keyshift=5.0 if abs(keyshift) <= 5 else 12.0)
    assert_spec_close(got, vocoder64(clip44, keyshift), log=True)


@pytest.mark.parametrize("length", [1, 300, 512, 700])
def test_vocoder_mel_short_clips(length):
    y = np.sin(np.arange(length) * 0.05).astype(np.float32) * 0.5
    expected = vocoder64(y)
    got = S.vocoder_mel(y)
    assert got.shape[0] == max(length // 512, 1) == expected.shape[0]
    assert_spec_close(got, expected, log=True)
    assert_spec_close(S.vocoder_mel(y, keyshift=jnp.float32(3.0)), vocoder64(y, 3.0), log=True)


def test_frame_counts():
    for length in (769, 1023, 44100 * 3 + 17):
        y = np.zeros(length, np.float32) + 0.01
        t = S.num_frames(length)
        assert S.linear_spectrogram(y).shape[0] == t == length // 512


# ------------------------------------------------------------------ vs the reference


def test_against_reference_fixture(fixture):
    clip = fixture["clip"]
    assert_spec_close(S.linear_spectrogram(clip), fixture["spec"])
    assert_spec_close(S.mel_spectrogram(clip), fixture["mel80"], log=True)
    for i, (key, speed, length) in enumerate(cases.VOCODER_CASES):
        y = clip if length is None else clip[:length]
        assert_spec_close(S.vocoder_mel(y, keyshift=key, speed=speed), fixture[f"vmel_{i}"],
                          log=True)
        if speed == 1.0:
            assert_spec_close(S.vocoder_mel(y, keyshift=jnp.float32(key)),
                              fixture[f"vmel_{i}"], log=True)


def test_against_live_reference(ref, clip44):
    import torch

    mp = ref("modules/mel_processing.py")
    nv = ref("vdecoder/nsf_hifigan/nvSTFT.py")
    y = torch.from_numpy(clip44)[None]
    assert_spec_close(S.linear_spectrogram(clip44),
                      mp.spectrogram_torch(y, 2048, 44100, 512, 2048)[0].T.numpy())
    assert_spec_close(S.mel_spectrogram(clip44), mp.mel_spectrogram_torch(
        y, 2048, 80, 44100, 512, 2048, 0.0, 22050.0)[0].T.numpy(), log=True)
    stft = nv.STFT(44100, 128, 2048, 2048, 512, 40, 16000)
    for key in (0.0, 2.7, -4.3):
        expected = stft.get_mel(y, keyshift=key)[0].T.numpy()
        assert_spec_close(S.vocoder_mel(clip44, keyshift=key), expected, log=True)
        assert_spec_close(S.vocoder_mel(clip44, keyshift=jnp.float32(key)), expected, log=True)
    for length in (300, 700):
        expected = stft.get_mel(y[:, :length])[0].T.numpy()
        assert_spec_close(S.vocoder_mel(clip44[:length]), expected, log=True)


# ------------------------------------------------------------------ batching, jit


def test_batch_equals_single_and_lengths(clip44):
    n, m = 11025, 7000
    a, b = clip44, clip44[2000:2000 + m]
    batch = np.zeros((2, n), np.float32)
    batch[0], batch[1, :m] = a, b
    lengths = np.array([n, m])
    for fn, log in ((S.linear_spectrogram, False), (S.vocoder_mel, True)):
        out = np.asarray(fn(batch, lengths=lengths))
        assert_spec_close(out[0], fn(a), log=log)
        assert_spec_close(out[1, :m // 512], fn(b), log=log)
    assert_spec_close(S.mel_spectrogram(batch)[0], S.mel_spectrogram(a), log=True)
    out = np.asarray(S.vocoder_mel(batch, keyshift=jnp.array([2.7, -4.3]), lengths=lengths))
    assert_spec_close(out[0], S.vocoder_mel(a, keyshift=2.7), log=True)
    assert_spec_close(out[1, :m // 512], vocoder64(b, -4.3), log=True)
    # any leading axes
    assert S.linear_spectrogram(batch.reshape(2, 1, n)).shape == (2, 1, n // 512, 1025)


def test_traced_keyshift_compiles_once(clip44):
    fn = S._vocoder_mel_traced
    y = clip44[None]
    S.vocoder_mel(y, keyshift=jnp.array([0.5]))
    before = fn._cache_size()
    for key in (-5.0, -1.3, 2.2, 4.9):
        S.vocoder_mel(y, keyshift=jnp.array([key]))
    assert fn._cache_size() == before
    # works under an outer jit and out-of-range rows come back NaN
    out = jax.jit(lambda x, k: S.vocoder_mel(x, keyshift=k, max_keyshift=6.0))(
        np.concatenate([y, y]), jnp.array([1.0, 7.0]))
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="too short"):
        S.linear_spectrogram(np.zeros(700, np.float32))
    with pytest.raises(ValueError, match="lengths"):
        S.mel_spectrogram(np.zeros((2, 4000), np.float32), lengths=np.array([4000, 100]))
    with pytest.raises(ValueError, match="lengths"):
        S.linear_spectrogram(np.zeros((2, 4000), np.float32), lengths=np.array([4000]))
    with pytest.raises(TypeError, match="speed"):
        S.vocoder_mel(np.zeros(4000, np.float32), speed=jnp.float32(1.0))
    with pytest.raises(ValueError, match="keyshift"):
        S.vocoder_mel(np.zeros((2, 4000), np.float32), keyshift=jnp.zeros(3))
    with pytest.raises(ValueError, match="channels"):
        S.spec_to_mel(np.zeros((3, 80), np.float32))
