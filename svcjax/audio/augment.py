"""The reference's training-time audio augmentations: random loudness and key shift draws.

* Loudness (``vol_aug`` in the generator's data loader, and the diffusion ``aug_vol`` /
  ``aug_mel`` preprocessing): the clip is scaled by ``10^u``, ``u ~ U(-1, m)`` with
  ``m = min(1, log10(1 / (max|x| + 1e-5)))``, so it never clips; spectrogram and volume are
  recomputed from (or, for volume, scaled with) the scaled clip.
* Key shift (diffusion ``aug_mel``): ``k ~ U(-5, 5)`` semitones; the mel is taken with
  :func:`svcjax.audio.spectrogram.vocoder_mel` ``(keyshift=k)`` and F0 is scaled by
  ``2^(k/12)``.

``rng=None`` draws zeros (gain 1, shift 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["random_gain", "random_keyshift"]


def random_gain(rng: jax.Array | None, audio: jax.Array) -> jax.Array:
    """Per-row loudness factor ``(...,)`` for ``(..., L)`` audio (multiply ``audio`` by it)."""
    x = jnp.asarray(audio, jnp.float32)
    if rng is None:
        return jnp.ones(x.shape[:-1], jnp.float32)
    peak = jnp.max(jnp.abs(x), axis=-1) + 1e-5
    high = jnp.minimum(1.0, jnp.log10(1.0 / peak))
    u = jax.random.uniform(rng, x.shape[:-1], jnp.float32)
    return jnp.power(10.0, -1.0 + u * (high + 1.0))


def random_keyshift(rng: jax.Array | None, shape=(), max_semitones: float = 5.0) -> jax.Array:
    """Key shifts ``~ U(-max_semitones, max_semitones)`` of ``shape`` (float32)."""
    if rng is None:
        return jnp.zeros(shape, jnp.float32)
    return jax.random.uniform(rng, shape, jnp.float32, -max_semitones, max_semitones)
