"""RMVPE pitch tracker (Wei et al. 2023) as So-VITS-SVC 4.1 ships it (``E2E0``), in Flax.

The network reads a 128-bin log-mel spectrogram of 16 kHz audio (1024-point STFT, hop 160,
Hann window, HTK mel scale 30-8000 Hz, ``ln(max(mel, 1e-5))``) and gives, per 10 ms frame,
360 sigmoid saliences, one per 20-cent pitch bin (the same bins as CREPE).

Architecture (dimensions read from the checkpoint, :class:`RmvpeConfig`):

* a deep U-Net on the ``(time, mel)`` plane: an input batch norm, ``n_encoders`` residual
  encoder levels (``n_blocks`` residual blocks of two 3x3 conv + batch norm + ReLU each,
  then 2x2 average pooling; channels ``C, 2C, 4C, ...``), ``n_inters`` intermediate levels,
  and ``n_encoders`` decoder levels (3x3 transposed conv, stride 2, then residual blocks on
  the skip connection concatenated);
* a 3x3 conv to 3 channels, flattened channel-major to ``3 * 128`` features per frame;
* a bidirectional GRU (``gru_layers`` layers of ``gru_hidden`` units), run as ``lax.scan``;
* a linear layer to 360 bins and a sigmoid.

Layout: channels last, ``(B, T, 128, C)``. The reference pads each clip's mel with zeros to
a multiple of 32 frames, runs the network over that, and keeps the first ``n`` frames. A
batch here is padded further, to a common length; every convolution's input is masked to
zero past each clip's own padded length (what the convolution's zero padding gives when the
clip runs alone) and the GRU's backward pass starts at that length, so every clip of a
padded batch gets exactly the frames it gets alone.

Decoding (:func:`decode_local_average`) is the reference's ``to_local_average_cents``: the
salience-weighted mean of the cents of the nine bins around the argmax, unvoiced where the
peak salience is not above the threshold.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from svcjax.runtime import sharding as shd
from svcjax.models.layers import Conv2d, Linear, torch_uniform

__all__ = [
    "SAMPLE_RATE", "HOP", "N_FFT", "N_MELS", "MEL_FMIN", "MEL_FMAX", "PITCH_BINS",
    "CENTS_OFFSET", "FRAME_MULTIPLE", "RmvpeConfig", "Rmvpe", "mel_filterbank",
    "log_mel", "decode_local_average", "cents_to_frequency", "RmvpeRunner",
]

SAMPLE_RATE = 16000
HOP = 160
N_FFT = 1024
N_MELS = 128
MEL_FMIN = 30.0
MEL_FMAX = 8000.0
MEL_CLAMP = 1e-5
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 relative to 10 Hz, as CREPE's
BN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class RmvpeConfig:
    """Dimensions of an ``E2E0``; the released ``rmvpe.pt`` is the default."""

    n_encoders: int = 5
    n_inters: int = 4
    n_blocks: int = 4
    en_out_channels: int = 16
    in_channels: int = 1
    gru_hidden: int = 256
    gru_layers: int = 1
    pool: tuple[int, int] = (2, 2)  # the reference's kernel_size (not stored in checkpoints)

    @property
    def frame_multiple(self) -> int:
        """Frames a padded input must be a multiple of (``pool[0] ** n_encoders``)."""
        return self.pool[0] ** self.n_encoders


FRAME_MULTIPLE = 32  # the reference pads each clip's mel to a multiple of 32 frames


# --------------------------------------------------------------------------------------
# layers


class BatchNorm(nn.Module):
    """``BatchNorm2d`` in eval mode, statistics kept as (frozen) parameters."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("running_mean", nn.initializers.zeros, (c,))
        var = self.param("running_var", nn.initializers.ones, (c,))
        inv = scale * jax.lax.rsqrt(var + BN_EPS)
        return (x - mean) * inv + bias


def _masked(x, mask):
    return x if mask is None else x * mask[:, :, None, None].astype(x.dtype)


# Planes of at most this many (time x mel) points are convolved as one matmul over the nine
# shifted copies (im2col): XLA's CPU convolution is pathologically slow on the deepest levels'
# few-point planes (a 2 x 4 plane of 512 channels: ~50x the matmul's time).
IM2COL_MAX_POINTS = 256


class Conv3x3(nn.Module):
    """``nn.Conv2d(kernel 3, padding 1)``: ``kernel (3, 3, Cin, Cout)``, optional ``bias``
    (the layout of :class:`~svcjax.models.layers.Conv2d`)."""

    features: int
    use_bias: bool = False
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, cin = x.shape
        kernel = self.param("kernel", torch_uniform(9 * cin), (3, 3, cin, self.features))
        if h * w <= IM2COL_MAX_POINTS:
            xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                                   axis=-1)
            y = jnp.matmul(cols, kernel.reshape(9 * cin, self.features),
                           precision=self.precision)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, window_strides=(1, 1), padding=[(1, 1), (1, 1)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
        if self.use_bias:
            y = y + self.param("bias", torch_uniform(9 * cin), (self.features,))
        return y


def _conv3(features, name, precision, use_bias=False):
    return Conv3x3(features, use_bias, precision, name=name)


class ConvBlockRes(nn.Module):
    """Two (3x3 conv, batch norm, ReLU) and a residual (1x1 conv where channels change).
    Submodule names follow the reference's ``nn.Sequential`` indices."""

    features: int
    precision: Any = None

    @nn.compact
    def __call__(self, x, mask):
        h = _conv3(self.features, "conv_0", self.precision)(_masked(x, mask))
        h = jax.nn.relu(BatchNorm(name="conv_1")(h))
        h = _conv3(self.features, "conv_3", self.precision)(_masked(h, mask))
        h = jax.nn.relu(BatchNorm(name="conv_4")(h))
        if x.shape[-1] != self.features:
            x = Conv2d(self.features, (1, 1), precision=self.precision, name="shortcut")(x)
        return h + x


class ConvTranspose2d(nn.Module):
    """``nn.ConvTranspose2d(kernel 3, stride s, padding 1, output_padding s - 1, bias=False)``.

    ``kernel`` is ``(3, 3, Cout, Cin)``: torch's ``(Cin, Cout, 3, 3)`` under the generic
    conv rule of :mod:`svcjax.interop.torch_params`. Computed as a convolution of the
    ``s``-dilated input with the flipped kernel, padded ``(1, 1 + output_padding)``.
    """

    features: int
    stride: tuple[int, int]
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", torch_uniform(self.features * 9),
                            (3, 3, self.features, cin))
        sh, sw = self.stride
        k = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # (3, 3, Cin, Cout)
        return jax.lax.conv_general_dilated(
            x, k.astype(x.dtype), window_strides=(1, 1),
            padding=[(1, 1 + sh - 1), (1, 1 + sw - 1)], lhs_dilation=(sh, sw),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)


class ResBlocks(nn.Module):
    """``n`` :class:`ConvBlockRes` named ``conv_0 .. conv_{n-1}`` (a ``ResEncoderBlock``)."""

    features: int
    n: int
    precision: Any = None

    @nn.compact
    def __call__(self, x, mask):
        for i in range(self.n):
            x = ConvBlockRes(self.features, self.precision, name=f"conv_{i}")(x, mask)
        return x


class DecoderBlock(nn.Module):
    """``ResDecoderBlock``: transposed conv + BN + ReLU, concat the skip, residual blocks."""

    features: int
    n: int
    stride: tuple[int, int]
    precision: Any = None

    @nn.compact
    def __call__(self, x, skip, mask_in, mask_out):
        x = ConvTranspose2d(self.features, self.stride, self.precision,
                            name="conv1_0")(_masked(x, mask_in))
        x = jax.nn.relu(BatchNorm(name="conv1_1")(x))
        x = jnp.concatenate([x, skip], axis=-1)
        for i in range(self.n):
            x = ConvBlockRes(self.features, self.precision, name=f"conv2_{i}")(x, mask_out)
        return x


class BiGRU(nn.Module):
    """``nn.GRU(batch_first=True, bidirectional=True)``; parameters keep torch's names and
    layouts (``weight_ih_l0 (3H, In)``, ``..._reverse``; gates ordered r, z, n).

    ``lengths`` (``(B,)``): the backward direction of clip ``b`` starts at ``lengths[b]``, as
    if the sequence ended there; frames past it are garbage for the forward direction and
    must be dropped by the caller.
    """

    hidden: int
    layers: int = 1
    precision: Any = None

    @nn.compact
    def __call__(self, x, lengths):
        b, t, _ = x.shape
        h = self.hidden
        valid = (jnp.arange(t)[None, :] < lengths[:, None])  # (B, T)
        for layer in range(self.layers):
            outs = []
            for suffix in ("", "_reverse"):
                n_in = x.shape[-1]
                init = torch_uniform(h)
                w_ih = self.param(f"weight_ih_l{layer}{suffix}", init, (3 * h, n_in))
                w_hh = self.param(f"weight_hh_l{layer}{suffix}", init, (3 * h, h))
                b_ih = self.param(f"bias_ih_l{layer}{suffix}", init, (3 * h,))
                b_hh = self.param(f"bias_hh_l{layer}{suffix}", init, (3 * h,))
                gi = jnp.matmul(x, w_ih.T, precision=self.precision) + b_ih  # (B, T, 3H)
                outs.append(_gru_scan(gi, valid, w_hh, b_hh, reverse=bool(suffix),
                                      precision=self.precision))
            x = jnp.concatenate(outs, axis=-1)
        return x


def _gru_scan(gi, valid, w_hh, b_hh, *, reverse, precision):
    """One GRU direction over ``gi = x W_ih^T + b_ih`` ``(B, T, 3H)``; state held at zero on
    invalid frames (so a reverse pass starts fresh at each clip's end)."""
    h_dim = w_hh.shape[1]
    w_t = w_hh.T

    def step(state, xs):
        g, ok = xs
        gh = jnp.matmul(state, w_t, precision=precision) + b_hh
        r = jax.nn.sigmoid(g[:, :h_dim] + gh[:, :h_dim])
        z = jax.nn.sigmoid(g[:, h_dim:2 * h_dim] + gh[:, h_dim:2 * h_dim])
        n = jnp.tanh(g[:, 2 * h_dim:] + r * gh[:, 2 * h_dim:])
        new = (1.0 - z) * n + z * state
        new = jnp.where(ok[:, None], new, state)
        return new, new

    state0 = jnp.zeros((gi.shape[0], h_dim), gi.dtype)
    _, ys = jax.lax.scan(step, state0, (jnp.swapaxes(gi, 0, 1), jnp.swapaxes(valid, 0, 1)),
                         reverse=reverse)
    return jnp.swapaxes(ys, 0, 1)


class Rmvpe(nn.Module):
    """``E2E0`` on log-mels ``(B, T, 128)`` (``T`` a multiple of ``config.frame_multiple``)
    -> saliences ``(B, T, 360)``. ``frames`` (``(B,)``, each a multiple of
    ``frame_multiple``) is each clip's own padded length (default: all ``T``); the
    reference pads to :data:`FRAME_MULTIPLE` (32) frames, which :class:`RmvpeRunner` does."""

    config: RmvpeConfig = RmvpeConfig()
    precision: Any = None

    @nn.compact
    def __call__(self, mel, frames=None):
        cfg, prec = self.config, self.precision
        b, t, f = mel.shape
        if t % cfg.frame_multiple:
            raise ValueError(f"RMVPE input needs a multiple of {cfg.frame_multiple} frames, "
                             f"got {t}")
        if frames is None:
            frames = jnp.full((b,), t, jnp.int32)
        frames = jnp.asarray(frames, jnp.int32)
        sh = cfg.pool[0]

        def mask_at(level):
            n = t // sh ** level
            return jnp.arange(n)[None, :] < (frames // sh ** level)[:, None]

        x = mel[..., None]  # (B, T, F, 1)
        x = BatchNorm(name="unet_encoder_bn")(x)
        skips = []
        c = cfg.en_out_channels
        for i in range(cfg.n_encoders):
            x = ResBlocks(c, cfg.n_blocks, prec, name=f"unet_encoder_layers_{i}")(x, mask_at(i))
            skips.append(x)
            bb, tt, ff, cc = x.shape
            ph, pw = cfg.pool
            x = x.reshape(bb, tt // ph, ph, ff // pw, pw, cc).mean(axis=(2, 4))
            c *= 2
        deep = cfg.n_encoders
        for i in range(cfg.n_inters):
            x = ResBlocks(c, cfg.n_blocks, prec, name=f"unet_intermediate_layers_{i}")(
                x, mask_at(deep))
        for i in range(cfg.n_encoders):
            c //= 2
            level = deep - 1 - i
            x = DecoderBlock(c, cfg.n_blocks, cfg.pool, prec, name=f"unet_decoder_layers_{i}")(
                x, skips[level], mask_at(level + 1), mask_at(level))
        x = _conv3(3, "cnn", prec, use_bias=True)(_masked(x, mask_at(0)))
        x = x.transpose(0, 1, 3, 2).reshape(b, t, 3 * f)  # channel-major, as the reference
        x = BiGRU(cfg.gru_hidden, cfg.gru_layers, prec, name="fc_0_gru")(x, frames)
        x = Linear(PITCH_BINS, precision=prec, name="fc_1")(x)
        return jax.nn.sigmoid(x)


# --------------------------------------------------------------------------------------
# front-end and decoding


@functools.lru_cache(maxsize=None)
def mel_filterbank() -> np.ndarray:
    """``(513, 128)`` float32: librosa's HTK-scale, Slaney-normalised mel filters, 30-8000 Hz
    (the reference's ``MelSpectrogram``), transposed for ``magnitude @ fb``."""
    import librosa

    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=MEL_FMIN,
                             fmax=MEL_FMAX, htk=True)
    fb = np.ascontiguousarray(fb.T, dtype=np.float32)
    fb.setflags(write=False)
    return fb


def log_mel(audio16: jax.Array, lengths: jax.Array | None = None, precision: Any = None
            ) -> jax.Array:
    """``(B, L)`` 16 kHz audio -> ``(B, 1 + L // 160, 128)`` log-mel, the reference's
    ``MelSpectrogram(center=True)``: each row reflect-padded by 512 at its own ends
    (``lengths``), periodic Hann window, ``|STFT|`` (no epsilon), ``ln(max(., 1e-5))``."""
    from svcjax.audio.spectrogram import stft

    spec = stft(audio16, N_FFT, HOP, N_FFT, pad=(N_FFT // 2, N_FFT // 2), pad_mode="reflect",
                lengths=lengths)
    mag = jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2)
    mel = jnp.matmul(mag, jnp.asarray(mel_filterbank()),
                     precision=precision or jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, MEL_CLAMP))


def cents_to_frequency(cents: jax.Array) -> jax.Array:
    return 10.0 * jnp.exp2(cents / 1200.0)


def decode_local_average(salience: jax.Array, threshold: float | jax.Array = 0.05
                         ) -> tuple[jax.Array, jax.Array]:
    """``(..., 360)`` saliences -> ``(f0 Hz, voiced)``: the salience-weighted mean cents of
    bins ``argmax - 4 .. argmax + 4`` (clipped to the range), voiced where the peak salience
    exceeds ``threshold``; ``f0`` is 0 on unvoiced frames."""
    centre = jnp.argmax(salience, axis=-1)
    bins = jnp.arange(PITCH_BINS)
    window = (bins >= centre[..., None] - 4) & (bins < centre[..., None] + 5)
    w = jnp.where(window, salience, 0.0)
    cents_of = CENTS_PER_BIN * bins.astype(jnp.float32) + CENTS_OFFSET
    cents = jnp.sum(w * cents_of, axis=-1) / jnp.sum(w, axis=-1)
    voiced = jnp.max(salience, axis=-1) > threshold
    return jnp.where(voiced, cents_to_frequency(cents), 0.0), voiced


# --------------------------------------------------------------------------------------
# running the network


def salience(model: Rmvpe, params: Any, audio16: jax.Array, lengths: jax.Array,
             precision: Any = None) -> jax.Array:
    """``(B, L)`` 16 kHz audio with ``lengths[b]`` valid samples (zeros after) -> saliences
    ``(B, 1 + L // 160, 360)``: each clip's log-mel (:func:`log_mel`), zero past its
    ``1 + lengths // 160`` frames and padded to a multiple of 32 frames as the reference
    pads it, through the network. jnp: :class:`RmvpeRunner` runs it, and so does the
    conversion program (:func:`svcjax.audio.f0.rmvpe_in_program`)."""
    n = 1 + lengths // HOP  # mel frames of each clip
    mult = FRAME_MULTIPLE
    frames = (n + mult - 1) // mult * mult
    mel = log_mel(audio16, lengths, precision)
    t = mel.shape[1]
    tp = -(-t // mult) * mult
    keep = jnp.arange(tp)[None, :] < n[:, None]
    mel = jnp.pad(mel, ((0, 0), (0, tp - t), (0, 0)))
    mel = jnp.where(keep[..., None], mel, 0.0)  # the reference pads log-mels with 0
    return model.apply({"params": params}, mel, frames)[:, :t]


class RmvpeRunner:
    """RMVPE over a padded batch of 16 kHz clips: jit-compiled per (batch, length) bucket and
    split over the devices of a mesh (``svcjax.runtime.sharding``) along the batch.

    ``runner(audio16, lengths)`` takes ``(B, L)`` host audio and each clip's sample count and
    returns saliences ``(B, N, 360)`` with ``N = 1 + max(lengths) // 160`` (frames past a
    clip's ``1 + lengths[b] // 160`` are padding; ``trim=False``: ``N`` is the length bucket,
    a multiple of 32, so that what follows compiles once per bucket). ``mesh=None``: every device of an
    accelerator backend, one device on the CPU (whose single device already uses every core).
    """

    def __init__(self, model: Rmvpe, params: Any, mesh=None, precision: Any = None):
        self.model = model
        if mesh is None:
            cpu = jax.default_backend() == "cpu"
            mesh = shd.make_mesh(devices=jax.devices()[:1] if cpu else None)
        self.mesh = mesh
        self.n_dev = self.mesh.devices.size
        self.params = jax.device_put(params, shd.replicated(self.mesh))
        self.traces = 0
        rep = shd.replicated(self.mesh)

        def run(params, audio, lengths):
            self.traces += 1
            return salience(self.model, params, audio, lengths, precision)

        self._run = jax.jit(run, in_shardings=(rep, shd.batch_sharding(self.mesh, 2),
                                               shd.batch_sharding(self.mesh, 1)),
                            out_shardings=shd.batch_sharding(self.mesh, 3))

    def __call__(self, audio16: np.ndarray, lengths, trim: bool = True) -> np.ndarray:
        from svcjax.runtime.buckets import bucket_length

        audio16 = np.asarray(audio16, np.float32)
        lengths = np.asarray(lengths, np.int32).reshape(-1)
        b = audio16.shape[0]
        n_max = 1 + int(lengths.max()) // HOP
        # the widest input that still gives the bucket's number of frames (1 + L // 160)
        frames = bucket_length(n_max, min_len=FRAME_MULTIPLE, multiple=FRAME_MULTIPLE)
        width = frames * HOP - 1
        audio16 = audio16[:, :width]  # past every clip's end: padding only
        bp = -(-b // self.n_dev) * self.n_dev
        x = np.zeros((bp, width), np.float32)
        x[:b, :audio16.shape[1]] = audio16
        lens = np.full((bp,), width, np.int32)
        lens[:b] = lengths
        out = np.asarray(self._run(self.params, x, lens))[:b]
        return out[:, :n_max] if trim else out
