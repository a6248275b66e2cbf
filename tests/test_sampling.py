"""Samplers: parity with the reference for every method, exactness on an oracle denoiser,
one trace per (shape, k, method), batching/padding invariance, randomness and errors.

Fixtures: tests/fixtures/make_diffusion.py --ref PATH.
"""

import dataclasses
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from svcjax.models.diffusion import sampling
from svcjax.runtime import runner as runtime
from svcjax.runtime.diffusion import Diffusion, load_diffusion
from svcjax.models.diffusion.gaussian import Schedule

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diffusion")
REF = np.load(os.path.join(FIX, "diffusion.npz"))
SHALLOW = sorted(k[:-4] for k in REF.files if k.startswith("shallow/") and k.endswith("/mel"))


@pytest.fixture(scope="module")
def diff():
    return load_diffusion(os.path.join(FIX, "model_100.pt"))


def _inputs():
    return REF["units"], REF["f0"], REF["volume"]


@pytest.mark.parametrize("run", SHALLOW)
def test_shallow_sampler_matches_reference(diff, run):
    _, method, k, s = run.split("/")
    k, s = int(k), int(s)
    p = sampling.plan(diff.schedule, k, method, s)
    ref_t = REF[f"{run}/t"]
    assert p.n_calls == len(ref_t) == sampling.n_calls(method, k, s)
    np.testing.assert_allclose(p.t_model, ref_t, rtol=0, atol=1e-4)  # the same steps visited
    mel = diff.sample(*_inputs(), speaker=REF["spk_ids"], start_mel=REF["start_mel"], k_step=k,
                      method=method, speedup=s, rng=None)
    err = float(np.abs(mel - REF[f"{run}/mel"]).max())
    print(f"{run} ({p.method}, {p.n_calls} calls): max abs error {err:.2e}")
    assert err < 1e-3
    assert float(np.abs(mel - REF["start_mel"]).max()) > 0.1  # the sampler did something


@pytest.mark.parametrize("method,speedup", [("dpm-solver++", 100), ("ddim", 200)])
def test_sampling_from_noise_matches_reference(diff, method, speedup):
    mel = diff.sample(*_inputs(), speaker=["alto", "bass"], method=method, speedup=speedup)
    ref = REF[f"full/{method}/{speedup}/mel"]
    err = float(np.abs(mel - ref).max())
    # a random network blows x0 = (x - sigma eps) / alpha up near t = T: compare relatively
    print(f"full/{method}/{speedup}: max abs error {err:.2e} on |mel| up to {np.abs(ref).max():.0f}")
    assert err < 1e-5 * np.abs(ref).max() + 1e-4


def test_speaker_mix_and_keyshift_match_reference(diff):
    mel = diff.sample(*_inputs(), speaker={"alto": 0.25, "tenor": 0.75},
                      start_mel=REF["start_mel"], k_step=20, method="dpm-solver++", speedup=5)
    err_mix = float(np.abs(mel - REF["mix/dpm-solver++/20/5/mel"]).max())
    mel = diff.sample(*_inputs(), speaker=REF["spk_ids"], keyshift=REF["aug_shift"],
                      start_mel=REF["start_mel"], k_step=20, method="unipc", speedup=5)
    err_key = float(np.abs(mel - REF["keyshift/unipc/20/5/mel"]).max())
    print(f"speaker mix error {err_mix:.2e}, keyshift error {err_key:.2e}")
    assert err_mix < 1e-3 and err_key < 1e-3
    # a per-frame mix equal to the static one gives the same mel
    frames = np.broadcast_to(np.array([0.25, 0.75, 0.0], np.float32), (24, 3))
    mel2 = diff.sample(*_inputs(), speaker=frames, start_mel=REF["start_mel"], k_step=20,
                       method="dpm-solver++", speedup=5)
    np.testing.assert_allclose(mel2, REF["mix/dpm-solver++/20/5/mel"], atol=1e-3)


# -- exactness on an oracle denoiser --------------------------------------------------------

@pytest.mark.parametrize("method,k,speedup", [
    ("ddpm", 12, 1), ("ddim", 21, 5), ("pndm", 41, 5), ("dpm-solver", 40, 5),
    ("dpm-solver++", 100, 10), ("dpm-solver++", 20, 5), ("unipc", 40, 4), ("unipc", 30, 10)])
def test_samplers_are_exact_for_a_point_mass(method, k, speedup):
    """For data concentrated at one x0 the true noise predictor is (x - alpha_t x0) / sigma_t;
    every sampler then follows the exact trajectory and ends at alpha_0 x0 + sigma_0 eps
    (DDPM, which predicts x0 at its last step, at x0)."""
    sch = Schedule()
    rs = np.random.RandomState(0)
    x0 = rs.uniform(-0.9, 0.9, (2, 16, 8)).astype(np.float32)
    eps = rs.randn(2, 16, 8).astype(np.float32)
    log_alpha = jnp.asarray(0.5 * np.cumsum(np.log(1 - sch.betas.astype(np.float64))), jnp.float32)

    def oracle(x, t):
        la = jnp.interp(t, jnp.arange(sch.timesteps, dtype=jnp.float32), log_alpha)
        return (x - jnp.exp(la) * x0) / jnp.sqrt(1 - jnp.exp(2 * la))

    x = sampling.shallow_start(sch, x0, k, eps)
    out = np.asarray(jax.jit(lambda x: sampling.sample(oracle, x, sch, k, method, speedup))(x))
    a0 = np.sqrt(np.float64(sch.alphas_cumprod[0]))
    want = x0 if method == "ddpm" else a0 * x0 + np.sqrt(1 - a0 ** 2) * eps
    np.testing.assert_allclose(out, want, atol=2e-5)


# -- compilation ----------------------------------------------------------------------------

def test_one_trace_per_shape_k_method():
    sch = Schedule()
    calls = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x):
        def eps_fn(x, t):
            calls.append(t)  # traced once per loop, not per step
            return 0.1 * x

        return sampling.sample(eps_fn, x, sch, 30, "unipc", 3)

    a = run(jnp.ones((2, 8, 4)))
    b = run(2 * jnp.ones((2, 8, 4)))  # new values, same shape: no retrace
    np.testing.assert_allclose(np.asarray(b), 2 * np.asarray(a), rtol=1e-5)
    assert len(calls) == 1
    with pytest.raises(AssertionError):
        run(jnp.ones((2, 9, 4)))  # a new shape retraces: the guard works


def test_model_compiles_once_per_bucket_k_method(diff):
    # A second model of the same network and schedule shares the runtime's compiled programs
    # (svcjax.runtime.runner.shared), so the counts are deltas over whatever ran before.
    fresh = Diffusion(diff.params, diff.config)
    assert fresh.runtime is diff.runtime
    units, f0, vol = _inputs()
    kw = dict(speaker="alto", k_step=20, method="dpm-solver++", speedup=5)
    # 23 frames: a length no other test of this module samples, bucket 64 (one row)
    units, f0, vol, mel = units[:1, :23], f0[:1, :23], vol[:1, :23], REF["start_mel"][:1, :23]
    before = dict(fresh.traces)

    def grown():
        return {k: v - before.get(k, 0) for k, v in fresh.traces.items()
                if v != before.get(k, 0)}

    with runtime.CompileCounter() as cc:
        fresh.sample(units, f0, vol, start_mel=mel, **kw)
        fresh.sample(units[:, :17], f0[:, :17], vol[:, :17], start_mel=mel[:, :17], **kw)
        fresh.sample(units, f0 * 1.5, vol, start_mel=mel, **kw)
    assert set(grown()) <= {(20, "dpm-solver++", 5, True)}
    assert cc.compiles <= 1 and cc.traces <= 1
    fresh.sample(units, f0, vol, start_mel=mel, **dict(kw, k_step=25))
    fresh.sample(units, f0, vol, start_mel=mel, **dict(kw, method="ddpm"))
    fresh.sample(units, f0, vol, start_mel=mel, **dict(kw, method="ddpm", speedup=1))
    assert all(v == 1 for v in grown().values())
    assert set(grown()) <= {(20, "dpm-solver++", 5, True), (25, "dpm-solver++", 5, True),
                            (20, "ddpm", 1, True)}
    assert (25, "dpm-solver++", 5, True) in fresh.traces and (20, "ddpm", 1, True) in fresh.traces
    # a model of another schedule does not share them (the schedule is part of the key)
    other = Diffusion(diff.params, diff.config)
    other.schedule = dataclasses.replace(other.schedule, spec_max=3.0)
    assert not other.traces
    other.sample(units, f0, vol, start_mel=mel, **kw)
    assert dict(other.traces) == {(20, "dpm-solver++", 5, True): 1}



# -- batching, padding, randomness ----------------------------------------------------------

def test_sharded_batch_and_padding_match_single_examples(diff):
    units, f0, vol = _inputs()
    kw = dict(start_mel=REF["start_mel"], k_step=20, method="unipc", speedup=5)
    batch = diff.sample(units, f0, vol, speaker=[0, 2], **kw)  # sharded over the 8 devices
    for i, spk in enumerate([0, 2]):
        one = diff.sample(units[i:i + 1], f0[i:i + 1], vol[i:i + 1], speaker=spk,
                          **dict(kw, start_mel=REF["start_mel"][i:i + 1]))
        np.testing.assert_allclose(batch[i:i + 1], one, atol=1e-5)
    # example 1 cut to 15 frames inside a padded batch == example 1 alone at 15 frames
    short = diff.sample(units[1:, :15], f0[1:, :15], vol[1:, :15], speaker=2,
                        **dict(kw, start_mel=REF["start_mel"][1:, :15]))
    padded = diff.sample(units, f0, vol, speaker=[0, 2], lengths=[24, 15], **kw)
    np.testing.assert_allclose(padded[1, :15], short[0], atol=1e-5)
    assert not padded[1, 15:].any()
    np.testing.assert_allclose(padded[0], batch[0], atol=1e-5)


def test_rng(diff):
    units, f0, vol = _inputs()
    kw = dict(speaker=REF["spk_ids"], start_mel=REF["start_mel"], k_step=10, method="ddpm")
    none_a, none_b = diff.sample(units, f0, vol, **kw), diff.sample(units, f0, vol, **kw)
    np.testing.assert_array_equal(none_a, none_b)
    np.testing.assert_allclose(none_a, REF["shallow/ddpm/10/1/mel"], atol=1e-3)
    r0 = diff.sample(units, f0, vol, rng=0, **kw)
    np.testing.assert_array_equal(r0, diff.sample(units, f0, vol, rng=jax.random.PRNGKey(0), **kw))
    r1 = diff.sample(units, f0, vol, rng=1, **kw)
    assert np.abs(r0 - none_a).max() > 1e-2 and np.abs(r0 - r1).max() > 1e-2
    # deterministic samplers use the rng only for the start noise
    dk = dict(kw, method="ddim", speedup=5)
    assert np.abs(diff.sample(units, f0, vol, rng=0, **dk) - diff.sample(units, f0, vol, **dk)).max() > 1e-2


# -- errors ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shallow_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("shallow")
    shutil.copy(os.path.join(FIX, "model_100.pt"), d / "model_100.pt")
    cfg = yaml.safe_load(open(os.path.join(FIX, "config.yaml")))
    cfg["model"]["k_step_max"] = 50
    yaml.safe_dump(cfg, open(d / "config.yaml", "w"))
    return load_diffusion(d / "model_100.pt")


def test_errors(diff, shallow_model):
    units, f0, vol = _inputs()
    mel = REF["start_mel"]
    assert shallow_model.k_step_max == 50 and diff.k_step_max == 1000
    cases = [
        (shallow_model, dict(speaker="alto", start_mel=mel, k_step=60), "k_step=60 is greater than .* k_step_max=50"),
        (shallow_model, dict(speaker="alto"), "can only refine a given mel"),
        (diff, dict(speaker="bob", start_mel=mel), r"speaker 'bob' not in model; known: alto, tenor, bass"),
        (diff, dict(start_mel=mel), "has 3 speakers; pass speaker="),
        (diff, dict(speaker=7, start_mel=mel), r"speaker id 7 out of range: .* \(ids 0..2\)"),
        (diff, dict(speaker=0, start_mel=mel, k_step=10, method="dpm-solver", speedup=8), "needs at least 2"),
        (diff, dict(speaker=0, start_mel=mel, method="euler"), "unknown diffusion sampler 'euler'"),
        (diff, dict(speaker=0, start_mel=mel[:, :5]), r"start_mel must be \(B, T, 128\)"),
        (diff, dict(speaker=0, k_step=100), "k_step must be None or 1000"),
        (diff, dict(speaker=0, start_mel=mel, k_step=0), "k_step must be >= 1"),
        (diff, dict(speaker=0, start_mel=mel, lengths=[24, 30]), "lengths must be 2 values"),
    ]
    for model, kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model.sample(units, f0, vol, **kw)
    with pytest.raises(ValueError, match="units have 5 channels"):
        diff.sample(units[..., :5], f0, vol, speaker=0, start_mel=mel)
    with pytest.raises(ValueError, match="f0 must be"):
        diff.sample(units, f0[:, :3], vol, speaker=0, start_mel=mel)
    bad = f0.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="f0 contains NaN"):
        diff.sample(units, bad, vol, speaker=0, start_mel=mel)


@pytest.mark.skipif(not os.environ.get("SVCJAX_REF"),
                    reason="set SVCJAX_REF=/path/to/so-vits-svc for the full-size reference check")
@pytest.mark.parametrize("method,speedup", [("dpm-solver++", 10), ("pndm", 25)])
def test_full_size_template_matches_reference(method, speedup):
    """The template network (20 x 512, 55.2 M parameters) against the reference itself."""
    import sys
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
    from make_diffusion import _import_reference, _zero_random
    from svcjax.interop.diffusion import DEFAULTS, config_from_yaml
    from svcjax.interop.torch_params import state_dict_to_params
    unit2mel = _import_reference(os.environ["SVCJAX_REF"])
    torch.manual_seed(0)
    ref = unit2mel.Unit2Mel(768, 2, True, 128, 20, 512, 256, 1000, 0).eval()
    with torch.no_grad():
        torch.nn.init.normal_(ref.decoder.denoise_fn.output_projection.weight, std=0.02)
    config = config_from_yaml(dict(DEFAULTS, model=dict(DEFAULTS["model"], n_spk=2, use_pitch_aug=True),
                                   spk={"a": 0, "b": 1}))
    from svcjax.interop.diffusion import _param_shapes
    from svcjax.models.diffusion.unit2mel import build_model
    shapes = _param_shapes(build_model(config), config)
    pre = "decoder.denoise_fn."
    params = state_dict_to_params({k: v.numpy() for k, v in ref.state_dict().items()}, shapes,
                                  rename=lambda k: "denoise_fn." + k[len(pre):] if k.startswith(pre)
                                  else (None if k.startswith("decoder.") else k))
    diff = Diffusion(params, config)
    rs = np.random.RandomState(0)
    t = 40
    units = rs.randn(1, t, 768).astype(np.float32)
    f0 = (150 + 200 * rs.rand(1, t)).astype(np.float32)
    vol = (0.1 * rs.rand(1, t)).astype(np.float32)
    mel = (-6 + rs.randn(1, t, 128)).astype(np.float32)
    ours = diff.sample(units, f0, vol, speaker="b", start_mel=mel, k_step=100, method=method,
                       speedup=speedup)
    with torch.no_grad(), _zero_random(torch):
        want = ref(torch.from_numpy(units), torch.from_numpy(f0)[..., None],
                   torch.from_numpy(vol)[..., None], torch.tensor([[1]]),
                   gt_spec=torch.from_numpy(mel), infer=True, infer_speedup=speedup,
                   method=method, k_step=100, use_tqdm=False).numpy()
    err = float(np.abs(ours - want).max())
    print(f"full-size {method}: max abs error {err:.2e}")
    assert err < 1e-3
