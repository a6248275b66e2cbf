"""HuBERT speech content encoders in Flax: 16 kHz audio in, 50 Hz content units out.

So-VITS-SVC conditions its generator on "content units", hidden states of a self-supervised
speech model. The kinds it ships that share fairseq's HuBERT network are built here:

=================  ==============================================  ====================  =====
kind               checkpoint the reference loads                  units                 dim
=================  ==============================================  ====================  =====
``vec768l12``      ContentVec ``checkpoint_best_legacy_500.pt``    output of layer 12    768
``vec256l9``       the same file                                   layer 9 -> final_proj 256
``hubertsoft``     bshall's ``hubert-soft-0d54a1f4.pt``            layer 12 -> proj      256
``cnhubertlarge``  ``chinese-hubert-large-fairseq-ckpt.pt``        last layer, final LN  1024
=================  ==============================================  ====================  =====

Layer ``n`` means the output of the ``n``-th post-LN transformer layer (fairseq's
``extract_features(output_layer=n)``, Hugging Face's ``hidden_states[n]``); in a post-LN
encoder the encoder-level LayerNorm sits *before* the layers, so no norm follows layer ``n``.
HuBERT-Soft pads the waveform with 40 zero samples on each side before encoding.
``cnhubertlarge`` is what the reference's ``CNHubertLarge`` takes, fairseq's
``extract_features`` without ``output_layer``: the output of the encoder after *all* its layers,
which for a pre-LN model (``layer_norm_first``, HuBERT-large) ends with the encoder's LayerNorm.

The network (fairseq's HubertModel with ``extractor_mode='default'``,
``layer_norm_first=False``): seven convolutions without bias (512 channels; kernels 10,3,3,3,3,2,2;
strides 5,2,2,2,2,2,2: 320 samples per frame), a GroupNorm with one group per channel after
the first (statistics over time), GELU after each; LayerNorm over the 512 features and a
projection to 768; a grouped convolutional position embedding (kernel 128, 16 groups, weight
norm over the kernel axis, the last output frame dropped because the kernel is even, GELU)
added to its input; LayerNorm; 12 transformer layers (12 heads, FFN 3072, GELU, post-LN).
HuBERT-large (``extractor_mode='layer_norm'``, ``layer_norm_first=True``) differs in three
places: a LayerNorm over the channels after *every* convolution (the convolutions may carry a
bias, ``conv_bias``), pre-LN transformer layers (LayerNorm before attention and before the
feed-forward, residuals around them), and the encoder's LayerNorm moved from before the layers
to after the last one; it is 1024 wide, 16 heads, FFN 4096, 24 layers.

Batches of clips of different lengths are padded and carry their lengths: the GroupNorm takes
its mean and variance over each clip's valid frames only, frames past a clip's end are zeroed
before the position convolution and masked out of attention, so a padded clip gives the same
valid frames as the clip alone. Parameter names follow fairseq's state_dict
(``feature_extractor/conv_layers_0_0``, ``encoder/pos_conv_0``, ``encoder/layers_3/self_attn/q_proj``,
``final_proj``) so that :mod:`svcjax.interop.content_encoder` maps checkpoints by the generic rules.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from svcjax.models.layers import Conv1d, LayerNorm, Linear

Array = jax.Array

__all__ = [
    "KINDS",
    "Kind",
    "SAMPLE_RATE",
    "default_config",
    "build_model",
    "num_frames",
    "min_samples",
    "max_samples",
    "unit_dim",
    "hop",
    "Hubert",
]

SAMPLE_RATE = 16000

BASE_CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


@dataclasses.dataclass(frozen=True)
class Kind:
    """What one So-VITS speech-encoder name extracts from the network."""

    name: str
    output_layer: int        # 1-based transformer layer whose output is used
    use_head: bool           # apply ``final_proj`` (ContentVec's final_proj / Soft's proj)
    input_pad: int           # zero samples added on each side of the waveform first
    dim: int                 # unit dimension of the full-size model
    source: str              # the checkpoint the reference loads for it


KINDS: dict[str, Kind] = {
    "vec768l12": Kind("vec768l12", 12, False, 0, 768, "ContentVec checkpoint_best_legacy_500.pt"),
    "vec256l9": Kind("vec256l9", 9, True, 0, 256, "ContentVec checkpoint_best_legacy_500.pt"),
    "hubertsoft": Kind("hubertsoft", 12, True, 40, 256, "HuBERT-Soft hubert-soft-0d54a1f4.pt"),
    # output_layer 0: every layer the checkpoint holds, then (pre-LN) the encoder's LayerNorm
    "cnhubertlarge": Kind("cnhubertlarge", 0, False, 0, 1024,
                          "Chinese HuBERT-large chinese-hubert-large-fairseq-ckpt.pt"),
}

# the structure fields of a config, with the HuBERT-base values (configs written before they
# existed lack them)
BASE_STRUCTURE = {"conv_bias": False, "extractor_mode": "default", "layer_norm_first": False}


def get_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown content encoder kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


def default_config(kind: str = "vec768l12", **overrides) -> ml_collections.ConfigDict:
    """The full-size HuBERT-base config of ``kind`` (override widths for small test models).

    ``num_layers`` is how many transformer layers the checkpoint holds; the model built for a
    kind runs only the first ``output_layer`` of them (all of them for ``cnhubertlarge``).
    ``cnhubertlarge`` is HuBERT-large: layer-norm conv extractor, pre-LN layers, 1024 wide.
    """
    k = get_kind(kind)
    large = k.name == "cnhubertlarge"
    cfg = ml_collections.ConfigDict(dict(
        kind=k.name,
        family="hubert",
        layout="hubert_soft" if k.name == "hubertsoft" else "fairseq",  # checkpoint family
        conv_layers=[list(c) for c in BASE_CONV_LAYERS],
        embed_dim=1024 if large else 768,
        ffn_dim=4096 if large else 3072,
        num_heads=16 if large else 12,
        num_layers=24 if large else 12,
        conv_pos=128,
        conv_pos_groups=16,
        final_dim=256 if k.use_head else 0,
        layer_norm_eps=1e-5,
        conv_bias=False,
        extractor_mode="layer_norm" if large else "default",
        layer_norm_first=large,
    ))
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"unknown content encoder config field {key!r}; known: {', '.join(cfg)}")
        cfg[key] = [list(c) for c in value] if key == "conv_layers" else value
    return cfg


def num_frames(n_samples, conv_layers: Any = BASE_CONV_LAYERS, input_pad: int = 0):
    """Frames the conv stack makes of ``n_samples`` (ints, NumPy or JAX arrays; 0 if too short).

    ``conv_layers`` is the stack, or an encoder config (its stack and its kind's ``input_pad``).
    Each layer maps ``n`` to ``floor((n - kernel) / stride) + 1``; the base stack turns 16000
    samples into 49 frames.
    """
    if hasattr(conv_layers, "conv_layers"):  # a config: the family API of svcjax.models.encoders
        conv_layers, input_pad = conv_layers.conv_layers, get_kind(conv_layers.kind).input_pad
    xp = jnp if isinstance(n_samples, jax.Array) else np
    n = xp.asarray(n_samples) + 2 * input_pad
    for _, k, s in conv_layers:
        n = xp.where(n >= k, (n - k) // s + 1, 0)
    return int(n) if np.ndim(n) == 0 and not isinstance(n, jax.Array) else n


def min_samples(config) -> int:
    """The shortest clip that gives one frame (400 samples, 25 ms, for the base stack)."""
    n = 1
    for _, k, s in reversed(config.conv_layers):
        n = (n - 1) * s + k
    return max(n - 2 * get_kind(config.kind).input_pad, 1)


def max_samples(config) -> None:
    """No upper bound: the position embedding is convolutional."""
    return None


def unit_dim(config) -> int:
    """The width of ``config.kind``'s units (``final_proj``'s output where the kind uses it)."""
    return int(config.final_dim) if get_kind(config.kind).use_head else int(config.embed_dim)


def hop(config) -> int:
    """Input samples per unit frame (320: 50 frames per second at 16 kHz)."""
    return int(np.prod([s for _, _, s in config.conv_layers]))


def gelu(x):
    return jax.nn.gelu(x, approximate=False)  # torch's default (erf) GELU, as fairseq and HF use


class MaskedGroupNorm(nn.Module):
    """``GroupNorm(C, C)`` on ``(B, T, C)``: each channel normalised over the valid frames.

    ``mask`` is ``(B, T, 1)``; statistics are float32 and the variance is the biased one, as
    torch computes them.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        xf = x.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)
        mean = jnp.sum(xf * mask, axis=1, keepdims=True) / count
        var = jnp.sum(jnp.square((xf - mean) * mask), axis=1, keepdims=True) / count
        y = (xf - mean) * lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(x.dtype)


class FeatureExtractor(nn.Module):
    """fairseq's ConvFeatureExtractionModel: ``(B, L)`` -> ``(B, T, C)``.

    ``mode='default'``: a GroupNorm (one group per channel, over time) after the first conv;
    ``mode='layer_norm'``: a LayerNorm over the channels after every conv (fairseq's
    ``Sequential(TransposeLast, Fp32LayerNorm, TransposeLast)``, hence the ``_2_1`` names).
    """

    conv_layers: Sequence[Sequence[int]]
    epsilon: float = 1e-5
    mode: str = "default"
    conv_bias: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, wav: Array, lengths: Array) -> tuple[Array, Array]:
        if self.mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode {self.mode!r}: expected 'default' or 'layer_norm'")
        x = wav[..., None]
        n = lengths
        for i, (dim, k, s) in enumerate(self.conv_layers):
            x = Conv1d(dim, k, stride=s, use_bias=self.conv_bias, dtype=self.dtype,
                       precision=self.precision, name=f"conv_layers_{i}_0")(x)
            n = jnp.where(n >= k, (n - k) // s + 1, 0)
            if self.mode == "layer_norm":
                x = LayerNorm(self.epsilon, name=f"conv_layers_{i}_2_1")(x)
            elif i == 0:
                mask = (jnp.arange(x.shape[1])[None, :] < n[:, None]).astype(jnp.float32)[..., None]
                x = MaskedGroupNorm(self.epsilon, name="conv_layers_0_2")(x, mask)
            x = gelu(x)
        return x, n


class PositionalConv(nn.Module):
    """The convolutional position embedding: grouped conv, weight norm over the kernel axis.

    ``weight = g * v / ||v||`` with one ``g`` per kernel tap and the norm over the channel axes
    (``torch.nn.utils.weight_norm(conv, dim=2)``). Padding ``K // 2`` both sides then the last
    frame dropped for even ``K`` (fairseq's SamePad): the output has the input's length.
    """

    kernel_size: int
    groups: int
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c, k, g = x.shape[-1], self.kernel_size, self.groups
        if c % g:
            raise ValueError(f"position conv: {c} channels not divisible by {g} groups")
        std = math.sqrt(4.0 / (k * c))  # fairseq's init of the position conv
        v = self.param("kernel_v", nn.initializers.normal(std), (k, c // g, c), jnp.float32)
        gain = self.param("kernel_g", lambda _k, _s, _d: jnp.sqrt(jnp.sum(v * v, axis=(1, 2))),
                          (k,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        kernel = v * (gain / jnp.sqrt(jnp.sum(v * v, axis=(1, 2))))[:, None, None]
        dtype = self.dtype or x.dtype
        left = k // 2
        right = k // 2 - (1 if k % 2 == 0 else 0)
        y = lax.conv_general_dilated(
            x.astype(dtype), kernel.astype(dtype), window_strides=(1,), padding=[(left, right)],
            dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=g,
            precision=self.precision)
        return gelu(y + bias.astype(dtype))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask (fairseq's q/k/v/out projections).

    Queries are processed in blocks of ``query_block`` frames (a ``lax.map``), so a long clip
    holds one ``(B, H, block, T)`` score matrix at a time instead of ``(B, H, T, T)``.
    ``head_dim`` 0 means ``width / num_heads``; pruned models (DPHuBERT) keep fewer heads of a
    fixed size, so their projections are ``num_heads * head_dim`` wide.
    """

    num_heads: int
    query_block: int = 1024
    head_dim: int = 0
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, key_mask: Array) -> Array:
        b, t, c = x.shape
        h = self.num_heads
        if not self.head_dim and c % h:
            raise ValueError(f"attention: width {c} not divisible by {h} heads")
        d = self.head_dim or c // h
        lin = dict(dtype=self.dtype, precision=self.precision)
        q = Linear(h * d, name="q_proj", **lin)(x) * (d ** -0.5)
        k = Linear(h * d, name="k_proj", **lin)(x).reshape(b, t, h, d)
        v = Linear(h * d, name="v_proj", **lin)(x).reshape(b, t, h, d)
        bias_mask = key_mask[:, None, None, :]

        def attend(qb):  # (B, tq, H, D) -> (B, tq, H, D)
            logits = jnp.einsum("bqhd,bkhd->bhqk", qb, k, precision=self.precision)
            # A large finite negative instead of -inf: exactly zero weight after softmax for
            # every clip with at least one frame, and no NaN for an all-padding batch row.
            logits = jnp.where(bias_mask, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
            return jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=self.precision)

        q = q.reshape(b, t, h, d)
        blk = self.query_block
        if t <= blk:
            out = attend(q)
        else:
            nblk = -(-t // blk)
            qp = jnp.pad(q, ((0, 0), (0, nblk * blk - t), (0, 0), (0, 0)))
            qp = qp.reshape(b, nblk, blk, h, d).swapaxes(0, 1)
            out = lax.map(attend, qp).swapaxes(0, 1).reshape(b, nblk * blk, h, d)[:, :t]
        return Linear(c, name="out_proj", **lin)(out.reshape(b, t, h * d))


class EncoderLayer(nn.Module):
    """fairseq's TransformerSentenceEncoderLayer: post-LN, or pre-LN with ``layer_norm_first``."""

    ffn_dim: int
    num_heads: int
    epsilon: float = 1e-5
    attention_block: int = 1024
    layer_norm_first: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, key_mask: Array) -> Array:
        lin = dict(dtype=self.dtype, precision=self.precision)
        attn = SelfAttention(self.num_heads, self.attention_block, name="self_attn", **lin)
        attn_norm = LayerNorm(self.epsilon, name="self_attn_layer_norm")
        fc1 = Linear(self.ffn_dim, name="fc1", **lin)
        fc2 = Linear(x.shape[-1], name="fc2", **lin)
        ffn_norm = LayerNorm(self.epsilon, name="final_layer_norm")
        if self.layer_norm_first:
            x = x + attn(attn_norm(x), key_mask)
            return x + fc2(gelu(fc1(ffn_norm(x))))
        x = attn_norm(x + attn(x, key_mask))
        return ffn_norm(x + fc2(gelu(fc1(x))))


class Hubert(nn.Module):
    """HuBERT-base from waveform to the hidden state of layer ``num_layers`` (and a head).

    ``wav`` is ``(B, L)`` float at 16 kHz, ``lengths`` ``(B,)`` the valid samples of each row
    (samples past it are ignored). Returns ``(units, frame_lengths)``: ``units`` is
    ``(B, T, C)`` with frames past each clip's end set to zero, ``T`` = :func:`num_frames` of
    ``L`` (plus ``input_pad``). ``hidden_states=True`` returns instead the list of the input
    to the first layer and every layer's output (no head), for parity checks; with
    ``final_norm`` the last of them is after the encoder's LayerNorm (as Hugging Face's
    ``hidden_states`` of a pre-LN model).

    ``extractor_mode``, ``conv_bias`` and ``layer_norm_first`` select HuBERT-large's structure
    (module docstring); ``final_norm`` applies the encoder's LayerNorm after the last layer run
    (pre-LN models only, where it is not used before the layers).
    """

    conv_layers: Sequence[Sequence[int]] = BASE_CONV_LAYERS
    embed_dim: int = 768
    ffn_dim: int = 3072
    num_heads: int = 12
    num_layers: int = 12          # layers built and run
    conv_pos: int = 128
    conv_pos_groups: int = 16
    final_dim: int = 0            # 0: no head; else Linear(embed_dim -> final_dim) named final_proj
    input_pad: int = 0
    layer_norm_eps: float = 1e-5
    attention_block: int = 1024   # queries per attention block (bounds memory on long clips)
    extractor_mode: str = "default"
    conv_bias: bool = False
    layer_norm_first: bool = False
    final_norm: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, wav: Array, lengths: Array | None = None, *, hidden_states: bool = False):
        wav = jnp.asarray(wav)
        if wav.ndim != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {wav.shape}")
        b, n = wav.shape
        lengths = jnp.full((b,), n, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
        lengths = jnp.minimum(lengths, n)
        if self.input_pad:
            valid = jnp.arange(n)[None, :] < lengths[:, None]
            wav = jnp.pad(jnp.where(valid, wav, 0), ((0, 0), (self.input_pad, self.input_pad)))
            lengths = lengths + 2 * self.input_pad
        lin = dict(dtype=self.dtype, precision=self.precision)
        x, frames = FeatureExtractor(self.conv_layers, self.layer_norm_eps, self.extractor_mode,
                                     self.conv_bias, name="feature_extractor", **lin)(wav, lengths)
        mask = jnp.arange(x.shape[1])[None, :] < frames[:, None]
        x = LayerNorm(self.layer_norm_eps, name="layer_norm")(x)
        if x.shape[-1] != self.embed_dim:
            x = Linear(self.embed_dim, name="post_extract_proj", **lin)(x)
        x = Encoder(self.ffn_dim, self.num_heads, self.num_layers, self.conv_pos,
                    self.conv_pos_groups, self.layer_norm_eps, self.attention_block,
                    self.layer_norm_first, self.final_norm, name="encoder", **lin)(
                        x, mask, hidden_states=hidden_states)
        zero = lambda a: jnp.where(mask[..., None], a, 0).astype(a.dtype)  # noqa: E731
        if hidden_states:
            return [zero(h) for h in x], frames
        if self.final_dim:
            x = Linear(self.final_dim, name="final_proj", **lin)(x)
        return zero(x), frames


class Encoder(nn.Module):
    """fairseq's TransformerEncoder: position conv, LayerNorm, the layers (post-LN); or, with
    ``layer_norm_first``, position conv, the pre-LN layers, and the LayerNorm after them when
    ``final_norm`` (fairseq applies it only when every layer runs).

    The layers keep their own parameters (``layers_0`` ... as in the checkpoint) but run as one
    ``lax.scan`` over their stacked parameters (and are initialised by one ``vmap``), so XLA
    compiles one layer instead of twelve.
    """

    ffn_dim: int
    num_heads: int
    num_layers: int
    conv_pos: int
    conv_pos_groups: int
    epsilon: float = 1e-5
    attention_block: int = 1024
    layer_norm_first: bool = False
    final_norm: bool = False
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, hidden_states: bool = False):
        lin = dict(dtype=self.dtype, precision=self.precision)
        if self.final_norm and not self.layer_norm_first:
            raise ValueError("final_norm applies to pre-LN (layer_norm_first) encoders only")
        x = jnp.where(mask[..., None], x, 0)
        x = x + PositionalConv(self.conv_pos, self.conv_pos_groups, name="pos_conv_0", **lin)(x)
        norm = LayerNorm(self.epsilon, name="layer_norm")
        if self.layer_norm_first:
            if self.is_initializing():
                norm(x)  # declared here, applied (if at all) after the layers
        else:
            x = norm(x)
        last = norm if self.final_norm else (lambda h: h)
        n = self.num_layers
        if not n:
            return [last(x)] if hidden_states else last(x)
        layer = EncoderLayer(self.ffn_dim, self.num_heads, self.epsilon, self.attention_block,
                             self.layer_norm_first, parent=None, **lin)
        if self.is_initializing():
            # One vmapped init for all layers (a small program), then one parameter per layer.
            c = x.shape[-1]
            fresh = jax.vmap(lambda k: layer.init(
                k, jnp.zeros((1, 1, c), x.dtype), jnp.ones((1, 1), bool))["params"])(
                    jax.random.split(self.make_rng("params"), n))
            for i in range(n):
                self.param(f"layers_{i}", lambda _key, i=i: jax.tree.map(lambda a: a[i], fresh))
        params = self.variables["params"]
        stacked = jax.tree.map(lambda *p: jnp.stack(p), *[params[f"layers_{i}"] for i in range(n)])

        def body(h, p):
            h = layer.apply({"params": p}, h, mask)
            return h, (h if hidden_states else None)

        first = x
        x, ys = lax.scan(body, x, stacked)
        if hidden_states:
            return [first] + [ys[i] for i in range(n - 1)] + [last(ys[n - 1])]
        return last(x)


def build_model(config, *, full: bool = False, dtype: Any = None, precision: Any = None,
                attention_block: int = 1024) -> Hubert:
    """The :class:`Hubert` that computes ``config.kind``'s units.

    Only the layers the kind uses are built (``vec256l9`` runs 9 of the checkpoint's 12);
    ``full=True`` builds every layer of the checkpoint and its head, as the importer needs.
    The ContentVec / HuBERT-Soft kinds take a layer's output as the HuBERT-base structure
    defines it, so they refuse a config of another structure (``cnhubertlarge`` takes any).
    """
    kind = get_kind(config.kind)
    structure = {k: config.get(k, v) for k, v in BASE_STRUCTURE.items()}
    if kind.output_layer and structure != BASE_STRUCTURE:
        found = ", ".join(f"{k}={v!r}" for k, v in structure.items() if BASE_STRUCTURE[k] != v)
        raise ValueError(f"kind {kind.name} takes a layer of the HuBERT-base structure; this "
                         f"model has {found} (a HuBERT-large-like model gives cnhubertlarge units)")
    if full:
        num_layers, final_dim = int(config.num_layers), int(config.final_dim)
    elif not kind.output_layer:
        num_layers, final_dim = int(config.num_layers), 0
    else:
        num_layers = kind.output_layer
        if num_layers > config.num_layers:
            raise ValueError(
                f"kind {kind.name} uses layer {kind.output_layer} but the model has only "
                f"{config.num_layers} transformer layers")
        if kind.use_head and not config.final_dim:
            raise ValueError(f"kind {kind.name} needs the final projection (final_proj), "
                             "which this model lacks")
        final_dim = int(config.final_dim) if kind.use_head else 0
    return Hubert(
        conv_layers=tuple(tuple(int(v) for v in c) for c in config.conv_layers),
        embed_dim=int(config.embed_dim),
        ffn_dim=int(config.ffn_dim),
        num_heads=int(config.num_heads),
        num_layers=num_layers,
        conv_pos=int(config.conv_pos),
        conv_pos_groups=int(config.conv_pos_groups),
        final_dim=final_dim,
        input_pad=kind.input_pad,
        layer_norm_eps=float(config.layer_norm_eps),
        attention_block=attention_block,
        extractor_mode=str(structure["extractor_mode"]),
        conv_bias=bool(structure["conv_bias"]),
        layer_norm_first=bool(structure["layer_norm_first"]),
        final_norm=bool(structure["layer_norm_first"]) and not kind.output_layer,
        dtype=dtype,
        precision=precision,
    )
