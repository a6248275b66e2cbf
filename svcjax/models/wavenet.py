"""The VITS WaveNet (``modules.WN``): gated dilated convolutions with a global condition.

Layer i: ``a = in_layers_i(x)`` (weight-normed, dilation ``rate**i``), gated by
``tanh(a + g_i)[:C] * sigmoid(a + g_i)[C:]`` where ``g_i`` is the i-th ``2C`` slice of one
``cond_layer(g)`` projection; ``res_skip_layers_i`` splits into a residual (added to x, masked)
and a skip (summed into the output); the last layer has only the skip half. With
``depthwise`` the in-layers are So-VITS-SVC's depthwise-separable convolutions
(``in_layers_i/depth_conv`` + ``in_layers_i/point_conv``, each weight-normed), which is what
``use_depthwise_conv`` selects in the reference.

``g`` may be ``(B, 1, gin)`` (one speaker per clip) or ``(B, T, gin)`` (per-frame speaker mix).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from svcjax.models.attention import fused_add_tanh_sigmoid_multiply
from svcjax.models.layers import Conv1d, SeparableConv1d

Array = jax.Array

__all__ = ["WN"]


class WN(nn.Module):
    hidden_channels: int
    kernel_size: int
    dilation_rate: int
    n_layers: int
    gin_channels: int = 0
    p_dropout: float = 0.0
    depthwise: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, g: Array | None = None,
                 train: bool = False) -> Array:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"WN kernel_size must be odd, got {self.kernel_size}")
        c = self.hidden_channels
        common = dict(weight_norm=True, dtype=self.dtype, precision=self.precision)
        m = mask[..., None].astype(x.dtype)
        if g is not None and self.gin_channels:
            g = Conv1d(2 * c * self.n_layers, 1, name="cond_layer", **common)(g)
        else:
            g = None
        out = jnp.zeros_like(x)
        for i in range(self.n_layers):
            d = self.dilation_rate ** i
            pad = (self.kernel_size * d - d) // 2
            conv = SeparableConv1d if self.depthwise else Conv1d
            x_in = conv(2 * c, self.kernel_size, dilation=d, padding=pad, name=f"in_layers_{i}",
                        **common)(x)
            g_l = g[..., 2 * c * i:2 * c * (i + 1)] if g is not None else 0.0
            acts = fused_add_tanh_sigmoid_multiply(x_in, g_l, c)
            acts = nn.Dropout(self.p_dropout)(acts, deterministic=not train)
            last = i == self.n_layers - 1
            rs = Conv1d(c if last else 2 * c, 1, name=f"res_skip_layers_{i}", **common)(acts)
            if last:
                out = out + rs
            else:
                x = (x + rs[..., :c]) * m
                out = out + rs[..., c:]
        return out * m
