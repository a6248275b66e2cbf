"""Map PyTorch ``state_dict`` tensors onto Flax parameter trees, and back.

svcjax's modules name their submodules after the reference's attributes, with a list index
appended by ``_`` (``enc_p.enc_.attn_layers.0.conv_q.weight`` <->
``enc_p/enc_/attn_layers_0/conv_q/kernel``), so one set of rules converts every model. The
layout of each leaf follows :mod:`svcjax.models.layers`:

==============  ===================  ===========================================
PyTorch leaf    Flax leaf            transform
==============  ===================  ===========================================
weight          kernel               Linear ``.T``; Conv1d ``(O,I,K)->(K,I,O)``;
                                     Conv2d ``(O,I,H,W)->(H,W,I,O)``
weight          kernel_t             ConvTranspose1d ``(I,O,K)->(K,I,O)``
weight          embedding / scale    as is
weight_v/_g     kernel_v/_g          as ``kernel``; ``g`` flattened to a vector
weight_v/_g     kernel_t_v/_g        as ``kernel_t``; ``g`` flattened
gamma / beta    scale / bias         as is (VITS LayerNorm; a SnakeBeta keeps beta)
anything else   same name            as is
==============  ===================  ===========================================

Every mismatch is reported at once: missing parameters, unexpected tensors and wrong shapes.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from flax import traverse_util

__all__ = [
    "CheckpointMismatchError",
    "torch_key_to_path",
    "path_to_torch_key",
    "state_dict_to_params",
    "params_to_state_dict",
    "merge_state_dict",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model built from its config."""


def torch_key_to_path(key: str) -> tuple[str, ...]:
    """``'a.b.0.c.weight'`` -> ``('a', 'b_0', 'c', 'weight')`` (list indices join their list)."""
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


_INDEX = re.compile(r"^(.*)_(\d+)$")


def path_to_torch_key(path: Iterable[str], list_modules: Iterable[str] = ()) -> str:
    """Inverse of :func:`torch_key_to_path` for the list-module names in ``list_modules``.

    A trailing ``_N`` is ambiguous (``norm_layers_0`` is a ModuleList's own name in the
    reference's FFT), so only names whose stem is listed are split.
    """
    stems = set(list_modules)
    parts = []
    for name in path:
        m = _INDEX.match(name)
        parts.append(f"{m.group(1)}.{m.group(2)}" if m and m.group(1) in stems else name)
    return ".".join(parts)


def _conv_to_flax(w: np.ndarray) -> np.ndarray:
    if w.ndim == 2:
        return w.T
    if w.ndim == 3:
        return w.transpose(2, 1, 0)
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    raise ValueError(f"no kernel layout for a {w.ndim}-D weight")


def _conv_to_torch(k: np.ndarray) -> np.ndarray:
    if k.ndim == 2:
        return k.T
    if k.ndim == 3:
        return k.transpose(2, 1, 0)
    if k.ndim == 4:
        return k.transpose(3, 2, 0, 1)
    raise ValueError(f"no weight layout for a {k.ndim}-D kernel")


def _ident(x):
    return x


# torch leaf name -> [(flax leaf name, to_flax)]
_RULES: dict[str, list[tuple[str, Callable[[np.ndarray], np.ndarray]]]] = {
    "weight": [("kernel", _conv_to_flax), ("kernel_t", lambda w: w.transpose(2, 0, 1)),
               ("embedding", _ident), ("scale", _ident)],
    "weight_v": [("kernel_v", _conv_to_flax), ("kernel_t_v", lambda w: w.transpose(2, 0, 1))],
    "weight_g": [("kernel_g", lambda g: g.reshape(-1)), ("kernel_t_g", lambda g: g.reshape(-1))],
    "gamma": [("scale", _ident)],
    "beta": [("bias", _ident), ("beta", _ident)],   # LayerNorm's, or a SnakeBeta's own
}

# flax leaf name -> (torch leaf name, to_torch(x, sibling_v_ndim))
_INVERSE: dict[str, tuple[str, Callable[..., np.ndarray]]] = {
    "kernel": ("weight", lambda k, nd: _conv_to_torch(k)),
    "kernel_t": ("weight", lambda k, nd: k.transpose(1, 2, 0)),
    "embedding": ("weight", lambda x, nd: x),
    "scale": ("weight", lambda x, nd: x),
    "kernel_v": ("weight_v", lambda k, nd: _conv_to_torch(k)),
    "kernel_t_v": ("weight_v", lambda k, nd: k.transpose(1, 2, 0)),
    "kernel_g": ("weight_g", lambda g, nd: g.reshape((-1,) + (1,) * (nd - 1))),
    "kernel_t_g": ("weight_g", lambda g, nd: g.reshape((-1,) + (1,) * (nd - 1))),
}


def _shape(x) -> tuple[int, ...]:
    return tuple(int(s) for s in np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def _map_state_dict(state_dict, flat_target, rename, ignore, dtype):
    """Convert every tensor that names a target leaf; collect what does not fit."""
    ignore_re = [re.compile(p) for p in ignore]
    out: dict[tuple[str, ...], np.ndarray] = {}
    unexpected, mismatched, seen = [], [], set()
    for key, value in state_dict.items():
        mapped = rename(key) if rename else key
        if mapped is None:
            continue
        path = torch_key_to_path(mapped)
        module, leaf = path[:-1], path[-1]
        rules = _RULES.get(leaf, [(leaf, _ident)])
        for flax_leaf, fn in rules:
            if module + (flax_leaf,) in flat_target:
                seen.add(module + (flax_leaf,))
                arr = fn(np.asarray(value))
                want = _shape(flat_target[module + (flax_leaf,)])
                if arr.shape != want:
                    mismatched.append(f"{key}: checkpoint {tuple(np.shape(value))} -> "
                                      f"{arr.shape}, model expects {want}")
                else:
                    out[module + (flax_leaf,)] = arr.astype(dtype) if dtype else arr
                break
        else:
            if not any(r.search(key) for r in ignore_re):
                unexpected.append(key)
    missing = ["/".join(p) for p in flat_target if p not in seen]
    return out, missing, unexpected, mismatched


def state_dict_to_params(
    state_dict: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    rename: Callable[[str], str | None] | None = None,
    ignore: Iterable[str] = (),
    dtype: Any = np.float32,
    what: str = "checkpoint",
) -> dict:
    """Fill the Flax tree ``target`` (arrays or ``ShapeDtypeStruct``s) from ``state_dict``.

    ``rename`` maps a reference key to the key the generic rules expect (or ``None`` to drop
    it); ``ignore`` holds regular expressions of keys that are allowed to be left unused
    (e.g. ``enc_q`` when the model is built for inference). Raises
    :class:`CheckpointMismatchError` listing every missing, unexpected or mis-shaped tensor.
    """
    flat_target = traverse_util.flatten_dict(dict(target))
    out, missing, unexpected, mismatched = _map_state_dict(state_dict, flat_target, rename,
                                                           ignore, dtype)
    if missing or unexpected or mismatched:
        lines = [f"{what} does not match the model built from its config:"]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", mismatched)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
        raise CheckpointMismatchError("\n".join(lines))
    return traverse_util.unflatten_dict(out)


def merge_state_dict(
    state_dict: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    rename: Callable[[str], str | None] | None = None,
    ignore: Iterable[str] = (),
    dtype: Any = np.float32,
) -> tuple[dict, dict[str, list[str]]]:
    """Fine-tuning import: every tensor of ``state_dict`` that fits a leaf of ``params`` (same
    name, same shape) replaces it; every other leaf keeps its value from ``params``.

    Returns ``(merged, report)`` with ``report`` lists ``kept`` (Flax paths not in the
    checkpoint), ``wrong_shape`` and ``unexpected`` (checkpoint keys not used), as the
    reference's ``load_checkpoint`` does when a base model's speaker count differs.
    """
    flat = traverse_util.flatten_dict(dict(params))
    out, missing, unexpected, mismatched = _map_state_dict(state_dict, flat, rename, ignore,
                                                           dtype)
    merged = {k: (out[k] if k in out else np.asarray(v)) for k, v in flat.items()}
    kept = sorted(set(missing) | {"/".join(k) for k in flat if k not in out})
    return traverse_util.unflatten_dict(merged), dict(kept=kept, wrong_shape=mismatched,
                                                      unexpected=unexpected)


def params_to_state_dict(params: Mapping[str, Any], list_modules: Iterable[str] = (),
                         rename: Callable[[str], str] | None = None) -> dict[str, np.ndarray]:
    """Inverse of :func:`state_dict_to_params` (for exporting back to the reference)."""
    flat = traverse_util.flatten_dict(dict(params))
    out = {}
    for path, value in flat.items():
        module, leaf = path[:-1], path[-1]
        value = np.asarray(value)
        if leaf in _INVERSE:
            tleaf, fn = _INVERSE[leaf]
            sibling = flat.get(module + (leaf[:-2] + "_v",)) if leaf.endswith("_g") else None
            nd = np.ndim(sibling) if sibling is not None else value.ndim
            value = fn(value, nd)
        else:
            tleaf = leaf
        key = path_to_torch_key(module, list_modules)
        key = f"{key}.{tleaf}" if key else tleaf
        out[rename(key) if rename else key] = value
    return out
