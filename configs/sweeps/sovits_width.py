"""Ablation: generator width (hidden / inter channels, FFN 4x wider).

    svcjax sweep configs/sweeps/sovits_width.py:data_dir=DATA_DIR --workdir /tmp/sweep_width

192 is the reference's template. Arguments: ``variant`` of the base config, ``data_dir``,
``steps`` per run.
"""

from configs.common import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, variant="full", data_dir="", steps=50_000)
    common = {"train.num_steps": a.steps}
    if a.data_dir:
        common["data.data_dir"] = a.data_dir
    runs = []
    for w in (128, 192, 256):
        runs.append({"name": f"w{w}", "overrides": {
            "model.hidden_channels": w, "model.inter_channels": w, "model.filter_channels": 4 * w}})
    return {"base": f"configs/sovits_44k.py:variant={a.variant}", "common": common, "runs": runs}
