"""Release copies of So-VITS-SVC checkpoints: ``svcjax compress G_800.pth OUT.pth [--half]``.

Writes what the reference's ``compress_model.py`` writes, without PyTorch:
``{'model': <generator tensors without enc_q, fp16 with --half>, 'iteration': 0,
'optimizer': <a fresh AdamW state_dict: no state, one parameter group over all of the
model's parameters>, 'learning_rate': 0.0001}``. The optimizer's hyper-parameters come from
``--config`` (the reference's config.json) or the template's defaults. The result loads in
svcjax (``import-sovits``, ``load_sovits``) and in the reference (``torch.load``, also with
``weights_only=True``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from svcjax.interop import torch_pickle, torch_save

__all__ = ["compress", "parameter_count"]

# configs_template/config_template.json's train section
_DEFAULT_TRAIN = {"learning_rate": 0.0001, "betas": [0.8, 0.99], "eps": 1e-9}


def parameter_count(path: str, names) -> int:
    """How many distinct parameters the tensors ``names`` of a ``torch.save`` zip are.

    ``state_dict()`` writes shared parameters (``flow_share_parameter``) once per name, each
    a view of the same storage; the optimizer counts them once. Legacy (non-zip) files: one
    per name.
    """
    names = set(names)
    if not zipfile.is_zipfile(path):
        return len(names)
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl")][0]
        raw = torch_pickle.TorchUnpickler(io.BytesIO(zf.read(pkl)), lambda key, st: None).load()
    model = raw.get("model", raw) if isinstance(raw, dict) else {}
    seen = set()
    for k, t in model.items():
        if k in names and isinstance(t, torch_pickle.LazyTensor):
            seen.add((id(t.storage), t.offset, t.size))
    return len(seen) or len(names)


def compress(src: str, out: str, *, half: bool = False, config: str | None = None) -> str:
    """Write the release copy of ``src`` to ``out`` (atomically); returns ``out``."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"checkpoint {src} does not exist")
    if os.path.abspath(src) == os.path.abspath(out):
        raise ValueError("the release copy must not overwrite its source; name another OUT")
    try:
        ckpt = torch_pickle.load(src)
    except Exception as e:  # noqa: BLE001 - one sentence instead of a pickle traceback
        raise ValueError(f"{src} is not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{src} is not a So-VITS-SVC G_*.pth (expected a dict with 'model', "
                         f"as train.py saves it)")
    # compress_model.copyStateDict drops a leading 'module' component (DataParallel)
    model = ckpt["model"]
    if model and next(iter(model)).startswith("module"):
        model = {k.split(".", 1)[1] if "." in k else k: v for k, v in model.items()}
    if "emb_g.weight" not in model:
        raise ValueError(f"{src} is not a So-VITS-SVC generator checkpoint (no emb_g.weight)")
    train = dict(_DEFAULT_TRAIN)
    if config:
        with open(config) as f:
            try:
                train.update({k: v for k, v in json.load(f).get("train", {}).items()
                              if k in _DEFAULT_TRAIN})
            except (json.JSONDecodeError, AttributeError) as e:
                raise ValueError(f"{config} is not a So-VITS-SVC config.json ({e})") from None
    n_params = parameter_count(src, ckpt["model"].keys())
    kept = {}
    for k, v in model.items():
        if "enc_q" in k:
            continue
        if not isinstance(v, np.ndarray):
            raise ValueError(f"{src}: model entry {k!r} is not a tensor")
        kept[k] = v.astype(np.float16) if half else v
    optimizer = {"state": {}, "param_groups": [{
        "lr": float(train["learning_rate"]), "betas": tuple(float(b) for b in train["betas"]),
        "eps": float(train["eps"]), "weight_decay": 0.01, "amsgrad": False,
        "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
        "fused": None, "params": list(range(n_params))}]}
    out_obj: dict[str, Any] = {"model": kept, "iteration": 0, "optimizer": optimizer,
                               "learning_rate": 0.0001}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return torch_save.save(out_obj, out)
