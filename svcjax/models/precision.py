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


def matmuls_in(dtype: Any, fn: Callable) -> Callable:
    """``fn`` with its float32 matmuls and convolutions computed on ``dtype`` operands
    (float32 accumulation); ``dtype`` float32 or None returns ``fn`` itself."""
    if dtype is None or check_compute_dtype(dtype) == "float32":
        return fn
    low = jnp.dtype(check_compute_dtype(dtype))

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

    wrapped.__name__ = f"{getattr(fn, '__name__', 'fn')}_{low.name}"
    wrapped.__wrapped__ = fn
    return wrapped


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
            invals = [x.astype(low) for x in invals[:2]] + list(invals[2:])
            params["preferred_element_type"] = jnp.dtype(jnp.float32)
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
