"""Unit2Mel: the shallow-diffusion score network (conditioning + WaveNet denoiser).

The model predicts the noise ``eps`` in a normalised 128-bin mel spectrogram ``x_t`` at
diffusion step ``t``, conditioned on the content units, F0, volume, speaker and (optionally)
the key shift used for pitch augmentation::

    cond = unit_embed(units) + f0_embed(ln(1 + f0/700)) + volume_embed(volume)
           [+ speaker mix @ spk_embed]            (n_spk > 1)
           [+ aug_shift_embed(keyshift / 5)]      (use_pitch_aug, no bias)

    eps = WaveNet(x_t, t, cond): 1x1 input projection + ReLU; n_layers residual blocks
          (k3 conv of x + step projection, plus a 1x1 projection of cond, gated
          tanh*sigmoid, 1x1 to residual and skip, residual (x + r)/sqrt 2); skips summed
          / sqrt(n_layers); 1x1 + ReLU; 1x1 output projection (zero-initialised).

The step ``t`` enters through a sinusoidal embedding (``n_chans`` wide) and an MLP
``n_chans -> 4 n_chans (Mish) -> n_chans``. ``t`` may be fractional (DPM-Solver and UniPC
evaluate the model between the integer steps).

Everything is channels-last: units ``(B, T, C)``, f0/volume ``(B, T)``, mel ``(B, T, M)``.
Submodules carry the reference's attribute names, so a checkpoint maps by
:mod:`svcjax.interop.torch_params`'s rules (``decoder.denoise_fn.`` becomes ``denoise_fn/``).

Frame masks: the only layers that mix neighbouring frames are the k3 convolutions in the
residual blocks; their input is zeroed on padded frames, so a padded batch gives exactly the
valid frames the unpadded one gives.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from svcjax.models.diffusion import gaussian as gaussian_diffusion
from svcjax.models.layers import Conv1d, Linear

Array = jax.Array

__all__ = ["Unit2Mel", "WaveNet", "ResidualBlock", "step_embedding", "build_model",
           "model_kwargs", "training_loss"]

# torch.nn.init.kaiming_normal_ (fan_in, gain sqrt 2, untruncated) - the reference's Conv1d
_kaiming = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def step_embedding(t: Array, dim: int) -> Array:
    """Sinusoidal embedding of the (possibly fractional) step ``t`` ``(B,)`` -> ``(B, dim)``.

    ``[sin(t w_i), cos(t w_i)]`` with ``w_i = exp(-i ln(10000) / (dim/2 - 1))``.
    """
    half = dim // 2
    scale = jnp.float32(-math.log(10000) / (half - 1))
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * scale)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def _mish(x: Array) -> Array:
    return x * jnp.tanh(jax.nn.softplus(x))


class ResidualBlock(nn.Module):
    """One gated residual layer; ``cond_proj`` is this layer's precomputed condition."""

    n_chans: int
    dilation: int = 1

    def setup(self):
        c = self.n_chans
        self.dilated_conv = Conv1d(2 * c, 3, padding=self.dilation, dilation=self.dilation)
        self.diffusion_projection = Linear(c)
        self.conditioner_projection = Conv1d(2 * c, 1)
        self.output_projection = Conv1d(2 * c, 1)

    def project_condition(self, cond: Array) -> Array:
        return self.conditioner_projection(cond)

    def __call__(self, x: Array, cond_proj: Array, step: Array,
                 mask: Array | None) -> tuple[Array, Array]:
        y = x + self.diffusion_projection(step)[:, None, :]
        if mask is not None:
            y = y * mask
        y = self.dilated_conv(y) + cond_proj
        gate, filt = jnp.split(y, 2, axis=-1)
        y = jax.nn.sigmoid(gate) * jnp.tanh(filt)
        y = self.output_projection(y)
        residual, skip = jnp.split(y, 2, axis=-1)
        return (x + residual) / math.sqrt(2.0), skip


class WaveNet(nn.Module):
    """The denoiser: ``(x_t (B,T,M), t (B,), per-layer conditions, mask) -> eps (B,T,M)``."""

    out_dims: int = 128
    n_layers: int = 20
    n_chans: int = 512

    def setup(self):
        c = self.n_chans
        self.input_projection = Conv1d(c, 1, kernel_init=_kaiming)
        self.mlp_0 = Linear(4 * c)
        self.mlp_2 = Linear(c)
        self.residual_layers = [ResidualBlock(c) for _ in range(self.n_layers)]
        self.skip_projection = Conv1d(c, 1, kernel_init=_kaiming)
        self.output_projection = Conv1d(self.out_dims, 1, kernel_init=nn.initializers.zeros)

    def project_condition(self, cond: Array) -> tuple[Array, ...]:
        """Each layer's 1x1 projection of ``cond`` (constant over the sampling loop)."""
        return tuple(layer.project_condition(cond) for layer in self.residual_layers)

    def __call__(self, x: Array, t: Array, cond_proj: tuple[Array, ...],
                 mask: Array | None = None) -> Array:
        h = jax.nn.relu(self.input_projection(x))
        step = self.mlp_2(_mish(self.mlp_0(step_embedding(t, self.n_chans))))
        skip = None
        for layer, cp in zip(self.residual_layers, cond_proj):
            h, s = layer(h, cp, step, mask)
            skip = s if skip is None else skip + s
        h = skip / math.sqrt(len(self.residual_layers))
        h = jax.nn.relu(self.skip_projection(h))
        return self.output_projection(h)


class Unit2Mel(nn.Module):
    """Conditioning embeddings + the WaveNet denoiser (named ``denoise_fn``).

    Methods (use ``model.apply(variables, ..., method=...)``):

    * ``condition(units, f0, volume, spk=None, aug_shift=None)`` -> ``(B, T, n_hidden)``.
      ``spk`` is a ``(B, T, n_spk)`` weight per speaker and frame (a one-hot row for a single
      speaker); ``aug_shift`` is the key shift in semitones, ``(B,)`` or ``(B, T)``.
    * ``project_condition(cond)`` -> the per-layer projections the denoiser consumes.
    * ``denoise(x, t, cond_proj, mask=None)`` -> predicted noise ``(B, T, out_dims)``.
    * ``__call__(units, f0, volume, x, t, spk, aug_shift, mask)`` chains the three.
    """

    input_channel: int = 768
    n_spk: int = 1
    use_pitch_aug: bool = False
    out_dims: int = 128
    n_layers: int = 20
    n_chans: int = 384
    n_hidden: int = 256

    def setup(self):
        h = self.n_hidden
        self.unit_embed = Linear(h)
        self.f0_embed = Linear(h)
        self.volume_embed = Linear(h)
        if self.use_pitch_aug:
            self.aug_shift_embed = Linear(h, use_bias=False)
        if self.n_spk > 1:
            self.spk_embed = nn.Embed(self.n_spk, h, embedding_init=nn.initializers.normal(1.0))
        self.denoise_fn = WaveNet(self.out_dims, self.n_layers, self.n_chans)

    def condition(self, units: Array, f0: Array, volume: Array, spk: Array | None = None,
                  aug_shift: Array | None = None) -> Array:
        x = (self.unit_embed(units)
             + self.f0_embed(jnp.log(1 + f0[..., None] / 700))
             + self.volume_embed(volume[..., None]))
        if self.n_spk > 1:
            if spk is None:
                raise ValueError(f"this model has {self.n_spk} speakers; pass spk (B, T, n_spk)")
            x = x + jnp.einsum("bts,sh->bth", spk.astype(x.dtype), self.spk_embed.embedding,
                               precision=jax.lax.Precision.HIGHEST)
        if self.use_pitch_aug and aug_shift is not None:
            shift = jnp.asarray(aug_shift, x.dtype)
            shift = shift.reshape(shift.shape[0], -1)[..., None]  # (B, 1|T, 1)
            x = x + self.aug_shift_embed(shift / 5)
        return x

    def project_condition(self, cond: Array) -> tuple[Array, ...]:
        return self.denoise_fn.project_condition(cond)

    def denoise(self, x: Array, t: Array, cond_proj: tuple[Array, ...],
                mask: Array | None = None) -> Array:
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        if mask is not None:
            mask = mask.reshape(mask.shape[0], -1, 1).astype(x.dtype)
        return self.denoise_fn(x, t, cond_proj, mask)

    def __call__(self, units, f0, volume, x, t, spk=None, aug_shift=None, mask=None):
        cond = self.condition(units, f0, volume, spk, aug_shift)
        return self.denoise(x, t, self.project_condition(cond), mask)


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``Unit2Mel`` constructor arguments from an svcjax diffusion config."""
    m = config.model
    return dict(input_channel=int(config.data.encoder_out_channels), n_spk=int(m.n_spk or 1),
                use_pitch_aug=bool(m.use_pitch_aug), out_dims=int(m.get("out_dims", 128)),
                n_layers=int(m.n_layers), n_chans=int(m.n_chans), n_hidden=int(m.n_hidden))


def build_model(config: ml_collections.ConfigDict) -> Unit2Mel:
    return Unit2Mel(**model_kwargs(config))


def training_loss(model: Unit2Mel, params: Any, batch: dict[str, Array], rng: Array | None,
                  schedule: gaussian_diffusion.Schedule, *, k_step_max: int | None = None,
                  loss_type: str = "l2", t: Array | None = None,
                  noise: Array | None = None) -> Array:
    """The reference's training objective as a pure function of ``(params, batch, rng)``.

    ``batch``: ``units (B,T,C)``, ``f0 (B,T)``, ``volume (B,T)``, ``mel (B,T,M)`` (log mel,
    un-normalised), optional ``mask (B,T)``, ``spk (B,T,n_spk)`` weights, ``aug_shift``
    (semitones, ``(B,)``). ``t ~ U{0 .. k_step_max-1}`` per example and ``noise ~ N(0, I)``
    are drawn from ``rng`` unless given. The noise is predicted from
    ``q_sample(norm(mel), t, noise)`` and scored by MSE (``l2``) or mean absolute error
    (``l1``) over the valid frames.
    """
    mel = batch["mel"]
    b = mel.shape[0]
    mask = batch.get("mask")
    k_max = schedule.effective_k_step_max(k_step_max)
    if t is None or noise is None:
        if rng is None:
            raise ValueError("training_loss needs rng unless both t and noise are given")
        rng_t, rng_n = jax.random.split(rng)
        if t is None:
            t = jax.random.randint(rng_t, (b,), 0, k_max)
        if noise is None:
            noise = jax.random.normal(rng_n, mel.shape, mel.dtype)
    x0 = schedule.norm_spec(mel)
    x_t = schedule.q_sample(x0, t, noise)
    eps = model.apply({"params": params}, batch["units"], batch["f0"], batch["volume"], x_t, t,
                      batch.get("spk"), batch.get("aug_shift"), mask)
    return gaussian_diffusion.masked_loss(eps, noise, mask, loss_type)
