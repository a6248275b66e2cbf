"""Convolution layers with PyTorch's semantics, channels-last, with optional weight norm.

Every model in svcjax is a port of a PyTorch model, so its layers must compute exactly what
``torch.nn.Conv1d`` / ``ConvTranspose1d`` / ``Conv2d`` compute (padding, dilation, groups,
output length) and keep weight norm as trainable ``(g, v)`` parameters
(``weight = g * v / ||v||``, the norm over every axis but the one ``g`` indexes), as
``torch.nn.utils.weight_norm`` does. Inputs are ``(B, T, C)`` (``(B, H, W, C)`` for 2-D).

Parameter layouts (the converters in :mod:`svcjax.interop.torch_params` map PyTorch's):

=====================  ======================  ==========================
layer                  parameter               shape
=====================  ======================  ==========================
Conv1d                 ``kernel``              ``(K, Cin/groups, Cout)``
Conv1d, weight norm    ``kernel_v``/``_g``     ``(K, Cin/groups, Cout)``/``(Cout,)``
ConvTranspose1d        ``kernel_t``            ``(K, Cin, Cout)``
  with weight norm     ``kernel_t_v``/``_g``   ``(K, Cin, Cout)``/``(Cin,)``
Conv2d                 ``kernel``              ``(KH, KW, Cin/groups, Cout)``
=====================  ======================  ==========================

Default initialisers follow PyTorch's (uniform in ±1/sqrt(fan_in) for weight and bias), so
a model trained from scratch starts where the reference's does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

LRELU_SLOPE = 0.1


@dataclasses.dataclass(frozen=True)
class ConvKernels:
    """How three convolutions are built: a per-backend choice
    (:data:`svcjax.runtime.runner.KERNELS`), held as a field of every module that uses them,
    so it is part of each compiled program's key (nothing reads it while tracing). Every
    choice computes the same function; they differ in the XLA program, so in speed.

    * ``transposed``: :class:`ConvTranspose1d` with ``stride > 1`` as ``"polyphase"``, one
      stride-1 convolution producing the ``stride`` output phases (``stride`` times fewer
      multiply-adds than the zero-inserted form), or ``"dilated"``: XLA's native
      ``lhs_dilation`` convolution (the form GPU/TPU convolution libraries implement);
    * ``grad``: the kernel gradient of grouped convolutions (and of the polyphase one) as
      ``"matmul"``, one batched matmul over the shifted input windows (a custom VJP,
      :func:`grouped_conv1d`), or ``"xla"``: XLA's own (a ``batch_group_count`` / backward-filter
      convolution, which XLA-CPU runs 10-300x slower than the forward pass);
    * ``kx1``: a ``(K, 1)`` :class:`Conv2d` (the period discriminators) as ``"fold"``, a 1-D
      convolution with the columns folded into the batch (forward + backward ~25 % faster on
      XLA-CPU), or ``"xla"``: the 2-D convolution.

    The default is the CPU choice; :data:`svcjax.runtime.runner.KERNELS` gives GPU and TPU
    XLA's native paths (not measured faster otherwise there).
    """

    transposed: str = "polyphase"
    grad: str = "matmul"
    kx1: str = "fold"

    def __post_init__(self):
        for name, allowed in (("transposed", ("polyphase", "dilated")),
                              ("grad", ("matmul", "xla")), ("kx1", ("fold", "xla"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ConvKernels.{name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")


CPU_CONV_KERNELS = ConvKernels()
NATIVE_CONV_KERNELS = ConvKernels(transposed="dilated", grad="xla", kx1="xla")


def torch_uniform(fan_in: int) -> Initializer:
    """PyTorch's default init for conv/linear weights and biases: U(-1/sqrt(fan_in), +)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _norm_except(v: Array, keep_axis: int) -> Array:
    axes = tuple(a for a in range(v.ndim) if a != keep_axis % v.ndim)
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes))


def _weight_normed(module: nn.Module, prefix: str, init: Initializer, shape: Sequence[int],
                   keep_axis: int, param_dtype: Dtype) -> Array:
    """Declare ``{prefix}_v`` and ``{prefix}_g`` and return ``g * v / ||v||``."""
    v = module.param(f"{prefix}_v", init, tuple(shape), param_dtype)
    g = module.param(f"{prefix}_g", lambda _key, _shape, _dtype: _norm_except(v, keep_axis),
                     (shape[keep_axis],), param_dtype)
    norm = _norm_except(v, keep_axis)
    bshape = [1] * len(shape)
    bshape[keep_axis] = shape[keep_axis]
    return v * (g / norm).reshape(bshape)


def _padding(padding, kernel_size: int, dilation: int) -> tuple[int, int]:
    if isinstance(padding, str):
        span = dilation * (kernel_size - 1)
        if padding == "same":
            return span // 2, span - span // 2
        if padding == "causal":
            return span, 0
        if padding == "valid":
            return 0, 0
        raise ValueError(f"unknown padding {padding!r}")
    if isinstance(padding, int):
        return padding, padding
    left, right = padding
    return int(left), int(right)


class Conv1d(nn.Module):
    """``torch.nn.Conv1d`` on ``(B, T, Cin)``.

    ``padding`` is an int (both sides), ``(left, right)``, or ``'same'``/``'causal'``/``'valid'``.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: Any = 0
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    weight_norm: bool = False
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        if cin % self.groups or self.features % self.groups:
            raise ValueError(f"channels {cin}->{self.features} not divisible by groups {self.groups}")
        fan_in = (cin // self.groups) * self.kernel_size
        shape = (self.kernel_size, cin // self.groups, self.features)
        kinit = self.kernel_init or torch_uniform(fan_in)
        if self.weight_norm:
            kernel = _weight_normed(self, "kernel", kinit, shape, -1, self.param_dtype)
        else:
            kernel = self.param("kernel", kinit, shape, self.param_dtype)
        dtype = self.dtype or x.dtype
        pad = _padding(self.padding, self.kernel_size, self.dilation)
        if self.groups == 1 or self.conv_kernels.grad == "xla":
            y = _conv1d(x.astype(dtype), kernel.astype(dtype), self.stride, pad, self.dilation,
                        self.groups, self.precision)
        else:
            y = grouped_conv1d(x.astype(dtype), kernel.astype(dtype), self.stride, pad,
                               self.dilation, self.groups, self.precision)
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_uniform(fan_in), (self.features,),
                              self.param_dtype)
            y = y + bias.astype(dtype)
        return y


def _conv1d(x, w, stride, pad, dilation, groups, precision):
    return lax.conv_general_dilated(
        x, w, window_strides=(stride,), padding=[pad], rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups,
        precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def grouped_conv1d(x: Array, w: Array, stride: int, pad: tuple[int, int], dilation: int,
                   groups: int, precision: Any = None) -> Array:
    """A grouped 1-D convolution ``(B, L, Cin), (K, Cin/G, Cout) -> (B, L', Cout)``.

    The forward pass is ``lax.conv_general_dilated``; the kernel gradient is one batched
    matmul over the K shifted input windows instead of XLA's ``batch_group_count``
    convolution, which the CPU backend runs 10-300x slower than the forward pass (the scale
    discriminator's groups=256 layer: 1.7 s -> a few ms per step).
    """
    return _conv1d(x, w, stride, pad, dilation, groups, precision)


def _grouped_fwd(x, w, stride, pad, dilation, groups, precision):
    return _conv1d(x, w, stride, pad, dilation, groups, precision), (x, w)


def _grouped_bwd(stride, pad, dilation, groups, precision, res, dy):
    x, w = res
    _, pull_x = jax.vjp(lambda x_: _conv1d(x_, w, stride, pad, dilation, groups, precision), x)
    (dx,) = pull_x(dy)
    k, cg, cout = w.shape
    b, n_out = dy.shape[0], dy.shape[1]
    xp = jnp.pad(x, ((0, 0), pad, (0, 0)))
    idx = (jnp.arange(k) * dilation)[None, :] + (jnp.arange(n_out) * stride)[:, None]
    windows = xp[:, idx].reshape(b, n_out, k, groups, cg)          # (B, L', K, G, Cg)
    dy_g = dy.reshape(b, n_out, groups, cout // groups)             # (B, L', G, Og)
    dw = jnp.einsum("btkgc,btgo->kcgo", windows, dy_g, precision=precision,
                    preferred_element_type=jnp.float32)
    return dx, dw.reshape(k, cg, cout).astype(w.dtype)


grouped_conv1d.defvjp(_grouped_fwd, _grouped_bwd)


class ConvTranspose1d(nn.Module):
    """``torch.nn.ConvTranspose1d`` on ``(B, T, Cin)``.

    Output length ``(T - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1``.
    Weight norm follows PyTorch's ``dim=0``, which for a transposed conv is the *input* channel.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    dilation: int = 1
    use_bias: bool = True
    weight_norm: bool = False
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        # PyTorch computes fan_in of a transposed conv from weight.size(1) * K = Cout * K.
        fan_in = self.features * self.kernel_size
        shape = (self.kernel_size, cin, self.features)
        kinit = self.kernel_init or torch_uniform(fan_in)
        if self.weight_norm:
            kernel = _weight_normed(self, "kernel_t", kinit, shape, 1, self.param_dtype)
        else:
            kernel = self.param("kernel_t", kinit, shape, self.param_dtype)
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        if self.dilation == 1 and self.stride > 1 and self.conv_kernels.transposed == "polyphase":
            y = _transposed_conv_polyphase(x, kernel, self.stride, self.padding,
                                           self.output_padding, self.precision,
                                           self.conv_kernels.grad == "matmul")
        else:
            edge = self.dilation * (self.kernel_size - 1) - self.padding
            y = lax.conv_general_dilated(
                x, jnp.flip(kernel, 0),
                window_strides=(1,),
                padding=[(edge, edge + self.output_padding)],
                lhs_dilation=(self.stride,),
                rhs_dilation=(self.dilation,),
                dimension_numbers=("NWC", "WIO", "NWC"),
                precision=self.precision,
            )
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_uniform(fan_in), (self.features,),
                              self.param_dtype)
            y = y + bias.astype(dtype)
        return y


def _transposed_conv_polyphase(x: Array, kernel: Array, stride: int, padding: int,
                               output_padding: int, precision: Any,
                               matmul_grad: bool = True) -> Array:
    """Transposed conv as one stride-1 conv producing ``stride`` phases, then interleaved.

    The full (uncropped) output is ``z[n*s + r] = sum_q x[n - q] w[r + q*s]``: phase ``r`` is an
    ordinary convolution of ``x`` with every ``s``-th kernel tap. Stacking the phases as output
    channels computes exactly the transposed conv's multiply-adds, where the zero-inserted
    (``lhs_dilation``) form spends ``s`` times as many on the inserted zeros.
    """
    k, cin, cout = kernel.shape
    taps = -(-k // stride)
    w = jnp.pad(kernel, ((0, taps * stride - k), (0, 0), (0, 0)))
    w = w.reshape(taps, stride, cin, cout)[::-1]  # [q reversed, r]
    w = w.transpose(0, 2, 1, 3).reshape(taps, cin, stride * cout)
    # matmul_grad (ConvKernels.grad "matmul"): the kernel gradient by matmuls (grouped_conv1d's
    # backward): XLA's CPU backward-filter convolution is ~30x slower than the forward pass
    # for these short, wide layers.
    conv = grouped_conv1d if matmul_grad else _conv1d
    z = conv(x, w, 1, (taps - 1, taps - 1), 1, 1, precision)
    b, n, _ = z.shape
    z = z.reshape(b, n * stride, cout)
    length = (x.shape[1] - 1) * stride - 2 * padding + k + output_padding
    if padding + length > z.shape[1]:
        z = jnp.pad(z, ((0, 0), (0, padding + length - z.shape[1]), (0, 0)))
    return z[:, padding:padding + length]


class Conv2d(nn.Module):
    """``torch.nn.Conv2d`` on ``(B, H, W, Cin)``; ``padding`` is ``(ph, pw)`` (both sides)."""

    features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    use_bias: bool = True
    weight_norm: bool = False
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        kh, kw = self.kernel_size
        fan_in = (cin // self.groups) * kh * kw
        shape = (kh, kw, cin // self.groups, self.features)
        kinit = self.kernel_init or torch_uniform(fan_in)
        if self.weight_norm:
            kernel = _weight_normed(self, "kernel", kinit, shape, -1, self.param_dtype)
        else:
            kernel = self.param("kernel", kinit, shape, self.param_dtype)
        dtype = self.dtype or x.dtype
        ph, pw = self.padding
        sh, sw = self.stride
        if kw == 1 and sw == 1 and pw == 0 and self.groups == 1 and self.conv_kernels.kx1 == "fold":
            # A (K, 1) kernel (the period discriminators) is a 1-D conv over H for every
            # column: as one with the columns folded into the batch, XLA's CPU backend runs
            # forward + backward ~25% faster than the 2-D form.
            b, h, w, _ = x.shape
            cols = x.astype(dtype).transpose(0, 2, 1, 3).reshape(b * w, h, cin)
            y = _conv1d(cols, kernel[:, 0].astype(dtype), sh, (ph, ph), 1, 1, self.precision)
            y = y.reshape(b, w, y.shape[1], self.features).transpose(0, 2, 1, 3)
        else:
            y = self._conv2d(x.astype(dtype), kernel.astype(dtype))
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_uniform(fan_in), (self.features,),
                              self.param_dtype)
            y = y + bias.astype(dtype)
        return y

    def _conv2d(self, x, kernel):
        ph, pw = self.padding
        return lax.conv_general_dilated(
            x, kernel,
            window_strides=tuple(self.stride),
            padding=[(ph, ph), (pw, pw)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
            precision=self.precision,
        )


class SeparableConv1d(nn.Module):
    """So-VITS-SVC's ``Depthwise_Separable_Conv1D``: a depthwise conv then a 1x1 conv.

    Submodules are named ``depth_conv`` and ``point_conv`` like the reference's, each with
    its own weight norm when ``weight_norm`` is set.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: Any = 0
    dilation: int = 1
    use_bias: bool = True
    weight_norm: bool = False
    kernel_init: Initializer | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    conv_kernels: ConvKernels = CPU_CONV_KERNELS  # per backend: svcjax.runtime.runner.KERNELS

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        common = dict(use_bias=self.use_bias, weight_norm=self.weight_norm,
                      kernel_init=self.kernel_init, dtype=self.dtype,
                      param_dtype=self.param_dtype, precision=self.precision,
                      conv_kernels=self.conv_kernels)
        x = Conv1d(cin, self.kernel_size, self.stride, self.padding, self.dilation, groups=cin,
                   name="depth_conv", **common)(x)
        return Conv1d(self.features, 1, name="point_conv", **common)(x)


class Linear(nn.Module):
    """``torch.nn.Linear`` with PyTorch's default init; ``kernel`` is ``(in, out)``."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init or torch_uniform(fan_in),
                            (fan_in, self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        y = jnp.matmul(x.astype(dtype), kernel.astype(dtype), precision=self.precision)
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_uniform(fan_in), (self.features,),
                              self.param_dtype)
            y = y + bias.astype(dtype)
        return y


class LayerNorm(nn.Module):
    """LayerNorm over the last axis as PyTorch computes it (two-pass variance, eps 1e-5).

    Parameters ``scale`` and ``bias`` (VITS's ``gamma``/``beta``, torch's ``weight``/``bias``).
    """

    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        dtype = self.dtype or x.dtype
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(dtype)


def leaky_relu(x: Array, slope: float = LRELU_SLOPE) -> Array:
    return jnp.where(x >= 0, x, x * slope)
