"""F0 encodings the generator consumes: coarse bins, log-F0, and the F0 decoder's normalisation.

All functions are jit-able and work on any leading shape (``(B, T)`` usually).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

F0_BIN = 256
F0_MIN = 50.0
F0_MAX = 1100.0
F0_MEL_MIN = 1127.0 * math.log(1.0 + F0_MIN / 700.0)
F0_MEL_MAX = 1127.0 * math.log(1.0 + F0_MAX / 700.0)

__all__ = ["f0_to_coarse", "f0_to_lf0", "lf0_to_f0", "normalize_lf0", "F0_BIN", "F0_MIN", "F0_MAX"]


def f0_to_coarse(f0: jax.Array) -> jax.Array:
    """Quantise F0 (Hz) into the 256 pitch-embedding bins exactly as So-VITS-SVC 4.1 does.

    Mel-scaled ``1127 ln(1 + f/700)``, mapped linearly so 50 Hz -> 1 and 1100 Hz -> 255,
    rounded half-to-even; unvoiced (0 Hz) -> 1. Like the reference, a pitch that rounds to bin
    256 or above (about 1105 Hz and up) lands in bin 0, not 255: the reference's clamp zeroes
    such values before its upper clip can see them, and models trained with it learned bin 0.
    """
    f0 = jnp.asarray(f0, jnp.float32)
    f0_mel = 1127.0 * jnp.log(1.0 + f0 / 700.0)
    a = (F0_BIN - 2) / (F0_MEL_MAX - F0_MEL_MIN)
    b = F0_MEL_MIN * a - 1.0
    f0_mel = jnp.where(f0_mel > 0, f0_mel * a - b, f0_mel)
    coarse = jnp.round(f0_mel).astype(jnp.int32)
    coarse = coarse * (coarse > 0)
    coarse = coarse + (coarse < 1)
    coarse = coarse * (coarse < F0_BIN)
    coarse = coarse + (coarse >= F0_BIN) * (F0_BIN - 1)
    return coarse


def f0_to_lf0(f0: jax.Array) -> jax.Array:
    """The F0 decoder's target: ``2595 log10(1 + f0/700) / 500`` (mel / 500)."""
    return 2595.0 * jnp.log10(1.0 + jnp.asarray(f0, jnp.float32) / 700.0) / 500.0


def lf0_to_f0(lf0: jax.Array) -> jax.Array:
    """Inverse of :func:`f0_to_lf0`: ``700 (10^(lf0 * 500 / 2595) - 1)``."""
    return 700.0 * (jnp.power(10.0, lf0 * 500.0 / 2595.0) - 1.0)


def normalize_lf0(lf0: jax.Array, mask: jax.Array, uv: jax.Array,
                  rng: jax.Array | None = None) -> jax.Array:
    """Centre log-F0 on its voiced mean, as the reference's ``normalize_f0``.

    ``lf0``, ``mask`` and ``uv`` are ``(B, T)``. The mean is over voiced frames (``uv``); a clip
    with none uses the reference's divisor 9999. With ``rng`` the centred curve is scaled by a
    per-utterance factor ~ U(0.8, 1.2) (training augmentation); with ``rng=None`` by 1
    (inference).
    """
    uv = uv.astype(lf0.dtype)
    uv_sum = jnp.sum(uv, axis=-1, keepdims=True)
    uv_sum = jnp.where(uv_sum == 0, 9999.0, uv_sum)
    mean = jnp.sum(lf0 * uv, axis=-1, keepdims=True) / uv_sum
    if rng is None:
        factor = jnp.ones_like(mean)
    else:
        factor = jax.random.uniform(rng, mean.shape, lf0.dtype, 0.8, 1.2)
    return (lf0 - mean) * factor * mask
