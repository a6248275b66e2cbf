"""Ablation: decoder segment length (the slice of each clip the vocoder half is trained on).

    svcjax sweep configs/sweeps/sovits_segment.py:data_dir=DATA_DIR --workdir /tmp/sweep_seg

10240 samples (20 frames) is the reference's. Arguments: ``variant``, ``data_dir``, ``steps``.
"""

from configs.common import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, variant="full", data_dir="", steps=50_000)
    common = {"train.num_steps": a.steps}
    if a.data_dir:
        common["data.data_dir"] = a.data_dir
    return {"base": f"configs/sovits_44k.py:variant={a.variant}", "common": common,
            "runs": [{"name": f"seg{n}", "overrides": {"train.segment_size": n}}
                     for n in (5120, 10240, 20480)]}
