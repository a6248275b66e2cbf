"""Unit2Mel (conditioning + WaveNet denoiser) and its training loss against the reference.

Fixtures: tests/fixtures/make_diffusion.py --ref PATH (random weights, shrunk widths).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.interop.diffusion import import_checkpoint
from svcjax.models.diffusion import gaussian as gaussian_diffusion
from svcjax.models.diffusion.gaussian import Schedule
from svcjax.models.diffusion.unit2mel import Unit2Mel, WaveNet, build_model, training_loss

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "diffusion")


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(FIX, "diffusion.npz"))


@pytest.fixture(scope="module")
def imported():
    params, config = import_checkpoint(os.path.join(FIX, "model_100.pt"))
    return build_model(config), params, config


def _spk(ids, n, t):
    return jnp.asarray(np.eye(n, dtype=np.float32)[ids][:, None].repeat(t, 1))


@pytest.mark.parametrize("run", ["shallow/dpm-solver++/100/10", "shallow/unipc/20/5",
                                 "shallow/pndm/20/5"])
def test_denoiser_matches_reference_per_call(ref, imported, run):
    model, params, config = imported
    v = {"params": params}
    b, t = ref["f0"].shape
    cond = model.apply(v, ref["units"], ref["f0"], ref["volume"], _spk(ref["spk_ids"], 3, t),
                       method=Unit2Mel.condition)
    cp = model.apply(v, cond, method=Unit2Mel.project_condition)
    denoise = jax.jit(lambda x, s: model.apply(v, x, s, cp, method=Unit2Mel.denoise))
    xs, ts, eps = ref[f"{run}/x"], ref[f"{run}/t"], ref[f"{run}/eps"]
    assert len(xs) == len(ts) == len(eps) > 1
    errs = [float(np.abs(np.asarray(denoise(x, s)) - e).max()) for x, s, e in zip(xs, ts, eps)]
    print(f"{run}: denoiser max abs error per call {max(errs):.2e} (|eps| ~ {np.abs(eps).max():.2f})")
    assert max(errs) < 1e-4


def test_training_loss_matches_reference(ref, imported):
    model, params, config = imported
    t = ref["f0"].shape[1]
    batch = dict(units=ref["units"], f0=ref["f0"], volume=ref["volume"], mel=ref["start_mel"],
                 spk=_spk(ref["spk_ids"], 3, t), aug_shift=ref["aug_shift"])
    sch = Schedule.from_config(config)
    loss = jax.jit(lambda p: training_loss(model, p, batch, None, sch, t=jnp.asarray(ref["train/t"]),
                                           noise=jnp.asarray(ref["train/noise"])))(params)
    print(f"training loss {float(loss):.7f} vs reference {float(ref['train/loss']):.7f}")
    np.testing.assert_allclose(float(loss), float(ref["train/loss"]), rtol=1e-5)
    # drawn t and noise: t < k_step_max, finite gradient
    g = jax.jit(jax.grad(lambda p: training_loss(model, p, batch, jax.random.PRNGKey(0),
                                                 Schedule(k_step_max=50))))(params)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))


def test_schedule_tables_equal_reference_buffers():
    from svcjax.interop import torch_pickle
    sd = torch_pickle.load(os.path.join(FIX, "model_100.pt"))["model"]
    sch = Schedule()
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                 "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                 "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2"):
        np.testing.assert_array_equal(sch.table(name), sd[f"decoder.{name}"], err_msg=name)
    assert sd["decoder.spec_min"].shape == (1, 1, 1) and float(sd["decoder.spec_min"].item()) == sch.spec_min
    mel = np.array([-12.0, 2.0, -5.0])
    np.testing.assert_allclose(sch.norm_spec(mel), [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(sch.denorm_spec(sch.norm_spec(mel)), mel)
    assert Schedule(k_step_max=0).effective_k_step_max() == 1000
    assert Schedule(k_step_max=100).shallow_only and not Schedule().shallow_only


def _tiny(n_spk=3, aug=True):
    return Unit2Mel(input_channel=16, n_spk=n_spk, use_pitch_aug=aug, out_dims=8, n_layers=3,
                    n_chans=16, n_hidden=12)


def random_params(model, *args, seed=0, scale=0.3):
    """Random weights for every parameter (the zero-initialised output projection included);
    numpy-drawn from the shapes, much faster than tracing ``init`` on a loaded CPU."""
    rs = np.random.RandomState(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args))
    return jax.tree.map(lambda s: (scale * rs.randn(*s.shape)).astype(np.float32), shapes)


def _inputs(rs, b, t, n_spk=3):
    return (rs.randn(b, t, 16).astype(np.float32), (100 + 300 * rs.rand(b, t)).astype(np.float32),
            rs.rand(b, t).astype(np.float32), rs.randn(b, t, 8).astype(np.float32),
            np.array([3.0, 700.0][:b], np.float32),
            rs.dirichlet(np.ones(n_spk), (b, t)).astype(np.float32))


def test_padded_frames_do_not_change_valid_frames():
    model = _tiny()
    rs = np.random.RandomState(0)
    units, f0, vol, x, t, spk = _inputs(rs, 2, 13)
    params = random_params(model, units, f0, vol, x, t, spk, np.zeros(2))
    apply = jax.jit(model.apply)
    ref = apply(params, units, f0, vol, x, t, spk, np.array([1.0, -2.0]))
    pad = 19
    junk = lambda a: np.concatenate([a, 50 * rs.randn(*((a.shape[0], pad) + a.shape[2:])).astype(np.float32)], 1)  # noqa: E731
    mask = np.concatenate([np.ones((2, 13)), np.zeros((2, pad))], 1)
    out = apply(params, junk(units), np.abs(junk(f0)), junk(vol), junk(x), t, junk(spk),
                np.array([1.0, -2.0]), mask)
    print("padded vs unpadded max diff", float(np.abs(np.asarray(out[:, :13]) - np.asarray(ref)).max()))
    # equal up to float rounding (XLA picks kernels by shape); a leak would be O(1)
    np.testing.assert_allclose(np.asarray(out[:, :13]), np.asarray(ref), rtol=0, atol=1e-5)
    # without the mask the padding does leak into the last valid frame (the test can fail)
    leak = apply(params, junk(units), np.abs(junk(f0)), junk(vol), junk(x), t, junk(spk),
                 np.array([1.0, -2.0]))
    assert np.abs(np.asarray(leak[:, 12]) - np.asarray(ref[:, 12])).max() > 1e-3


def test_speaker_mix_is_linear_and_one_hot_is_the_id():
    model = _tiny()
    rs = np.random.RandomState(1)
    units, f0, vol, x, t, spk = _inputs(rs, 2, 7)
    params = random_params(model, units, f0, vol, x, t, spk)
    cond_fn = jax.jit(lambda s: model.apply(params, units, f0, vol, s, method=Unit2Mel.condition))
    cond = lambda s: np.asarray(cond_fn(s))  # noqa: E731
    emb = np.asarray(params["params"]["spk_embed"]["embedding"])
    one_hot = np.eye(3, dtype=np.float32)[[2, 0]][:, None].repeat(7, 1)
    base = cond(np.zeros_like(one_hot))
    np.testing.assert_allclose(cond(one_hot) - base, emb[[2, 0]][:, None].repeat(7, 1), atol=1e-5)
    np.testing.assert_allclose(cond(spk) - base, np.einsum("bts,sh->bth", spk, emb), atol=1e-5)


def test_masked_loss_ignores_padding():
    rs = np.random.RandomState(0)
    a, b = rs.randn(2, 5, 4), rs.randn(2, 5, 4)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    a2 = a.copy()
    a2[0, 3:] = 1e3
    full = gaussian_diffusion.masked_loss(a2, b, mask)
    want = (np.sum((a[0, :3] - b[0, :3]) ** 2) + np.sum((a[1] - b[1]) ** 2)) / (8 * 4)
    np.testing.assert_allclose(float(full), want, rtol=1e-6)
    np.testing.assert_allclose(float(gaussian_diffusion.masked_loss(a, b, None, "l1")),
                               np.mean(np.abs(a - b)), rtol=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        gaussian_diffusion.masked_loss(a, b, None, "huber")


def test_template_size_and_zero_init_output():
    """The template network has the reference's 55.2 M parameters; output starts at zero."""
    from configs.diffusion_44k import get_config
    config = get_config("variant=full,n_spk=5")
    model = build_model(config)
    b, t = 1, 4
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.zeros((b, t, 768)), jnp.zeros((b, t)), jnp.zeros((b, t)),
        jnp.zeros((b, t, 128)), jnp.zeros((b,)), jnp.zeros((b, t, 5)), jnp.zeros((b,))))
    n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert abs(n - 55.2e6) < 0.05e6, n
    wn = shapes["params"]["denoise_fn"]
    assert len([k for k in wn if k.startswith("residual_layers_")]) == 20
    assert wn["residual_layers_0"]["dilated_conv"]["kernel"].shape == (3, 512, 1024)
    wavenet = WaveNet(out_dims=4, n_layers=1, n_chans=4)
    x = jnp.ones((1, 3, 4))
    p = jax.jit(wavenet.init)(jax.random.PRNGKey(0), x, jnp.zeros(1), (jnp.ones((1, 3, 8)),))
    assert not np.asarray(p["params"]["output_projection"]["kernel"]).any()
    assert np.asarray(p["params"]["input_projection"]["kernel"]).std() > 0


def test_config_test_variant_trains_and_samples():
    """configs/diffusion_44k.py:variant=test builds the same structure the importer writes,
    takes a finite gradient step and samples (shallow and from noise) on a CPU."""
    from configs.diffusion_44k import get_config
    from svcjax.interop.diffusion import DEFAULTS
    from svcjax.runtime.diffusion import Diffusion
    config = get_config("variant=test")
    for section, keys in DEFAULTS.items():
        assert set(keys) <= set(config[section]), section
    model = build_model(config)
    rs = np.random.RandomState(0)
    b, t, c = 2, 11, config.data.encoder_out_channels
    batch = dict(units=rs.randn(b, t, c).astype(np.float32), f0=(200 + 50 * rs.rand(b, t)).astype(np.float32),
                 volume=rs.rand(b, t).astype(np.float32), mel=(-6 + rs.randn(b, t, 128)).astype(np.float32),
                 spk=np.eye(3, dtype=np.float32)[[0, 1]][:, None].repeat(t, 1),
                 aug_shift=np.array([0.0, 4.0], np.float32), mask=np.ones((b, t), np.float32))
    params = random_params(model, batch["units"], batch["f0"], batch["volume"], batch["mel"],
                           np.zeros(b), batch["spk"], batch["aug_shift"], scale=0.1)["params"]
    sch = Schedule.from_config(config)
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p: training_loss(model, p, batch, jax.random.PRNGKey(3), sch)))(params)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    diff = Diffusion(params, config)
    mel = diff.sample(batch["units"][0], batch["f0"][0], batch["volume"][0], speaker="bass",
                      start_mel=batch["mel"][0], k_step=20)
    assert mel.shape == (t, 128) and np.isfinite(mel).all()
    mel = diff.sample(batch["units"], batch["f0"], batch["volume"], speaker="alto",
                      method="ddim", speedup=250, rng=0)
    assert mel.shape == (b, t, 128) and np.isfinite(mel).all()
