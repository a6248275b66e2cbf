"""Reading and writing audio files: float32 mono in, atomic WAV/FLAC out.

:func:`load_audio` reads anything libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3 with
libsndfile >= 1.1, AIFF, ...) and falls back to ``audioread`` (ffmpeg / GStreamer) for the
rest; channels are averaged as ``librosa.load`` does, and the audio is resampled on the host
when a rate is asked for. Every failure is one :class:`AudioFileError` (a ``ValueError``)
naming the file (a missing file is ``FileNotFoundError``).

:func:`save_audio` writes to a temporary name beside the target, syncs it, and renames it
into place: a crash or error never leaves a half-written file, nor destroys the old one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from svcjax.audio import resample as _resample

__all__ = ["AudioFileError", "SILENT_PEAK", "load_audio", "save_audio", "resample_audio",
           "WRITE_FORMATS"]

# A clip whose every sample is below -80 dBFS (~3 LSB of 16-bit audio) counts as silent.
SILENT_PEAK = 1e-4

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
_LIBROSA_RESAMPLERS = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq")


class AudioFileError(ValueError):
    """An audio file that cannot be used: unreadable, corrupt, empty, non-finite or silent."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"audio file {self.path!r} {problem}")


def _read_soundfile(path: str):
    import soundfile as sf

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return data.T, int(sr)   # (C, L)


def _read_audioread(path: str):
    import audioread

    with audioread.audio_open(path) as f:
        sr, channels = int(f.samplerate), int(f.channels)
        pcm = b"".join(f)
    data = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return data.reshape(-1, channels).T, sr


def resample_audio(audio: np.ndarray, orig_sr: int, target_sr: int,
                   resampler="kaiser_best") -> np.ndarray:
    """Host-side resampling along the last axis.

    ``resampler``: a :mod:`svcjax.audio.resample` preset or ``ResampleFilter`` (the same
    filter the device :func:`~svcjax.audio.resample.resample` applies), or a librosa
    ``soxr_*`` name (``"soxr_hq"`` is current librosa's default; the reference's pinned
    librosa 0.9.1 defaulted to resampy's ``kaiser_best``, which the ``"kaiser_best"`` preset
    reproduces in design).
    """
    if isinstance(resampler, str) and resampler in _LIBROSA_RESAMPLERS:
        import librosa

        if orig_sr == target_sr:
            return np.asarray(audio, np.float32)
        return librosa.resample(np.asarray(audio, np.float32), orig_sr=orig_sr,
                                target_sr=target_sr, res_type=resampler).astype(np.float32)
    if not (isinstance(resampler, _resample.ResampleFilter)
            or (isinstance(resampler, str) and resampler in _resample.PRESETS)):
        raise ValueError(f"unknown resampler {resampler!r}; expected one of "
                         f"{', '.join(list(_resample.PRESETS) + list(_LIBROSA_RESAMPLERS))} "
                         f"or a ResampleFilter")
    return _resample.resample_host(audio, orig_sr, target_sr, quality=resampler)


def load_audio(path, sr: int | None = None, *, mono: bool = True,
               resampler="kaiser_best", allow_silent: bool = False
               ) -> tuple[np.ndarray, int]:
    """Load an audio file as float32 in [-1, 1]: ``(audio, sample_rate)``.

    ``mono=True`` averages the channels (``librosa.to_mono``) into ``(L,)``; ``mono=False``
    gives ``(channels, L)``. With ``sr`` the audio is resampled to it (see
    :func:`resample_audio` for ``resampler``). Raises ``FileNotFoundError`` for a missing
    file and :class:`AudioFileError` for one that is unreadable or corrupt, has no samples,
    has NaN/inf samples, or is silent (peak below :data:`SILENT_PEAK`, -80 dBFS) unless
    ``allow_silent``.
    """
    path = os.fspath(path)
    if sr is not None and (isinstance(sr, bool) or int(sr) != sr or int(sr) <= 0):
        raise ValueError(f"sr must be a positive integer sample rate or None, got {sr!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"audio file not found: {path!r}")
    if os.path.isdir(path):
        raise AudioFileError(path, "is a directory, not an audio file")
    try:
        data, file_sr = _read_soundfile(path)
    except Exception as sf_err:  # libsndfile cannot read it: try ffmpeg/GStreamer
        try:
            data, file_sr = _read_audioread(path)
        except Exception:
            reason = str(sf_err).strip().splitlines()[-1] if str(sf_err).strip() else "?"
            raise AudioFileError(path, f"cannot be read as audio (corrupt or unsupported "
                                       f"format): {reason}") from None
    if data.shape[-1] == 0 or data.shape[0] == 0:
        raise AudioFileError(path, "contains no samples")
    if not np.all(np.isfinite(data)):
        raise AudioFileError(path, "contains NaN or infinite samples")
    if not allow_silent and float(np.max(np.abs(data))) < SILENT_PEAK:
        raise AudioFileError(path, f"is silent (peak {float(np.max(np.abs(data))):.2g} is "
                                   f"below -80 dBFS); pass allow_silent=True to load it")
    if mono:
        data = np.mean(data, axis=0) if data.shape[0] > 1 else data[0]
    data = np.ascontiguousarray(data, np.float32)
    if sr is not None and int(sr) != file_sr:
        data = resample_audio(data, file_sr, int(sr), resampler)
        file_sr = int(sr)
    return data, file_sr


def save_audio(path, audio, sr: int, *, subtype: str = "PCM_16",
               make_dirs: bool = True) -> Path:
    """Write ``audio`` to ``path`` (``.wav`` or ``.flac``) atomically; returns the path.

    ``audio``: ``(L,)`` mono or ``(L, channels)``; float in [-1, 1] (clipped there for
    integer subtypes) or int16 written as is. ``subtype`` is a libsndfile subtype
    (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ...). The data goes to a hidden temporary file
    in the same directory, is flushed to disk, and replaces ``path`` by an atomic rename; on
    any error the temporary file is removed and an existing ``path`` is left untouched.
    """
    import soundfile as sf

    path = Path(os.fspath(path))
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {str(path)!r}: the extension must be one of "
                         f"{', '.join(WRITE_FORMATS)}")
    if isinstance(sr, bool) or int(sr) != sr or int(sr) <= 0:
        raise ValueError(f"sr must be a positive integer sample rate, got {sr!r}")
    data = np.asarray(audio)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"audio for {str(path)!r} must be (L,) or (L, channels) with L > 0, "
                         f"got shape {data.shape}")
    if data.dtype != np.int16:
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"audio for {str(path)!r} contains NaN or infinite samples")
        if subtype.upper().startswith("PCM"):
            data = np.clip(data, -1.0, 1.0)
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"cannot write {str(path)!r}: subtype {subtype!r} is not valid for "
                         f"{fmt}")
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            sf.write(f, data, int(sr), format=fmt, subtype=subtype)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
