"""So-VITS-SVC's multi-period discriminator (HiFi-GAN's MPD plus one scale discriminator).

``MultiPeriodDiscriminator`` holds six sub-discriminators, named as the reference names them
so ``D_*.pth`` state dicts import by the generic rules of :mod:`svcjax.interop.torch_params`:

* ``discriminators_0``: :class:`DiscriminatorS` on the raw waveform, 1-D convolutions
  (k15, then four grouped k41 stride-4 convs, k5, and a k3 ``conv_post``);
* ``discriminators_1..5``: :class:`DiscriminatorP` for periods 2, 3, 5, 7, 11: the wave is
  reflect-padded to a multiple of the period and folded to ``(T/p, p)``, then 2-D convs with
  kernel ``(5, 1)`` and stride ``(3, 1)`` see every p-th sample.

Every conv is weight-normed, followed by leaky ReLU 0.1; each sub-discriminator returns its
flattened logits and its feature maps (all activations plus the ``conv_post`` output).
Inputs are channels-last ``(B, T, 1)``; feature maps are ``(B, T', C)`` / ``(B, H, W, C)``.

``width_div`` divides every channel count (and group count) by an integer, for small test
models; the default 1 is the reference's 46.7 M-parameter network.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from svcjax.models.layers import CPU_CONV_KERNELS, Conv1d, Conv2d, ConvKernels, leaky_relu

__all__ = [
    "PERIODS",
    "DiscriminatorS",
    "DiscriminatorP",
    "MultiPeriodDiscriminator",
    "init_discriminator",
    "load_discriminator",
    "discriminator_state_dict",
]

PERIODS = (2, 3, 5, 7, 11)

# (out channels, kernel, stride, groups, padding) of DiscriminatorS's convs.
_S_LAYERS = ((16, 15, 1, 1, 7), (64, 41, 4, 4, 20), (256, 41, 4, 16, 20),
             (1024, 41, 4, 64, 20), (1024, 41, 4, 256, 20), (1024, 5, 1, 1, 2))
_P_CHANNELS = (32, 128, 512, 1024, 1024)


def _div(n: int, d: int) -> int:
    return max(1, n // d)


def scaled_s_layers(width_div: int = 1) -> list[tuple[int, int, int, int, int]]:
    """DiscriminatorS's layer table with channels and groups divided by ``width_div``."""
    return [(_div(c, width_div), k, s, _div(g, width_div), p) for c, k, s, g, p in _S_LAYERS]


def scaled_p_channels(width_div: int = 1) -> list[int]:
    return [_div(c, width_div) for c in _P_CHANNELS]


class DiscriminatorS(nn.Module):
    """Scale discriminator on the raw waveform ``(B, T, 1)``."""

    width_div: int = 1
    dtype: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    def setup(self):
        self.convs = [Conv1d(c, k, s, p, groups=g, weight_norm=True, dtype=self.dtype,
                             conv_kernels=self.conv_kernels)
                      for c, k, s, g, p in scaled_s_layers(self.width_div)]
        self.conv_post = Conv1d(1, 3, 1, 1, weight_norm=True, dtype=self.dtype)

    def __call__(self, x):
        fmap = []
        for conv in self.convs:
            x = leaky_relu(conv(x))
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.reshape(x.shape[0], -1), fmap


class DiscriminatorP(nn.Module):
    """Period-``period`` discriminator: the wave folded to ``(B, T/p, p, 1)``, 2-D convs."""

    period: int
    kernel_size: int = 5
    stride: int = 3
    width_div: int = 1
    dtype: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    def setup(self):
        k, s = self.kernel_size, self.stride
        chans = scaled_p_channels(self.width_div)
        self.convs = [
            Conv2d(c, (k, 1), (s if i < len(chans) - 1 else 1, 1), ((k - 1) // 2, 0),
                   weight_norm=True, dtype=self.dtype, conv_kernels=self.conv_kernels)
            for i, c in enumerate(chans)]
        self.conv_post = Conv2d(1, (3, 1), (1, 1), (1, 0), weight_norm=True, dtype=self.dtype,
                                conv_kernels=self.conv_kernels)

    def __call__(self, x):
        b, t, c = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            if n_pad >= t:
                raise ValueError(f"a {t}-sample wave is too short for period {self.period}")
            x = jnp.pad(x, ((0, 0), (0, n_pad), (0, 0)), mode="reflect")
            t += n_pad
        x = x.reshape(b, t // self.period, self.period, c)
        fmap = []
        for conv in self.convs:
            x = leaky_relu(conv(x))
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.reshape(b, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """``DiscriminatorS`` + ``DiscriminatorP`` for each of ``periods``.

    ``__call__(y, y_hat)`` mirrors the reference: ``(logits_real, logits_fake, fmaps_real,
    fmaps_fake)``, one entry per sub-discriminator. Real and generated waves go through each
    sub-discriminator as one concatenated batch (same numbers, one conv call instead of two).
    """

    periods: Sequence[int] = PERIODS
    width_div: int = 1
    dtype: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    def setup(self):
        self.discriminators = (
            [DiscriminatorS(self.width_div, self.dtype, self.conv_kernels)]
            + [DiscriminatorP(p, width_div=self.width_div, dtype=self.dtype,
                              conv_kernels=self.conv_kernels)
               for p in self.periods])

    def __call__(self, y, y_hat):
        if y.ndim == 2:
            y, y_hat = y[..., None], y_hat[..., None]
        b = y.shape[0]
        both = jnp.concatenate([y, y_hat], axis=0)
        rs, gs, frs, fgs = [], [], [], []
        for d in self.discriminators:
            logits, fmap = d(both)
            rs.append(logits[:b])
            gs.append(logits[b:])
            frs.append([f[:b] for f in fmap])
            fgs.append([f[b:] for f in fmap])
        return rs, gs, frs, fgs


def init_discriminator(rng, segment_size: int = 10240, width_div: int = 1,
                       periods: Sequence[int] = PERIODS):
    """Random parameters of a discriminator for ``segment_size``-sample waves."""
    model = MultiPeriodDiscriminator(tuple(periods), width_div)
    x = jnp.zeros((1, segment_size, 1), jnp.float32)
    return model, model.init(rng, x, x)["params"]


def _state_dict_of(ckpt: Any, path: str) -> dict:
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{path} holds no discriminator state_dict (expected a D_*.pth file "
                         "with a 'model' entry, as So-VITS-SVC's train.py writes)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_discriminator(path: str | os.PathLike, width_div: int = 1,
                       periods: Sequence[int] = PERIODS) -> dict:
    """Parameters of a So-VITS-SVC ``D_*.pth`` (e.g. the ``D_0.pth`` base model), no torch.

    Raises :class:`svcjax.interop.torch_params.CheckpointMismatchError` naming every
    missing, unexpected or mis-shaped tensor when the file is not a discriminator of this shape.
    """
    from svcjax.interop import torch_pickle
    from svcjax.interop.torch_params import state_dict_to_params

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"discriminator checkpoint {path} does not exist")
    sd = _state_dict_of(torch_pickle.load(path), path)
    model = MultiPeriodDiscriminator(tuple(periods), width_div)
    x = jax.ShapeDtypeStruct((1, 64 * max(periods), 1), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, x)["params"]
    return state_dict_to_params(sd, shapes, what=path)


def discriminator_state_dict(params: Any) -> dict[str, np.ndarray]:
    """The reference's ``MultiPeriodDiscriminator.state_dict()`` layout (for ``D_*.pth``)."""
    from svcjax.interop.torch_params import params_to_state_dict

    return params_to_state_dict(jax.device_get(params), list_modules=("discriminators", "convs"))
