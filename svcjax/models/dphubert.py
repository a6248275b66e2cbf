"""DPHuBERT in Flax: a structurally pruned HuBERT, 16 kHz audio in, 50 Hz content units out.

So-VITS-SVC's ``speech_encoder: dphubert`` loads ``DPHuBERT-sp0.75.pth`` (Peng et al. 2023:
HuBERT-base distilled and pruned to 25 % of its parameters) into its ``vencoder/dphubert``
network, torchaudio's wav2vec2 components rebuilt from the checkpoint's ``config``, and takes
the model's output, the last transformer layer (768 wide).

Pruning leaves every layer its own size, so nothing here is fixed but the structure:

* the conv feature extractor: each conv keeps its own channel count (``conv_layers``:
  ``[channels, kernel, stride]`` per layer); a GroupNorm (one group per channel, statistics over
  time) after the first (``extractor_mode='group_norm'``) or a LayerNorm over the channels after
  every one (``'layer_norm'``), GELU; then each channel is scaled by ``dummy_weight`` (where the
  last conv's pruning mask was folded in);
* LayerNorm and a projection to ``embed_dim``; the weight-normed grouped position convolution
  (kernel 128, 16 groups, the last frame dropped for an even kernel, GELU) added;
* per layer: attention with ``num_heads[i]`` heads of ``head_dim`` (64) channels, so its
  projections are ``num_heads[i] * head_dim`` wide, or no attention at all
  (``use_attention[i]`` false); a feed-forward of ``ffn_dims[i]`` (GELU), or none; the two
  LayerNorms stay either way. Post-LN (``layer_norm_first`` false, as DPHuBERT's HuBERT-base)
  with the encoder LayerNorm before the layers, or pre-LN with it after them.
* optionally the waveform normalised first (``normalize_waveform``) and a linear head
  (``aux_dim``, torchaudio's ``aux``).

The reference builds the network without calling ``eval()``, so with the real file's dropout
(0.1) and layer drop (0.05) its units are random draws around the network's output; svcjax
computes the network itself (dropout off), as the reference does in eval mode.

Batches carry their lengths: the GroupNorm and the waveform normalisation take their
statistics over each clip's valid part, frames past a clip's end are zeroed before the position
convolution and masked out of attention, so a padded clip gives the valid frames it gives
alone. Parameter names follow torchaudio's state_dict (``feature_extractor/conv_layers_0/conv``,
``encoder/transformer/layers_3/attention/q_proj``, ...) so that
:mod:`svcjax.interop.dphubert` maps the checkpoint by the generic rules.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from svcjax.models.content_encoder import MaskedGroupNorm, PositionalConv, SelfAttention, gelu
from svcjax.models.layers import Conv1d, LayerNorm, Linear

Array = jax.Array

__all__ = [
    "FAMILY",
    "KIND",
    "SAMPLE_RATE",
    "default_config",
    "build_model",
    "num_frames",
    "min_samples",
    "max_samples",
    "unit_dim",
    "hop",
    "DPHubert",
]

FAMILY = "dphubert"
KIND = "dphubert"
SAMPLE_RATE = 16000

BASE_CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


def default_config(kind: str = KIND, **overrides) -> ml_collections.ConfigDict:
    """The structure DPHuBERT starts from, HuBERT-base unpruned (override any field).

    A real checkpoint's per-layer sizes come from its ``config`` (the importer reads them);
    this default serves a randomly initialised model of the same structure.
    """
    if kind != KIND:
        raise ValueError(f"unknown {FAMILY} kind {kind!r}; known: {KIND}")
    layers = 12
    cfg = ml_collections.ConfigDict(dict(
        kind=KIND,
        family=FAMILY,
        extractor_mode="group_norm",
        conv_layers=[list(c) for c in BASE_CONV_LAYERS],
        conv_bias=False,
        embed_dim=768,
        conv_pos=128,
        conv_pos_groups=16,
        num_layers=layers,
        use_attention=[True] * layers,
        num_heads=[12] * layers,
        head_dim=64,
        use_feed_forward=[True] * layers,
        ffn_dims=[3072] * layers,
        layer_norm_first=False,
        normalize_waveform=False,
        aux_dim=0,
        layer_norm_eps=1e-5,
    ))
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"unknown {FAMILY} config field {key!r}; known: {', '.join(cfg)}")
        cfg[key] = [list(c) for c in value] if key == "conv_layers" else value
    return cfg


def _conv(config) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in c) for c in config.conv_layers]


def num_frames(n_samples, config):
    """Frames the conv stack makes of ``n_samples`` (ints, NumPy or JAX arrays; 0 if too short)."""
    xp = jnp if isinstance(n_samples, jax.Array) else np
    n = xp.asarray(n_samples)
    for _, k, s in _conv(config):
        n = xp.where(n >= k, (n - k) // s + 1, 0)
    return int(n) if np.ndim(n) == 0 and not isinstance(n, jax.Array) else n


def min_samples(config) -> int:
    """The shortest clip that gives one frame (400 samples for HuBERT's conv stack)."""
    n = 1
    for _, k, s in reversed(_conv(config)):
        n = (n - 1) * s + k
    return n


def max_samples(config) -> None:
    return None  # no fixed window: attention over the whole clip


def unit_dim(config) -> int:
    return int(config.aux_dim) or int(config.embed_dim)


def hop(config) -> int:
    return int(np.prod([s for _, _, s in _conv(config)]))


class ConvBlock(nn.Module):
    """torchaudio's ConvLayerBlock: conv, its norm (``'group'``, ``'layer'`` or none), GELU."""

    features: int
    kernel_size: int
    stride: int
    use_bias: bool
    norm: str | None
    epsilon: float = 1e-5
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, n_out: Array) -> Array:
        x = Conv1d(self.features, self.kernel_size, stride=self.stride, use_bias=self.use_bias,
                   dtype=self.dtype, precision=self.precision, name="conv")(x)
        if self.norm == "group":
            mask = (jnp.arange(x.shape[1])[None, :] < n_out[:, None]).astype(jnp.float32)[..., None]
            x = MaskedGroupNorm(self.epsilon, name="layer_norm")(x, mask)
        elif self.norm == "layer":
            x = LayerNorm(self.epsilon, name="layer_norm")(x)
        return gelu(x)


class FeatureExtractor(nn.Module):
    conv_layers: Sequence[Sequence[int]]
    mode: str = "group_norm"
    conv_bias: bool = False
    epsilon: float = 1e-5
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, wav: Array, lengths: Array) -> tuple[Array, Array]:
        if self.mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"extractor_mode {self.mode!r}: expected 'group_norm' or 'layer_norm'")
        x, n = wav[..., None], lengths
        for i, (dim, k, s) in enumerate(self.conv_layers):
            norm = "layer" if self.mode == "layer_norm" else ("group" if i == 0 else None)
            n = jnp.where(n >= k, (n - k) // s + 1, 0)
            x = ConvBlock(dim, k, s, self.conv_bias, norm, self.epsilon, self.dtype, self.precision,
                          name=f"conv_layers_{i}")(x, n)
        scale = self.param("dummy_weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        return x * scale.astype(x.dtype), n


class FeedForward(nn.Module):
    ffn_dim: int
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        lin = dict(dtype=self.dtype, precision=self.precision)
        y = gelu(Linear(self.ffn_dim, name="intermediate_dense", **lin)(x))
        return Linear(x.shape[-1], name="output_dense", **lin)(y)


class EncoderLayer(nn.Module):
    """torchaudio's EncoderLayer with a pruned (or absent) attention and feed-forward."""

    num_heads: int      # 0: no attention
    head_dim: int
    ffn_dim: int        # 0: no feed-forward
    layer_norm_first: bool = False
    epsilon: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, key_mask: Array) -> Array:
        lin = dict(dtype=self.dtype, precision=self.precision)
        attn_norm = LayerNorm(self.epsilon, name="layer_norm")
        ffn_norm = LayerNorm(self.epsilon, name="final_layer_norm")
        if self.num_heads:
            attn = SelfAttention(self.num_heads, self.attention_block, self.head_dim,
                                 name="attention", **lin)
            x = x + attn(attn_norm(x) if self.layer_norm_first else x, key_mask)
        ffn = FeedForward(self.ffn_dim, name="feed_forward", **lin) if self.ffn_dim else None
        if self.layer_norm_first:
            if self.is_initializing():
                attn_norm(x)  # declared even where the attention was pruned away
                ffn_norm(x)
            return x + ffn(ffn_norm(x)) if ffn else x
        x = attn_norm(x)
        if ffn:
            x = x + ffn(x)
        return ffn_norm(x)


class PosConvEmbed(nn.Module):
    kernel_size: int
    groups: int
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return PositionalConv(self.kernel_size, self.groups, self.dtype, self.precision,
                              name="conv")(x)


class DPHubert(nn.Module):
    """The pruned network from waveform to units; see the module docstring.

    ``wav`` is ``(B, L)`` float at 16 kHz, ``lengths`` ``(B,)`` the valid samples of each row.
    Returns ``(units (B, T, C), frames (B,))`` with frames past each clip's end zero.
    ``hidden_states=True`` returns instead the input to the first layer and every layer's
    output (no final LayerNorm of a pre-LN model, no head), for parity checks.
    """

    conv_layers: Sequence[Sequence[int]] = BASE_CONV_LAYERS
    extractor_mode: str = "group_norm"
    conv_bias: bool = False
    embed_dim: int = 768
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_heads: Sequence[int] = (12,) * 12       # per layer; 0 = attention pruned away
    head_dim: int = 64
    ffn_dims: Sequence[int] = (3072,) * 12      # per layer; 0 = feed-forward pruned away
    layer_norm_first: bool = False
    normalize_waveform: bool = False
    aux_dim: int = 0
    layer_norm_eps: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, wav: Array, lengths: Array | None = None, *, hidden_states: bool = False):
        wav = jnp.asarray(wav, jnp.float32)
        if wav.ndim != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {wav.shape}")
        if len(self.num_heads) != len(self.ffn_dims):
            raise ValueError(f"{len(self.num_heads)} attention sizes for "
                             f"{len(self.ffn_dims)} layers")
        b, n = wav.shape
        if lengths is None:
            lengths = jnp.full((b,), n, jnp.int32)
        lengths = jnp.minimum(jnp.asarray(lengths, jnp.int32), n)
        valid = jnp.arange(n)[None, :] < lengths[:, None]
        if self.normalize_waveform:  # F.layer_norm over each clip's valid samples, no affine
            count = jnp.maximum(lengths, 1)[:, None].astype(jnp.float32)
            mean = jnp.sum(jnp.where(valid, wav, 0), axis=1, keepdims=True) / count
            var = jnp.sum(jnp.where(valid, jnp.square(wav - mean), 0), axis=1,
                          keepdims=True) / count
            wav = jnp.where(valid, (wav - mean) * lax.rsqrt(var + self.layer_norm_eps), 0)
        lin = dict(dtype=self.dtype, precision=self.precision)
        eps = self.layer_norm_eps
        x, frames = FeatureExtractor(self.conv_layers, self.extractor_mode, self.conv_bias, eps,
                                     name="feature_extractor", **lin)(wav, lengths)
        mask = jnp.arange(x.shape[1])[None, :] < frames[:, None]
        x = Encoder(self.embed_dim, self.conv_pos, self.conv_pos_groups, tuple(self.num_heads),
                    self.head_dim, tuple(self.ffn_dims), self.layer_norm_first, eps,
                    self.attention_block, name="encoder", **lin)(x, mask, hidden_states)
        zero = lambda a: jnp.where(mask[..., None], a, 0).astype(a.dtype)  # noqa: E731
        if hidden_states:
            return [zero(h) for h in x], frames
        if self.aux_dim:
            x = Linear(self.aux_dim, name="aux", **lin)(x)
        return zero(x), frames


class Encoder(nn.Module):
    """torchaudio's Encoder: feature projection, then the Transformer (named as there)."""

    embed_dim: int
    conv_pos: int
    conv_pos_groups: int
    num_heads: Sequence[int]
    head_dim: int
    ffn_dims: Sequence[int]
    layer_norm_first: bool = False
    epsilon: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, hidden_states: bool = False):
        lin = dict(dtype=self.dtype, precision=self.precision)
        x = FeatureProjection(self.embed_dim, self.epsilon, name="feature_projection", **lin)(x)
        x = jnp.where(mask[..., None], x, 0)
        return Transformer(self.conv_pos, self.conv_pos_groups, self.num_heads, self.head_dim,
                           self.ffn_dims, self.layer_norm_first, self.epsilon,
                           self.attention_block, name="transformer", **lin)(x, mask, hidden_states)


class FeatureProjection(nn.Module):
    embed_dim: int
    epsilon: float = 1e-5
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = LayerNorm(self.epsilon, name="layer_norm")(x)
        return Linear(self.embed_dim, name="projection", dtype=self.dtype,
                      precision=self.precision)(x)


class Transformer(nn.Module):
    """Position conv, (post-LN) LayerNorm, the layers one by one (each its own size), and
    (pre-LN) the LayerNorm after them."""

    conv_pos: int
    conv_pos_groups: int
    num_heads: Sequence[int]
    head_dim: int
    ffn_dims: Sequence[int]
    layer_norm_first: bool = False
    epsilon: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, hidden_states: bool = False):
        lin = dict(dtype=self.dtype, precision=self.precision)
        x = x + PosConvEmbed(self.conv_pos, self.conv_pos_groups, name="pos_conv_embed", **lin)(x)
        norm = LayerNorm(self.epsilon, name="layer_norm")
        if not self.layer_norm_first:
            x = norm(x)
        states = [x]
        for i, (h, f) in enumerate(zip(self.num_heads, self.ffn_dims)):
            x = EncoderLayer(int(h), self.head_dim, int(f), self.layer_norm_first, self.epsilon,
                             self.attention_block, name=f"layers_{i}", **lin)(x, mask)
            states.append(x)
        if hidden_states:
            if self.layer_norm_first and self.is_initializing():
                norm(x)
            return states
        return norm(x) if self.layer_norm_first else x


def build_model(config, *, dtype: Any = None, precision: Any = None, attention_block: int = 1024,
                full: bool = False) -> DPHubert:
    """The :class:`DPHubert` of ``config`` (every layer is used, so ``full`` changes nothing)."""
    del full
    layers = int(config.num_layers)
    fields = {"use_attention": config.use_attention, "num_heads": config.num_heads,
              "use_feed_forward": config.use_feed_forward, "ffn_dims": config.ffn_dims}
    for name, values in fields.items():
        if len(values) != layers:
            raise ValueError(f"{FAMILY} config: {name} has {len(values)} entries for "
                             f"{layers} layers")
    heads = tuple(int(h) if use else 0 for use, h in zip(config.use_attention, config.num_heads))
    ffn = tuple(int(f) if use else 0 for use, f in zip(config.use_feed_forward, config.ffn_dims))
    return DPHubert(
        conv_layers=tuple(_conv(config)),
        extractor_mode=str(config.extractor_mode),
        conv_bias=bool(config.conv_bias),
        embed_dim=int(config.embed_dim),
        conv_pos=int(config.conv_pos),
        conv_pos_groups=int(config.conv_pos_groups),
        num_heads=heads,
        head_dim=int(config.head_dim),
        ffn_dims=ffn,
        layer_norm_first=bool(config.layer_norm_first),
        normalize_waveform=bool(config.normalize_waveform),
        aux_dim=int(config.aux_dim or 0),
        layer_norm_eps=float(config.layer_norm_eps),
        attention_block=attention_block,
        dtype=dtype,
        precision=precision,
    )
