"""Per-frame features besides spectrograms and F0: volume, frame alignment, loudness envelope.

All device functions are jit-compiled and batched; audio is ``(..., L)`` float, per-frame
scalars come back ``(..., T)`` (like F0), per-frame vectors ``(..., T, C)``.

* :func:`volume`: RMS of each hop (``utils.Volume_Extractor`` of 4.1-Stable): the volume
  embedding's input and the diffusion model's volume condition.
* :func:`align_frames`: stretch a frame sequence to a target frame count
  (``utils.repeat_expand_2d``): content units at 50 Hz onto the 86.13 Hz F0 frames.
* :func:`mix_loudness_envelope`: move the converted audio's half-second loudness envelope
  towards the source's (``utils.change_rms``, the ``loudness_envelope_adjustment`` option).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.audio.constants import HOP

__all__ = ["volume", "align_frames", "mix_loudness_envelope", "frame_rms"]

ALIGN_MODES = ("left", "nearest", "linear")


def volume(audio: jax.Array, hop_length: int = HOP) -> jax.Array:
    """Volume ``(..., L) -> (..., L // hop)``: ``sqrt(mean(x^2))`` over each hop.

    As 4.1-Stable's ``Volume_Extractor``: the squared signal is reflect-padded by ``hop // 2``
    on the left, so frame ``t`` averages samples ``[t * hop - hop // 2, (t + 1) * hop -
    hop // 2)`` (the first frame mirrors the clip's start). The right padding is never
    reached, so a zero-padded row gives exactly its unpadded frames (mask the rest). A clip
    shorter than one hop gives no frames.
    """
    shape = jnp.shape(audio)
    if len(shape) == 0:
        raise ValueError("audio must have a time axis, got a scalar")
    return _volume_jit(audio, hop_length=int(hop_length))


@functools.partial(jax.jit, static_argnames=("hop_length",))
def _volume_jit(audio, *, hop_length):
    x = jnp.asarray(audio, jnp.float32)
    t = x.shape[-1] // hop_length
    if t == 0:
        return jnp.zeros(x.shape[:-1] + (0,), jnp.float32)
    half = hop_length // 2
    left = jnp.flip(x[..., 1:half + 1], axis=-1)
    body = jnp.concatenate([left, x], axis=-1)[..., :t * hop_length]
    frames = body.reshape(x.shape[:-1] + (t, hop_length))
    return jnp.sqrt(jnp.mean(frames * frames, axis=-1))


# ----------------------------------------------------------------------------- alignment


@functools.lru_cache(maxsize=256)
def align_table(src: int, target: int, mode: str):
    """Host-side gather table ``(i0, i1, w1)``: ``out[t] = (1-w1) x[i0[t]] + w1 x[i1[t]]``.

    Indices follow PyTorch's float32 arithmetic exactly (the reference's behaviour at
    rounding boundaries is part of what checkpoints were trained on).
    """
    f32 = np.float32
    t = np.arange(target)
    if mode == "left":
        # repeat_expand_2d_left: walk the source, stepping on once the target index passes
        # the next boundary j * target / src (float32); at most one step per target frame.
        bounds = (np.arange(src + 1, dtype=np.int64) * target).astype(f32) / f32(src)
        i0 = np.empty(target, np.int64)
        pos = 0
        for i in range(target):
            if not f32(i) < bounds[pos + 1]:
                pos += 1
            i0[i] = pos
        if i0.size and i0.max() >= src:
            raise ValueError(f"'left' alignment of {src} frames to {target} runs past the "
                             f"source, as the reference's loop would")
        return i0, i0, np.zeros(target, f32)
    scale = f32(src) / f32(target)
    if mode == "nearest":
        if target == src:
            i0 = t
        elif target == 2 * src:
            i0 = t >> 1
        else:
            i0 = np.minimum(np.floor(t.astype(f32) * scale).astype(np.int64), src - 1)
        return i0, i0, np.zeros(target, f32)
    # PyTorch's kernel fuses scale * (t + 0.5) - 0.5 into one FMA (a single rounding):
    # the float32 product is exact in float64, so rounding once from there reproduces it.
    pos = (np.float64(scale) * (t.astype(f32) + f32(0.5)).astype(np.float64) - 0.5).astype(f32)
    pos = np.maximum(pos, f32(0))
    i0 = pos.astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (pos - i0.astype(f32)).astype(f32)


def align_frames(x: jax.Array, target_len: int, mode: str = "left") -> jax.Array:
    """Stretch ``x`` ``(..., T_src, C)`` to ``(..., target_len, C)`` along the frame axis.

    ``mode`` as the reference's ``unit_interpolate_mode``: ``"left"`` (the default of
    ``repeat_expand_2d``: source frame ``j`` covers target frames up to ``(j + 1) *
    target / src``), ``"nearest"`` or ``"linear"`` (``F.interpolate`` with
    ``align_corners=False``). The 4.1 config templates use ``"nearest"``.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; expected one of {ALIGN_MODES}")
    shape = jnp.shape(x)
    if len(shape) < 2 or shape[-2] == 0:
        raise ValueError(f"x must be (..., frames, channels) with at least one frame, got "
                         f"shape {shape}")
    if int(target_len) < 0:
        raise ValueError(f"target_len must be >= 0, got {target_len}")
    return _align_jit(x, target_len=int(target_len), mode=mode)


@functools.partial(jax.jit, static_argnames=("target_len", "mode"))
def _align_jit(x, *, target_len, mode):
    i0, i1, w1 = align_table(x.shape[-2], target_len, mode)
    a = jnp.take(x, jnp.asarray(i0, jnp.int32), axis=-2)
    if mode != "linear":
        return a
    b = jnp.take(x, jnp.asarray(i1, jnp.int32), axis=-2)
    w1 = jnp.asarray(w1)[:, None]
    return (1.0 - w1) * a + w1 * b


# ----------------------------------------------------------------------------- loudness


def frame_rms(audio: jax.Array, hop_length: int, lengths: jax.Array | None = None
              ) -> jax.Array:
    """Centred RMS with frames of ``2 * hop`` every ``hop`` (``librosa.feature.rms``).

    ``(..., L) -> (..., 1 + L // hop)``; the clip is zero-padded by ``hop`` each side (as
    librosa's ``center=True, pad_mode="constant"``), so a zero-padded row gives its unpadded
    frames; with ``lengths`` the frames past ``1 + lengths // hop`` are zeroed.
    """
    return _frame_rms(jnp.asarray(audio, jnp.float32), int(hop_length), lengths)


def _frame_rms(x, hop, lengths):
    n = x.shape[-1]
    f = 1 + n // hop
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(hop, (f + 1) * hop - n - hop)])
    blocks = padded.reshape(x.shape[:-1] + (f + 1, hop))
    energy = jnp.sum(blocks * blocks, axis=-1)
    rms = jnp.sqrt((energy[..., :-1] + energy[..., 1:]) / (2 * hop))
    if lengths is not None:
        valid = 1 + jnp.asarray(lengths, jnp.int32)[..., None] // hop
        rms = jnp.where(jnp.arange(f) < valid, rms, 0.0)
    return rms


def _interp_linear(v, n_valid, out_len, out_valid):
    """``F.interpolate(v, size=out_valid, mode="linear")`` per row, float32 like PyTorch.

    ``v`` ``(B, F)`` with ``n_valid`` (B,) frames used; output ``(B, out_len)``, zero past
    ``out_valid``.
    """
    scale = n_valid.astype(jnp.float32) / out_valid.astype(jnp.float32)
    dst = jnp.arange(out_len, dtype=jnp.int32)[None, :].astype(jnp.float32)
    pos = jnp.maximum(scale[:, None] * (dst + 0.5) - 0.5, 0.0)
    i0 = pos.astype(jnp.int32)
    i1 = jnp.where(i0 < n_valid[:, None] - 1, i0 + 1, i0)
    w1 = pos - i0.astype(jnp.float32)
    i0 = jnp.clip(i0, 0, v.shape[-1] - 1)
    i1 = jnp.clip(i1, 0, v.shape[-1] - 1)
    out = (1.0 - w1) * jnp.take_along_axis(v, i0, -1) + w1 * jnp.take_along_axis(v, i1, -1)
    return jnp.where(jnp.arange(out_len)[None, :] < out_valid[:, None], out, 0.0)


def mix_loudness_envelope(source: jax.Array, source_sr: int, converted: jax.Array,
                          converted_sr: int, rate: float | jax.Array, *,
                          source_lengths: jax.Array | None = None,
                          converted_lengths: jax.Array | None = None) -> jax.Array:
    """Blend the converted audio's loudness envelope with the source's (``change_rms``).

    Both signals' RMS is taken over 1 s frames every half second (:func:`frame_rms` with
    ``hop = sr // 2``), linearly interpolated to every sample of ``converted``, and
    ``converted * rms_src^(1 - rate) * max(rms_conv, 1e-6)^(rate - 1)`` is returned: ``rate``
    1 keeps the converted envelope, 0 imposes the source's. ``source`` ``(B, L1)`` and
    ``converted`` ``(B, L2)`` (or both 1-D); ``*_lengths`` give each row's valid samples of a
    zero-padded batch (outputs past a row's length are zero).
    """
    src = jnp.asarray(source)
    conv = jnp.asarray(converted)
    if src.ndim != conv.ndim or src.ndim not in (1, 2) or src.shape[:-1] != conv.shape[:-1]:
        raise ValueError(f"source and converted must both be (L,) or (B, L) with the same B, "
                         f"got {src.shape} and {conv.shape}")
    if min(src.shape[-1], conv.shape[-1]) == 0:
        raise ValueError("source and converted audio must not be empty")
    single = src.ndim == 1
    if single:
        src, conv = src[None], conv[None]
    out = _mix_jit(src, conv, jnp.asarray(rate, jnp.float32), source_lengths,
                   converted_lengths, source_hop=int(source_sr) // 2,
                   converted_hop=int(converted_sr) // 2)
    return out[0] if single else out


@functools.partial(jax.jit, static_argnames=("source_hop", "converted_hop"))
def _mix_jit(src, conv, rate, src_len, conv_len, *, source_hop, converted_hop):
    b = src.shape[0]
    src_len = (jnp.full((b,), src.shape[-1], jnp.int32) if src_len is None
               else jnp.asarray(src_len, jnp.int32))
    conv_len = (jnp.full((b,), conv.shape[-1], jnp.int32) if conv_len is None
                else jnp.asarray(conv_len, jnp.int32))
    conv = conv.astype(jnp.float32)
    r1 = _frame_rms(src.astype(jnp.float32), source_hop, None)
    r2 = _frame_rms(conv, converted_hop, None)
    n = conv.shape[-1]
    r1 = _interp_linear(r1, 1 + src_len // source_hop, n, conv_len)
    r2 = _interp_linear(r2, 1 + conv_len // converted_hop, n, conv_len)
    r2 = jnp.maximum(r2, 1e-6)
    return conv * jnp.power(r1, 1.0 - rate) * jnp.power(r2, rate - 1.0)
