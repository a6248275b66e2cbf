"""Shallow-diffusion training: the step is the reference's objective; runs end to end; exports."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import diffusion_44k
from svcjax.runtime import sharding
from svcjax.train.metric_writer import read_metrics
from svcjax.models.diffusion import unit2mel
from svcjax.train.diffusion import DiffusionTask
from svcjax.train.export import export_run, restore_params
from svcjax.train.loop import train
from tests.standins import diffusion_batches


def _config(**train):
    cfg = diffusion_44k.get_config("variant=test,k_step_max=100")
    cfg.train.interval_val = 2  # eval_every and checkpoint_every follow
    cfg.train.update(train)
    return cfg


def test_step_is_the_reference_objective():
    cfg = _config()
    task = DiffusionTask(cfg, data=diffusion_batches(cfg))
    task.setup_optimizers(3)
    batch = jax.tree.map(jnp.asarray, next(task.make_data(sharding.make_mesh()).iterator))
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0), batch)
    opt = {"model": task.tx["model"].init(params["model"])}
    rng = jax.random.PRNGKey(5)
    new, _, m = jax.jit(task.step)(params, opt, batch, rng)
    inputs = task._inputs(batch)
    assert inputs["spk"].shape == batch["f0"].shape + (3,)
    want, grads = jax.jit(jax.value_and_grad(
        lambda p: unit2mel.training_loss(task.model, p, inputs, rng, task.schedule,
                                         k_step_max=100)))(params["model"])
    np.testing.assert_allclose(m["loss/total"], want, rtol=1e-6)
    upd, _ = task.update("model", grads, opt["model"], params["model"])
    for a, b in zip(jax.tree.leaves(upd), jax.tree.leaves(new["model"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-7)  # lr 1e-4 x ~sign(g)
    # AdamW of train_diff.py: lr 1e-4, weight decay 0, x0.5 every 100k steps; its StepLR
    # (last_epoch=-2 on a fresh run) halves the LR from update 100_002 (count 100_001) on
    assert task.schedules["model"](100_000) == pytest.approx(1e-4)
    assert task.schedules["model"](100_001) == pytest.approx(5e-5)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """train.py end to end: the real grain pipeline on a built corpus, 2 steps, then a rerun
    to 3 steps that resumes."""
    import subprocess
    import sys

    from tests.training_corpus import N_MELS, UNIT_DIM, tiny_corpus

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = tiny_corpus()
    work = tmp_path_factory.mktemp("diffusion_run")
    cmd = [sys.executable, "train.py", "--config=configs/diffusion_44k.py:variant=test",
           f"--workdir={work}", f"--config.data.data_dir={data_dir}",
           f"--config.data.encoder_out_channels={UNIT_DIM}", f"--config.model.out_dims={N_MELS}",
           "--config.train.num_steps=2", "--config.train.interval_val=2"]
    env = dict(os.environ, PYTHONPATH=root)
    for steps in (2, 3):
        cmd[-2] = f"--config.train.num_steps={steps}"
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"done at step {steps}" in proc.stderr
    assert "resumed from" in proc.stderr
    return work, data_dir


def test_train_py_on_a_built_corpus(corpus_run):
    work, data_dir = corpus_run
    recs = read_metrics(str(work))
    assert [r["step"] for r in recs if "loss/total" in r] == [1, 2, 3]
    assert any("val/mel_l1" in r for r in recs)
    cfg = __import__("json").load(open(work / "config.json"))
    assert cfg["data"]["data_dir"] == data_dir and cfg["train"]["steps_per_epoch"] >= 1


def test_export_loads_in_svcjax_importer(corpus_run, tmp_path):
    """model_{step}.pt + config.yaml as the reference writes them; svcjax's importer reads
    them back to the trained parameters."""
    work, _ = corpus_run
    files = export_run(str(work), str(tmp_path / "export"))
    assert [os.path.basename(f) for f in files] == ["model_3.pt", "config.yaml"]
    from svcjax.runtime.diffusion import load_diffusion

    loaded = load_diffusion(files[0])
    params, step, _ = restore_params(str(work))
    assert step == 3
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params["model"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
