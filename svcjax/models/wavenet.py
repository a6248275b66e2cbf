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
from svcjax.models.layers import CPU_CONV_KERNELS, Conv1d, ConvKernels, SeparableConv1d
from svcjax.models.scan import scan_layers, stack_layers

Array = jax.Array

__all__ = ["WN"]


def _wn_step(x: Array, out: Array, m: Array, in_layer, res_skip, g_l, drop, train: bool,
             c: int, last: bool) -> tuple[Array, Array]:
    acts = fused_add_tanh_sigmoid_multiply(in_layer(x), g_l, c)
    rs = res_skip(drop(acts, deterministic=not train))
    if last:
        return x, out + rs
    return (x + rs[..., :c]) * m, out + rs[..., c:]


class _WNLayer(nn.Module):
    """One residual layer with a ``2C`` residual/skip output (the body the stack scans)."""

    hidden_channels: int
    kernel_size: int
    dilation: int = 1
    p_dropout: float = 0.0
    depthwise: bool = False
    dtype: Any = None
    precision: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, carry, mask: Array, train: bool, g_l: Array | None = None):
        x, out = carry
        c = self.hidden_channels
        common = dict(weight_norm=True, dtype=self.dtype, precision=self.precision)
        conv = SeparableConv1d if self.depthwise else Conv1d
        pad = (self.kernel_size * self.dilation - self.dilation) // 2
        in_layer = conv(2 * c, self.kernel_size, dilation=self.dilation, padding=pad,
                        name="in_layer", conv_kernels=self.conv_kernels, **common)
        res_skip = Conv1d(2 * c, 1, name="res_skip", **common)
        return _wn_step(x, out, mask[..., None].astype(x.dtype), in_layer, res_skip,
                        0.0 if g_l is None else g_l, nn.Dropout(self.p_dropout), train, c, False)


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
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, x: Array, mask: Array, g: Array | None = None,
                 train: bool = False) -> Array:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"WN kernel_size must be odd, got {self.kernel_size}")
        c, n = self.hidden_channels, self.n_layers
        common = dict(weight_norm=True, dtype=self.dtype, precision=self.precision)
        m = mask[..., None].astype(x.dtype)
        g_layers = None
        if g is not None and self.gin_channels:
            g = Conv1d(2 * c * n, 1, name="cond_layer", **common)(g)
            g_layers = jnp.moveaxis(g.reshape(g.shape[:2] + (n, 2 * c)), 2, 0)
        conv = SeparableConv1d if self.depthwise else Conv1d
        drop = nn.Dropout(self.p_dropout)
        out = jnp.zeros_like(x)

        def named_step(i, x, out):
            d = self.dilation_rate ** i
            last = i == n - 1
            in_layer = conv(2 * c, self.kernel_size, dilation=d,
                            padding=(self.kernel_size * d - d) // 2, name=f"in_layers_{i}",
                            conv_kernels=self.conv_kernels, **common)
            res_skip = Conv1d(c if last else 2 * c, 1, name=f"res_skip_layers_{i}", **common)
            g_l = g_layers[i] if g_layers is not None else 0.0
            return _wn_step(x, out, m, in_layer, res_skip, g_l, drop, train, c, last)

        # All but the last layer are alike when the dilation is constant (So-VITS-SVC: rate 1):
        # scan them (one compiled layer) over their stacked parameters.
        if self.is_initializing() or n < 3 or self.dilation_rate != 1:
            for i in range(n):
                x, out = named_step(i, x, out)
            return out * m
        stacked = stack_layers(self.variables["params"],
                               {"in_layer": "in_layers_{}", "res_skip": "res_skip_layers_{}"},
                               range(n - 1))
        layer = _WNLayer(c, self.kernel_size, 1, self.p_dropout, self.depthwise, self.dtype,
                         self.precision, self.conv_kernels, parent=None)
        rng = self.make_rng("dropout") if train and self.p_dropout > 0 else None
        xs = None if g_layers is None else g_layers[:n - 1]
        x, out = scan_layers(layer, stacked, (x, out), mask, train, xs=xs, rng=rng,
                             unroll=self.unroll_layers)
        x, out = named_step(n - 1, x, out)
        return out * m
