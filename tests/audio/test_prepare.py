"""The training-corpus chain against librosa (and the reference's resample.py, live)."""

import librosa
import numpy as np
import pytest
import soundfile as sf

from svcjax.audio import io as aio
from svcjax.audio import prepare as P
from svcjax.audio import resample as R
from tests.audio import cases


def reference_chain(y, sr, target_sr=44100, loudnorm=True):
    """resample.py's process() with current librosa (res_type soxr_hq)."""
    y, _ = librosa.effects.trim(y, top_db=40)
    peak = np.abs(y).max()
    if peak > 1.0:
        y = 0.98 * y / peak
    y = librosa.resample(y, orig_sr=sr, target_sr=target_sr)
    if loudnorm:
        y /= np.max(np.abs(y))
    return y


@pytest.mark.parametrize("name", cases.voice_names())
def test_trim_matches_librosa(name):
    y, _ = cases.voice(name)
    y = np.concatenate([np.zeros(3000, np.float32), y * 0.5, np.full(5000, 1e-4, np.float32)])
    got, (a, b) = P.trim_silence(y)
    expected, idx = librosa.effects.trim(y, top_db=40)
    assert (a, b) == tuple(idx)
    np.testing.assert_array_equal(got, expected)
    assert P.trim_silence(np.zeros(4000, np.float32))[1] == (0, 4000)


def test_chain_matches_reference_with_soxr():
    for name in ("hts_32k.wav", "rms_22k_stereo.wav"):
        y, sr = cases.voice(name)
        for gain, loudnorm in ((1.0, True), (1.7, True), (0.5, False)):
            got = P.prepare_training_audio(y * gain, sr, resampler="soxr_hq", loudnorm=loudnorm)
            np.testing.assert_array_equal(got, reference_chain(y * gain, sr, loudnorm=loudnorm))
        # the default resampler: same chain, the kaiser_best filter
        trimmed, _ = P.trim_silence(y)
        expected = R.resample_host(trimmed, sr, 44100)
        np.testing.assert_allclose(P.prepare_training_audio(y, sr),
                                   expected / np.abs(expected).max(), rtol=1e-6, atol=1e-7)


def test_chain_live_reference(ref):
    mod = ref("resample.py")
    y, sr = cases.voice("kal_16k.wav")
    y = np.concatenate([np.zeros(2000, np.float32), y * 1.3])
    wav, _ = mod.trim_wav(y)
    wav = mod.normalize_peak(wav)
    expected = mod.resample_wav(wav, sr, 44100)
    expected /= np.max(np.abs(expected))
    got = P.prepare_training_audio(y, sr, resampler="soxr_hq")
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(P.to_int16(got), (expected * 32767).astype(np.int16))


def test_prepare_file(tmp_path):
    src = tmp_path / "in.flac"
    y, sr = cases.voice("kal_16k.wav")
    sf.write(src, y, sr)
    n = P.prepare_training_file(src, tmp_path / "spk" / "out.wav")
    data, out_sr = sf.read(tmp_path / "spk" / "out.wav", dtype="int16")
    assert out_sr == 44100 and data.shape == (n,)
    np.testing.assert_array_equal(data, P.to_int16(P.prepare_training_audio(y, sr)))
    assert data.max() == 32767 or data.min() == -32767
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(5000, np.float32), sr)
    with pytest.raises(aio.AudioFileError, match="silent.wav"):
        P.prepare_training_file(silent, tmp_path / "never.wav")
    assert not (tmp_path / "never.wav").exists()
    with pytest.raises(ValueError, match="silent"):
        P.prepare_training_audio(np.zeros(100, np.float32), 16000)
