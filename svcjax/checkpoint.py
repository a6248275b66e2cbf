"""Checkpoints on Orbax.

Model directories
-----------------
An imported or exported model is a directory::

    OUTDIR/
      config.json     the svcjax ConfigDict (model hyper-parameters, speaker map, kind)
      params/         an Orbax checkpoint of the Flax parameter tree

:func:`save_model_dir` writes it under a temporary name and renames it into place, so an
interrupted import never leaves a half-written model where a complete one was expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["save_model_dir", "load_model_dir", "is_model_dir", "config_to_json", "ModelDirError"]

CONFIG_NAME = "config.json"
PARAMS_NAME = "params"


class ModelDirError(ValueError):
    """A path that should be an svcjax model directory is not one."""


def _jsonable(x: Any) -> Any:
    if isinstance(x, ml_collections.ConfigDict):
        return _jsonable(x.to_dict())
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def config_to_json(config: Any) -> str:
    return json.dumps(_jsonable(config), indent=2, sort_keys=True)


def is_model_dir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, CONFIG_NAME)) and os.path.isdir(
        os.path.join(path, PARAMS_NAME))


def save_model_dir(outdir: str | os.PathLike, params: Any, config: Any, *,
                   overwrite: bool = False) -> str:
    """Write ``params`` (a pytree of arrays) and ``config`` to ``outdir`` atomically."""
    outdir = os.path.abspath(os.fspath(outdir))
    if os.path.exists(outdir) and not overwrite:
        raise FileExistsError(f"{outdir} exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(outdir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(outdir) + ".tmp-", dir=parent)
    try:
        with open(os.path.join(tmp, CONFIG_NAME), "w") as f:
            f.write(config_to_json(config))
        params = jax.tree.map(np.asarray, params)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, PARAMS_NAME), params)
            ckptr.wait_until_finished()
        if os.path.exists(outdir):
            old = tmp + ".old"
            os.rename(outdir, old)
            os.rename(tmp, outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


def load_model_dir(path: str | os.PathLike) -> tuple[Any, ml_collections.ConfigDict]:
    """Read a model directory written by :func:`save_model_dir`: ``(params, config)``."""
    path = os.path.abspath(os.fspath(path))
    if not is_model_dir(path):
        raise ModelDirError(
            f"{path} is not an svcjax model directory (expected {CONFIG_NAME} and {PARAMS_NAME}/)")
    with open(os.path.join(path, CONFIG_NAME)) as f:
        # Keys may hold dots (e.g. speaker names), which ConfigDict refuses by default.
        config = ml_collections.ConfigDict(json.load(f), allow_dotted_keys=True)
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(os.path.join(path, PARAMS_NAME))
    return params, config
