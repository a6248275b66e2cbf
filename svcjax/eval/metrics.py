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
import os
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.audio import spectrogram

__all__ = [
    "MissingExtraError", "log_mel", "mel_cepstra", "mel_distance", "mcd", "mcd_from_cepstra",
    "spectral_metrics", "dtw_path", "cents", "f0_metrics", "real_time_factor",
    "speaker_similarity", "speaker_embedding", "dnsmos", "MCD_CONSTANT", "GPE_CENTS",
]

HOP = 512
SAMPLING_RATE = 44100
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


# ----------------------------------------------------------------------------- the runner
#
# run_evaluation: convert an evaluation set to target speakers under several settings and
# write the metric table (eval.py / `svcjax eval`).

EVAL_DIR = "eval"
METRICS_JSON = "metrics.json"       # flat {"metric": number}: the sweep launcher's contract
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class EvalClip:
    """One evaluation clip: ``name``, 44.1 kHz ``audio``, ``speaker`` label (or None)."""

    def __init__(self, name: str, audio: np.ndarray, speaker: str | None = None):
        self.name, self.audio, self.speaker = name, np.asarray(audio, np.float32), speaker

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLING_RATE


def load_eval_set(data, log=print) -> list[EvalClip]:
    """Clips from ``data.kind``: ``"folder"`` (``data.path``: audio files, or
    ``<speaker>/<files>`` whose folder names label the speakers) or ``"tfds"`` (the
    corpus builder's ``data.split`` under ``data.path``). ``data.max_clips`` > 0 keeps the
    first ones (sorted by name). Unreadable or silent files are skipped with a message."""
    from svcjax.audio import io

    kind = data.get("kind", "folder")
    path = os.fspath(data.get("path", "") or "")
    limit = int(data.get("max_clips", 0) or 0)
    clips: list[EvalClip] = []
    if kind == "folder":
        if not os.path.isdir(path):
            raise FileNotFoundError(f"evaluation folder not found: {path!r} (set "
                                    "--config.data.path)")
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(AUDIO_EXTENSIONS))
        if not files:
            raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {path!r}")
        for f in files:
            if limit and len(clips) >= limit:
                break
            rel = os.path.relpath(f, path)
            spk = rel.split(os.sep)[0] if os.sep in rel else None
            try:
                wav, _ = io.load_audio(f, sr=SAMPLING_RATE)
            except (io.AudioFileError, FileNotFoundError) as e:
                log(f"eval: skipped: {e}")
                continue
            if len(wav) < 4 * HOP:
                log(f"eval: skipped: {f!r} is shorter than {4 * HOP} samples at 44.1 kHz")
                continue
            clips.append(EvalClip(rel, wav, spk))
    elif kind == "tfds":
        clips = _load_tfds(path, data.get("split", "validation"), limit)
    else:
        raise ValueError(f"data.kind must be 'folder' or 'tfds', got {kind!r}")
    if not clips:
        raise ValueError(f"no usable clips in {path!r}")
    return clips


def _load_tfds(data_dir: str, split: str, limit: int) -> list[EvalClip]:
    """Clips of a corpus built by ``svcjax build-corpus`` (16-bit 44.1 kHz audio, speaker id,
    source name per example)."""
    try:
        from svcjax.data import corpus, input_pipeline
    except ImportError:
        raise ValueError("data.kind='tfds' needs the corpus builder (svcjax.data.corpus, "
                         "svcjax.data.input_pipeline)") from None
    names = list(corpus.load_metadata(data_dir).get("speakers", []))
    source = input_pipeline.data_source(data_dir, split)
    clips = []
    for i in range(len(source)):
        if limit and len(clips) >= limit:
            break
        ex = source[i]
        audio = np.asarray(ex["audio"])
        audio = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else \
            audio.astype(np.float32)
        spk = int(ex["speaker"]) if "speaker" in ex else None
        name = ex.get("source", f"{split}_{i}")
        name = name.decode() if isinstance(name, bytes) else str(name)
        clips.append(EvalClip(name, audio, names[spk] if spk is not None and spk < len(names)
                              else None))
    return clips


def settings_from_config(config, has_diffusion: bool) -> list[tuple[str, dict]]:
    """``[(name, ConvertOptions overrides)]``: SoVITS alone, then every diffusion
    ``k_step`` x ``method`` (at ``speedup``) when a diffusion model is given; each at every
    ``cluster_ratios`` with ``cluster_model`` (name suffix ``_cr<percent>`` when there are
    several; a sweep over single ratios keeps the names, so its columns line up)."""
    out = []
    if config.get("sovits_only", True):
        out.append(("sovits", dict(shallow_diffusion=False)))
    if has_diffusion:
        for k in config.diffusion_k:
            for m in config.samplers:
                sp = 1 if m == "ddpm" else int(config.speedup)
                tag = m.replace("+", "p")      # TensorBoard tags: dpm-solver++ -> dpm-solverpp
                out.append((f"diff_k{int(k)}_{tag}" + ("" if m == "ddpm" else f"_x{sp}"),
                            dict(shallow_diffusion=True, k_step=int(k),
                                 method="dpm-solver++" if m == "ddpm" else m, speedup=sp)))
    if not out:
        raise ValueError("nothing to evaluate: sovits_only is False and no diffusion model "
                         "(config.diffusion) or no diffusion_k/samplers")
    # timbre-leakage ablation: every setting at each cluster / retrieval ratio (0: none)
    ratios = [float(r) for r in config.get("cluster_ratios", (0.0,))]
    if any(ratios) and not config.get("cluster_model"):
        raise ValueError("cluster_ratios needs cluster_model (a cluster model or retrieval "
                         "index)")
    if ratios != [0.0]:
        out = [(name if len(ratios) == 1 else f"{name}_cr{round(r * 100)}",
                dict(ov, **(dict(cluster_model=config.cluster_model, cluster_ratio=r,
                                 cluster_search=config.get("cluster_search") or None)
                            if r else {})))
               for name, ov in out for r in ratios]
    return out


def _batched(clips_audio: Sequence[np.ndarray], max_batch: int):
    """Groups of indices with the same length bucket, at most ``max_batch`` each."""
    from svcjax.runtime import buckets

    order = sorted(range(len(clips_audio)), key=lambda i: len(clips_audio[i]))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(buckets.bucket_length(len(clips_audio[i]) // HOP), []).append(i)
    for bucket, idx in sorted(groups.items()):
        for s in range(0, len(idx), max_batch):
            yield bucket, idx[s:s + max_batch]


def _pad_rows(arrays: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    rows = 1 << (len(arrays) - 1).bit_length()
    out = np.zeros((rows, width), np.float32)
    lens = np.zeros(rows, np.int64)
    for i in range(rows):
        a = arrays[min(i, len(arrays) - 1)]
        n = (len(a) // HOP) * HOP
        out[i, :n] = a[:n]
        lens[i] = n
    return out, lens


def _f0_all(f0_fn, method, audios, batch, weights=None):
    res = [None] * len(audios)
    kw = {} if weights is None else {"weights": weights}
    for bucket, idx in _batched(audios, batch):
        x, lens = _pad_rows([audios[i] for i in idx], bucket * HOP)
        f0, uv = f0_fn(x, SAMPLING_RATE, method, lens, **kw)
        for j, i in enumerate(idx):
            t = len(audios[i]) // HOP
            res[i] = (np.asarray(f0)[j, :t], np.asarray(uv)[j, :t] > 0.5)
    return res


def _spectral_all(refs, ests, batch, n_mels, n_mels_mcd):
    res = [None] * len(refs)
    for bucket, idx in _batched(refs, batch):
        r, lens = _pad_rows([refs[i] for i in idx], bucket * HOP)
        e, _ = _pad_rows([ests[i] for i in idx], bucket * HOP)
        m = spectral_metrics(r, e, lens, n_mels=n_mels, n_mels_mcd=n_mels_mcd)
        m = {k: np.asarray(v) for k, v in m.items()}
        for j, i in enumerate(idx):
            res[i] = {k: float(v[j]) for k, v in m.items()}
    return res


_DIFFUSION_FIELDS = ("shallow_diffusion", "k_step", "method", "speedup")


def run_evaluation(config, workdir: str | os.PathLike, *, converter=None, clips=None,
                   log=print) -> dict[str, float]:
    """Convert the evaluation set under every setting and write the metric table.

    Writes ``WORKDIR/eval/``: ``metrics.json`` (flat ``{"<setting>/<metric>": mean,
    "<setting>/<speaker>/<metric>": mean, ...}``), ``metrics.csv`` (one row per setting and
    speaker), ``clips.csv`` (one row per converted clip) and TensorBoard event files under
    ``tensorboard/`` (the means as scalars at ``config.step``, ``config.audio_samples``
    converted clips per setting and speaker as audio, their vocoder mels as images).
    Returns the flat metrics.
    """
    from svcjax.runtime import converter as pipeline

    from svcjax.audio.f0 import prepare_f0

    workdir = os.fspath(workdir)
    out_dir = os.path.join(workdir, EVAL_DIR)
    # the F0 tracker (and its weights file, e.g. rmvpe.pt) is checked before anything is written
    f0_weights = prepare_f0(config.f0_method, config.get("f0_weights") or None)
    from svcjax.models.precision import check_compute_dtype
    compute_dtype = check_compute_dtype(config.get("compute_dtype", "float32"))
    os.makedirs(out_dir, exist_ok=True)
    wanted = set(config.metrics)
    unknown = wanted - {"mel", "mcd", "f0", "rtf", "speaker_similarity", "dnsmos"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: mel, mcd, f0, rtf, "
                         "speaker_similarity, dnsmos")
    if converter is None:
        converter = pipeline.Converter.from_paths(
            config.model or None, config.get("model_config") or None,
            encoder=config.encoder or None, diffusion=config.get("diffusion") or None,
            diffusion_config=config.get("diffusion_config") or None,
            vocoder=config.get("vocoder") or None)
    clips = clips if clips is not None else load_eval_set(config.data, log=log)
    audios = [c.audio for c in clips]
    total_seconds = sum(c.seconds for c in clips)
    speakers = list(config.speakers) or sorted(converter.speakers, key=converter.speakers.get)
    if not speakers:
        speakers = [0]
    settings = settings_from_config(config, converter.diffusion is not None)
    batch = int(config.batch_size)
    log(f"eval: {len(clips)} clips ({total_seconds:.1f} s) x {len(speakers)} speaker(s) x "
        f"{len(settings)} setting(s)")

    extras = {}
    for name in ("speaker_similarity", "dnsmos"):
        if name not in wanted:
            continue
        try:
            if name == "speaker_similarity":
                _voice_encoder()
            else:
                try:
                    import onnxruntime  # noqa: F401
                    import speechmos  # noqa: F401
                except ImportError:
                    raise MissingExtraError("DNSMOS", "speechmos and onnxruntime") from None
            extras[name] = True
        except MissingExtraError as e:
            log(f"eval: {e}")

    src_f0 = (_f0_all(converter.f0_fn, config.f0_method, audios, batch, f0_weights)
              if "f0" in wanted else None)
    targets = {}
    if extras.get("speaker_similarity"):
        for spk in speakers:
            own = [c for c in clips if c.speaker == str(spk)]
            if own:
                emb = np.mean([speaker_embedding(c.audio, SAMPLING_RATE) for c in own], axis=0)
                targets[str(spk)] = emb
            else:
                log(f"eval: speaker_similarity for {spk!r}: no evaluation clip labelled "
                    f"{spk!r} to take its voice from (skipped)")

    rows, table, samples = [], [], []
    transpose = float(config.transpose)

    def options(spk, overrides):
        return pipeline.ConvertOptions(
            speaker=spk, transpose=transpose, f0_method=config.f0_method,
            f0_weights=f0_weights, noise_scale=float(config.noise_scale),
            seed=None if config.seed is None or int(config.seed) < 0 else int(config.seed),
            batch_size=batch, slice_db=float(config.slice_db),
            pad_seconds=float(config.pad_seconds), compute_dtype=compute_dtype, **overrides)

    # Settings that differ only in diffusion (k, sampler, speedup, or none) are converted
    # together: each clip's F0, units and SoVITS output once per speaker, every diffusion
    # setting from them (Converter.convert_settings); their time is shared equally.
    converted: dict[tuple[str, str], tuple[list, float]] = {}
    for spk in speakers:
        groups: dict[str, list] = {}
        for sname, overrides in settings:
            shared = {k: v for k, v in overrides.items() if k not in _DIFFUSION_FIELDS}
            groups.setdefault(repr(sorted(shared.items())), []).append((sname, overrides))
        for members in groups.values():
            opts = [options(spk, ov) for _, ov in members]
            t0 = time.perf_counter()
            if hasattr(converter, "convert_settings"):
                outs_all = converter.convert_settings(audios, opts)
            else:
                outs_all = [converter.convert(audios, o, progress=bool(config.get(
                    "progress", False))) for o in opts]
            elapsed = (time.perf_counter() - t0) / len(members)
            for (sname, _), outs in zip(members, outs_all):
                converted[(sname, str(spk))] = (outs, elapsed)

    for sname, overrides in settings:
        for spk in speakers:
            outs, elapsed = converted[(sname, str(spk))]
            per_clip = [dict(setting=sname, speaker=str(spk), clip=c.name) for c in clips]
            if wanted & {"mel", "mcd"}:
                spec = _spectral_all(audios, outs, batch, int(config.n_mels),
                                     int(config.mcd_n_mels))
                for r, m in zip(per_clip, spec):
                    if "mel" in wanted:
                        r["mel_l1"], r["mel_l2"] = m["mel_l1"], m["mel_l2"]
                    if "mcd" in wanted:
                        r["mcd"] = m["mcd"]
            if src_f0 is not None:
                out_f0 = _f0_all(converter.f0_fn, config.f0_method, outs, batch, f0_weights)
                for r, (f0s, uvs), (f0o, uvo) in zip(per_clip, src_f0, out_f0):
                    r.update(f0_metrics(f0s * 2.0 ** (transpose / 12.0), f0o, uvs, uvo))
            if str(spk) in targets:
                for r, o in zip(per_clip, outs):
                    r["speaker_similarity"] = speaker_similarity(o, SAMPLING_RATE,
                                                                 targets[str(spk)])
            if extras.get("dnsmos"):
                for r, o in zip(per_clip, outs):
                    r.update(dnsmos(o, SAMPLING_RATE))
            summary = summarize(per_clip)
            summary.pop("voiced_frames", None)
            if "rtf" in wanted:
                summary["rtf"] = real_time_factor(elapsed, total_seconds)
            table.append(dict(setting=sname, speaker=str(spk), **summary))
            rows.extend(per_clip)
            for c, o in list(zip(clips, outs))[:int(config.audio_samples)]:
                samples.append((f"{sname}/{spk}/{c.name}", o))
            log(f"eval: {sname} -> {spk}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in summary.items() if not k.endswith("_missing")))
            for k, v in summary.items():
                if k.endswith("_missing"):
                    log(f"eval: {sname} -> {spk}: {k[:-len('_missing')]} missing for "
                        f"{int(v)} of {len(per_clip)} clip(s) (no frame voiced in both the "
                        f"source and the output)")

    flat: dict[str, float] = {}
    for t in table:
        for k, v in t.items():
            if k not in ("setting", "speaker"):
                flat[f"{t['setting']}/{t['speaker']}/{k}"] = v
    for sname, _ in settings:
        mine = [t for t in table if t["setting"] == sname]
        for k, v in summarize(mine).items():
            flat[f"{sname}/{k}"] = v
    _write_json_atomic(os.path.join(out_dir, METRICS_JSON), flat)
    _write_csv_atomic(os.path.join(out_dir, "metrics.csv"), table)
    _write_csv_atomic(os.path.join(out_dir, "clips.csv"), rows)
    _write_tensorboard(out_dir, int(config.get("step", 0)), flat, samples)
    return flat


def _write_json_atomic(path: str, obj: Any) -> None:
    import json

    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in obj.items()}, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _write_csv_atomic(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    import csv

    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _write_tensorboard(out_dir: str, step: int, flat: Mapping[str, float], samples) -> None:
    from svcjax.train.metric_writer import MetricWriter

    writer = MetricWriter(out_dir)
    try:
        writer.scalars(step, {f"eval/{k}": v for k, v in flat.items()
                              if isinstance(v, float) and math.isfinite(v)})
        for name, wav in samples:
            writer.audio(step, f"audio/{name}", wav, SAMPLING_RATE)
            if len(wav) >= 2 * HOP:
                mel = np.asarray(log_mel(np.asarray(wav, np.float32)[None], 128))[0]
                writer.image(step, f"mel/{name}", mel)
    finally:
        writer.close()


# ----------------------------------------------------------------------------- CLI


def load_config_file(spec: str):
    """``path/to/config.py[:arg]`` -> its ``get_config(arg)`` (as ``--config`` does)."""
    import importlib.util
    import sys

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    mod_spec = importlib.util.spec_from_file_location("_svcjax_eval_config", path)
    mod = importlib.util.module_from_spec(mod_spec)
    sys.path.insert(0, root)   # config files import configs.common
    try:
        mod_spec.loader.exec_module(mod)
    finally:
        sys.path.remove(root)
    return mod.get_config(arg or None)


def apply_overrides(config, overrides: Sequence[str]):
    """``["a.b=value", ...]`` onto a ConfigDict (values parsed as Python literals)."""
    import ast

    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq:
            raise ValueError(f"override {item!r} must be KEY=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node = config
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise ValueError(f"config has no field {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"config has no field {key!r}")
        old = node[parts[-1]]
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        node[parts[-1]] = value
    return config


def add_parser(subparsers):
    p = subparsers.add_parser(
        "eval", help="evaluate a model on a set of clips (metrics table, TensorBoard)",
        description="Convert an evaluation set with several settings and write "
                    "WORKDIR/eval/metrics.json, metrics.csv, clips.csv and TensorBoard files "
                    "(the same as `python eval.py`).")
    p.add_argument("--config", default="configs/eval.py",
                   help="config file[:variant] (default configs/eval.py)")
    p.add_argument("--workdir", required=True)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. model=G_800.pth diffusion_k=(20,100)")
    p.set_defaults(func=_run)
    return p


def _run(args) -> int:
    from svcjax.runtime import compilation_cache

    config = apply_overrides(load_config_file(args.config), args.overrides)
    compilation_cache.enable()
    metrics = run_evaluation(config, args.workdir)
    for k in sorted(metrics):
        if k.count("/") == 1:
            print(f"{k}\t{metrics[k]:.6g}")
    return 0
