"""Ablation: how deep the shallow-diffusion model is trained (``model.k_step_max``).

    svcjax sweep configs/sweeps/diffusion_k_step_max.py:data_dir=DATA_DIR --workdir /tmp/sweep_k
    svcjax sweep configs/sweeps/diffusion_k_step_max.py --workdir /tmp/sweep_k --print

0 trains all 1000 steps (the template); 100 / 200 train only the first steps, enough for
shallow refinement with k_step <= k_step_max. Arguments: ``variant`` of the base config
(``full``; ``test`` for a smoke run), ``data_dir``, ``steps`` per run.
"""

from configs.common import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, variant="full", data_dir="", steps=100_000)
    common = {"train.num_steps": a.steps}
    if a.data_dir:
        common["data.data_dir"] = a.data_dir
    return {
        "base": f"configs/diffusion_44k.py:variant={a.variant}",
        "common": common,
        "runs": [{"name": f"k{k}", "overrides": {"model.k_step_max": k}} for k in (0, 100, 200)],
    }
