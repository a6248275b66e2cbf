"""NSF-HiFiGAN: a harmonic-plus-noise source driven by F0, injected into a HiFiGAN generator.

The generator (``Generator``) maps frame-rate features ``(B, T, Cin)`` and F0 ``(B, T)`` to a
waveform ``(B, T * prod(upsample_rates))``:

    conv_pre (k7) [+ cond(g)] -> for each stage i: leaky_relu(0.1) -> ups_i (transposed conv,
    padding (k-u+1)//2) -> + noise_convs_i(source) -> mean of the stage's resblocks
    -> leaky_relu(0.01) -> conv_post (k7, 1 channel) -> tanh

``activation="snake"`` is So-VITS-SVC's ``nsf-snake-hifigan`` decoder: the same network with
each of those leaky ReLUs (and the resblocks') replaced by an anti-aliased SnakeBeta with
trainable per-channel parameters (:mod:`svcjax.models.snake`).

The source (``SourceModuleHnNSF``: sine harmonics -> ``l_linear`` -> tanh) is a swappable piece:
``sine_mode`` names a function in :data:`SINE_GENERATORS` that turns frame-rate F0 into
harmonic sines at sample rate. So-VITS-SVC's ``dec`` uses ``"sample_rate"`` (F0 upsampled x512
by nearest neighbour, phase accumulated per sample, random initial phase for harmonics >= 2).
The standalone vocoder (mel input, no speaker: ``gin_channels=0``; :mod:`svcjax.runtime.vocoder`) uses
``"frame_rate"`` (:func:`svcjax.models.phase.frame_rate_sines`: the same phases, summed
exactly per frame in fixed point, as the reference vocoder does in float64) and reuses
everything else.

Masks: the reference's decoder has no masks; a clip of T frames is convolved with zero
padding at its end. Given a frame ``mask``, every activation is zeroed past the clip's end at
its own resolution before each convolution, which is exactly that zero padding, so a clip
padded to a longer bucket gives the same valid samples as the clip alone.

Random draws (``'noise'`` rng stream; without it every draw is zero, i.e. no noise and zero
initial phases): initial phases U[0, 1) per example and harmonic, Gaussian noise of std 0.003
(voiced) / 0.1/3 (unvoiced) per sample, drawn per (example, frame) as in
:mod:`svcjax.models.noise`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svcjax.models import noise as noise_lib
from svcjax.models import phase as phase_lib
from svcjax.models.layers import (CPU_CONV_KERNELS, Conv1d, ConvKernels, ConvTranspose1d, Linear,
                                  leaky_relu)
from svcjax.models.snake import SnakeAlias

Array = jax.Array

__all__ = ["Generator", "SourceModuleHnNSF", "ResBlock1", "ResBlock2", "SINE_GENERATORS",
           "sample_rate_sines", "upsample_mask", "divide_rn", "ACTIVATIONS"]

LRELU_SLOPE = 0.1
# ``activation``: "leaky_relu" (``vdecoder/hifigan``) or "snake" (``vdecoder/hifiganwithsnake``:
# every leaky ReLU becomes an anti-aliased SnakeBeta, :mod:`svcjax.models.snake`).
ACTIVATIONS = ("leaky_relu", "snake")


def _frac(x: Array) -> Array:
    return x - jnp.floor(x)


def _split_bits(x: Array) -> tuple[Array, Array]:
    """``x = hi + lo`` exactly, ``hi`` keeping the top 12 significant bits of a float32."""
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    hi = lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    return hi, x - hi


def divide_rn(x: Array, d: int) -> Array:
    """``x / d`` correctly rounded in float32 for an integer ``0 < d < 2**24``.

    XLA's float32 division (CPU, TPU) may be one ulp off the IEEE quotient that PyTorch
    computes; the sine source accumulates ``f0 / sr`` over hundreds of thousands of samples, so
    one ulp in the per-sample phase step becomes ~1e-3 of a cycle. The quotient is therefore
    chosen among its neighbours by the exact residual ``|x - q d|`` (every partial product
    has at most 24 significant bits, so the residual is computed without rounding).
    """
    if not (float(d) == int(d) and 0 < d < 2 ** 24):
        raise ValueError(f"divide_rn needs an integer divisor in (0, 2**24), got {d}")
    dbits = int(np.float32(d).view(np.uint32))
    d_hi = float(np.uint32(dbits & 0xFFFFF000).view(np.float32))
    d_lo = float(d) - d_hi
    sign, ax = jnp.sign(x), jnp.abs(x)
    q0 = ax / d

    def residual(c):
        c_hi, c_lo = _split_bits(c)
        r = ax - c_hi * d_hi
        r = r - c_hi * d_lo
        r = r - c_lo * d_hi
        return jnp.abs(r - c_lo * d_lo)

    best, best_r = q0, residual(q0)
    down = up = q0
    for _ in range(2):
        down, up = jnp.nextafter(down, -jnp.inf), jnp.nextafter(up, jnp.inf)
        for c in (down, up):
            r = residual(c)
            take = (r < best_r) & (c >= 0)
            best, best_r = jnp.where(take, c, best), jnp.where(take, r, best_r)
    return sign * best


def _split(r: Array) -> tuple[Array, Array]:
    """``r`` in [0, 1) as ``hi + lo``: ``hi`` has 12 fractional bits, so ``k * hi`` is exact in
    float32 for integers ``k < 4096``; ``lo < 2**-12`` carries the rest."""
    hi = jnp.floor(r * 4096.0) / 4096.0
    return hi, r - hi


def _mul_frac(k: Array, hi: Array, lo: Array) -> Array:
    """``frac(k * (hi + lo))`` for integer-valued ``k`` without float32 cancellation."""
    return _frac(_frac(k * hi) + k * lo)


def sample_rate_sines(f0: Array, upp: int, sampling_rate: int, n_harmonics: int,
                      init_phase: Array | None = None) -> Array:
    """So-VITS-SVC's ``SineGen``: ``sin(2 pi phase)`` of each harmonic at sample rate.

    ``f0`` ``(B, T)`` Hz is held for ``upp`` samples per frame (nearest upsampling); harmonic h
    advances its phase by ``r = (h f0 / sr) mod 1`` per sample, starting from
    ``init_phase`` ``(B, H)``: sample n of frame t has phase ``init + upp r_0 + ... +
    upp r_{t-1} + (n + 1) r_t``. The reference accumulates this with a float64 cumulative sum
    over all samples; here each term is reduced mod 1 exactly (``_split``) and frames are
    combined by an associative scan mod 1, so the phase keeps float32 precision for any
    length. Returns ``(B, T * upp, H)`` (amplitude 1).
    """
    b, t = f0.shape
    f0 = f0.astype(jnp.float32)
    fn = f0[..., None] * jnp.arange(1, n_harmonics + 1, dtype=jnp.float32)
    rad = jnp.remainder(divide_rn(fn, sampling_rate), 1.0)  # (B, T, H) cycles per sample
    hi, lo = _split(rad)
    step = _mul_frac(jnp.float32(upp), hi, lo)  # one frame's advance, mod 1
    start = lax.associative_scan(lambda a, c: _frac(a + c), step, axis=1)
    start = jnp.concatenate([jnp.zeros_like(start[:, :1]), start[:, :-1]], axis=1)
    if init_phase is not None:
        start = _frac(start + init_phase[:, None, :].astype(jnp.float32))
    k = jnp.arange(1, upp + 1, dtype=jnp.float32)[:, None]  # (upp, 1)
    within = _mul_frac(k, hi[:, :, None, :], lo[:, :, None, :])  # (B, T, upp, H)
    phase = _frac(start[:, :, None, :] + within)
    sines = jnp.sin(phase * 2.0 * jnp.float32(math.pi))
    return sines.reshape(b, t * upp, n_harmonics)


# name -> fn(f0 (B,T), upp, sampling_rate, n_harmonics, init_phase (B,H) or None) -> (B,T*upp,H)
SINE_GENERATORS: dict[str, Callable[..., Array]] = {
    "sample_rate": sample_rate_sines,
    "frame_rate": phase_lib.frame_rate_sines,    # the standalone NSF-HiFiGAN vocoder
}


def upsample_mask(mask: Array | None, factor: int) -> Array | None:
    """Frame mask ``(B, T)`` -> ``(B, T * factor, 1)`` (nearest), or None."""
    if mask is None:
        return None
    return jnp.repeat(mask, factor, axis=1)[..., None]


def _apply_mask(x: Array, m: Array | None) -> Array:
    return x if m is None else x * m.astype(x.dtype)


class SourceModuleHnNSF(nn.Module):
    """Harmonic source: ``tanh(l_linear(sines * amp * uv + noise))`` ``(B, T * upp, 1)``."""

    sampling_rate: int
    harmonic_num: int = 8
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 0.0
    sine_mode: str = "sample_rate"
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, f0: Array, upp: int) -> Array:
        if self.sine_mode not in SINE_GENERATORS:
            raise ValueError(f"unknown sine_mode {self.sine_mode!r}; known: "
                             f"{', '.join(SINE_GENERATORS)}")
        b, t = f0.shape
        n = self.harmonic_num + 1
        stochastic = self.has_rng("noise")
        key = self.make_rng("noise") if stochastic else None
        init_phase = None
        if stochastic:
            k_phase, k_noise = jax.random.split(key)
            init_phase = noise_lib.per_example_uniform(k_phase, b, (n,))
            init_phase = init_phase.at[:, 0].set(0.0)
        sines = SINE_GENERATORS[self.sine_mode](f0, upp, self.sampling_rate, n, init_phase)
        uv = jnp.repeat((f0 > self.voiced_threshold).astype(jnp.float32), upp, axis=1)[..., None]
        sines = sines * self.sine_amp * uv
        if stochastic:
            amp = uv * self.noise_std + (1.0 - uv) * (self.sine_amp / 3.0)
            eps = noise_lib.per_frame_normal(k_noise, b, t, (upp, n)).reshape(b, t * upp, n)
            sines = sines + amp * eps
        return jnp.tanh(Linear(1, dtype=self.dtype, precision=self.precision,
                               name="l_linear")(sines))


def _activate(module: nn.Module, x: Array, m: Array | None, name: str,
              slope: float = LRELU_SLOPE) -> Array:
    """``module.activation`` of ``x`` (a snake is a submodule called ``name``), masked."""
    if module.activation == "snake":
        x = SnakeAlias(x.shape[-1], dtype=module.dtype, name=name)(x, m)
    elif module.activation == "leaky_relu":
        x = leaky_relu(x, slope)
    else:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got "
                         f"{module.activation!r}")
    return _apply_mask(x, m)


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with leaky ReLU (or snakes ``activations_{2n}`` /
    ``activations_{2n+1}`` before ``convs1_n`` / ``convs2_n``), each added to the input."""

    channels: int
    kernel_size: int = 3
    dilation: Sequence[int] = (1, 3, 5)
    activation: str = "leaky_relu"
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, m: Array | None = None) -> Array:
        common = dict(weight_norm=True, dtype=self.dtype, precision=self.precision)
        k = self.kernel_size
        for n, d in enumerate(self.dilation):
            xt = _activate(self, x, m, f"activations_{2 * n}")
            xt = Conv1d(self.channels, k, dilation=d, padding=(k * d - d) // 2,
                        name=f"convs1_{n}", **common)(xt)
            xt = _activate(self, xt, m, f"activations_{2 * n + 1}")
            xt = Conv1d(self.channels, k, padding=(k - 1) // 2, name=f"convs2_{n}", **common)(xt)
            x = xt + x
        return x


class ResBlock2(nn.Module):
    """Dilated convs with leaky ReLU (or snake ``activations_n``), each added to the input."""

    channels: int
    kernel_size: int = 3
    dilation: Sequence[int] = (1, 3)
    activation: str = "leaky_relu"
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, m: Array | None = None) -> Array:
        common = dict(weight_norm=True, dtype=self.dtype, precision=self.precision)
        k = self.kernel_size
        for n, d in enumerate(self.dilation):
            xt = _activate(self, x, m, f"activations_{n}")
            xt = Conv1d(self.channels, k, dilation=d, padding=(k * d - d) // 2,
                        name=f"convs_{n}", **common)(xt)
            x = xt + x
        return x


class Generator(nn.Module):
    """NSF-HiFiGAN generator (``vdecoder/hifigan/models.py:Generator``), channels-last;
    ``activation="snake"``: ``vdecoder/hifiganwithsnake/models.py:Generator`` (``snakes_i``
    before each upsampling, ``snake_post`` before ``conv_post``, snakes in the resblocks)."""

    sampling_rate: int
    resblock: str
    resblock_kernel_sizes: Sequence[int]
    resblock_dilation_sizes: Sequence[Sequence[int]]
    upsample_rates: Sequence[int]
    upsample_initial_channel: int
    upsample_kernel_sizes: Sequence[int]
    gin_channels: int = 0
    harmonic_num: int = 8
    sine_mode: str = "sample_rate"
    activation: str = "leaky_relu"
    dtype: Any = None
    precision: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @property
    def upp(self) -> int:
        return int(math.prod(self.upsample_rates))

    @nn.compact
    def __call__(self, x: Array, f0: Array, g: Array | None = None,
                 mask: Array | None = None) -> Array:
        """``x`` ``(B, T, Cin)``, ``f0`` ``(B, T)`` Hz, ``g`` ``(B, 1 or T, gin)`` or None,
        ``mask`` ``(B, T)`` or None -> waveform ``(B, T * upp)``."""
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' or '2', got {self.resblock!r}")
        rates, kernels = list(self.upsample_rates), list(self.upsample_kernel_sizes)
        if len(rates) != len(kernels):
            raise ValueError(f"upsample_rates {rates} and upsample_kernel_sizes {kernels} differ "
                             "in length")
        for u, k in zip(rates, kernels):
            if (k - u) % 2:
                raise ValueError(f"upsample kernel {k} with rate {u}: k - u must be even for the "
                                 "output to be exactly u times longer")
        common = dict(dtype=self.dtype, precision=self.precision)
        upp = self.upp
        src = SourceModuleHnNSF(self.sampling_rate, self.harmonic_num, sine_mode=self.sine_mode,
                                name="m_source", **common)(f0, upp)
        src = _apply_mask(src, upsample_mask(mask, upp))
        c0 = self.upsample_initial_channel
        x = _apply_mask(x, upsample_mask(mask, 1))
        x = Conv1d(c0, 7, padding=3, weight_norm=True, name="conv_pre", **common)(x)
        if self.gin_channels:
            if g is None:
                raise ValueError("this generator is conditioned on a speaker (gin_channels="
                                 f"{self.gin_channels}) but got g=None")
            x = x + Conv1d(c0, 1, name="cond", **common)(g.astype(x.dtype))
        block = ResBlock1 if self.resblock == "1" else ResBlock2
        nk = len(self.resblock_kernel_sizes)
        res = 1
        for i, (u, k) in enumerate(zip(rates, kernels)):
            ch = c0 // (2 ** (i + 1))
            x = _activate(self, x, upsample_mask(mask, res), f"snakes_{i}")
            x = ConvTranspose1d(ch, k, u, padding=(k - u + 1) // 2, weight_norm=True,
                                name=f"ups_{i}", conv_kernels=self.conv_kernels, **common)(x)
            res *= u
            if i + 1 < len(rates):
                s = int(math.prod(rates[i + 1:]))
                nc = Conv1d(ch, 2 * s, stride=s, padding=(s + 1) // 2, name=f"noise_convs_{i}",
                            **common)
            else:
                nc = Conv1d(ch, 1, name=f"noise_convs_{i}", **common)
            x = x + nc(src.astype(x.dtype))
            m = upsample_mask(mask, res)
            xs = 0.0
            for j, (rk, rd) in enumerate(zip(self.resblock_kernel_sizes,
                                              self.resblock_dilation_sizes)):
                xs = xs + block(ch, rk, tuple(rd), self.activation,
                                name=f"resblocks_{i * nk + j}", **common)(x, m)
            x = xs / nk
        x = _activate(self, x, upsample_mask(mask, res), "snake_post", slope=0.01)
        x = Conv1d(1, 7, padding=3, weight_norm=True, name="conv_post", **common)(x)
        x = jnp.tanh(x)[..., 0]
        return _apply_mask(x, None if mask is None else jnp.repeat(mask, res, axis=1))
