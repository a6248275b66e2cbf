"""SynthesizerTrn pieces beyond reference parity: the training step, the sine source's
precision over long clips, bf16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sovits_44k
from svcjax.interop import sovits as conv
from svcjax.models import nsf_hifigan, synthesizer


def _test_model(**model):
    cfg = conv.config_from_reference(sovits_44k.get_config("variant=test").to_dict())
    cfg.model.update(model)
    return synthesizer.from_config(cfg), cfg


def _random_params(model, seed=0):
    """Host-side random parameters of the right shapes (jitted Flax init compiles one RNG
    kernel per parameter, which is slow on CPU; values only need to be finite here)."""
    shapes = synthesizer.init_params(model, shapes_only=True)
    rs = np.random.RandomState(seed)
    return jax.tree.map(lambda s: jnp.asarray(rs.normal(0, 0.1, s.shape), s.dtype), shapes)


def test_training_forward_backward_test_config():
    model, cfg = _test_model(vol_embedding=True)
    b, t = 2, 12
    rs = np.random.RandomState(0)
    uv = (rs.rand(b, t) > 0.2).astype(np.float32)
    batch = dict(c=rs.randn(b, t, 32).astype(np.float32),
                 f0=(rs.uniform(100, 400, (b, t)) * uv).astype(np.float32), uv=uv,
                 spec=np.abs(rs.randn(b, t, 1025)).astype(np.float32),
                 g=np.array([0, 1], np.int32),
                 mask=np.array([[1] * t, [1] * 10 + [0] * 2], np.float32),
                 vol=rs.rand(b, t).astype(np.float32))
    params = _random_params(model)

    def loss_fn(params, key):
        k1, k2 = jax.random.split(key)
        out = model.apply({"params": params}, **batch, rngs={"noise": k1, "dropout": k2})
        m = out["mask"][..., None]
        kl = jnp.sum((out["logs_p"] - out["logs_q"] - 0.5
                      + 0.5 * (out["z_p"] - out["m_p"]) ** 2 * jnp.exp(-2 * out["logs_p"])) * m)
        f0 = jnp.mean((out["pred_lf0"] - out["lf0"]) ** 2)
        return jnp.mean(out["o"] ** 2) + kl / jnp.sum(m) + f0, out

    (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        params, jax.random.PRNGKey(1))
    seg = cfg.train.segment_size // 512
    assert out["o"].shape == (b, seg * 512) and np.isfinite(float(loss))
    # Random segment starts stay inside each clip's valid frames.
    lengths = batch["mask"].sum(1)
    assert ((0 <= out["ids_slice"]) & (out["ids_slice"] <= lengths - seg)).all()
    for name, sub in grads.items():
        norms = [float(jnp.linalg.norm(x)) for x in jax.tree.leaves(sub)]
        assert all(np.isfinite(norms)), name
        assert sum(norms) > 0, f"no gradient reaches {name}"


def test_sine_source_keeps_phase_over_long_clips():
    """30 s of F0: the phase of every harmonic equals the exact (float64) running sum of the
    float32 per-sample increments that the reference accumulates."""
    t = 2600
    rs = np.random.RandomState(0)
    f0 = (rs.uniform(80, 1000, (1, t)) * (rs.rand(1, t) > 0.1)).astype(np.float32)
    init = np.concatenate([[0.0], rs.rand(8)]).astype(np.float32)[None]
    got = np.asarray(jax.jit(lambda f, i: nsf_hifigan.sample_rate_sines(f, 512, 44100, 9, i))(
        f0, init))
    fn = f0[..., None] * np.arange(1, 10, dtype=np.float32)
    rad = np.remainder(fn / np.float32(44100), np.float32(1)).astype(np.float64)
    phase = np.cumsum(np.repeat(rad, 512, axis=1), axis=1) + init[:, None, :]
    want = np.sin(2 * np.pi * np.mod(phase, 1.0))
    assert np.abs(got - want).max() < 2e-6


def test_divide_rn_is_ieee():
    x = np.random.RandomState(0).uniform(0, 20000, 200_000).astype(np.float32)
    got = np.asarray(jax.jit(lambda v: nsf_hifigan.divide_rn(v, 44100))(x))
    np.testing.assert_array_equal(got, x / np.float32(44100))
    np.testing.assert_array_equal(np.asarray(nsf_hifigan.divide_rn(-x[:10], 44100)),
                                  -x[:10] / np.float32(44100))


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32():
    model, cfg = _test_model()
    params = synthesizer.init_params(model, jax.random.PRNGKey(0))
    bf = synthesizer.from_config(cfg, dtype=jnp.bfloat16)
    rs = np.random.RandomState(0)
    t = 20
    args = (rs.randn(1, t, 32).astype(np.float32), np.full((1, t), 220.0, np.float32),
            np.ones((1, t), np.float32), np.zeros(1, np.int32), np.ones((1, t), np.float32))
    run = lambda m: jax.jit(lambda p: m.apply({"params": p}, *args, method="infer"))(params)[0]
    w32, w16 = run(model), run(bf)
    assert w16.dtype == jnp.bfloat16 or w16.dtype == jnp.float32
    err = float(jnp.abs(w32 - w16.astype(jnp.float32)).max())
    assert err < 0.1 * float(jnp.abs(w32).max()) + 1e-3
