"""WavLM in Flax: 16 kHz audio in, 50 Hz content units out (So-VITS-SVC's ``wavlmbase+``).

So-VITS-SVC 4.1's ``wavlmbase+`` encoder loads Microsoft's ``WavLM-Base+.pt`` (a dict
``{'cfg': {...}, 'model': state_dict}``), builds the network the ``cfg`` describes and returns
the output of the LAST transformer layer (``extract_features`` without ``output_layer``),
followed by the encoder's final LayerNorm only when the layers are pre-LN
(``layer_norm_first``; post-LN models such as Base+ end on their last layer's own norm). When
``cfg['normalize']`` is set (WavLM-Large) the waveform is first normalised to zero mean and
unit variance over the clip, as the reference's encoder does.

The network (every option is read from the checkpoint's ``cfg``, so any size of the same
architecture loads):

* a convolutional feature extractor (``conv_feature_layers``, e.g. seven convolutions with
  kernels 10,3,3,3,3,2,2 and strides 5,2,...: 320 samples a frame); ``extractor_mode
  'default'`` has a GroupNorm with one group per channel (statistics over time) after the
  first convolution, ``'layer_norm'`` a LayerNorm over channels after each; GELU after each;
  convolution biases if ``conv_bias``;
* LayerNorm over the extractor's channels, a projection to ``encoder_embed_dim`` when they
  differ; the grouped convolutional position embedding (weight norm over the kernel axis,
  the last frame dropped for an even kernel, GELU) added to its input;
* ``encoder_layers`` transformer layers, post-LN (LayerNorm before the layers) or pre-LN
  (``layer_norm_first``: LayerNorm after them), FFN with ``activation_fn`` (``glu`` is a
  gated linear unit with a swish gate);
* relative-position bias (``relative_position_embedding``): the first layer owns a table of
  ``num_buckets`` x heads; the key-minus-query offset falls in one of ``num_buckets / 2``
  buckets per direction, exact below ``num_buckets / 4`` frames, logarithmic up to
  ``max_distance``, then the last bucket. Every layer adds this same bias to its scores; with
  ``gru_rel_pos`` each layer scales it per query and head by a gate computed from the layer's
  input: ``(a, b) = sigmoid(sum of 4-wide groups of W x_head)``, gate ``= a (b c_h - 1) + 2``
  with a learnt ``c_h`` (``grep_linear``, ``grep_a``).

Batches of clips of different lengths are padded and carry their lengths: the waveform
normalisation and the first GroupNorm take their statistics over each clip's valid samples /
frames only, frames past a clip's end are zeroed before the position convolution and masked
out of attention, so a padded clip gives the same valid frames as the clip alone. Parameter
names follow the reference's state_dict (``feature_extractor/conv_layers_0_0``,
``encoder/layers_0/self_attn/relative_attention_bias``, ``.../grep_linear``), so that
:mod:`svcjax.interop.wavlm` maps checkpoints by the generic rules.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from svcjax.models.content_encoder import FeatureExtractor, PositionalConv
from svcjax.models.content_encoder import num_frames as _conv_frames
from svcjax.models.layers import LayerNorm, Linear

Array = jax.Array

__all__ = [
    "FAMILY",
    "kinds",
    "SAMPLE_RATE",
    "ACTIVATIONS",
    "default_config",
    "build_model",
    "num_frames",
    "min_samples",
    "max_samples",
    "unit_dim",
    "hop",
    "relative_position_buckets",
    "WavLM",
]

FAMILY = "wavlm"
SAMPLE_RATE = 16000

BASE_CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2



def kinds() -> list[str]:
    """The So-VITS ``speech_encoder`` names this family computes (from the registry)."""
    from svcjax.models import encoders
    return [k for k, v in encoders.KINDS.items() if v.family == FAMILY]


def _check_kind(kind: str) -> None:
    if kind not in kinds():
        raise ValueError(f"{kind!r} is not a WavLM encoder kind; known: {', '.join(kinds())}")

ACTIVATIONS = ("gelu", "gelu_accurate", "gelu_fast", "relu", "tanh", "linear", "glu")


def default_config(kind: str = "wavlmbase+", **overrides) -> ml_collections.ConfigDict:
    """WavLM-Base+'s config (the ``cfg`` of ``WavLM-Base+.pt``); override fields for other sizes."""
    _check_kind(kind)
    cfg = ml_collections.ConfigDict(dict(
        kind=kind,
        family=FAMILY,
        conv_layers=[list(c) for c in BASE_CONV_LAYERS],
        extractor_mode="default",
        conv_bias=False,
        embed_dim=768,
        ffn_dim=3072,
        num_heads=12,
        num_layers=12,
        activation_fn="gelu",
        layer_norm_first=False,
        normalize=False,
        conv_pos=128,
        conv_pos_groups=16,
        relative_position_embedding=True,
        num_buckets=320,
        max_distance=800,
        gru_rel_pos=True,
        layer_norm_eps=1e-5,
    ))
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"unknown WavLM config field {key!r}; known: {', '.join(cfg)}")
        cfg[key] = [list(c) for c in value] if key == "conv_layers" else value
    return cfg


def num_frames(n_samples, config):
    """Unit frames of ``n_samples`` samples (ints or arrays; 0 when too short for one)."""
    return _conv_frames(n_samples, [tuple(c) for c in config.conv_layers])


def min_samples(config) -> int:
    """The shortest clip that gives one frame (400 samples, 25 ms, for the base stack)."""
    n = 1
    for _, k, s in reversed([tuple(c) for c in config.conv_layers]):
        n = (n - 1) * int(s) + int(k)
    return n


def max_samples(config) -> None:
    """No fixed window: any length runs (attention is blocked over queries)."""
    return None


def unit_dim(config) -> int:
    return int(config.embed_dim)


def hop(config) -> int:
    """16 kHz samples per unit frame (320: 50 frames a second)."""
    return int(np.prod([int(c[2]) for c in config.conv_layers]))


def relative_position_buckets(offsets, num_buckets: int, max_distance: int) -> np.ndarray:
    """The bucket of each key-minus-query offset (bidirectional), as an int32 NumPy array.

    Half the buckets per direction (the upper half for positive offsets); within a half the
    first ``num_buckets // 4`` distances have a bucket each, larger ones share buckets spaced
    logarithmically up to ``max_distance``, beyond which all fall in the last. Computed in
    float64 on the host: the float32 logarithm of the reference lands on the same integers
    (a test compares the two over every offset of 400 s of frames).
    """
    rel = np.asarray(offsets, np.int64)
    half = num_buckets // 2
    exact = half // 2
    dist = np.abs(rel)
    with np.errstate(divide="ignore"):
        large = exact + (np.log(np.maximum(dist, 1) / exact) / math.log(max_distance / exact)
                         * (half - exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    out = np.where(dist < exact, dist, large) + (rel > 0) * half
    return out.astype(np.int32)


def _activation(name: str):
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_accurate", "gelu_fast"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    if name == "tanh":
        return jnp.tanh
    if name == "linear":
        return lambda x: x
    raise ValueError(f"WavLM activation_fn {name!r} is not supported; known: "
                     f"{', '.join(ACTIVATIONS)}")


class GLULinear(nn.Module):
    """The reference's ``GLU_Linear(.., 'swish')``: ``y[:, :F] * swish(y[:, F:])``, ``y = W x``."""

    features: int
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = Linear(2 * self.features, name="linear", dtype=self.dtype, precision=self.precision)(x)
        a, b = y[..., : self.features], y[..., self.features:]
        return a * (b * jax.nn.sigmoid(b))


class SelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's (gated) relative-position bias and a key mask.

    ``table`` is the first layer's ``(num_buckets, heads)`` bias table (None: no bias);
    ``buckets`` the host-computed bucket of every absolute offset (see
    :func:`relative_position_buckets`). Queries are processed in blocks of ``query_block``
    frames (a ``lax.map``): one ``(B, H, block, T)`` score matrix is held at a time, and the
    bias of a block is gathered from the table inside it.
    """

    num_heads: int
    gru_rel_pos: bool = False
    query_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, key_mask: Array, table: Array | None = None,
                 buckets: Array | None = None) -> Array:
        b, t, c = x.shape
        h = self.num_heads
        if c % h:
            raise ValueError(f"attention: width {c} not divisible by {h} heads")
        d = c // h
        lin = dict(dtype=self.dtype, precision=self.precision)
        q = (Linear(c, name="q_proj", **lin)(x) * (d ** -0.5)).reshape(b, t, h, d)
        k = Linear(c, name="k_proj", **lin)(x).reshape(b, t, h, d)
        v = Linear(c, name="v_proj", **lin)(x).reshape(b, t, h, d)
        gate = None
        if self.gru_rel_pos:
            # computed from the layer's input split into heads (the reference's fast path)
            g = Linear(8, name="grep_linear", **lin)(x.reshape(b, t, h, d))
            g = jax.nn.sigmoid(g.reshape(b, t, h, 2, 4).sum(-1).astype(jnp.float32))
            grep_a = self.param("grep_a", nn.initializers.ones, (1, h, 1, 1), jnp.float32)
            gate = g[..., 0] * (g[..., 1] * grep_a.reshape(h) - 1.0) + 2.0   # (B, T, H)
        if table is not None and buckets is None:
            raise ValueError("relative-position bias without its bucket map")
        key_ok = key_mask[:, None, None, :]
        blk = min(self.query_block, t)
        nblk = -(-t // blk)

        def attend(args):  # one block of queries
            i0, qb, gb = args  # qb (B, blk, H, D), gb (B, blk, H)
            logits = jnp.einsum("bqhd,bkhd->bhqk", qb, k,
                                precision=self.precision).astype(jnp.float32)
            if table is not None:
                qi = i0 + jnp.arange(blk)
                rel = jnp.arange(t)[None, :] - qi[:, None]                    # key - query
                idx = jnp.minimum(jnp.abs(rel), buckets.shape[0] - 1)
                bucket = buckets[idx] + jnp.where(rel > 0, table.shape[0] // 2, 0)
                bias = jnp.take(table.T.astype(jnp.float32), bucket, axis=1)[None]  # (1,H,blk,T)
                if gb is not None:
                    bias = gb.transpose(0, 2, 1)[..., None] * bias
                logits = logits + bias
            # A large finite negative instead of -inf: zero weight for padding, no NaN for an
            # all-padding row.
            logits = jnp.where(key_ok, logits, jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
            return jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=self.precision)

        if nblk == 1:
            out = attend((0, q, gate))
        else:
            pad = nblk * blk - t
            qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
            qp = qp.reshape(b, nblk, blk, h, d).swapaxes(0, 1)
            gp = None
            if gate is not None:
                gp = jnp.pad(gate, ((0, 0), (0, pad), (0, 0)))
                gp = gp.reshape(b, nblk, blk, h).swapaxes(0, 1)
            starts = jnp.arange(nblk) * blk
            out = lax.map(attend, (starts, qp, gp)).swapaxes(0, 1).reshape(b, nblk * blk, h, d)
            out = out[:, :t]
        return Linear(c, name="out_proj", **lin)(out.reshape(b, t, c))


class EncoderLayer(nn.Module):
    """The reference's ``TransformerSentenceEncoderLayer``: post-LN, or pre-LN with
    ``layer_norm_first``."""

    ffn_dim: int
    num_heads: int
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    gru_rel_pos: bool = False
    epsilon: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, key_mask: Array, table: Array | None = None,
                 buckets: Array | None = None) -> Array:
        lin = dict(dtype=self.dtype, precision=self.precision)
        attn = SelfAttention(self.num_heads, self.gru_rel_pos, self.attention_block,
                             name="self_attn", **lin)
        norm_a = LayerNorm(self.epsilon, name="self_attn_layer_norm")
        norm_b = LayerNorm(self.epsilon, name="final_layer_norm")

        def ffn(y):
            if self.activation_fn == "glu":
                y = GLULinear(self.ffn_dim, name="fc1", **lin)(y)
            else:
                y = _activation(self.activation_fn)(Linear(self.ffn_dim, name="fc1", **lin)(y))
            return Linear(x.shape[-1], name="fc2", **lin)(y)

        if self.layer_norm_first:
            x = x + attn(norm_a(x), key_mask, table, buckets)
            return x + ffn(norm_b(x))
        x = norm_a(x + attn(x, key_mask, table, buckets))
        return norm_b(x + ffn(x))


class Encoder(nn.Module):
    """The reference's ``TransformerEncoder``: position conv, LayerNorm, layers (one ``lax.scan``).

    Parameters keep the checkpoint's names (``layers_0`` ..., the bias table under
    ``layers_0/self_attn/relative_attention_bias``); the layers run as one scan over their
    stacked parameters (the table, shared by all, is passed to each), so XLA compiles one
    layer instead of twelve.
    """

    ffn_dim: int
    num_heads: int
    num_layers: int
    conv_pos: int
    conv_pos_groups: int
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = False
    epsilon: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, hidden_states: bool = False):
        lin = dict(dtype=self.dtype, precision=self.precision)
        x = jnp.where(mask[..., None], x, 0)
        x = x + PositionalConv(self.conv_pos, self.conv_pos_groups, name="pos_conv_0", **lin)(x)
        norm = LayerNorm(self.epsilon, name="layer_norm")
        if not self.layer_norm_first:
            x = norm(x)
        states = [x]
        n, t, c, h = self.num_layers, x.shape[1], x.shape[-1], self.num_heads
        rel = self.relative_position_embedding
        layer = EncoderLayer(self.ffn_dim, self.num_heads, self.activation_fn,
                             self.layer_norm_first, self.gru_rel_pos, self.epsilon,
                             self.attention_block, parent=None, **lin)
        if n and self.is_initializing():
            # Parameters only: one vmapped init for all layers (a small program), then one
            # parameter per layer; the first layer also owns the relative-position table. The
            # layers are not run (init's output is discarded), which keeps init's compile small.
            zero_table = jnp.zeros((self.num_buckets, h), jnp.float32) if rel else None
            dummy_buckets = jnp.zeros((2,), jnp.int32) if rel else None
            fresh = jax.vmap(lambda k: layer.init(
                k, jnp.zeros((1, 1, c), x.dtype), jnp.ones((1, 1), bool), zero_table,
                dummy_buckets)["params"])(jax.random.split(self.make_rng("params"), n))
            table_init = nn.initializers.xavier_normal()(
                self.make_rng("params"), (self.num_buckets, h), jnp.float32)
            for i in range(n):
                def init_layer(_key, i=i):
                    p = jax.tree.map(lambda a: a[i], fresh)
                    if rel and i == 0:
                        p = dict(p)
                        p["self_attn"] = dict(p["self_attn"], relative_attention_bias={
                            "embedding": table_init})
                    return p
                self.param(f"layers_{i}", init_layer)
            if hidden_states:
                states += [x] * n
        elif n:
            params = self.variables["params"]
            per_layer = [dict(params[f"layers_{i}"]) for i in range(n)]
            table = buckets = None
            if rel:
                attn0 = dict(per_layer[0]["self_attn"])
                table = attn0.pop("relative_attention_bias")["embedding"]
                per_layer[0]["self_attn"] = attn0
                buckets = jnp.asarray(_abs_buckets(t + min(self.attention_block, t),
                                                   self.num_buckets, self.max_distance))
            stacked = jax.tree.map(lambda *p: jnp.stack(p), *per_layer)

            def body(y, p):
                y = layer.apply({"params": p}, y, mask, table, buckets)
                return y, (y if hidden_states else None)

            x, ys = lax.scan(body, x, stacked)
            if hidden_states:
                states += [ys[i] for i in range(n)]
        if self.layer_norm_first:
            x = norm(x)
        return states + [x] if hidden_states else x


def _abs_buckets(n: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Buckets of the NON-positive offsets ``0, -1, ..., -(n - 1)`` (the lower half).

    A positive offset of the same distance has this bucket plus ``num_buckets // 2``.
    """
    return relative_position_buckets(-np.arange(n), num_buckets, max_distance)


class WavLM(nn.Module):
    """WavLM from waveform to the output the reference's encoder returns.

    ``wav`` is ``(B, L)`` float at 16 kHz, ``lengths`` ``(B,)`` the valid samples of each row
    (samples past it are ignored). Returns ``(units, frame_lengths)``: ``units`` ``(B, T, C)``
    with frames past each clip's end set to zero. ``hidden_states=True`` returns instead the
    list of the input to the first layer, every layer's output and the final output (the last
    again, or after the final LayerNorm of a pre-LN model), for parity checks.
    """

    conv_layers: Sequence[Sequence[int]] = BASE_CONV_LAYERS
    extractor_mode: str = "default"
    conv_bias: bool = False
    embed_dim: int = 768
    ffn_dim: int = 3072
    num_heads: int = 12
    num_layers: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    normalize: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    layer_norm_eps: float = 1e-5
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, wav: Array, lengths: Array | None = None, *, hidden_states: bool = False):
        wav = jnp.asarray(wav, jnp.float32)
        if wav.ndim != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {wav.shape}")
        b, n = wav.shape
        lengths = (jnp.full((b,), n, jnp.int32) if lengths is None
                   else jnp.asarray(lengths, jnp.int32))
        lengths = jnp.minimum(lengths, n)
        valid = jnp.arange(n)[None, :] < lengths[:, None]
        if self.normalize:
            # F.layer_norm over the whole clip (biased variance, eps 1e-5), valid samples only
            count = jnp.maximum(lengths, 1)[:, None].astype(jnp.float32)
            mean = jnp.sum(jnp.where(valid, wav, 0), axis=1, keepdims=True) / count
            var = jnp.sum(jnp.where(valid, jnp.square(wav - mean), 0), axis=1,
                          keepdims=True) / count
            wav = (wav - mean) * lax.rsqrt(var + 1e-5)
        wav = jnp.where(valid, wav, 0)
        lin = dict(dtype=self.dtype, precision=self.precision)
        x, frames = FeatureExtractor(self.conv_layers, self.layer_norm_eps, self.extractor_mode,
                                     self.conv_bias, name="feature_extractor", **lin)(wav, lengths)
        mask = jnp.arange(x.shape[1])[None, :] < frames[:, None]
        x = LayerNorm(self.layer_norm_eps, name="layer_norm")(x)
        if x.shape[-1] != self.embed_dim:
            x = Linear(self.embed_dim, name="post_extract_proj", **lin)(x)
        x = Encoder(self.ffn_dim, self.num_heads, self.num_layers, self.conv_pos,
                    self.conv_pos_groups, self.activation_fn, self.layer_norm_first,
                    self.relative_position_embedding, self.num_buckets, self.max_distance,
                    self.gru_rel_pos, self.layer_norm_eps, self.attention_block,
                    name="encoder", **lin)(x, mask, hidden_states=hidden_states)
        zero = lambda a: jnp.where(mask[..., None], a, 0).astype(a.dtype)  # noqa: E731
        if hidden_states:
            return [zero(s) for s in x], frames
        return zero(x), frames


def build_model(config, *, dtype: Any = None, precision: Any = None, attention_block: int = 1024,
                full: bool = False) -> WavLM:
    """The :class:`WavLM` of ``config`` (every layer: the reference uses the last one's output,
    so ``full`` builds the same network)."""
    del full
    _check_kind(str(config.kind))
    if config.activation_fn not in ACTIVATIONS:
        raise ValueError(f"WavLM activation_fn {config.activation_fn!r} is not supported; "
                         f"known: {', '.join(ACTIVATIONS)}")
    return WavLM(
        conv_layers=tuple(tuple(int(v) for v in c) for c in config.conv_layers),
        extractor_mode=str(config.extractor_mode),
        conv_bias=bool(config.conv_bias),
        embed_dim=int(config.embed_dim),
        ffn_dim=int(config.ffn_dim),
        num_heads=int(config.num_heads),
        num_layers=int(config.num_layers),
        activation_fn=str(config.activation_fn),
        layer_norm_first=bool(config.layer_norm_first),
        normalize=bool(config.normalize),
        conv_pos=int(config.conv_pos),
        conv_pos_groups=int(config.conv_pos_groups),
        relative_position_embedding=bool(config.relative_position_embedding),
        num_buckets=int(config.num_buckets),
        max_distance=int(config.max_distance),
        gru_rel_pos=bool(config.gru_rel_pos),
        layer_norm_eps=float(config.layer_norm_eps),
        attention_block=int(attention_block),
        dtype=dtype,
        precision=precision,
    )
