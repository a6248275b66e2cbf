"""Reduced-precision matmuls for any JAX function: ``compute_dtype`` of conversion.

    fast = matmuls_in("bfloat16", model.apply)    # same signature, same float32 outputs
    y = fast({"params": params}, x)

:func:`matmuls_in` traces the function to a jaxpr and evaluates it again with every float32
``dot_general`` (matmuls, einsums, attention) and ``conv_general_dilated`` (convolutions,
transposed ones included) given ``bfloat16`` operands and a float32 accumulator
(``preferred_element_type``), as a TPU's MXU, a GPU's tensor cores or a CPU's AMX/AVX512-BF16
units compute them. Everything else (parameters as stored, norms, activations, softmax,
elementwise arithmetic, FFTs, random draws) stays float32, and so do the function's inputs and
outputs. It reaches into ``jit``/``pjit``, ``custom_jvp``/``custom_vjp`` calls and
``checkpoint`` (inlined: inference only) and into ``scan``, ``while`` and ``cond`` bodies
(rewritten in place), so a model needs no dtype plumbing of its own.

The rounding: each operand is rounded to 8 significant bits (relative error at most
``2**-9``, bf16's unit roundoff), the products and sums are float32; a layer's output error is
thus about ``2**-8`` relative to the size of its terms, and it grows through a deep network
(measured per component by ``bench/precision.py``).

On XLA-CPU (jaxlib 0.10) a ``dot_general`` with bfloat16 operands and a float32 result runs
in YNNPACK's bfloat16 kernel (AVX512-BF16 / AMX where the CPU has them), several times faster
than float32, while a bfloat16 convolution is converted back to a float32 one (rounded
operands, float32 speed). So with ``conv_as_dots`` (default: on the CPU backend) a 1-D
convolution without groups or input dilation (stride, padding and kernel dilation allowed;
transposed convolutions in svcjax are stride-1 polyphase convolutions already) becomes one
bfloat16 dot per kernel tap, summed in float32: the same rounding of the operands, a
different float32 summation order. ``bench/xla_cpu_bf16.py`` times both.

This is an inference transform: the result is not meant to be differentiated.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core

try:                                      # jax >= 0.4.30 keeps the jaxpr types here
    from jax.extend import core as _ext_core
except ImportError:                       # pragma: no cover - older jax
    _ext_core = jax_core

__all__ = ["matmuls_in", "check_compute_dtype", "COMPUTE_DTYPES"]

# the compute dtypes conversion accepts (names as numpy / jax spell them)
COMPUTE_DTYPES = ("float32", "bfloat16")

_ClosedJaxpr = _ext_core.ClosedJaxpr
_Jaxpr = _ext_core.Jaxpr
_Literal = _ext_core.Literal
_DropVar = getattr(_ext_core, "DropVar", None) or jax_core.DropVar

# primitives whose operands are cast (their float32 outputs kept by preferred_element_type)
_MATMUL = ("dot_general", "conv_general_dilated")
# call-like primitives evaluated inline (their body is one jaxpr applied to their inputs)
_INLINE = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
           "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
           "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
           "remat": "jaxpr", "checkpoint": "jaxpr", "remat2": "jaxpr"}


def check_compute_dtype(name: Any) -> str:
    """The canonical name of a compute dtype (``"float32"`` or ``"bfloat16"``); anything
    else raises ``ValueError`` with one sentence."""
    text = getattr(name, "__name__", None) or str(name)
    text = {"bf16": "bfloat16", "f32": "float32", "fp32": "float32"}.get(text.lower(),
                                                                         text.lower())
    if text not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got "
                         f"{name!r}")
    return text


def matmuls_in(dtype: Any, fn: Callable, *, conv_as_dots: bool | None = None) -> Callable:
    """``fn`` with its float32 matmuls and convolutions computed on ``dtype`` operands
    (float32 accumulation); ``dtype`` float32 or None returns ``fn`` itself.
    ``conv_as_dots`` (default: the default backend is the CPU) computes 1-D convolutions as
    one dot per kernel tap (see the module's docstring)."""
    if dtype is None or check_compute_dtype(dtype) == "float32":
        return fn
    low = _Low(jnp.dtype(check_compute_dtype(dtype)),
               jax.default_backend() == "cpu" if conv_as_dots is None else bool(conv_as_dots))

    def wrapped(*args, **kwargs):
        # arrays are traced; anything else (modules, strings, Python numbers) stays static
        flat, tree = jax.tree_util.tree_flatten((args, kwargs))
        dynamic = [i for i, x in enumerate(flat) if isinstance(x, (jax.Array, np.ndarray))]

        def flat_fn(*arrays):
            leaves = list(flat)
            for i, x in zip(dynamic, arrays):
                leaves[i] = x
            a, k = jax.tree_util.tree_unflatten(tree, leaves)
            return fn(*a, **k)

        arrays = [flat[i] for i in dynamic]
        closed, shape = jax.make_jaxpr(flat_fn, return_shape=True)(*arrays)
        outs = _eval(closed.jaxpr, closed.consts, arrays, low)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

    wrapped.__name__ = f"{getattr(fn, '__name__', 'fn')}_{low.dtype.name}"
    wrapped.__wrapped__ = fn
    return wrapped


class _Low(tuple):
    """(dtype, conv_as_dots)"""

    def __new__(cls, dtype, conv_as_dots):
        return super().__new__(cls, (dtype, conv_as_dots))

    dtype = property(lambda self: self[0])
    conv_as_dots = property(lambda self: self[1])


def _eval(jaxpr, consts, args, low) -> list:
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, _Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars], low)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, _DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn, invals, low):
    name = eqn.primitive.name
    params = dict(eqn.params)
    if name in _MATMUL:
        if all(jnp.result_type(x) == jnp.float32 for x in invals[:2]):
            invals = [x.astype(low.dtype) for x in invals[:2]] + list(invals[2:])
            params["preferred_element_type"] = jnp.dtype(jnp.float32)
            if name == "conv_general_dilated" and low.conv_as_dots and _tap_dots_apply(
                    invals[1], params):
                return _conv_as_tap_dots(invals[0], invals[1], params)
        return eqn.primitive.bind(*invals, **params)
    sub = params.get(_INLINE.get(name, ""), None)
    if isinstance(sub, _ClosedJaxpr):
        return _eval(sub.jaxpr, sub.consts, invals, low)
    if isinstance(sub, _Jaxpr):
        return _eval(sub, [], invals, low)
    for k, v in params.items():                 # scan / while / cond bodies
        if isinstance(v, _ClosedJaxpr):
            params[k] = _rewrite(v, low)
        elif isinstance(v, tuple) and v and all(isinstance(b, _ClosedJaxpr) for b in v):
            params[k] = tuple(_rewrite(b, low) for b in v)
    bind_params = eqn.primitive.get_bind_params(params)
    if isinstance(bind_params, tuple):          # jax < 0.6: (subfuns, params)
        subfuns, bind_params = bind_params
        return eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return eqn.primitive.bind(*invals, **bind_params)


def _rewrite(closed, low):
    """A closed jaxpr with the same input and output types, its matmuls in ``low``."""
    avals = [v.aval for v in closed.jaxpr.invars]
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
             for a in avals]
    new = jax.make_jaxpr(lambda *xs: _eval(closed.jaxpr, closed.consts, xs, low))(*specs)
    if [v.aval for v in new.jaxpr.outvars] != [v.aval for v in closed.jaxpr.outvars]:
        # weak types can differ after re-tracing; give the body its original output types
        want = [v.aval for v in closed.jaxpr.outvars]
        new = jax.make_jaxpr(lambda *xs: [
            jax.lax.convert_element_type(y, a.dtype) if hasattr(a, "dtype") else y
            for y, a in zip(_eval(closed.jaxpr, closed.consts, xs, low), want)])(*specs)
    return new


def _tap_dots_apply(rhs, params) -> bool:
    return (len(params["window_strides"]) == 1 and params["feature_group_count"] == 1
            and params["batch_group_count"] == 1 and tuple(params["lhs_dilation"]) == (1,)
            and rhs.shape[params["dimension_numbers"].rhs_spec[2]] <= 16)


def _conv_as_tap_dots(lhs, rhs, params):
    """A 1-D ``conv_general_dilated`` (no groups, no input dilation) as one dot per kernel
    tap with float32 accumulation: ``y[n, t, o] = sum_k x[n, t*s + k*d, :] @ w[k, :, o]``."""
    dn = params["dimension_numbers"]
    x = jnp.transpose(lhs, (dn.lhs_spec[0], dn.lhs_spec[2], dn.lhs_spec[1]))    # (N, W, I)
    w = jnp.transpose(rhs, (dn.rhs_spec[2], dn.rhs_spec[1], dn.rhs_spec[0]))    # (K, I, O)
    (lo, hi), = params["padding"]
    (stride,), (dil,) = params["window_strides"], params["rhs_dilation"]
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lo, hi, 0), (0, 0, 0)))
    k = w.shape[0]
    n_out = (x.shape[1] - dil * (k - 1) - 1) // stride + 1
    y = None
    for i in range(k):
        xi = jax.lax.slice(x, (0, i * dil, 0),
                           (x.shape[0], i * dil + stride * (n_out - 1) + 1, x.shape[2]),
                           (1, stride, 1))
        yi = jax.lax.dot_general(xi, w[i], (((2,), (0,)), ((), ())),
                                 precision=params["precision"],
                                 preferred_element_type=jnp.float32)
        y = yi if y is None else y + yi
    # (N, W', O) -> the output layout the convolution had
    spec = dn.out_spec                                  # (batch, feature, spatial) positions
    order = [0] * 3
    order[spec[0]], order[spec[1]], order[spec[2]] = 0, 2, 1
    return jnp.transpose(y, order)
