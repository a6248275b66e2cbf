"""svcjax.models.phase: exact phase accumulation of the frame-rate harmonic source."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from svcjax.models import phase

SR, UPP = 44100, 512


def _rad32(f0, h=1):
    """The reference's float32 per-sample increment (f0 * h / sr) % 1."""
    return np.remainder(np.float32(f0) * np.float32(h) / np.float32(SR), np.float32(1))


def test_divide_is_correctly_rounded():
    x = np.random.default_rng(0).uniform(0, 1100 * 9, 200000).astype(np.float32)
    got = np.asarray(jax.jit(lambda v: phase.divide(v, SR))(x))
    np.testing.assert_array_equal(got, x / np.float32(SR))


def test_fixed_point_is_exact_and_wraps():
    x = np.random.default_rng(1).uniform(0, 1, 1000).astype(np.float32)
    limbs = np.asarray(phase.to_fixed(jnp.asarray(x))).astype(np.float64)
    back = sum(limbs[:, i] * 2.0 ** (-16 * (i + 1)) for i in range(4))
    np.testing.assert_array_equal(back, x.astype(np.float64))
    a, b = phase.to_fixed(jnp.float32(0.75)), phase.to_fixed(jnp.float32(0.5))
    assert float(phase.fixed_to_float(phase.fixed_add(a, b))) == 0.25
    assert float(phase.fixed_to_float(phase.fixed_mul_int(a, 7))) == 0.25   # 5.25 mod 1
    with pytest.raises(ValueError):
        phase.fixed_mul_int(a, 1 << 16)


def test_five_minute_tone_keeps_the_analytic_phase():
    f0 = 261.63
    t = 5 * 60 * SR // UPP
    fn = jax.jit(lambda f: phase.frame_rate_sines(f, UPP, SR, 1))
    got = np.asarray(fn(np.full((1, t), f0, np.float32)))[0, :, 0]
    # analytic phase of the float32 increment: n * r is exact in float64 (24 + 24 bits)
    r = np.float64(_rad32(f0))
    n = np.arange(1, t * UPP + 1, dtype=np.float64)
    want = np.sin(2 * np.pi * np.remainder(n * r, 1.0))
    err = np.abs(got - want)
    assert err.max() < 3e-6, err.max()
    assert err[-SR:].max() < 3e-6       # no drift: the last second is as good as the first
    # what a float32 running sum would give instead (the drift designed out)
    naive = np.sin(2 * np.pi * np.cumsum(np.full(t * UPP, np.float32(r), np.float32)))
    assert np.abs(naive - want)[-SR:].max() > 1e-2


def test_varying_f0_matches_float64_cumsum_with_harmonics_and_initial_phase():
    rng = np.random.default_rng(2)
    t = 300
    f0 = (200 + 300 * rng.uniform(size=(2, t))).astype(np.float32)
    f0[:, 50:80] = 0.0
    init = rng.uniform(size=(2, 3)).astype(np.float32)
    fn = jax.jit(lambda f, p: phase.frame_rate_sines(f, UPP, SR, 3, p))
    got = np.asarray(fn(f0, init))
    h = np.arange(1, 4, dtype=np.float32)
    rad = np.remainder(f0[..., None] * h / np.float32(SR), np.float32(1))   # (2, T, 3)
    per_sample = np.repeat(rad.astype(np.float64), UPP, axis=1)
    ph = np.cumsum(per_sample, axis=1) + init[:, None, :].astype(np.float64)
    want = np.sin(2 * np.pi * np.remainder(ph, 1.0))
    assert got.shape == (2, t * UPP, 3)
    np.testing.assert_allclose(got, want, atol=3e-6)
