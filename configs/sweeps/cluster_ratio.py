"""Ablation: the cluster-model / feature-retrieval ratio against timbre leakage.

    svcjax sweep configs/sweeps/cluster_ratio.py:model=G_800.pth,encoder=ENC,cluster_model=kmeans_10000.pt,data=CLIPS --workdir /tmp/sweep_cr
    svcjax sweep configs/sweeps/cluster_ratio.py --workdir /tmp/sweep_cr --print

One evaluation (``eval.py``, configs/eval.py) per ratio, gathered into one table (speaker
similarity, mel distance, F0 error per ratio). Arguments: ``model``, ``encoder``,
``cluster_model`` (a kmeans_*.pt, feature_and_index.pkl or svcjax .npz), ``data`` (a folder
of ``<speaker>/<clip>``), ``variant`` of the eval config (``full``; ``test`` for a smoke run).
"""

from configs.common import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, variant="full", model="", encoder="", cluster_model="", data="")
    common = {"sovits_only": True, "diffusion_k": ()}
    for key in ("model", "encoder", "cluster_model"):
        if getattr(a, key):
            common[key] = getattr(a, key)
    if a.data:
        common["data.path"] = a.data
    return {
        "base": f"configs/eval.py:variant={a.variant}",
        "common": common,
        "program": ["{python}", "eval.py"],
        "runs": [{"name": f"cr{round(r * 100)}", "overrides": {"cluster_ratios": (r,)}}
                 for r in (0.0, 0.25, 0.5, 0.75, 1.0)],
    }
