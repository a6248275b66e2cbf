"""Training-corpus audio preparation: the reference's ``resample.py`` chain.

So-VITS-SVC 4.1 prepares every training clip once: load mono at its own rate, trim leading
and trailing silence (``librosa.effects.trim``, 40 dB below the loudest frame), scale down
to a 0.98 peak if it clips, resample to 44.1 kHz, normalise the peak to 1 (unless
``--skip_loudnorm``), and store 16-bit PCM as ``int16(x * 32767)`` (truncating). The
functions here do the same on the host (NumPy); :func:`prepare_training_file` does it
file to file, writing atomically.
"""

from __future__ import annotations

import os

import numpy as np

from svcjax.audio import io as audio_io
from svcjax.audio.constants import HOP, SAMPLING_RATE
from svcjax.audio.slicer import frame_rms

__all__ = ["trim_silence", "normalize_peak", "prepare_training_audio", "prepare_training_file",
           "to_int16"]


def trim_silence(audio, top_db: float = 40.0, frame_length: int = 2048,
                 hop_length: int = HOP) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest one.

    ``librosa.effects.trim`` exactly (frame RMS as :func:`svcjax.audio.slicer.frame_rms`,
    dB with floor -100): returns ``(audio[start:end], (start, end))`` with ``start`` the
    first non-silent frame's first sample and ``end`` the last one's end (at most
    ``len(audio)``). All-zero audio is returned whole.
    """
    y = np.asarray(audio)
    if y.ndim != 1:
        raise ValueError(f"trim_silence needs 1-D audio, got shape {y.shape}")
    rms = frame_rms(y, frame_length, hop_length)
    power = np.square(rms)
    amin = np.asarray(1e-10, power.dtype)
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(np.maximum(amin, np.max(power)))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return y[:0], (0, 0)
    start = int(loud[0]) * hop_length
    end = min(y.shape[0], (int(loud[-1]) + 1) * hop_length)
    return y[start:end], (start, end)


def normalize_peak(audio, threshold: float = 1.0) -> np.ndarray:
    """Scale to a 0.98 peak when the peak exceeds ``threshold`` (else unchanged)."""
    y = np.asarray(audio)
    peak = np.abs(y).max() if y.size else 0.0
    return 0.98 * y / peak if peak > threshold else y


def to_int16(audio) -> np.ndarray:
    """``int16(x * 32767)`` truncating toward zero, as the reference stores its corpus."""
    return (np.asarray(audio) * np.iinfo(np.int16).max).astype(np.int16)


def prepare_training_audio(audio, sr: int, target_sr: int = SAMPLING_RATE, *, top_db: float = 40.0,
                           loudnorm: bool = True, resampler="kaiser_best") -> np.ndarray:
    """Trim, peak-limit, resample and loudness-normalise one mono clip (float32 out).

    ``resampler`` as :func:`svcjax.audio.io.resample_audio` (``"soxr_hq"`` reproduces the
    reference run with current librosa; ``"kaiser_best"`` its pinned librosa 0.9.1's filter
    design). Raises ``ValueError`` for empty or silent input (the reference would divide by
    zero and write NaNs).
    """
    y = np.asarray(audio, np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"need non-empty mono (L,) audio, got shape {y.shape}")
    if not np.any(y):
        raise ValueError("audio is silent (all zeros); nothing to prepare")
    y, _ = trim_silence(y, top_db)
    y = normalize_peak(y)
    y = audio_io.resample_audio(y, int(sr), int(target_sr), resampler)
    if loudnorm:
        y = y / np.max(np.abs(y))
    return y.astype(np.float32)


def prepare_training_file(src, dst, target_sr: int = SAMPLING_RATE, *, top_db: float = 40.0,
                          loudnorm: bool = True, resampler="kaiser_best") -> int:
    """Load ``src`` (any format), prepare it, write 16-bit ``dst`` atomically; sample count.

    Errors name ``src`` (see :func:`svcjax.audio.io.load_audio`); ``dst`` is written only
    when everything succeeded.
    """
    audio, sr = audio_io.load_audio(src)
    try:
        out = prepare_training_audio(audio, sr, target_sr, top_db=top_db, loudnorm=loudnorm,
                                     resampler=resampler)
    except ValueError as e:
        raise audio_io.AudioFileError(src, f"cannot be prepared: {e}") from None
    audio_io.save_audio(dst, to_int16(out), target_sr)
    return int(out.shape[0])
