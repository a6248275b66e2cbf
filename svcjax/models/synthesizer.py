"""So-VITS-SVC 4.1's generator ``SynthesizerTrn`` (``models.py``), channels-last.

Inputs are at the one frame rate (44.1 kHz / 512): content units ``c`` ``(B, T, ssl_dim)``,
F0 ``(B, T)`` in Hz, voicing ``uv`` ``(B, T)``, optional volume ``vol`` ``(B, T)``, a frame
``mask`` ``(B, T)`` (1 = valid; padded frames never change valid outputs), and a speaker ``g``:
integer ids ``(B,)`` or per-frame mixing weights ``(B, T, n_speakers)`` over ``emb_g`` rows.

    x      = pre(c) * mask + emb_uv(uv) [+ emb_vol(vol)]
    enc_p  : x + f0_emb(coarse f0) -> relative-position transformer -> proj -> m_p, logs_p
    enc_q  : linear spectrogram -> 16-layer WaveNet(g) -> m_q, logs_q, z   (training only)
    flow   : 4 x (mean-only coupling with a WaveNet (or causal transformer) on half the
             channels, channel flip); ``flow_share_parameter`` uses ONE network for all four
    f0_decoder : x + cond(g) + f0_prenet(norm_lf0) -> causal FFT -> lf0 prediction
    dec    : NSF-HiFiGAN on z (or a random 10240-sample slice of it in training); with
             ``vocoder_name: nsf-snake-hifigan`` its activations are anti-aliased snakes

Submodules carry the reference's attribute names (``enc_p/enc_/attn_layers_0/conv_q``,
``flow/flows_0/enc/in_layers_0``, ``dec/resblocks_3/convs1_0``, ...): coupling layers sit at the
even indices ``flows_{2i}`` (the Flip layers between them have no parameters), so
:mod:`svcjax.interop.torch_params` maps reference checkpoints with no renames; a shared flow
network lives at ``flow/wn`` like the reference's ``flow.wn``.

Repeated layers (transformer layers, WaveNet layers, the four couplings) are declared with
the reference's names and scanned over their stacked parameters when applied
(:mod:`svcjax.models.scan`), so each is compiled once.

Masks: padded frames never change valid outputs. Where the reference convolves an unmasked
tensor (the F0 decoder's prenet; the whole decoder), svcjax zeroes the padding first, which is
what the reference computes on an unpadded clip; on a padded training batch the reference's
own result at the last valid frames of a shorter clip differs slightly from its unpadded one.

Random draws use the ``'noise'`` rng stream (latent noise, segment start, sine source, F0
scale augmentation) and ``'dropout'`` for dropout; when a stream is not given every draw from
it is zero (and the F0 scale is 1, the segment starts at 0 unless ``slice_start`` is given).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from svcjax.audio import pitch
from svcjax.audio.constants import SAMPLING_RATE
from svcjax.models import noise as noise_lib
from svcjax.models.attention import FFT, Encoder as AttnEncoder
from svcjax.models.layers import CPU_CONV_KERNELS, Conv1d, ConvKernels, Linear
from svcjax.models.nsf_hifigan import Generator
from svcjax.models.scan import scan_layers
from svcjax.models.wavenet import WN

Array = jax.Array

__all__ = ["SynthesizerTrn", "TextEncoder", "PosteriorEncoder", "ResidualCouplingBlock",
           "TransformerCouplingBlock", "F0Decoder", "MODEL_DEFAULTS", "POSTERIOR_LAYERS",
           "DECODER_ACTIVATIONS"]

# Defaults of SynthesizerTrn's optional arguments (fields a config.json may lack).
MODEL_DEFAULTS = dict(
    vol_embedding=False,
    vocoder_name="nsf-hifigan",
    use_depthwise_conv=False,
    use_automatic_f0_prediction=True,
    flow_share_parameter=False,
    n_flow_layer=4,
    n_layers_trans_flow=3,
    use_transformer_flow=False,
)
# config ``vocoder_name`` -> the activation of the decoder (nsf_hifigan.Generator)
DECODER_ACTIVATIONS = {"nsf-hifigan": "leaky_relu", "nsf-snake-hifigan": "snake"}
# The posterior encoder's WaveNet depth is fixed in the reference (config n_layers_q is unused).
POSTERIOR_LAYERS = 16
N_FLOWS = 4


def _m(mask: Array, x: Array) -> Array:
    return mask[..., None].astype(x.dtype)


class TextEncoder(nn.Module):
    """``enc_p``: ``x + f0_emb(coarse)`` -> transformer -> ``proj`` -> ``(m, logs)``."""

    out_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)

    @nn.compact
    def __call__(self, x: Array, mask: Array, f0_coarse: Array,
                 train: bool = False) -> tuple[Array, Array]:
        emb = nn.Embed(256, self.hidden_channels, embedding_init=nn.initializers.normal(1.0),
                       name="f0_emb")(f0_coarse)
        x = x + emb.astype(x.dtype)
        m = _m(mask, x)
        x = AttnEncoder(self.hidden_channels, self.filter_channels, self.n_heads, self.n_layers,
                        self.kernel_size, self.p_dropout, dtype=self.dtype,
                        precision=self.precision, unroll_layers=self.unroll_layers,
                        name="enc_")(x * m, mask, train)
        stats = Conv1d(2 * self.out_channels, 1, dtype=self.dtype, precision=self.precision,
                       name="proj")(x) * m
        return stats[..., :self.out_channels], stats[..., self.out_channels:]


class PosteriorEncoder(nn.Module):
    """``enc_q``: spectrogram -> WaveNet(g) -> ``(m, logs)`` (the reference's ``Encoder``)."""

    out_channels: int
    hidden_channels: int
    kernel_size: int
    dilation_rate: int
    n_layers: int
    gin_channels: int = 0
    depthwise: bool = False
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, spec: Array, mask: Array, g: Array | None = None) -> tuple[Array, Array]:
        common = dict(dtype=self.dtype, precision=self.precision)
        m = _m(mask, spec)
        x = Conv1d(self.hidden_channels, 1, name="pre", **common)(spec) * m
        x = WN(self.hidden_channels, self.kernel_size, self.dilation_rate, self.n_layers,
               self.gin_channels, depthwise=self.depthwise, name="enc",
               unroll_layers=self.unroll_layers, conv_kernels=self.conv_kernels,
               **common)(x, mask, g)
        stats = Conv1d(2 * self.out_channels, 1, name="proj", **common)(x) * m
        return stats[..., :self.out_channels], stats[..., self.out_channels:]


class _MeanOnlyCoupling(nn.Module):
    """Shared body of the coupling layers: ``x1 += post(net(pre(x0)))`` (or ``-=``)."""

    channels: int
    hidden_channels: int
    net: nn.Module | None = None  # a shared network owned by the parent, else built here
    dtype: Any = None
    precision: Any = None

    def make_net(self) -> nn.Module:  # overridden
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: Array, mask: Array, g: Array | None, reverse: bool,
                 train: bool = False, flip: bool = False) -> Array:
        """Coupling, then the reference's Flip (channel reversal) when ``flip``; in reverse,
        the Flip is undone first."""
        if reverse and flip:
            x = x[..., ::-1]
        half = self.channels // 2
        common = dict(dtype=self.dtype, precision=self.precision)
        m = _m(mask, x)
        x0, x1 = x[..., :half], x[..., half:]
        h = Conv1d(self.hidden_channels, 1, name="pre", **common)(x0) * m
        net = self.net if self.net is not None else self.make_net()
        h = net(h, mask, g, train=train)
        mean = Conv1d(half, 1, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, name="post", **common)(h) * m
        x1 = (x1 - mean) * m if reverse else mean + x1 * m
        x = jnp.concatenate([x0, x1], axis=-1)
        return x[..., ::-1] if flip and not reverse else x


class ResidualCouplingLayer(_MeanOnlyCoupling):
    kernel_size: int = 5
    dilation_rate: int = 1
    n_layers: int = 4
    gin_channels: int = 0
    depthwise: bool = False
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    def make_net(self) -> nn.Module:
        return WN(self.hidden_channels, self.kernel_size, self.dilation_rate, self.n_layers,
                  self.gin_channels, depthwise=self.depthwise, dtype=self.dtype,
                  precision=self.precision, unroll_layers=self.unroll_layers,
                  conv_kernels=self.conv_kernels, name="enc")


class TransformerCouplingLayer(_MeanOnlyCoupling):
    filter_channels: int = 0
    n_heads: int = 2
    n_layers: int = 3
    kernel_size: int = 5
    p_dropout: float = 0.0
    gin_channels: int = 0
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)

    def make_net(self) -> nn.Module:
        return FFT(self.hidden_channels, self.filter_channels, self.n_heads, self.n_layers,
                   self.kernel_size, self.p_dropout, gin_channels=self.gin_channels,
                   dtype=self.dtype, precision=self.precision,
                   unroll_layers=self.unroll_layers, name="enc")


class _CouplingBlock(nn.Module):
    """4 x (coupling, flip); coupling i is ``flows_{2i}`` like the reference's ModuleList.

    Applied, the couplings are scanned over their stacked parameters (a shared network's
    parameters are repeated into each step), so one coupling layer is compiled.
    """

    def layer(self, i: int | None, net: nn.Module | None) -> nn.Module:  # overridden
        """Coupling ``i`` named ``flows_{2i}``, or an unbound one for ``i=None``."""
        raise NotImplementedError

    def shared(self) -> nn.Module:  # overridden
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: Array, mask: Array, g: Array | None = None, reverse: bool = False,
                 train: bool = False) -> Array:
        if self.is_initializing() or self.n_flows < 2:
            net = self.shared() if self.share_parameter else None
            layers = [self.layer(i, net) for i in range(self.n_flows)]
            for layer in (reversed(layers) if reverse else layers):
                x = layer(x, mask, g, reverse, train, True)
            return x
        params = self.variables["params"]
        steps = []
        for i in range(self.n_flows):
            p = dict(params[f"flows_{2 * i}"])
            if self.share_parameter:
                p["enc"] = params["wn"]
            steps.append(p)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *steps)
        rng = self.make_rng("dropout") if train and self.has_rng("dropout") else None
        return scan_layers(self.layer(None, None), stacked, x, mask, g, reverse, train, True,
                           rng=rng, reverse=reverse, unroll=self.unroll_layers)


class ResidualCouplingBlock(_CouplingBlock):
    channels: int = 192
    hidden_channels: int = 192
    kernel_size: int = 5
    dilation_rate: int = 1
    n_layers: int = 4
    n_flows: int = N_FLOWS
    gin_channels: int = 0
    share_parameter: bool = False
    depthwise: bool = False
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    def shared(self) -> nn.Module:
        return WN(self.hidden_channels, self.kernel_size, self.dilation_rate, self.n_layers,
                  self.gin_channels, depthwise=self.depthwise, dtype=self.dtype,
                  precision=self.precision, unroll_layers=self.unroll_layers,
                  conv_kernels=self.conv_kernels, name="wn")

    def layer(self, i: int | None, net: nn.Module | None) -> nn.Module:
        where = dict(name=f"flows_{2 * i}") if i is not None else dict(parent=None)
        return ResidualCouplingLayer(self.channels, self.hidden_channels, net, self.dtype,
                                     self.precision, kernel_size=self.kernel_size,
                                     dilation_rate=self.dilation_rate, n_layers=self.n_layers,
                                     gin_channels=self.gin_channels, depthwise=self.depthwise,
                                     unroll_layers=self.unroll_layers,
                                     conv_kernels=self.conv_kernels, **where)


class TransformerCouplingBlock(_CouplingBlock):
    channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 3
    kernel_size: int = 5
    p_dropout: float = 0.0
    n_flows: int = N_FLOWS
    gin_channels: int = 0
    share_parameter: bool = False
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)

    def shared(self) -> nn.Module:
        return FFT(self.hidden_channels, self.filter_channels, self.n_heads, self.n_layers,
                   self.kernel_size, self.p_dropout, gin_channels=self.gin_channels,
                   dtype=self.dtype, precision=self.precision,
                   unroll_layers=self.unroll_layers, name="wn")

    def layer(self, i: int | None, net: nn.Module | None) -> nn.Module:
        where = dict(name=f"flows_{2 * i}") if i is not None else dict(parent=None)
        return TransformerCouplingLayer(self.channels, self.hidden_channels, net, self.dtype,
                                        self.precision, filter_channels=self.filter_channels,
                                        n_heads=self.n_heads, n_layers=self.n_layers,
                                        kernel_size=self.kernel_size, p_dropout=self.p_dropout,
                                        gin_channels=self.gin_channels,
                                        unroll_layers=self.unroll_layers, **where)


class F0Decoder(nn.Module):
    """Predicts lf0 from (stop-gradient) features, speaker and normalised input lf0."""

    out_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    spk_channels: int = 0
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)

    @nn.compact
    def __call__(self, x: Array, norm_lf0: Array, mask: Array, spk_emb: Array | None = None,
                 train: bool = False) -> Array:
        common = dict(dtype=self.dtype, precision=self.precision)
        m = _m(mask, x)
        x = jax.lax.stop_gradient(x)
        if spk_emb is not None:
            x = x + Conv1d(self.hidden_channels, 1, name="cond", **common)(spk_emb.astype(x.dtype))
        x = x + Conv1d(self.hidden_channels, 3, padding=1, name="f0_prenet", **common)(
            norm_lf0[..., None].astype(x.dtype))
        # The reference convolves x unmasked; zeroing the padding first is what it computes on
        # an unpadded clip (whose convolutions see zeros past the end).
        x = Conv1d(self.hidden_channels, 3, padding=1, name="prenet", **common)(x * m) * m
        x = FFT(self.hidden_channels, self.filter_channels, self.n_heads, self.n_layers,
                self.kernel_size, self.p_dropout, name="decoder", unroll_layers=self.unroll_layers,
                **common)(x * m, mask, train=train)
        return Conv1d(self.out_channels, 1, name="proj", **common)(x) * m


class SynthesizerTrn(nn.Module):
    """The generator. Field names are those of the reference config's ``model`` section
    (``spec_channels`` = filter_length // 2 + 1, ``segment_size`` in frames)."""

    spec_channels: int
    segment_size: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    resblock: str
    resblock_kernel_sizes: Sequence[int]
    resblock_dilation_sizes: Sequence[Sequence[int]]
    upsample_rates: Sequence[int]
    upsample_initial_channel: int
    upsample_kernel_sizes: Sequence[int]
    gin_channels: int
    ssl_dim: int
    n_speakers: int
    sampling_rate: int = SAMPLING_RATE
    vol_embedding: bool = False
    vocoder_name: str = "nsf-hifigan"
    use_depthwise_conv: bool = False
    use_automatic_f0_prediction: bool = True
    flow_share_parameter: bool = False
    n_flow_layer: int = 4
    n_layers_trans_flow: int = 3
    use_transformer_flow: bool = False
    with_posterior: bool = True  # build enc_q (training); inference-only models may lack it
    dtype: Any = None
    precision: Any = None
    unroll_layers: bool = False  # trace the layer scan unrolled (svcjax.runtime.runner.KERNELS)
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    def setup(self):
        if self.vocoder_name not in DECODER_ACTIVATIONS:
            raise ValueError(f"vocoder_name {self.vocoder_name!r} is not supported; svcjax "
                             f"implements {', '.join(map(repr, DECODER_ACTIVATIONS))}")
        common = dict(dtype=self.dtype, precision=self.precision)
        self.emb_g = nn.Embed(self.n_speakers, self.gin_channels,
                              embedding_init=nn.initializers.normal(1.0))
        if self.vol_embedding:
            self.emb_vol = Linear(self.hidden_channels, **common)
        self.pre = Conv1d(self.hidden_channels, 5, padding=2, **common)
        self.emb_uv = nn.Embed(2, self.hidden_channels, embedding_init=nn.initializers.normal(1.0))
        unroll = dict(unroll_layers=self.unroll_layers)
        kern = dict(conv_kernels=self.conv_kernels)
        self.enc_p = TextEncoder(self.inter_channels, self.hidden_channels, self.filter_channels,
                                 self.n_heads, self.n_layers, self.kernel_size, self.p_dropout,
                                 **common, **unroll)
        self.dec = Generator(self.sampling_rate, self.resblock, self.resblock_kernel_sizes,
                             self.resblock_dilation_sizes, self.upsample_rates,
                             self.upsample_initial_channel, self.upsample_kernel_sizes,
                             self.gin_channels,
                             activation=DECODER_ACTIVATIONS[self.vocoder_name], **common, **kern)
        if self.with_posterior:
            self.enc_q = PosteriorEncoder(self.inter_channels, self.hidden_channels, 5, 1,
                                          POSTERIOR_LAYERS, self.gin_channels,
                                          depthwise=self.use_depthwise_conv, **common, **unroll,
                                          **kern)
        if self.use_transformer_flow:
            self.flow = TransformerCouplingBlock(
                self.inter_channels, self.hidden_channels, self.filter_channels, self.n_heads,
                self.n_layers_trans_flow, 5, self.p_dropout, self.n_flow_layer,
                self.gin_channels, self.flow_share_parameter, **common, **unroll)
        else:
            self.flow = ResidualCouplingBlock(
                self.inter_channels, self.hidden_channels, 5, 1, self.n_flow_layer, N_FLOWS,
                self.gin_channels, self.flow_share_parameter, self.use_depthwise_conv, **common,
                **unroll, **kern)
        if self.use_automatic_f0_prediction:
            self.f0_decoder = F0Decoder(1, self.hidden_channels, self.filter_channels,
                                        self.n_heads, self.n_layers, self.kernel_size,
                                        self.p_dropout, spk_channels=self.gin_channels, **common,
                                        **unroll)

    # -- pieces -------------------------------------------------------------------------------

    def speaker(self, g: Array) -> Array:
        """Ids ``(B,)`` -> ``(B, 1, gin)``; mixing weights ``(B, T, n_speakers)`` -> ``(B, T, gin)``."""
        if jnp.issubdtype(g.dtype, jnp.integer):
            return self.emb_g(g.reshape(-1, 1))
        table = self.emb_g.embedding
        return jnp.einsum("bts,sc->btc", g.astype(table.dtype), table, precision=self.precision)

    def prenet(self, c: Array, uv: Array, mask: Array, vol: Array | None) -> Array:
        dtype = self.dtype or jnp.float32
        c = c.astype(dtype) * _m(mask, c).astype(dtype)
        x = self.pre(c) * _m(mask, c).astype(dtype) + self.emb_uv(uv.astype(jnp.int32)).astype(dtype)
        if self.vol_embedding and vol is not None:
            x = x + self.emb_vol(vol[..., None].astype(dtype))
        return x

    def _lf0(self, f0: Array, uv: Array, mask: Array, g: Array, random_scale: bool,
             train: bool, x: Array) -> tuple[Array, Array, Array]:
        lf0 = pitch.f0_to_lf0(f0)
        key = self.make_rng("noise") if random_scale and self.has_rng("noise") else None
        norm_lf0 = pitch.normalize_lf0(lf0, mask, uv.astype(lf0.dtype), key)
        pred = self.f0_decoder(x, norm_lf0, mask, spk_emb=g, train=train)[..., 0]
        return lf0, norm_lf0, pred.astype(jnp.float32)

    def _noise(self, shape_like: Array) -> Array:
        if not self.has_rng("noise"):
            return jnp.zeros_like(shape_like)
        b, t, c = shape_like.shape
        return noise_lib.per_frame_normal(self.make_rng("noise"), b, t, (c,)).astype(
            shape_like.dtype)

    # -- the two paths ------------------------------------------------------------------------

    def __call__(self, c: Array, f0: Array, uv: Array, spec: Array, g: Array, mask: Array,
                 vol: Array | None = None, slice_start: Array | None = None,
                 train: bool = True) -> dict[str, Array]:
        """Training forward (the reference's ``forward``), everything the losses need.

        ``spec`` ``(B, T, spec_channels)`` linear spectrogram; ``slice_start`` ``(B,)`` frame
        where the decoded segment starts (default: drawn uniformly from the valid starts with
        the ``'noise'`` stream, 0 without it). Returns ``o`` ``(B, segment_size * hop)``,
        ``ids_slice``, ``mask``, ``z, z_p, m_p, logs_p, m_q, logs_q`` ``(B, T, inter)``,
        ``pred_lf0, norm_lf0, lf0`` ``(B, T)`` (zeros without automatic F0 prediction).
        """
        if not self.with_posterior:
            raise ValueError("this model was built without enc_q (inference only); the "
                             "training forward needs it")
        train = train and self.has_rng("dropout")
        b, t = f0.shape
        if t < self.segment_size:
            raise ValueError(f"training clips need at least segment_size={self.segment_size} "
                             f"frames, got {t}")
        mask = mask.astype(jnp.float32)
        gv = self.speaker(g)
        x = self.prenet(c, uv, mask, vol)
        if self.use_automatic_f0_prediction:
            lf0, norm_lf0, pred_lf0 = self._lf0(f0, uv, mask, gv, True, train, x)
        else:
            lf0 = norm_lf0 = pred_lf0 = jnp.zeros_like(f0, jnp.float32)
        m_p, logs_p = self.enc_p(x, mask, pitch.f0_to_coarse(f0), train)
        m_q, logs_q = self.enc_q(spec, mask, gv)
        z = (m_q + self._noise(m_q) * jnp.exp(logs_q)) * _m(mask, m_q)
        z_p = self.flow(z, mask, gv, reverse=False, train=train)

        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        if slice_start is None:
            if self.has_rng("noise"):
                u = noise_lib.per_example_uniform(self.make_rng("noise"), b)
            else:
                u = jnp.zeros((b,), jnp.float32)
            slice_start = (u * (lengths - self.segment_size + 1)).astype(jnp.int32)
        slice_start = jnp.clip(jnp.asarray(slice_start, jnp.int32), 0, t - self.segment_size)
        seg = self.segment_size

        def cut(a, s):
            return jax.lax.dynamic_slice_in_dim(a, s, seg, axis=0)

        z_slice = jax.vmap(cut)(z, slice_start)
        f0_slice = jax.vmap(cut)(f0, slice_start)
        m_slice = jax.vmap(cut)(mask, slice_start)
        g_slice = gv if gv.shape[1] == 1 else jax.vmap(cut)(gv, slice_start)
        o = self.dec(z_slice, f0_slice, g_slice, m_slice)
        return dict(o=o, ids_slice=slice_start, mask=mask, z=z, z_p=z_p, m_p=m_p, logs_p=logs_p,
                    m_q=m_q, logs_q=logs_q, pred_lf0=pred_lf0, norm_lf0=norm_lf0, lf0=lf0)

    def infer(self, c: Array, f0: Array, uv: Array, g: Array, mask: Array,
              vol: Array | None = None, noise_scale: Array | float = 0.35,
              predict_f0: bool = False) -> tuple[Array, Array]:
        """The reference's ``infer``: ``(wave (B, T * hop), f0 (B, T))``.

        ``f0`` is returned as used: the input, or the F0 decoder's prediction when
        ``predict_f0`` (models trained with automatic F0 prediction only).
        """
        mask = mask.astype(jnp.float32)
        gv = self.speaker(g)
        x = self.prenet(c, uv, mask, vol)
        f0 = f0.astype(jnp.float32)
        if predict_f0:
            if not self.use_automatic_f0_prediction:
                raise ValueError("predict_f0=True needs a model trained with "
                                 "use_automatic_f0_prediction")
            _, _, pred = self._lf0(f0, uv, mask, gv, False, False, x)
            f0 = pitch.lf0_to_f0(pred)
        m_p, logs_p = self.enc_p(x, mask, pitch.f0_to_coarse(f0))
        noise_scale = jnp.asarray(noise_scale, m_p.dtype)
        z_p = (m_p + self._noise(m_p) * jnp.exp(logs_p) * noise_scale) * _m(mask, m_p)
        z = self.flow(z_p, mask, gv, reverse=True)
        o = self.dec(z * _m(mask, z), f0, gv, mask)
        return o, f0 * mask

    def text_encoder(self, c, f0, uv, mask, vol=None):
        """``(m_p, logs_p)`` alone (for tests and analysis)."""
        x = self.prenet(c, uv, mask.astype(jnp.float32), vol)
        return self.enc_p(x, mask.astype(jnp.float32), pitch.f0_to_coarse(f0))

    def predict_lf0(self, c, f0, uv, g, mask, vol=None):
        """The F0 decoder's lf0 prediction ``(B, T)`` at inference (no random scale)."""
        mask = mask.astype(jnp.float32)
        gv = self.speaker(g)
        x = self.prenet(c, uv, mask, vol)
        return self._lf0(f0.astype(jnp.float32), uv, mask, gv, False, False, x)[2]

    def flow_reverse(self, z_p, g, mask):
        return self.flow(z_p, mask.astype(jnp.float32), self.speaker(g), reverse=True)

    def decode(self, z, f0, g, mask=None):
        return self.dec(z, f0, self.speaker(g), mask)


def from_config(config: Any, *, with_posterior: bool = True, dtype: Any = None,
                precision: Any = None, unroll_layers: bool = False,
                conv_kernels: ConvKernels = CPU_CONV_KERNELS) -> SynthesizerTrn:
    """Build the generator from a config with ``data``, ``train`` and ``model`` sections (an
    ``ml_collections.ConfigDict`` or a dict; the reference's config.json layout).
    ``unroll_layers``: trace the scanned layer stacks unrolled (a kernel choice, see
    :data:`svcjax.runtime.runner.KERNELS`; training on CPU uses it); ``conv_kernels``: how the
    decoder's transposed convs and any depthwise convs are built (:class:`ConvKernels`, also
    per backend)."""
    get = (lambda d, k, default=None: d.get(k, default) if hasattr(d, "get") else default)
    data, train, model = config["data"], config["train"], config["model"]
    kw = {}
    for name in SynthesizerTrn.__dataclass_fields__:
        if name in ("spec_channels", "segment_size", "sampling_rate", "with_posterior", "dtype",
                    "precision", "unroll_layers", "conv_kernels", "parent", "name"):
            continue
        value = get(model, name, MODEL_DEFAULTS.get(name))
        if value is None:
            raise ValueError(f"config model section lacks {name!r}")
        if isinstance(value, (list, tuple)):
            value = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
        kw[name] = value
    if kw["vocoder_name"] not in DECODER_ACTIVATIONS:
        raise ValueError(f"vocoder_name {kw['vocoder_name']!r} is not supported; svcjax "
                         f"implements {', '.join(map(repr, DECODER_ACTIVATIONS))}")
    hop = int(data["hop_length"])
    upp = 1
    for u in kw["upsample_rates"]:
        upp *= int(u)
    if upp != hop:
        raise ValueError(f"upsample_rates {list(kw['upsample_rates'])} multiply to {upp}, but "
                         f"hop_length is {hop}; the decoder must produce one hop per frame")
    return SynthesizerTrn(
        spec_channels=int(data["filter_length"]) // 2 + 1,
        segment_size=int(train["segment_size"]) // int(data["hop_length"]),
        sampling_rate=int(data["sampling_rate"]),
        with_posterior=with_posterior, dtype=dtype, precision=precision,
        unroll_layers=bool(unroll_layers), conv_kernels=conv_kernels, **kw)


def init_params(model: SynthesizerTrn, rng: jax.Array | None = None, *,
                shapes_only: bool = False) -> Any:
    """Random parameters of ``model`` (every submodule it has), or their shapes
    (``jax.ShapeDtypeStruct``s) with ``shapes_only`` (cheap: tracing only).

    Initialisers follow PyTorch's defaults (and the reference's zero-initialised flow
    outputs). Note: XLA compiles one random-number kernel per parameter, so the jitted
    initialisation of the full model takes tens of seconds on CPU (once per process).
    """
    b, t = 1, max(model.segment_size, 1)
    f32 = jnp.float32
    c = jnp.zeros((b, t, model.ssl_dim), f32)
    f0 = jnp.zeros((b, t), f32)
    mask = jnp.ones((b, t), f32)
    vol = jnp.zeros((b, t), f32) if model.vol_embedding else None
    g = jnp.zeros((b,), jnp.int32)

    def init(key):
        if model.with_posterior:
            spec = jnp.zeros((b, t, model.spec_channels), f32)
            return model.init(key, c, f0, f0, spec, g, mask, vol)["params"]
        return model.init(key, c, f0, f0, g, mask, vol, method="infer",
                          predict_f0=model.use_automatic_f0_prediction)["params"]

    rng = jax.random.PRNGKey(0) if rng is None else rng
    if shapes_only:
        return jax.eval_shape(init, rng)
    return jax.jit(init)(rng)
