"""Loading (formats, channel averaging, resampling, errors) and atomic writing."""

import os

import librosa
import numpy as np
import pytest
import soundfile as sf

from svcjax.audio import io as aio
from svcjax.audio import resample as R
from tests.audio import cases


@pytest.fixture(scope="module")
def kal():
    return cases.voice("kal_16k.wav")


@pytest.mark.parametrize("ext,fmt,subtype,lossy", [
    (".wav", "WAV", "PCM_16", False), (".flac", "FLAC", "PCM_16", False),
    (".ogg", "OGG", "VORBIS", True), (".mp3", "MP3", "MPEG_LAYER_III", True)])
def test_load_formats(tmp_path, kal, ext, fmt, subtype, lossy):
    y, sr = kal
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = tmp_path / f"clip{ext}"
    sf.write(path, y, sr, format=fmt, subtype=subtype)
    got, got_sr = aio.load_audio(path)
    assert got_sr == sr and got.dtype == np.float32 and got.ndim == 1
    # libsndfile's MP3 decoder rounds differently by read size (1 ulp), hence the atol
    np.testing.assert_allclose(got, librosa.load(path, sr=None)[0], rtol=0, atol=1e-6)
    if lossy:   # codec delay/padding: compare loudness, not samples
        assert abs(len(got) - len(y)) < 3000
        assert abs(np.std(got) / np.std(y) - 1) < 0.1
    else:
        np.testing.assert_array_equal(got, y)


def test_stereo_is_averaged_like_librosa():
    path = os.path.join(cases.VOICES, "rms_22k_stereo.wav")
    got, sr = aio.load_audio(path)
    np.testing.assert_array_equal(got, librosa.load(path, sr=None, mono=True)[0])
    both, _ = aio.load_audio(path, mono=False)
    assert both.shape == (2, got.shape[0])
    np.testing.assert_array_equal(both, librosa.load(path, sr=None, mono=False)[0])


def test_load_resamples():
    path = os.path.join(cases.VOICES, "hts_32k.wav")
    got, sr = aio.load_audio(path, sr=44100, resampler="soxr_hq")
    assert sr == 44100
    np.testing.assert_array_equal(got, librosa.load(path, sr=44100)[0])   # librosa's default
    native, _ = aio.load_audio(path)
    got, _ = aio.load_audio(path, sr=44100)
    np.testing.assert_array_equal(got, R.resample_host(native, 32000, 44100))
    with pytest.raises(ValueError, match="unknown resampler"):
        aio.load_audio(path, sr=44100, resampler="best")


def test_load_errors_name_the_file(tmp_path, kal):
    y, sr = kal
    missing = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        aio.load_audio(missing)
    with pytest.raises(aio.AudioFileError, match="directory"):
        aio.load_audio(tmp_path)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + os.urandom(200))
    with pytest.raises(aio.AudioFileError, match="corrupt.wav.*cannot be read"):
        aio.load_audio(corrupt)
    empty_file = tmp_path / "zero_bytes.flac"
    empty_file.write_bytes(b"")
    with pytest.raises(aio.AudioFileError, match="zero_bytes.flac"):
        aio.load_audio(empty_file)
    no_samples = tmp_path / "no_samples.wav"
    sf.write(no_samples, np.zeros(0, np.float32), sr)
    with pytest.raises(aio.AudioFileError, match="no_samples.wav.*no samples"):
        aio.load_audio(no_samples)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(4000, np.float32), sr)
    with pytest.raises(aio.AudioFileError, match="silent.wav.*is silent"):
        aio.load_audio(silent)
    assert aio.load_audio(silent, allow_silent=True)[0].shape == (4000,)
    nan = tmp_path / "nan.wav"
    bad = y.copy()
    bad[100] = np.nan
    sf.write(nan, bad, sr, subtype="FLOAT")
    with pytest.raises(aio.AudioFileError, match="nan.wav.*NaN"):
        aio.load_audio(nan)
    with pytest.raises(ValueError, match="sr"):
        aio.load_audio(os.path.join(cases.VOICES, "kal_16k.wav"), sr=-1)
    assert issubclass(aio.AudioFileError, ValueError)   # the CLI reports it as one line


def test_save_round_trip(tmp_path, kal):
    y, sr = kal
    for name in ("a.wav", "b.flac", "sub/dir/c.wav"):
        path = aio.save_audio(tmp_path / name, y, sr)
        back, back_sr = aio.load_audio(path)
        assert back_sr == sr
        np.testing.assert_allclose(back, y, atol=1.0 / 32768)
    ints = (y * 32767).astype(np.int16)
    aio.save_audio(tmp_path / "i.wav", ints, sr)
    np.testing.assert_array_equal(sf.read(tmp_path / "i.wav", dtype="int16")[0], ints)
    aio.save_audio(tmp_path / "f.wav", y * 3, sr, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(tmp_path / "f.wav", dtype="float32")[0], y * 3)
    aio.save_audio(tmp_path / "clip.wav", np.array([2.0, -2.0, 0.5]), sr)
    np.testing.assert_allclose(sf.read(tmp_path / "clip.wav")[0], [32767 / 32768, -1, 0.5])
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_save_is_atomic(tmp_path, kal, monkeypatch):
    y, sr = kal
    path = tmp_path / "out.wav"
    aio.save_audio(path, y, sr)
    before = path.read_bytes()
    real_write = sf.write

    def failing_write(file, data, *args, **kwargs):
        real_write(file, data[: len(data) // 2], *args, **kwargs)   # half the data, then die
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        aio.save_audio(path, y[::-1], sr)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_save_rejects_bad_requests(tmp_path, kal):
    y, sr = kal
    with pytest.raises(ValueError, match="extension"):
        aio.save_audio(tmp_path / "x.mp4", y, sr)
    with pytest.raises(ValueError, match="NaN"):
        aio.save_audio(tmp_path / "x.wav", np.array([0.0, np.nan]), sr)
    with pytest.raises(ValueError, match="subtype"):
        aio.save_audio(tmp_path / "x.flac", y, sr, subtype="FLOAT")
    with pytest.raises(ValueError, match="shape"):
        aio.save_audio(tmp_path / "x.wav", np.zeros(0), sr)
    assert not list(tmp_path.iterdir())
