"""So-VITS-SVC 4.1's training losses (``modules/losses.py`` and ``train.py``), channels-last.

Generator objective, as the reference weights it::

    loss_g = generator_loss(D(y_hat)) + feature_loss(fmap_r, fmap_g)       # LSGAN + 2 * FM
           + c_mel * mel_l1(y_mel, y_hat_mel)                              # c_mel = 45
           + c_kl * kl_loss(z_p, logs_q, m_p, logs_p, z_mask)              # c_kl = 1
           + f0_mse(pred_lf0, lf0)                                          # with auto-F0

    loss_d = discriminator_loss(D(y), D(y_hat))                            # LSGAN

Every loss is computed in float32 whatever the compute dtype (the reference's ``.float()``).
Losses over frames take an optional ``mask`` (1 = valid frame, broadcastable to the input):
padded frames then count in neither the sum nor the denominator. With no mask (or an all-ones
mask) the numbers are the reference's.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "discriminator_loss",
    "generator_loss",
    "feature_loss",
    "kl_loss",
    "masked_mean",
    "mel_l1",
    "f0_mse",
]


def _f32(x):
    return jnp.asarray(x).astype(jnp.float32)


def masked_mean(x, mask=None):
    """Mean of ``x`` over the elements where ``mask`` (broadcast to ``x``) is nonzero."""
    x = _f32(x)
    if mask is None:
        return jnp.mean(x)
    m = jnp.broadcast_to(_f32(mask), x.shape)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def discriminator_loss(real_logits: Sequence, fake_logits: Sequence):
    """LSGAN: ``sum_k mean((1 - D_k(y))^2) + mean(D_k(y_hat)^2)``; also the per-k terms."""
    r_losses = [jnp.mean(jnp.square(1.0 - _f32(r))) for r in real_logits]
    g_losses = [jnp.mean(jnp.square(_f32(g))) for g in fake_logits]
    return sum(r + g for r, g in zip(r_losses, g_losses)), r_losses, g_losses


def generator_loss(fake_logits: Sequence):
    """LSGAN: ``sum_k mean((1 - D_k(y_hat))^2)``; also the per-k terms."""
    losses = [jnp.mean(jnp.square(1.0 - _f32(g))) for g in fake_logits]
    return sum(losses), losses


def feature_loss(fmaps_real: Sequence[Sequence], fmaps_fake: Sequence[Sequence]):
    """Feature matching: ``2 * sum over every feature map of mean|r - g|`` (r not trained)."""
    total = 0.0
    for dr, dg in zip(fmaps_real, fmaps_fake):
        for r, g in zip(dr, dg):
            total = total + jnp.mean(jnp.abs(jax.lax.stop_gradient(_f32(r)) - _f32(g)))
    return total * 2.0


def kl_loss(z_p, logs_q, m_p, logs_p, mask):
    """KL(q || p) per valid frame of the flow output ``z_p`` (all ``(B, T, C)``).

    ``sum(mask * (logs_p - logs_q - 1/2 + (z_p - m_p)^2 exp(-2 logs_p) / 2)) / sum(mask)``,
    with ``mask`` ``(B, T, 1)`` (or ``(B, T)``) as the reference's ``z_mask``.
    """
    z_p, logs_q, m_p, logs_p = map(_f32, (z_p, logs_q, m_p, logs_p))
    mask = _f32(mask)
    if mask.ndim == z_p.ndim - 1:
        mask = mask[..., None]
    kl = logs_p - logs_q - 0.5 + 0.5 * jnp.square(z_p - m_p) * jnp.exp(-2.0 * logs_p)
    return jnp.sum(kl * mask) / jnp.sum(mask)


def mel_l1(y_mel, y_hat_mel, mask=None):
    """Mean absolute difference of two log-mel spectrograms ``(B, T, n_mels)``."""
    return masked_mean(jnp.abs(_f32(y_mel) - _f32(y_hat_mel)), mask)


def f0_mse(pred_lf0, lf0, mask=None):
    """Mean squared error of the predicted log-F0 (the reference's ``F.mse_loss``)."""
    return masked_mean(jnp.square(_f32(pred_lf0) - _f32(lf0)), mask)
