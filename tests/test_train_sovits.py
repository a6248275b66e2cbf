"""The GAN training step against the reference's train.py; fine-tuning, export, end to end."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sovits_44k
from svcjax.interop import sovits as conv
from svcjax.train.metric_writer import read_metrics
from svcjax.models.discriminator import discriminator_state_dict, load_discriminator
from svcjax.train.sovits import SovitsTask, generator_state_dict
from svcjax.train.export import export_run, restore_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "train_step")


def fixture_config():
    """The fixture's reference config.json plus the trainer fields of configs/sovits_44k.py."""
    cfg = conv.config_from_reference(os.path.join(FIX, "config.json"))
    full = sovits_44k.get_config("variant=test")
    with cfg.unlocked():
        for k in ("kind", "seed", "mesh", "init_from", "init_discriminator_from"):
            cfg[k] = full[k]
        cfg.discriminator = dict(width_div=16, periods=(2, 3, 5, 7, 11))
        for k, v in full.train.copy_and_resolve_references().items():
            if k not in cfg.train:
                cfg.train[k] = v
    return cfg


@pytest.fixture(scope="module")
def parity():
    cfg = fixture_config()
    ref = dict(np.load(os.path.join(FIX, "step.npz")))
    task = SovitsTask(cfg)
    task.setup_optimizers(1)
    params = {"g": conv.sovits_params(cfg, conv.read_state_dict(os.path.join(FIX, "G_0.pth"))),
              "d": load_discriminator(os.path.join(FIX, "D_0.pth"), width_div=16)}
    t = ref["f0"].shape[1]
    batch = {k: jnp.asarray(ref[k]) for k in ("audio", "units", "f0", "uv", "speaker",
                                               "length", "slice_start")}
    batch["mask"] = jnp.asarray((np.arange(t)[None] < ref["length"][:, None]).astype(np.float32))
    batch["volume"] = jnp.zeros((len(ref["length"]), t), jnp.float32)
    opt = {n: task.tx[n].init(params[n]) for n in task.model_names}
    out = jax.jit(task.gradients, static_argnums=())(params, opt, batch, None)
    return cfg, task, ref, params, out


def test_gan_step_matches_the_reference(parity):
    """One step of train.py (random draws zero): every loss term, the gradient norms of both
    models and of every parameter tensor (D: before its update; G: against the updated D)."""
    cfg, task, ref, params, (grads_g, grads_d, new_d, opt_d, m) = parity
    for mine, theirs in (("loss/d/total", "loss_disc"), ("loss/g/gen", "loss_gen"),
                         ("loss/g/fm", "loss_fm"), ("loss/g/mel", "loss_mel"),
                         ("loss/g/kl", "loss_kl"), ("loss/g/lf0", "loss_lf0"),
                         ("loss/g/total", "loss_gen_all"), ("grad_norm/g", "grad_norm_g"),
                         ("grad_norm/d", "grad_norm_d")):
        np.testing.assert_allclose(float(m[mine]), float(ref[theirs]), rtol=2e-4, err_msg=mine)
    sd_g = generator_state_dict(jax.device_get(grads_g), cfg)
    sd_d = discriminator_state_dict(grads_d)
    want_g = {k[len("g_grad/"):]: float(v) for k, v in ref.items() if k.startswith("g_grad/")}
    want_d = {k[len("d_grad/"):]: float(v) for k, v in ref.items() if k.startswith("d_grad/")}
    assert set(want_d) == set(sd_d)
    assert set(want_g) <= set(sd_g)
    for want, got, total in ((want_g, sd_g, ref["grad_norm_g"]),
                             (want_d, sd_d, ref["grad_norm_d"])):
        for k, v in want.items():
            n = float(np.linalg.norm(np.asarray(got[k], np.float64)))
            # abs: gradients that are zero in exact arithmetic (attention key biases: softmax
            # ignores a per-row constant) are float noise in both implementations
            assert n == pytest.approx(v, rel=3e-3, abs=1e-5 * float(total)), k


def test_discriminator_updates_before_the_generator_step(parity):
    """The D update is AdamW's first step on the D gradient; G's loss saw the updated D."""
    cfg, task, ref, params, (grads_g, grads_d, new_d, opt_d, m) = parity
    want, _ = task.update("d", grads_d, task.tx["d"].init(params["d"]), params["d"])
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(new_d)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(new_d), jax.tree.leaves(params["d"]))]
    assert max(moved) == pytest.approx(1e-4, rel=0.05)  # first AdamW step: ~lr * sign(g)


def _random_like(task):
    """Fresh parameters of the task's shapes (host random: a jitted Flax init of the
    generator compiles one RNG kernel per parameter, slow on CPU)."""
    shapes = jax.eval_shape(task.init_params, jax.random.PRNGKey(0), task.dummy_batch(1))
    rs = np.random.RandomState(0)
    return jax.tree.map(lambda s: rs.normal(0, 0.1, s.shape).astype(s.dtype), shapes)


def test_fine_tune_from_reference_base_models(parity):
    """--config.init_from=G_0.pth: the generator and the D_0.pth beside it load; a tensor of
    another shape (here the speaker table, 3 -> 5 speakers) keeps its fresh init."""
    cfg, task, ref, params, _ = parity
    with cfg.unlocked():
        cfg.init_from = os.path.join(FIX, "G_0.pth")
    ft = SovitsTask(cfg)
    fresh = _random_like(ft)
    loaded = ft.pretrained(fresh)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with cfg.unlocked():
        cfg.model.n_speakers = 5
    ft5 = SovitsTask(cfg)
    fresh5 = _random_like(ft5)
    loaded5 = ft5.pretrained(fresh5)
    np.testing.assert_array_equal(loaded5["g"]["emb_g"]["embedding"],
                                  fresh5["g"]["emb_g"]["embedding"])
    np.testing.assert_array_equal(loaded5["g"]["pre"]["kernel"], params["g"]["pre"]["kernel"])
    with cfg.unlocked():
        cfg.model.n_speakers = 3
        cfg.init_from = ""


@pytest.mark.parametrize("case", ["template", "tiny", "tflow"])
def test_generator_export_reproduces_reference_state_dicts(case):
    """Reference G files (plain, shared-flow + depthwise + volume, transformer flow) import
    and export back to exactly their tensors and names."""
    folder = os.path.join(ROOT, "tests", "fixtures", "sovits", case)
    ckpt = [f for f in os.listdir(folder) if f.startswith("G_") and f.endswith(".pth")][0]
    sd = conv.read_state_dict(os.path.join(folder, ckpt))
    cfg = conv.config_from_reference(os.path.join(folder, "config.json"))
    out = generator_state_dict(conv.sovits_params(cfg, sd), cfg)
    assert set(out) == set(sd)
    for k, v in sd.items():
        assert out[k].shape == v.shape and np.array_equal(out[k], v), k


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """train.py end to end on a built corpus (test variant, 8 devices), 2 steps (resuming is
    tested on the toy task and on the diffusion run)."""
    from tests.training_corpus import UNIT_DIM, tiny_corpus

    data_dir = tiny_corpus()
    work = tmp_path_factory.mktemp("sovits_run")
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "train.py", "--config=configs/sovits_44k.py:variant=test",
           f"--workdir={work}", f"--config.data.data_dir={data_dir}",
           f"--config.model.ssl_dim={UNIT_DIM}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done at step 2" in proc.stderr
    return work


def test_train_py_end_to_end(corpus_run):
    recs = read_metrics(str(corpus_run))
    train = [r for r in recs if "loss/g/total" in r]
    assert [r["step"] for r in train] == [1, 2]
    for k in ("loss/g/total", "loss/d/total", "loss/g/mel", "loss/g/kl", "loss/g/fm",
              "loss/g/gen", "loss/g/lf0", "grad_norm/g", "grad_norm/d", "param_norm/g",
              "param_norm/d", "learning_rate", "steps_per_s", "audio_seconds_per_s"):
        assert all(np.isfinite(r[k]) for r in train), k
    assert train[0]["learning_rate"] == pytest.approx(1e-4)
    val = [r for r in recs if "val/mel_l1" in r]
    assert [r["step"] for r in val] == [2] and np.isfinite(val[0]["val/mel_l1"])
    cfg = json.load(open(corpus_run / "config.json"))
    assert cfg["kind"] == "sovits" and cfg["train"]["eval_every"] == 2


def test_export_to_reference_files(corpus_run, tmp_path):
    """G_{step}.pth / D_{step}.pth + config.json: the reference's importer (and torch) read
    them back to the trained parameters."""
    files = export_run(str(corpus_run), str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["G_2.pth", "D_2.pth", "config.json"]
    params, step, _ = restore_params(str(corpus_run))
    cfg = conv.config_from_reference(files[2])
    g = conv.sovits_params(cfg, conv.read_state_dict(files[0]))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(params["g"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    d = load_discriminator(files[1], width_div=16, periods=(2, 3))
    for a, b in zip(jax.tree.leaves(d), jax.tree.leaves(params["d"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    torch = pytest.importorskip("torch")
    ck = torch.load(files[0], weights_only=True)
    assert set(ck) == {"model", "iteration", "optimizer", "learning_rate"}
    assert ck["optimizer"] is None and ck["iteration"] >= 1
    assert "enc_q.pre.weight" in ck["model"] and "emb_g.weight" in ck["model"]


@pytest.mark.slow  # one more compile of the whole GAN step (~1 min on 2 cores)
def test_bfloat16_compute_keeps_float32_parameters(parity):
    """train.compute_dtype=bfloat16: both models compute in bf16, the losses stay close to
    float32's, gradients and parameters stay float32."""
    cfg, task, ref, params, (_, _, _, _, m32) = parity
    with cfg.unlocked():
        cfg.train.compute_dtype = "bfloat16"
    try:
        bf = SovitsTask(cfg)
    finally:
        with cfg.unlocked():
            cfg.train.compute_dtype = "float32"
    assert bf.G.dtype == jnp.bfloat16 and bf.D.dtype == jnp.bfloat16
    bf.setup_optimizers(1)
    t = ref["f0"].shape[1]
    batch = {k: jnp.asarray(ref[k]) for k in ("audio", "units", "f0", "uv", "speaker",
                                               "length", "slice_start")}
    batch["mask"] = jnp.asarray((np.arange(t)[None] < ref["length"][:, None]).astype(np.float32))
    batch["volume"] = jnp.zeros((len(ref["length"]), t), jnp.float32)
    opt = {n: bf.tx[n].init(params[n]) for n in bf.model_names}
    new, _, m = jax.jit(bf.step)(params, opt, batch, None)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new))
    for k in ("loss/d/total", "loss/g/mel", "loss/g/kl", "loss/g/total"):
        assert np.isfinite(float(m[k])) and float(m[k]) == pytest.approx(float(m32[k]), rel=0.05), k
