"""The anti-aliased SnakeBeta activation of So-VITS-SVC's ``nsf-snake-hifigan`` decoder.

``vocoder_name: nsf-snake-hifigan`` (``vdecoder/hifiganwithsnake``) is the NSF-HiFiGAN
generator with every leaky ReLU replaced by :class:`SnakeAlias`, channels-last ``(B, T, C)``:

    x -> upsample x2 -> SnakeBeta -> low-pass and downsample x2        (length T again)

* SnakeBeta (log-scale parameters ``alpha``, ``beta`` per channel, zero at init):
  ``x + sin(x e^alpha)^2 / (e^beta + 1e-9)``.
* Both resamplers use one fixed 12-tap Kaiser-windowed sinc low-pass (cutoff 1/4 of the
  doubled rate, transition half-width 0.3, normalised to unit DC gain; :func:`kaiser_sinc`),
  the alias-free-torch design BigVGAN uses. Upsampling is a transposed convolution with
  stride 2 (gain 2) of the input replicate-padded by 5 frames each side, cropped to ``2T``;
  downsampling replicate-pads 5 / 6 samples and convolves with stride 2. The filters are
  not trained; the reference stores them as buffers (``upsample.filter``,
  ``downsample.lowpass.filter``) and the importer checks they are this design.

Both resamplers run as six shifted multiply-adds per output phase (polyphase), which XLA
fuses; no depthwise convolution is compiled.

Masks: the reference pads with the clip's edge values, not zeros. Given a frame mask, every
value past a clip's end is replaced by its last valid value before upsampling, and again at
the doubled rate before downsampling; that is exactly the replicate padding of the clip
alone, so a clip padded into a longer bucket gives the same valid outputs.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["SnakeBeta", "SnakeAlias", "kaiser_sinc", "FILTER", "upsample2", "downsample2",
           "hold_last"]

KERNEL_SIZE = 12
RATIO = 2


@functools.lru_cache(maxsize=None)
def kaiser_sinc(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
    """Kaiser-windowed sinc low-pass ``(kernel_size,)`` float32, unit DC gain.

    ``cutoff`` and ``half_width`` are fractions of the sample rate; the Kaiser ``beta`` follows
    from the attenuation ``A = 2.285 (K/2 - 1) pi 4 half_width + 7.95`` dB (Kaiser's formula).
    An even ``kernel_size`` centres the taps between samples (at ``n + 1/2``).
    """
    half = kernel_size // 2
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    n = np.arange(-half, half) + 0.5 if kernel_size % 2 == 0 else np.arange(kernel_size) - half
    h = 2 * cutoff * np.kaiser(kernel_size, beta) * np.sinc(2 * cutoff * n)
    h = h / h.sum()
    h = h.astype(np.float32)
    h.setflags(write=False)
    return h


# The one filter both resamplers use (ratio 2: cutoff 0.5 / 2, half-width 0.6 / 2).
FILTER = kaiser_sinc(0.5 / RATIO, 0.6 / RATIO, KERNEL_SIZE)


def hold_last(x: Array, m: Array | None) -> Array:
    """``x`` ``(B, T, C)`` with every frame where ``m`` ``(B, T, 1)`` is 0 (a clip's tail)
    replaced by the clip's last valid frame; ``m`` None: ``x`` unchanged."""
    if m is None:
        return x
    n = jnp.sum(m, axis=1, dtype=jnp.int32)                      # (B, 1) valid frames
    last = jnp.take_along_axis(x, jnp.maximum(n - 1, 0)[:, :, None], axis=1)  # (B, 1, C)
    return jnp.where(m > 0, x, last)


def upsample2(x: Array, h: np.ndarray = FILTER) -> Array:
    """``(B, T, C) -> (B, 2T, C)``: ``2 * conv_transpose(replicate_pad(x, 5), h, stride 2)``
    cropped by 15 samples each side, as its two output phases."""
    k = len(h)
    pad = k // RATIO - 1                                        # 5
    t = x.shape[1]
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)), mode="edge")  # xp[j] = x[clip(j - 5)]
    h = np.asarray(h, np.float64) * RATIO
    # out[2p + r] = sum_d x[p - d] h[2d + 5 + r], over the taps h[0..11] of each phase r
    phases = []
    for r in range(RATIO):
        acc = None
        for d in range(-((pad + r) // RATIO), (k - pad - r + 1) // RATIO):
            tap = 2 * d + pad + r
            if not 0 <= tap < k:
                continue
            term = xp[:, pad - d:pad - d + t] * jnp.asarray(h[tap], x.dtype)
            acc = term if acc is None else acc + term
        phases.append(acc)
    return jnp.stack(phases, axis=2).reshape(x.shape[0], RATIO * t, x.shape[2])


def downsample2(y: Array, h: np.ndarray = FILTER) -> Array:
    """``(B, 2T, C) -> (B, T, C)``: ``conv(replicate_pad(y, 5, 6), h, stride 2)``."""
    k = len(h)
    left, right = k // 2 - (1 - k % 2), k // 2                  # 5, 6
    n_out = (y.shape[1] + left + right - k) // RATIO + 1
    yp = jnp.pad(y, ((0, 0), (left, right), (0, 0)), mode="edge")
    acc = None
    for i in range(k):
        term = yp[:, i:i + RATIO * (n_out - 1) + 1:RATIO] * jnp.asarray(float(h[i]), y.dtype)
        acc = term if acc is None else acc + term
    return acc


class SnakeBeta(nn.Module):
    """``x + sin(x e^alpha)^2 / (e^beta + 1e-9)``, per-channel log-scale ``alpha``, ``beta``."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        alpha = self.param("alpha", nn.initializers.zeros, (self.features,), jnp.float32)
        beta = self.param("beta", nn.initializers.zeros, (self.features,), jnp.float32)
        a = jnp.exp(alpha).astype(x.dtype)
        inv_b = (1.0 / (jnp.exp(beta) + 1e-9)).astype(x.dtype)
        return x + inv_b * jnp.square(jnp.sin(x * a))


class SnakeAlias(nn.Module):
    """Upsample x2, SnakeBeta (submodule ``act``), downsample x2; ``m`` ``(B, T, 1)`` frame
    mask at ``x``'s rate or None (module docstring: the replicate padding per clip)."""

    channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, m: Array | None = None) -> Array:
        if x.shape[-1] != self.channels:
            raise ValueError(f"SnakeAlias({self.channels}) got {x.shape[-1]} channels")
        if self.dtype is not None:
            x = x.astype(self.dtype)
        y = SnakeBeta(self.channels, name="act")(upsample2(hold_last(x, m)))
        if m is not None:
            y = hold_last(y, jnp.repeat(m, RATIO, axis=1))
        return downsample2(y)
