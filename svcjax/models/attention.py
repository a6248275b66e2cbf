"""VITS attention blocks: relative-position multi-head attention, the post-LN Encoder, the
causal FFT of So-VITS-SVC's F0 decoder (and transformer flow).

Everything is channels-last ``(B, T, C)`` with a frame mask ``(B, T)`` (1 = valid). Masked
attention scores are set to ``-1e4`` as in the reference, so a padded frame gets exactly zero
weight and a clip padded to a longer length gives the same valid frames as the clip alone.

Relative positions (``window_size`` w): the reference keeps two tables ``emb_rel_k`` /
``emb_rel_v`` of shape ``(1, 2w+1, C/heads)`` shared by the heads; the score of query i for key
j gains ``q_i . emb_rel_k[j - i + w]`` and the output gains ``sum_j p_ij emb_rel_v[j - i + w]``
for ``|j - i| <= w``. Here both are computed with a one-hot ``(T, T, 2w+1)`` band matrix
(matmuls, no gathers), which is exact and maps onto matrix units.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from svcjax.models.layers import Conv1d, LayerNorm
from svcjax.models.scan import scan_layers, stack_layers

Array = jax.Array

__all__ = ["MultiHeadAttention", "FFN", "Encoder", "FFT", "fused_add_tanh_sigmoid_multiply"]

MASK_VALUE = -1e4


def fused_add_tanh_sigmoid_multiply(a: Array, b: Array, channels: int) -> Array:
    """WaveNet gate: ``tanh(x[..., :C]) * sigmoid(x[..., C:])`` of ``x = a + b``."""
    x = a + b
    return jnp.tanh(x[..., :channels]) * jax.nn.sigmoid(x[..., channels:])


def _relative_band(length: int, window: int, dtype) -> Array:
    """``(T, T, 2w+1)`` one-hot: ``band[i, j, r] = 1`` iff ``j - i == r - w``."""
    pos = jnp.arange(length)
    rel = pos[None, :] - pos[:, None] + window  # (T, T)
    return (rel[..., None] == jnp.arange(2 * window + 1)).astype(dtype)


class MultiHeadAttention(nn.Module):
    """The reference's ``MultiHeadAttention`` (1x1 conv projections q, k, v, o)."""

    channels: int
    out_channels: int
    n_heads: int
    p_dropout: float = 0.0
    window_size: int | None = None
    proximal_init: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, c: Array, attn_mask: Array, train: bool = False) -> Array:
        """``x`` queries, ``c`` keys/values ``(B, T, C)``; ``attn_mask`` ``(B or 1, Tq, Tk)``."""
        if self.channels % self.n_heads:
            raise ValueError(f"channels {self.channels} not divisible by n_heads {self.n_heads}")
        kc = self.channels // self.n_heads
        conv = dict(kernel_size=1, dtype=self.dtype, precision=self.precision)
        xavier = nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
        q = Conv1d(self.channels, kernel_init=xavier, name="conv_q", **conv)(x)
        k_init, kb_init = xavier, None
        if self.proximal_init and self.is_initializing():
            # The reference starts conv_k from a copy of conv_q.
            qp = self.variables["params"]["conv_q"]
            k_init, kb_init = (lambda *_: qp["kernel"]), (lambda *_: qp["bias"])
        k = Conv1d(self.channels, kernel_init=k_init, bias_init=kb_init, name="conv_k",
                   **conv)(c)
        v = Conv1d(self.channels, kernel_init=xavier, name="conv_v", **conv)(c)

        b, tq, _ = q.shape
        tk = k.shape[1]
        # (B, T, C) -> (B, H, T, kc)
        q = q.reshape(b, tq, self.n_heads, kc).transpose(0, 2, 1, 3)
        k = k.reshape(b, tk, self.n_heads, kc).transpose(0, 2, 1, 3)
        v = v.reshape(b, tk, self.n_heads, kc).transpose(0, 2, 1, 3)
        q = q / jnp.asarray(math.sqrt(kc), q.dtype)
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=self.precision)

        if self.window_size is not None:
            if tq != tk:
                raise ValueError("relative attention is only available for self-attention")
            w = self.window_size
            std = kc ** -0.5
            init = lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape, dtype) * std
            emb_k = self.param("emb_rel_k", init, (1, 2 * w + 1, kc))
            emb_v = self.param("emb_rel_v", init, (1, 2 * w + 1, kc))
            band = _relative_band(tq, w, q.dtype)
            rel_logits = jnp.einsum("bhqd,rd->bhqr", q, emb_k[0].astype(q.dtype),
                                    precision=self.precision)
            scores = scores + jnp.einsum("bhqr,qkr->bhqk", rel_logits, band,
                                         precision=self.precision)

        scores = scores.astype(jnp.float32)
        scores = jnp.where(attn_mask[:, None] == 0, MASK_VALUE, scores)
        p = jax.nn.softmax(scores, axis=-1)
        p = nn.Dropout(self.p_dropout)(p, deterministic=not train).astype(v.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", p, v, precision=self.precision)
        if self.window_size is not None:
            rel_w = jnp.einsum("bhqk,qkr->bhqr", p, band, precision=self.precision)
            out = out + jnp.einsum("bhqr,rd->bhqd", rel_w, emb_v[0].astype(p.dtype),
                                   precision=self.precision)
        out = out.transpose(0, 2, 1, 3).reshape(b, tq, self.channels)
        return Conv1d(self.out_channels, name="conv_o", **conv)(out)


class FFN(nn.Module):
    """Two convolutions with ReLU (or the reference's sigmoid-GELU), masked inputs."""

    out_channels: int
    filter_channels: int
    kernel_size: int
    p_dropout: float = 0.0
    activation: str | None = None
    causal: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
        k = self.kernel_size
        pad = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
        conv = dict(kernel_size=k, padding=pad, dtype=self.dtype, precision=self.precision)
        m = mask[..., None].astype(x.dtype)
        x = Conv1d(self.filter_channels, name="conv_1", **conv)(x * m)
        if self.activation == "gelu":
            x = x * jax.nn.sigmoid(1.702 * x)
        else:
            x = jax.nn.relu(x)
        x = nn.Dropout(self.p_dropout)(x, deterministic=not train)
        x = Conv1d(self.out_channels, name="conv_2", **conv)(x * m)
        return x * m


def _post_ln_block(x: Array, attn, norm_a, ffn, norm_b, drop: nn.Dropout, train: bool) -> Array:
    """``x = norm_a(x + attn(x)); x = norm_b(x + ffn(x))`` with dropout on both branches."""
    x = norm_a(x + drop(attn(x), deterministic=not train))
    return norm_b(x + drop(ffn(x), deterministic=not train))


class _Layer(nn.Module):
    """One transformer layer (the body scanned by :class:`Encoder` and :class:`FFT`).

    Submodules ``attn``, ``norm_a``, ``ffn``, ``norm_b`` and, for a gated FFT layer,
    ``cond_pre``; the stacks map their reference-named layers onto these names.
    """

    hidden_channels: int
    filter_channels: int
    n_heads: int
    kernel_size: int
    p_dropout: float
    window_size: int | None = None
    causal: bool = False  # FFT: causal FFN, proximal attention init
    gated: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, attn_mask: Array, train: bool,
                 g_l: Array | None = None) -> Array:
        common = dict(dtype=self.dtype, precision=self.precision)
        h = self.hidden_channels
        if self.gated:
            x = Conv1d(2 * h, 1, name="cond_pre", **common)(x)
            x = fused_add_tanh_sigmoid_multiply(x, g_l, h)
        attn = MultiHeadAttention(h, h, self.n_heads, self.p_dropout, self.window_size,
                                  proximal_init=self.causal, name="attn", **common)
        ffn = FFN(h, self.filter_channels, self.kernel_size, self.p_dropout,
                  causal=self.causal, name="ffn", **common)
        return _post_ln_block(x, lambda y: attn(y, y, attn_mask, train),
                              LayerNorm(dtype=self.dtype, name="norm_a"),
                              lambda y: ffn(y, mask, train),
                              LayerNorm(dtype=self.dtype, name="norm_b"),
                              nn.Dropout(self.p_dropout), train)


class _Stack(nn.Module):
    """Shared logic of Encoder and FFT: unrolled with reference names at initialisation,
    scanned over stacked parameters when applied."""

    def _names(self) -> dict[str, str]:  # layer submodule -> reference name pattern
        raise NotImplementedError

    def _layer_kwargs(self) -> dict:
        raise NotImplementedError

    def _run(self, x: Array, mask: Array, attn_mask: Array, train: bool,
             g: Array | None) -> Array:
        n, h = self.n_layers, self.hidden_channels
        gated = g is not None
        kw = dict(self._layer_kwargs(), gated=gated, dtype=self.dtype, precision=self.precision)
        g_layers = None
        if gated:  # (B, Tg, 2h n) -> (n, B, Tg, 2h)
            g_layers = jnp.moveaxis(g.reshape(g.shape[:2] + (n, 2 * h)), 2, 0)
        names = self._names()
        if self.is_initializing() or n < 2:
            cond_pre = Conv1d(2 * h, 1, name="cond_pre", dtype=self.dtype,
                              precision=self.precision) if gated else None
            drop = nn.Dropout(self.p_dropout)
            for i in range(n):
                if gated:
                    x = fused_add_tanh_sigmoid_multiply(cond_pre(x), g_layers[i], h)
                attn = MultiHeadAttention(h, h, self.n_heads, self.p_dropout,
                                          kw["window_size"], proximal_init=kw["causal"],
                                          name=names["attn"].format(i), dtype=self.dtype,
                                          precision=self.precision)
                ffn = FFN(h, self.filter_channels, self.kernel_size, self.p_dropout,
                          causal=kw["causal"], name=names["ffn"].format(i), dtype=self.dtype,
                          precision=self.precision)
                x = _post_ln_block(x, lambda y: attn(y, y, attn_mask, train),
                                   LayerNorm(dtype=self.dtype, name=names["norm_a"].format(i)),
                                   lambda y: ffn(y, mask, train),
                                   LayerNorm(dtype=self.dtype, name=names["norm_b"].format(i)),
                                   drop, train)
            return x
        params = self.variables["params"]
        stacked = stack_layers(params, names, range(n))
        if gated:
            stacked["cond_pre"] = jax.tree.map(lambda a: jnp.stack([a] * n),
                                               params["cond_pre"])
        layer = _Layer(h, self.filter_channels, self.n_heads, self.kernel_size,
                       self.p_dropout, parent=None, **kw)
        rng = self.make_rng("dropout") if train else None
        return scan_layers(layer, stacked, x, mask, attn_mask, train, xs=g_layers, rng=rng,
                           unroll=self.unroll_layers)


class Encoder(_Stack):
    """``attentions.Encoder``: post-LN transformer with relative-position attention."""

    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int = 1
    p_dropout: float = 0.0
    window_size: int = 4
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)

    def _names(self):
        return {"attn": "attn_layers_{}", "norm_a": "norm_layers_1_{}",
                "ffn": "ffn_layers_{}", "norm_b": "norm_layers_2_{}"}

    def _layer_kwargs(self):
        return dict(window_size=self.window_size, causal=False)

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
        m = mask[..., None].astype(x.dtype)
        attn_mask = mask[:, :, None] * mask[:, None, :]
        return self._run(x * m, mask, attn_mask, train, None) * m


class FFT(_Stack):
    """``attentions.FFT``: causal self-attention transformer (F0 decoder, transformer flow).

    With ``gin_channels`` and a condition ``g`` (``isflow`` in the reference) each layer first
    gates ``cond_pre(x)`` (one shared 1x1 conv) with its slice of ``cond_layer(g)``.
    """

    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int = 1
    kernel_size: int = 1
    p_dropout: float = 0.0
    gin_channels: int = 0
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)

    def _names(self):
        return {"attn": "self_attn_layers_{}", "norm_a": "norm_layers_0_{}",
                "ffn": "ffn_layers_{}", "norm_b": "norm_layers_1_{}"}

    def _layer_kwargs(self):
        return dict(window_size=None, causal=True)

    @nn.compact
    def __call__(self, x: Array, mask: Array, g: Array | None = None,
                 train: bool = False) -> Array:
        if self.gin_channels and g is not None:
            g = Conv1d(2 * self.hidden_channels * self.n_layers, 1, weight_norm=True,
                       name="cond_layer", dtype=self.dtype, precision=self.precision)(g)
        else:
            g = None
        t = x.shape[1]
        causal = jnp.tril(jnp.ones((t, t), jnp.float32))[None]
        m = mask[..., None].astype(x.dtype)
        return self._run(x * m, mask, causal, train, g) * m
