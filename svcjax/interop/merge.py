"""Model fusion: ``svcjax merge-models A.pth B.pth ... --rates 50,50 --mode convex OUT``.

The reference's ``utils.mix_model`` (the webUI's static fusion): every weight is
``sum_i rate_i * weight_i`` with ``rate = softmax(rates / 100)`` (``convex``) or
``rates / 100`` (``linear``), accumulated in order in each tensor's dtype. The models are
the reference's ``.pth`` files (the output keeps the first file's other entries: iteration,
optimizer, learning rate, as the reference does) or svcjax model directories (the output is
a model directory with the first model's config); the inputs must be all of one kind and
have the same tensors with the same shapes, else the command lists the keys that differ.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from svcjax.files import refuse_existing

__all__ = ["merge_models", "mix_rates"]


def mix_rates(rates: Sequence[float], mode: str) -> np.ndarray:
    """The per-model factors: ``softmax(rates / 100)`` (convex) or ``rates / 100`` (linear),
    in float32 as the reference computes them."""
    r = np.asarray(rates, np.float32) / np.float32(100)
    if mode == "convex":
        e = np.exp(r - r.max())
        return (e / e.sum()).astype(np.float32)
    if mode == "linear":
        return r
    raise ValueError(f"--mode must be convex or linear, got {mode!r}")


def _differences(names: Sequence[str], trees: Sequence[dict]) -> list[str]:
    first = trees[0]
    out = []
    for name, t in zip(names[1:], trees[1:]):
        for k in sorted(set(first) - set(t)):
            out.append(f"{k} (missing in {name})")
        for k in sorted(set(t) - set(first)):
            out.append(f"{k} (only in {name})")
        for k in sorted(set(first) & set(t)):
            if np.shape(first[k]) != np.shape(t[k]):
                out.append(f"{k} ({names[0]}: {tuple(np.shape(first[k]))}, "
                           f"{name}: {tuple(np.shape(t[k]))})")
    return out


def _mix(trees: Sequence[dict], rates: np.ndarray) -> dict:
    out = {}
    for k, v in trees[0].items():
        v = np.asarray(v)
        if not (np.issubdtype(v.dtype, np.floating) or v.dtype.name == "bfloat16"):
            out[k] = v  # integer buffers are not mixed (the reference cannot mix them either)
            continue
        acc = np.zeros_like(v)
        for t, r in zip(trees, rates):
            acc = (acc + np.asarray(t[k]) * r.astype(v.dtype)).astype(v.dtype)
        out[k] = acc
    return out


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _unflatten(flat):
    out: dict = {}
    for k, v in flat.items():
        node = out
        parts = k.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def merge_models(paths: Sequence[str], rates: Sequence[float], out: str, *,
                 mode: str = "convex", overwrite: bool = False) -> str:
    """Merge ``paths`` (all ``.pth`` or all svcjax model directories) into ``out``."""
    from svcjax.train import checkpoint
    if len(paths) < 2:
        raise ValueError("merging needs at least two models")
    if len(rates) != len(paths):
        raise ValueError(f"{len(paths)} models but {len(rates)} rates; give one rate per model")
    factors = mix_rates(rates, mode)
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"model {p} does not exist")
    refuse_existing(out, overwrite)
    dirs = [checkpoint.is_model_dir(p) for p in paths]
    if any(dirs) and not all(dirs):
        raise ValueError("give either .pth files or svcjax model directories, not both "
                         "(convert the .pth files with `svcjax import-sovits` first)")
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    if all(dirs):
        loaded = [checkpoint.load_model_dir(p) for p in paths]
        trees = [_flatten(params) for params, _ in loaded]
        diff = _differences(names, trees)
        if diff:
            raise ValueError(f"the models differ in shape, cannot merge: {'; '.join(diff)}")
        merged = _unflatten(_mix(trees, factors))
        return checkpoint.save_model_dir(out, merged, loaded[0][1], overwrite=overwrite)
    from svcjax.interop import torch_pickle, torch_save
    ckpts = []
    for p in paths:
        try:
            c = torch_pickle.load(p)
        except Exception as e:  # noqa: BLE001 - one sentence instead of a traceback
            raise ValueError(f"{p} is not a readable PyTorch checkpoint ({e})") from None
        if not isinstance(c, dict) or not isinstance(c.get("model"), dict):
            raise ValueError(f"{p} is not a So-VITS-SVC checkpoint (no 'model' dict)")
        ckpts.append(c)
    trees = [c["model"] for c in ckpts]
    diff = _differences(names, trees)
    if diff:
        raise ValueError(f"the models differ in shape, cannot merge: {'; '.join(diff)}")
    result = dict(ckpts[0])
    result["model"] = _mix(trees, factors)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return torch_save.save(result, out)
