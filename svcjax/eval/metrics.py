"""Evaluation metrics for singing-voice conversion (independent of any model).

Spectral distances (between the converted audio and a reference recording, both 44.1 kHz):

* :func:`mel_distance`: mean absolute (L1) and root-mean-square (L2) difference of natural-log
  mel spectrograms, on the 128-bin vocoder / diffusion mel (40-16000 Hz) or the 80-bin
  training mel (0-22050 Hz).
* :func:`mcd`: mel-cepstral distortion in dB, ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)``
  averaged over frames, with ``c_1..c_D`` (``D = 24``; ``c_0``, the frame energy, left out)
  the orthonormal DCT-II of the log-mel frame. These are MFCC-style cepstra of the mel
  filterbank, not SPTK ``mcep`` all-pass cepstra, so absolute values are comparable between
  svcjax runs, not with papers that use SPTK.

  Alignment: ``align="frames"`` (default) compares frame ``t`` with frame ``t``. A So-VITS-SVC
  conversion keeps the source's timing exactly (``T`` frames in, ``512 T`` samples out), so
  frame alignment is the right comparison: DTW would hide timing errors and costs ``O(T^2)``.
  ``align="dtw"`` (librosa's DTW on the cepstral distance) is for references with their own
  timing, e.g. the target singer performing the same song.

Pitch (converted F0, as an F0 tracker hears the output, against the source F0 transposed by
the conversion's key shift):

* :func:`f0_metrics`: F0 RMSE in cents over frames voiced in both, gross pitch error (share of
  those frames more than 50 cents off) and V/UV error (share of frames whose voicing differs).

Speed: :func:`real_time_factor` (processing seconds per second of audio; < 1 is faster than
real time).

Optional (``pip install svcjax[eval]``): :func:`speaker_similarity` (cosine of GE2E speaker
embeddings, resemblyzer) and :func:`dnsmos` (DNSMOS P.835 / P.808 MOS predictors, speechmos
on onnxruntime). Without the packages they raise :class:`MissingExtraError` with the install
line; the evaluation runner skips them with that message.

Batched device functions (:func:`spectral_metrics`) compute the per-row spectral metrics of a
zero-padded ``(B, L)`` batch in one jitted call per shape; the per-clip functions above are
convenience wrappers around the same code.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.audio import spectrogram
from svcjax.audio.constants import HOP

__all__ = [
    "MissingExtraError", "log_mel", "mel_cepstra", "mel_distance", "mcd", "mcd_from_cepstra",
    "spectral_metrics", "dtw_path", "cents", "f0_metrics", "real_time_factor",
    "speaker_similarity", "speaker_embedding", "dnsmos", "require_extra", "summarize",
    "OPTIONAL_METRICS", "MCD_CONSTANT", "GPE_CENTS",
]

# 10 / ln(10) * sqrt(2): cepstral distance (natural-log amplitude cepstra) -> dB
MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)
GPE_CENTS = 50.0
N_CEPSTRA = 24
MEL_KINDS = {128: "vocoder", 80: "training"}


class MissingExtraError(ImportError):
    """An optional metric whose packages are not installed."""

    def __init__(self, metric: str, packages: str):
        super().__init__(f"{metric} needs {packages}; install them with "
                         f"`pip install 'svcjax[eval]'` (skipped)")


# ----------------------------------------------------------------------------- mels, cepstra


def _check_mels(n_mels: int) -> None:
    if n_mels not in MEL_KINDS:
        raise ValueError(f"n_mels must be 128 (vocoder mel, 40-16000 Hz) or 80 (training mel, "
                         f"0-22050 Hz), got {n_mels}")


def _log_mel(audio, lengths, n_mels):
    if n_mels == 128:
        return spectrogram.vocoder_mel(audio, lengths=lengths)
    return spectrogram.mel_spectrogram(audio, lengths=lengths)


def log_mel(audio, n_mels: int = 128, lengths=None) -> jax.Array:
    """Natural-log mel ``(..., L) -> (..., L // 512, n_mels)`` of 44.1 kHz audio.

    128: the vocoder / diffusion mel; 80: the training mel-loss mel (see
    :mod:`svcjax.audio.spectrogram`).
    """
    _check_mels(n_mels)
    return _log_mel(audio, lengths, n_mels)


@functools.lru_cache(maxsize=8)
def _dct_matrix(n: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II rows 1..n_out as an ``(n, n_out)`` matrix (``x @ M``)."""
    k = np.arange(1, n_out + 1)[None, :]
    i = np.arange(n)[:, None]
    m = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * np.sqrt(2.0 / n)
    return m.astype(np.float32)


def mel_cepstra(log_mel_frames, n_cepstra: int = N_CEPSTRA) -> jax.Array:
    """Cepstra ``c_1..c_D`` ``(..., T, D)`` of log-mel frames ``(..., T, n_mels)``.

    The orthonormal DCT-II (``scipy.fft.dct(norm="ortho")``) along the mel axis, ``c_0`` left
    out.
    """
    x = jnp.asarray(log_mel_frames, jnp.float32)
    n = x.shape[-1]
    if not 1 <= n_cepstra < n:
        raise ValueError(f"n_cepstra must be in 1..{n - 1} for {n} mel bins, got {n_cepstra}")
    return jnp.matmul(x, jnp.asarray(_dct_matrix(n, n_cepstra)),
                      precision=jax.lax.Precision.HIGHEST)


def mcd_from_cepstra(c_ref, c_est, mask=None) -> float:
    """Mean MCD (dB) of frame-aligned cepstra ``(T, D)``; ``mask`` ``(T,)`` selects frames."""
    c_ref, c_est = np.asarray(c_ref, np.float64), np.asarray(c_est, np.float64)
    if c_ref.shape != c_est.shape:
        raise ValueError(f"cepstra must have the same shape, got {c_ref.shape} and "
                         f"{c_est.shape}")
    per_frame = MCD_CONSTANT * np.sqrt(np.sum((c_ref - c_est) ** 2, axis=-1))
    if mask is not None:
        per_frame = per_frame[np.asarray(mask, bool)]
    if per_frame.size == 0:
        raise ValueError("no frames to compare")
    return float(np.mean(per_frame))


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotone alignment of a ``(N, M)`` cost matrix: index arrays ``(i, j)``.

    Steps (1,0), (0,1), (1,1), path from (0, 0) to (N-1, M-1) (``librosa.sequence.dtw``).
    """
    import librosa

    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2 or min(cost.shape) == 0:
        raise ValueError(f"cost must be a non-empty (N, M) matrix, got shape {cost.shape}")
    _, wp = librosa.sequence.dtw(C=cost, backtrack=True)
    wp = wp[::-1]
    return wp[:, 0].astype(np.int64), wp[:, 1].astype(np.int64)


def _as_audio(x, name: str) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.ndim != 1 or a.shape[0] < 2 * HOP:
        raise ValueError(f"{name} must be 1-D 44.1 kHz audio of at least {2 * HOP} samples, got "
                         f"shape {a.shape}")
    return a


def _frame_pair(ref, est, n_mels):
    ref, est = _as_audio(ref, "reference"), _as_audio(est, "converted")
    return (np.asarray(log_mel(ref[None], n_mels))[0],
            np.asarray(log_mel(est[None], n_mels))[0])


def mel_distance(reference, converted, *, n_mels: int = 128, align: str = "frames"
                 ) -> dict[str, float]:
    """``{"mel_l1", "mel_l2"}``: mean |diff| and RMS diff of the log-mels of two clips.

    ``align="frames"`` compares the first ``min(T_ref, T_conv)`` frames one to one;
    ``"dtw"`` along the DTW path of the per-frame L1 distance.
    """
    _check_mels(n_mels)
    a, b = _frame_pair(reference, converted, n_mels)
    if align == "frames":
        t = min(len(a), len(b))
        a, b = a[:t], b[:t]
    elif align == "dtw":
        cost = np.mean(np.abs(a[:, None, :] - b[None, :, :]), axis=-1)
        i, j = dtw_path(cost)
        a, b = a[i], b[j]
    else:
        raise ValueError(f"align must be 'frames' or 'dtw', got {align!r}")
    d = a.astype(np.float64) - b
    return {"mel_l1": float(np.mean(np.abs(d))), "mel_l2": float(np.sqrt(np.mean(d * d)))}


def mcd(reference, converted, *, n_mels: int = 80, n_cepstra: int = N_CEPSTRA,
        align: str = "frames") -> float:
    """Mel-cepstral distortion (dB) between two 44.1 kHz clips (see the module docstring)."""
    _check_mels(n_mels)
    a, b = _frame_pair(reference, converted, n_mels)
    ca = np.asarray(mel_cepstra(a, n_cepstra), np.float64)
    cb = np.asarray(mel_cepstra(b, n_cepstra), np.float64)
    if align == "frames":
        t = min(len(ca), len(cb))
        return mcd_from_cepstra(ca[:t], cb[:t])
    if align == "dtw":
        cost = np.sqrt(np.maximum(np.sum(ca * ca, 1)[:, None] + np.sum(cb * cb, 1)[None, :]
                                  - 2.0 * ca @ cb.T, 0.0))
        i, j = dtw_path(cost)
        return mcd_from_cepstra(ca[i], cb[j])
    raise ValueError(f"align must be 'frames' or 'dtw', got {align!r}")


def spectral_metrics(reference, converted, lengths, *, n_mels: int = 128,
                     n_mels_mcd: int = 80, n_cepstra: int = N_CEPSTRA) -> dict[str, jax.Array]:
    """Frame-aligned spectral metrics of a zero-padded batch, one jitted call per shape.

    ``reference`` and ``converted`` ``(B, L)`` 44.1 kHz, ``lengths`` ``(B,)`` valid samples of
    each row (the same for both). Returns ``(B,)`` arrays ``mel_l1``, ``mel_l2`` (on the
    ``n_mels`` mel) and ``mcd`` (dB, cepstra of the ``n_mels_mcd`` mel), each over the row's
    ``lengths // 512`` frames: equal to :func:`mel_distance` / :func:`mcd` of the unpadded
    clips.
    """
    _check_mels(n_mels)
    _check_mels(n_mels_mcd)
    ref = jnp.asarray(reference, jnp.float32)
    est = jnp.asarray(converted, jnp.float32)
    if ref.shape != est.shape or ref.ndim != 2:
        raise ValueError(f"reference and converted must both be (B, L), got {ref.shape} and "
                         f"{est.shape}")
    lengths = np.asarray(lengths, np.int32).reshape(-1)
    if lengths.shape != (ref.shape[0],) or lengths.min() < 2 * HOP or lengths.max() > ref.shape[1]:
        raise ValueError(f"lengths must be {ref.shape[0]} values in [{2 * HOP}, {ref.shape[1]}],"
                         f" got {lengths.tolist()}")
    return _spectral_jit(ref, est, jnp.asarray(lengths), n_mels=n_mels, n_mels_mcd=n_mels_mcd,
                         n_cepstra=n_cepstra)


@functools.partial(jax.jit, static_argnames=("n_mels", "n_mels_mcd", "n_cepstra"))
def _spectral_jit(ref, est, lengths, *, n_mels, n_mels_mcd, n_cepstra):
    both = jnp.concatenate([ref, est], axis=0)
    lens2 = jnp.concatenate([lengths, lengths])
    b = ref.shape[0]
    t = ref.shape[1] // HOP
    mask = (jnp.arange(t)[None, :] < (lengths // HOP)[:, None]).astype(jnp.float32)
    count = jnp.sum(mask, axis=1)
    m = _log_mel(both, lens2, n_mels)
    d = (m[:b] - m[b:]) * mask[..., None]
    n = count * n_mels
    l1 = jnp.sum(jnp.abs(d), axis=(1, 2)) / n
    l2 = jnp.sqrt(jnp.sum(d * d, axis=(1, 2)) / n)
    mc = m if n_mels_mcd == n_mels else _log_mel(both, lens2, n_mels_mcd)
    c = mel_cepstra(mc, n_cepstra)
    per_frame = MCD_CONSTANT * jnp.sqrt(jnp.sum((c[:b] - c[b:]) ** 2, axis=-1))
    mcd_ = jnp.sum(per_frame * mask, axis=1) / count
    return {"mel_l1": l1, "mel_l2": l2, "mcd": mcd_}


# ----------------------------------------------------------------------------- pitch


def cents(f0, f0_ref) -> np.ndarray:
    """``1200 log2(f0 / f0_ref)`` (NaN where either is not positive)."""
    f0 = np.asarray(f0, np.float64)
    f0_ref = np.asarray(f0_ref, np.float64)
    ok = (f0 > 0) & (f0_ref > 0)
    out = np.full(np.broadcast(f0, f0_ref).shape, np.nan)
    np.divide(f0, f0_ref, out=out, where=ok)
    return np.where(ok, 1200.0 * np.log2(np.where(ok, out, 1.0)), np.nan)


def f0_metrics(f0_ref, f0_est, voiced_ref=None, voiced_est=None, *, mask=None,
               gpe_cents: float = GPE_CENTS) -> dict[str, float]:
    """Pitch accuracy of ``f0_est`` against ``f0_ref`` (both ``(T,)`` Hz on the same frames).

    Voicing: ``voiced_*`` (bool ``(T,)``) when given, else ``f0 > 0`` (F0 trackers in svcjax
    interpolate F0 through unvoiced frames and return ``uv`` separately: pass it).
    ``mask`` ``(T,)`` limits the frames compared (padding). Returns ``f0_rmse_cents`` (RMS
    cents error over frames voiced in both; NaN if none), ``gpe`` (share of those frames
    more than ``gpe_cents`` off), ``vuv_error`` (share of frames whose voicing decisions
    differ) and ``voiced_frames`` (how many frames the first two are over).
    """
    f0_ref = np.asarray(f0_ref, np.float64).reshape(-1)
    f0_est = np.asarray(f0_est, np.float64).reshape(-1)
    if f0_ref.shape != f0_est.shape:
        raise ValueError(f"f0 arrays must cover the same frames, got {f0_ref.shape} and "
                         f"{f0_est.shape}")
    vr = f0_ref > 0 if voiced_ref is None else np.asarray(voiced_ref, bool).reshape(-1)
    ve = f0_est > 0 if voiced_est is None else np.asarray(voiced_est, bool).reshape(-1)
    m = np.ones_like(vr) if mask is None else np.asarray(mask, bool).reshape(-1)
    if vr.shape != f0_ref.shape or ve.shape != f0_ref.shape or m.shape != f0_ref.shape:
        raise ValueError("voiced_ref, voiced_est and mask must have one value per frame")
    if not m.any():
        raise ValueError("no frames to compare (mask is all False)")
    both = vr & ve & m & (f0_ref > 0) & (f0_est > 0)
    n = int(both.sum())
    if n:
        err = cents(f0_est[both], f0_ref[both])
        rmse = float(np.sqrt(np.mean(err * err)))
        gpe = float(np.mean(np.abs(err) > gpe_cents))
    else:
        rmse = gpe = float("nan")
    return {"f0_rmse_cents": rmse, "gpe": gpe,
            "vuv_error": float(np.mean((vr != ve)[m])), "voiced_frames": n}


# ----------------------------------------------------------------------------- speed


def real_time_factor(processing_seconds: float, audio_seconds: float) -> float:
    """Seconds of processing per second of audio (< 1: faster than real time)."""
    if audio_seconds <= 0:
        raise ValueError(f"audio_seconds must be positive, got {audio_seconds}")
    return float(processing_seconds) / float(audio_seconds)


# ----------------------------------------------------------------------------- optional extras


OPTIONAL_METRICS = ("speaker_similarity", "dnsmos")


def require_extra(metric: str) -> None:
    """Raise :class:`MissingExtraError` (with its install line) when the packages of an
    optional metric (:data:`OPTIONAL_METRICS`) are not installed."""
    if metric == "speaker_similarity":
        _voice_encoder()
    elif metric == "dnsmos":
        try:
            import onnxruntime  # noqa: F401
            import speechmos  # noqa: F401
        except ImportError:
            raise MissingExtraError("DNSMOS", "speechmos and onnxruntime") from None
    else:
        raise ValueError(f"{metric!r} is not an optional metric; those are "
                         f"{', '.join(OPTIONAL_METRICS)}")


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    try:
        from resemblyzer import VoiceEncoder
    except ImportError:
        raise MissingExtraError("speaker similarity", "resemblyzer (GE2E weights ship in its "
                                "wheel)") from None
    return VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(audio, sr: int) -> np.ndarray:
    """Unit-norm 256-dim GE2E embedding of a clip (resemblyzer; resampled to 16 kHz)."""
    encoder = _voice_encoder()
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(audio, np.float32), source_sr=int(sr))
    if wav.size == 0:
        raise ValueError("no speech left in the clip after resemblyzer's silence trimming")
    return np.asarray(encoder.embed_utterance(wav), np.float32)


def speaker_similarity(audio, sr: int, reference) -> float:
    """Cosine similarity of a clip's speaker embedding with ``reference``.

    ``reference``: an embedding (``(256,)``, e.g. the mean of a target speaker's clips) or
    ``(audio, sr)`` of a clip by the target speaker.
    """
    e = speaker_embedding(audio, sr)
    if isinstance(reference, tuple):
        reference = speaker_embedding(*reference)
    r = np.asarray(reference, np.float64)
    return float(np.dot(e, r) / (np.linalg.norm(e) * np.linalg.norm(r) + 1e-12))


def dnsmos(audio, sr: int) -> dict[str, float]:
    """DNSMOS scores ``{"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}``.

    The audio is resampled to 16 kHz and peak-limited to [-1, 1]; clips shorter than the
    model's 9 s input are looped (speechmos).
    """
    try:
        from speechmos import dnsmos as _dnsmos
        import onnxruntime  # noqa: F401
    except ImportError:
        raise MissingExtraError("DNSMOS", "speechmos and onnxruntime") from None
    from svcjax.audio.io import resample_audio

    wav = resample_audio(np.asarray(audio, np.float32), int(sr), 16000)
    wav = np.clip(wav, -1.0, 1.0)
    r = _dnsmos.run(wav, 16000)
    return {"dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_sig": float(r["sig_mos"]),
            "dnsmos_bak": float(r["bak_mos"]), "dnsmos_p808": float(r["p808_mos"])}


def summarize(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None
              ) -> dict[str, float]:
    """Mean of each numeric metric over rows, with missing values counted, never NaN.

    A row's non-finite value (an F0 metric of a clip with no frame voiced in both signals)
    is left out of the mean and counted in ``{metric}_missing``; a metric no row has a value
    for is left out of the summary. Counts (keys ending in ``_missing``) are summed.
    """
    keys = keys or sorted({k for r in rows for k, v in r.items()
                           if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)})
    out: dict[str, float] = {}
    for k in keys:
        raw = np.asarray([float(r[k]) for r in rows if k in r and r[k] is not None], np.float64)
        vals = raw[np.isfinite(raw)]
        if k.endswith("_missing"):
            out[k] = out.get(k, 0.0) + float(vals.sum())
            continue
        if vals.size:
            out[k] = float(vals.mean())
        if raw.size > vals.size:
            out[f"{k}_missing"] = out.get(f"{k}_missing", 0.0) + float(raw.size - vals.size)
    return out
