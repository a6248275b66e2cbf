"""The Gaussian diffusion of the shallow-diffusion model: schedule, mel scaling, forward noising.

Linear betas from 1e-4 to ``max_beta`` (0.02) over ``timesteps`` (1000) steps; every derived
table is computed in float64 and stored in float32, as the reference's registered buffers
are. Mels are scaled to [-1, 1] with ``(x - spec_min) / (spec_max - spec_min) * 2 - 1``
(``spec_min`` -12, ``spec_max`` 2: scalars, stored by the reference as ``(1, 1, 1)`` buffers).

``k_step_max`` is the number of steps a model was trained on: ``t ~ U{0 .. k_step_max-1}``;
0 (or anything outside ``(0, timesteps)``) means all ``timesteps``. A model trained on fewer
steps can only refine a given mel (shallow diffusion) with ``k <= k_step_max``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["Schedule", "masked_loss", "check_k_step"]


def check_k_step(k_step: Any = None, *, timesteps: int | None = None,
                 k_step_max: int | None = None, where: str = "") -> int | None:
    """The one check of the diffusion depths, one sentence for the first thing wrong:

    * ``k_step_max`` (what a model was trained on; 0 = all steps) in ``[0, timesteps]``;
    * ``k_step`` (how deep a shallow diffusion starts) an integer ``>= 1``, at most
      ``timesteps``, and at most the model's effective ``k_step_max``.

    Only the given values are checked (``where`` prefixes the ``k_step_max`` message, e.g.
    the config file). Returns ``int(k_step)`` (None when not given)."""
    if k_step_max is not None and timesteps is not None:
        if not 0 <= int(k_step_max) <= int(timesteps):
            raise ValueError(f"{where}model.k_step_max={k_step_max} must be in "
                             f"[0, timesteps={timesteps}]")
    if k_step is None:
        return None
    try:
        k = int(k_step)
    except (TypeError, ValueError):
        k = None
    if k is None or (isinstance(k_step, float) and k != k_step):
        raise ValueError(f"k_step must be a whole number of steps, got {k_step!r}")
    if k < 1:
        raise ValueError(f"k_step must be >= 1, got {k}")
    if timesteps is not None and k > int(timesteps):
        raise ValueError(f"k_step must be in [1, {timesteps}], got {k}")
    if k_step_max is not None:
        trained = int(k_step_max)
        if timesteps is not None and not 0 < trained < int(timesteps):
            trained = int(timesteps)
        if 0 < trained < k:
            raise ValueError(f"the shallow diffusion k_step={k} is greater than this model's "
                             f"k_step_max={trained}")
    return k


@dataclasses.dataclass(frozen=True)
class Schedule:
    timesteps: int = 1000
    max_beta: float = 0.02
    spec_min: float = -12.0
    spec_max: float = 2.0
    k_step_max: int = 0

    @classmethod
    def from_config(cls, config: Any) -> "Schedule":
        m = config.model
        return cls(timesteps=int(m.timesteps or 1000), max_beta=float(m.get("max_beta", 0.02)),
                   spec_min=float(m.get("spec_min", -12.0)), spec_max=float(m.get("spec_max", 2.0)),
                   k_step_max=int(m.k_step_max or 0))

    def effective_k_step_max(self, k_step_max: int | None = None) -> int:
        """Steps the model was trained on (``k_step_max``, or all steps for 0)."""
        k = self.k_step_max if k_step_max is None else int(k_step_max)
        return k if 0 < k < self.timesteps else self.timesteps

    @property
    def shallow_only(self) -> bool:
        """True when the model never saw the noisiest steps (it cannot start from noise)."""
        return self.effective_k_step_max() != self.timesteps

    # -- tables (float64 -> float32, like the reference's buffers) --------------------------

    @functools.cached_property
    def _tables(self) -> dict[str, np.ndarray]:
        betas = np.linspace(1e-4, self.max_beta, self.timesteps)
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        t = dict(
            betas=betas,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            sqrt_alphas_cumprod=np.sqrt(ac),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
            log_one_minus_alphas_cumprod=np.log(1.0 - ac),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1),
            posterior_variance=post_var,
            posterior_log_variance_clipped=np.log(np.maximum(post_var, 1e-20)),
            posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
            posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        )
        out = {k: v.astype(np.float32) for k, v in t.items()}
        for v in out.values():
            v.setflags(write=False)
        return out

    def table(self, name: str) -> np.ndarray:
        """One of the reference's ``decoder.<name>`` buffers, float32 ``(timesteps,)``."""
        return self._tables[name]

    @property
    def betas(self) -> np.ndarray:
        return self._tables["betas"]

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return self._tables["alphas_cumprod"]

    # -- mel scaling and forward noising ----------------------------------------------------

    def norm_spec(self, mel: Array) -> Array:
        return (mel - self.spec_min) / (self.spec_max - self.spec_min) * 2 - 1

    def denorm_spec(self, x: Array) -> Array:
        return (x + 1) / 2 * (self.spec_max - self.spec_min) + self.spec_min

    def q_sample(self, x0: Array, t: Array | int, noise: Array) -> Array:
        """``x_t = sqrt(ac_t) x0 + sqrt(1 - ac_t) noise``; ``t`` a step per example or one."""
        t = jnp.asarray(t, jnp.int32)
        a = jnp.asarray(self._tables["sqrt_alphas_cumprod"])[t]
        s = jnp.asarray(self._tables["sqrt_one_minus_alphas_cumprod"])[t]
        if t.ndim:
            a = a.reshape((-1,) + (1,) * (x0.ndim - 1))
            s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
        return a * x0 + s * noise


def masked_loss(pred: Array, target: Array, mask: Array | None, loss_type: str = "l2") -> Array:
    """Mean squared (``l2``) or absolute (``l1``) error over the valid frames ``(B, T, M)``."""
    if loss_type == "l2":
        err = jnp.square(target - pred)
    elif loss_type == "l1":
        err = jnp.abs(target - pred)
    else:
        raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    if mask is None:
        return jnp.mean(err)
    mask = mask.reshape(mask.shape[0], -1, 1).astype(err.dtype)
    return jnp.sum(err * mask) / (jnp.sum(mask) * err.shape[-1])
