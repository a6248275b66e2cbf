"""``compute_dtype=bfloat16``: bfloat16 matmuls/convolutions with float32 parameters and I/O.

Tolerances come from bfloat16's precision: each matmul/conv operand is rounded to 8
significant bits (unit roundoff 2**-9, machine epsilon ``EPS`` = 2**-8) and accumulated in
float32, so one matmul's result moves by about 2**-9 of its size (rounding errors of both
operands, independent across terms; an RMS bound of 2**-8 leaves a factor 2 to 3), and a
network of many layers moves by that times its error growth. The conversion test's bound
is ``EPS * GROWTH``: on this test's clips the tiny models' end-to-end relative RMS
difference measured 4.7e-3 = 1.2 EPS, nearly all of it the vocoder's (``bench/precision.py
--variant test``: vocoder alone 1.2 EPS, units 0.3, SoVITS and diffusion < 0.01 on the
test voices); GROWTH = 4 leaves a factor 3 for other CPUs' summation orders and seeds. The float32 programs run at matmul precision "highest" (conftest),
so float32 itself adds only ~1e-6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.models import precision
from svcjax.runtime import converter as pipeline
from tests import tiny_models

EPS = 2.0 ** -8
GROWTH = 4.0
SR = 44100


def _rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(a ** 2)))


def test_every_matmul_runs_in_bf16_inside_loops_calls_and_custom_rules():
    @jax.custom_vjp
    def proj(x, w):
        return x @ w

    proj.defvjp(lambda x, w: (x @ w, (x, w)), lambda res, g: (g @ res[1].T, res[0].T @ g))

    def f(w, x):
        def body(c, _):
            c = jnp.tanh(jax.jit(lambda a: a @ w)(c))
            return c, c.sum()
        c, s = jax.lax.scan(body, x, None, length=3)
        y = jax.lax.conv_general_dilated(c[None], w[None], (1,), [(0, 0)],
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        z = jax.lax.cond(s[0] > -1e9, lambda a: proj(a, w), lambda a: a @ w.T, c)
        return {"y": y[0], "z": z, "s": s}

    w = jax.random.normal(jax.random.PRNGKey(0), (64, 64)) / 8
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 64))
    low = precision.matmuls_in("bfloat16", f)
    text = jax.jit(low).lower(w, x).as_text()
    # 3 matmuls in the scan body (1), the conv (1), both cond branches (2): operands cast
    assert text.count("-> tensor<64x64xbf16>") + text.count("-> tensor<1x64x64xbf16>") >= 4
    with jax.default_matmul_precision("highest"):
        ref, got = jax.jit(f)(w, x), jax.jit(low)(w, x)
    for k in ref:
        assert got[k].dtype == jnp.float32 and got[k].shape == ref[k].shape
        err = _rel_rms(ref[k], got[k])
        # one to four bf16 matmuls deep (scan of 3 + conv/cond): each ~2**-9 relative
        assert 2.0 ** -16 < err < 4 * EPS, (k, err)
    assert precision.matmuls_in("float32", f) is f


@pytest.mark.parametrize("xs,ws,dn,kw", [
    ((2, 37, 8), (3, 8, 5), ("NWC", "WIO", "NWC"), dict(window_strides=(1,), padding=[(1, 1)])),
    ((2, 8, 37), (5, 8, 3), ("NCW", "OIW", "NCW"),
     dict(window_strides=(2,), padding=[(3, 2)], rhs_dilation=(3,))),
    ((1, 50, 4), (4, 4, 6), ("NWC", "WIO", "NWC"), dict(window_strides=(3,), padding=[(-1, 2)])),
    ((2, 30, 4), (3, 2, 6), ("NWC", "WIO", "NWC"),          # grouped: stays a convolution
     dict(window_strides=(1,), padding=[(1, 1)], feature_group_count=2)),
])
def test_conv_as_tap_dots_is_the_convolution_of_the_rounded_operands(xs, ws, dn, kw):
    r = np.random.RandomState(0)
    x = jnp.asarray(r.randn(*xs), jnp.float32)
    w = jnp.asarray(r.randn(*ws), jnp.float32)
    conv = lambda a, b: jax.lax.conv_general_dilated(a, b, dimension_numbers=dn, **kw)  # noqa
    rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        ref = conv(rounded(x), rounded(w))
        got = jax.jit(precision.matmuls_in("bfloat16", conv, conv_as_dots=True))(x, w)
    assert got.shape == ref.shape and got.dtype == jnp.float32
    # the same products (exact in float32: 8-bit x 8-bit significands), summed in another
    # order: float32 rounding of a sum of K*Cin terms, far below bf16's 2**-9
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(jnp.abs(ref).max()))


def test_compute_dtype_names():
    assert precision.check_compute_dtype("bf16") == "bfloat16"
    assert precision.check_compute_dtype(jnp.float32) == "float32"
    with pytest.raises(ValueError, match="compute_dtype must be one of float32, bfloat16"):
        pipeline.ConvertOptions(compute_dtype="float16").check()


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    d = tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))
    return tiny_models.converter(d)


def _clip(n, seed):
    r = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f = 170 + 30 * seed + 8 * np.sin(2 * np.pi * 5 * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR)
            + 0.01 * r.standard_normal(n)).astype(np.float32)


def test_bf16_conversion_runs_and_stays_within_bf16_error_growth(conv):
    clips = [_clip(20000, 1), _clip(26000, 2)]
    base = dict(speaker="tenor", f0_method="dio", k_step=4, method="ddim", speedup=2,
                pad_seconds=0.05, batch_size=4, seed=3)
    f32 = conv.convert(clips, pipeline.ConvertOptions(**base), progress=False)
    b16 = conv.convert(clips, pipeline.ConvertOptions(**base, compute_dtype="bfloat16"),
                       progress=False)
    # compute_dtype is part of the program's key: were it not, the second call would reuse
    # the float32 program and the outputs would be identical (err == 0 below)
    for a, b in zip(f32, b16):
        assert b.shape == a.shape and np.isfinite(b).all()
        err = _rel_rms(a, b)
        assert err > 2.0 ** -16, "the bfloat16 program computed the float32 result"
        assert err < GROWTH * EPS, err


def test_bf16_is_refused_where_the_compiled_program_does_not_run(conv):
    opt = pipeline.ConvertOptions(speaker="tenor", compute_dtype="bfloat16", enhance=True,
                                  shallow_diffusion=False)
    with pytest.raises(ValueError, match="compute_dtype bfloat16 runs in the compiled"):
        conv.check_options(opt)
