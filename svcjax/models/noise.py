"""Random draws keyed by (example, frame), so they do not depend on padding or sharding.

A model's stochastic pieces (latent noise, sine-source noise and phases) draw through these
helpers from one key: example ``b`` uses ``fold_in(key, b)`` and its frame ``t``
``fold_in(fold_in(key, b), t)``. A clip therefore gets the same noise whether it is run alone,
padded to a longer length bucket, padded in the batch to the device count, or sharded over
devices.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ["per_frame_normal", "per_example_uniform", "per_example_keys"]


def per_example_keys(key: jax.Array, batch: int) -> jax.Array:
    return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))


def per_frame_normal(key: jax.Array, batch: int, frames: int, shape: Sequence[int],
                     dtype=jnp.float32) -> jax.Array:
    """Standard normal ``(batch, frames, *shape)``."""
    def frame(kb, t):
        return jax.random.normal(jax.random.fold_in(kb, t), tuple(shape), dtype)

    keys = per_example_keys(key, batch)
    return jax.vmap(lambda kb: jax.vmap(lambda t: frame(kb, t))(jnp.arange(frames)))(keys)


def per_example_uniform(key: jax.Array, batch: int, shape: Sequence[int] = (),
                        minval: float = 0.0, maxval: float = 1.0,
                        dtype=jnp.float32) -> jax.Array:
    """Uniform ``(batch, *shape)`` in ``[minval, maxval)``."""
    keys = per_example_keys(key, batch)
    return jax.vmap(lambda k: jax.random.uniform(k, tuple(shape), dtype, minval, maxval))(keys)
