"""A training run's checkpoint read back and written in the reference's file format
(``svcjax export-pth``): ``G_/D_{step}.pth`` + config.json for So-VITS-SVC runs,
``model_{step}.pt`` + config.yaml for diffusion runs."""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from svcjax.train.checkpoint import TrainCheckpointer
from svcjax.train.task import Task
from svcjax.train.tasks import make_task

__all__ = ["load_run_config", "restore_params", "export_run"]

def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(os.fspath(workdir), "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{workdir} is not a training workdir (no config.json)")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def restore_params(workdir: str, step: int | None = None, task: Task | None = None):
    """``(params, step, task)`` of a run's checkpoint (default: the newest), on one device."""
    config = load_run_config(workdir)
    task = task or make_task(config)
    task.setup_optimizers(max(1, int(task.tcfg.steps_per_epoch or 1)))
    dummy = task.dummy_batch(1)

    def init_state(key):
        params = task.init_params(key, dummy)
        return {"params": params,
                "opt_state": {n: task.tx[n].init(params[n]) for n in task.model_names}}

    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=dev),
                            jax.eval_shape(init_state, jax.random.PRNGKey(0)))
    ckpt = TrainCheckpointer(os.path.join(os.fspath(workdir), "checkpoints"), async_save=False)
    try:
        step = ckpt.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
        if step not in ckpt.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {workdir}/checkpoints; "
                                    f"have {', '.join(map(str, ckpt.all_steps())) or 'none'}")
        state = ckpt.restore(step, abstract)
    finally:
        ckpt.close()
    return state["params"], step, task


def export_run(workdir: str, outdir: str, step: int | None = None) -> list[str]:
    """Write a run's checkpoint in the reference's file format (``G_/D_{step}.pth`` +
    config.json for So-VITS-SVC, ``model_{step}.pt`` + config.yaml for diffusion)."""
    params, step, task = restore_params(workdir, step)
    return task.export(params, step, outdir)
