"""The GAN step: discriminator first, then the generator against the updated discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from svcjax import losses, sharding
from svcjax.metric_writer import read_metrics
from svcjax.trainer import train
from tests.standins import make_sovits_task, sovits_test_config


@pytest.fixture(scope="module")
def setup():
    cfg = sovits_test_config()
    task = make_sovits_task(cfg)
    task.setup_optimizers(3)
    data = task.make_data(sharding.make_mesh())
    batch = jax.tree.map(jnp.asarray, next(data.iterator))
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0), batch)
    opt = {n: task.tx[n].init(params[n]) for n in task.model_names}
    return cfg, task, batch, params, opt


def _reference_step(task, params, opt, batch, rng):
    """The same step written plainly: two full forward passes, no VJP reuse."""
    k_noise, k_drop = jax.random.split(rng)
    spec = task._spec(batch)
    hop, seg = task.hop, task.segment

    def fwd(pg):
        return task.G.apply({"params": pg}, batch["units"], batch["f0"], batch["uv"], spec,
                            batch["speaker"], batch["mask"], None,
                            slice_start=batch["slice_start"], train=True,
                            rngs={"noise": k_noise, "dropout": k_drop})

    out = fwd(params["g"])
    ids = out["ids_slice"]
    y = jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s * hop, seg))(batch["audio"], ids)
    y = y[..., None]

    def d_loss(pd):
        rs, gs, _, _ = task.D.apply({"params": pd}, y, out["o"][..., None])
        return losses.discriminator_loss(rs, gs)[0]

    loss_d, gd = jax.value_and_grad(d_loss)(params["d"])
    want_d, _ = task.update("d", gd, opt["d"], params["d"])

    def g_total(pg):
        o = fwd(pg)
        y_hat = o["o"][..., None]
        _, gs, fr, fg = task.D.apply({"params": want_d}, y, y_hat)
        sl = lambda x, n: jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, n))(x, ids)
        y_mel = task.spectrogram.spec_to_mel(sl(spec, seg // hop), **task.mel_kw)
        y_hat_mel = task.spectrogram.mel_spectrogram(y_hat[..., 0], hop_length=hop,
                                                     **task.mel_kw)
        return (losses.generator_loss(gs)[0] + losses.feature_loss(fr, fg)
                + 45 * losses.mel_l1(y_mel, y_hat_mel, sl(o["mask"], seg // hop)[..., None])
                + losses.kl_loss(o["z_p"], o["logs_q"], o["m_p"], o["logs_p"], o["mask"])
                + losses.f0_mse(o["pred_lf0"], o["lf0"], o["mask"]))

    total, gg = jax.value_and_grad(g_total)(params["g"])
    want_g, _ = task.update("g", gg, opt["g"], params["g"])
    return want_d, want_g, loss_d, total, optax.tree.norm(gg)


def test_step_order_and_gradients(setup):
    """d is updated with the loss on the old d; g's gradient is that of the full generator
    loss against the *updated* d, pulled back through the one forward pass."""
    cfg, task, batch, params, opt = setup
    rng = jax.random.PRNGKey(3)
    new, new_opt, m = jax.jit(task.step)(params, opt, batch, rng)
    want_d, want_g, loss_d, total, gnorm = jax.jit(
        lambda p, o, b, r: _reference_step(task, p, o, b, r))(params, opt, batch, rng)
    np.testing.assert_allclose(m["loss/d/total"], loss_d, rtol=1e-5)
    np.testing.assert_allclose(m["loss/g/total"], total, rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm/g"], gnorm, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(want_d), jax.tree.leaves(new["d"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(want_g), jax.tree.leaves(new["g"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    parts = sum(float(m[k]) for k in ("loss/g/gen", "loss/g/fm", "loss/g/mel", "loss/g/kl",
                                       "loss/g/lf0"))
    assert parts == pytest.approx(float(m["loss/g/total"]), rel=1e-5)


def test_train_two_steps_end_to_end(tmp_path):
    cfg = sovits_test_config(num_steps=2)
    res = train(cfg, str(tmp_path), task=make_sovits_task(cfg))
    assert res.step == 2 and res.compiles == 1
    recs = [r for r in read_metrics(str(tmp_path)) if "loss/g/total" in r]
    assert [r["step"] for r in recs] == [1, 2]
    for k in ("loss/g/total", "loss/d/total", "loss/g/mel", "loss/g/kl", "loss/g/fm",
              "loss/g/gen", "loss/g/lf0", "grad_norm/g", "grad_norm/d", "param_norm/g",
              "param_norm/d", "learning_rate", "audio_seconds_per_s"):
        assert np.isfinite(recs[-1][k]), k
    val = [r for r in read_metrics(str(tmp_path)) if "val/mel_l1" in r]
    assert [r["step"] for r in val] == [2]
