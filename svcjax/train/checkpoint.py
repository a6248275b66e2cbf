"""Checkpoints on Orbax.

Model directories
-----------------
An imported or exported model is a directory::

    OUTDIR/
      config.json     the svcjax ConfigDict (model hyper-parameters, speaker map, kind)
      params/         an Orbax checkpoint of the Flax parameter tree

:func:`save_model_dir` writes it under a temporary name and renames it into place, so an
interrupted import never leaves a half-written model where a complete one was expected.

Training checkpoints
--------------------
:class:`TrainCheckpointer` keeps a training run's state in ``WORKDIR/checkpoints/<step>/``
(Orbax ``CheckpointManager``: parameters, optimizer states, data-iterator position and config
together; async save; keep-N; save every N steps or on preemption).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from svcjax.files import atomic_directory, write_text

__all__ = ["save_model_dir", "load_model_dir", "is_model_dir", "config_to_json", "ModelDirError",
           "TrainCheckpointer"]

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
    with atomic_directory(outdir, replace=overwrite) as tmp:
        write_text(tmp / CONFIG_NAME, config_to_json(config))
        params = jax.tree.map(np.asarray, params)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, PARAMS_NAME), params)
            ckptr.wait_until_finished()
    return outdir


def load_model_dir(path: str | os.PathLike) -> tuple[Any, ml_collections.ConfigDict]:
    """Read a model directory written by :func:`save_model_dir`: ``(params, config)``."""
    path = os.path.abspath(os.fspath(path))
    if not is_model_dir(path):
        raise ModelDirError(
            f"{path} is not an svcjax model directory (expected {CONFIG_NAME} and {PARAMS_NAME}/)")
    cfg_path = os.path.join(path, CONFIG_NAME)
    try:
        with open(cfg_path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{cfg_path} cannot be read as JSON ({_one_line(e)}); the model "
                            "directory is damaged, import or export it again") from None
    if not isinstance(raw, dict):
        raise ModelDirError(f"{cfg_path} holds {type(raw).__name__}, not a config object; the "
                            "model directory is damaged, import or export it again")
    # Keys may hold dots (e.g. speaker names), which ConfigDict refuses by default.
    config = ml_collections.ConfigDict(raw, allow_dotted_keys=True)
    _quiet_closed_loop_callbacks()
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(os.path.join(path, PARAMS_NAME))
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore report damage in many types
        raise ModelDirError(f"{path}: the model directory is damaged, its parameters cannot be "
                            f"read ({_one_line(e)}); import or export it again") from None
    return params, config


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


_QUIET_HOOK_SET = False


def _quiet_closed_loop_callbacks() -> None:
    """Drop the "Event loop is closed" noise of a failed Orbax restore.

    When one array of a restore fails, Orbax's event loop ends while TensorStore still has
    reads in flight; each of them later calls ``loop.call_soon_threadsafe`` on the closed loop
    from a TensorStore thread, and Python prints every resulting ``RuntimeError`` as an
    unraisable exception (dozens of tracebacks after the real error). This filter drops
    exactly those (a ``RuntimeError('Event loop is closed')`` raised in asyncio's
    ``_check_closed``) and passes everything else to the previous hook. Installed once.
    """
    global _QUIET_HOOK_SET
    if _QUIET_HOOK_SET:
        return
    import sys

    previous = sys.unraisablehook

    def hook(unraisable):
        exc = unraisable.exc_value
        tb = unraisable.exc_traceback
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
                and tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"):
            return
        previous(unraisable)

    sys.unraisablehook = hook
    _QUIET_HOOK_SET = True


# ---------------------------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------------------------

class TrainCheckpointer:
    """Preemption-safe training checkpoints in ``WORKDIR/checkpoints/<step>/`` (Orbax).

    Each step directory holds, saved together and atomically (Orbax writes to a temporary
    name and renames on commit):

    ``state/``   the train state pytree (parameters and optimizer states of every model; the
                 LR schedule and AdamW counts live in the optimizer states),
    ``data/``    the input iterator's position, one JSON file per process
                 (:class:`DataIteratorHandler`),
    ``config/``  the run's config as JSON (for the record; the run's own config wins).

    The step is the directory name; random keys are ``fold_in(seed key, step)``, so restoring
    the step restores the random stream. Saves are asynchronous (the device-to-host copy is
    done before :meth:`save` returns, the file writing in the background), every
    ``save_every`` steps, keeping the newest ``keep``; :meth:`save` with ``force=True`` is for
    preemption and the end of training.
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int = 800, keep: int = 3,
                 async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        _serial_writes_off_tpu()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=max(1, int(save_every)),
                max_to_keep=int(keep) if keep else None,
                enable_async_checkpointing=bool(async_save),
                create=True),
            item_names=("state", "data", "config"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def reached_preemption(self, step: int) -> bool:
        """True on every process once any process got a preemption notice (multi-host sync)."""
        return self._manager.reached_preemption(step)

    def should_save(self, step: int) -> bool:
        return self._manager.should_save(step)

    def save(self, step: int, state: Any, data_iterator: Any = None, config: Any = None, *,
             force: bool = False) -> bool:
        """Save ``state`` (+ iterator position and config) as ``step``; returns whether it did."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = _data_save(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(json.loads(config_to_json(config)))
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int | None, abstract_state: Any, data_iterator: Any = None) -> Any:
        """Restore ``state`` at ``step`` (default: the latest) with the shardings of
        ``abstract_state`` (a pytree of ``jax.ShapeDtypeStruct`` with ``sharding``); the data
        iterator, when given, is moved to its saved position in place."""
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        _quiet_closed_loop_callbacks()
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = _data_restore(data_iterator)
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**items))
        except ValueError as e:
            raise ValueError(
                f"checkpoint {step} in {self.directory} does not fit this run's model/optimizer "
                f"(was it written with another config?): {e}") from e
        return out["state"]

    def restore_config(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else int(step)
        if step is None:
            return None
        out = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return out["config"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_ARRAY_HANDLER_SET = False


def _serial_writes_off_tpu() -> None:
    """Orbax splits replicated arrays across replicas to write them in parallel; each split is
    a small compiled slice per device and shape, which costs seconds on CPU (and Orbax already
    turns it off on GPU). Keep it on TPU only."""
    global _ARRAY_HANDLER_SET
    if _ARRAY_HANDLER_SET or jax.default_backend() == "tpu":
        return
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # the override is deliberate
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
    finally:
        absl_logging.set_verbosity(level)
    _ARRAY_HANDLER_SET = True


class DataIteratorHandler(ocp.CheckpointHandler):
    """Orbax handler for an input iterator's position: ``process_<i>-of-<n>.json`` per process.

    Works with anything that has ``get_state()`` / ``set_state(state)`` returning JSON-able
    values or UTF-8 bytes: grain ``DataLoader`` / ``Dataset`` iterators and
    :class:`svcjax.data.input_pipeline.GlobalBatches`. Each process writes and reads its own file,
    so a restarted job must use the same number of processes (checked, with a clear error).
    """

    def _path(self, directory) -> Any:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory, args: "DataIteratorSave"):
        state = args.iterator.get_state()
        if isinstance(state, (bytes, bytearray)):
            record = {"bytes": bytes(state).decode("utf-8")}
        else:
            record = {"json": state}
        self._path(directory).write_text(json.dumps(record))

    def restore(self, directory, args: "DataIteratorRestore"):
        path = self._path(directory)
        if not path.exists():
            found = sorted(p.name for p in directory.iterdir() if p.name.startswith("process_"))
            raise ValueError(
                f"no input-iterator state {path.name} in {directory} (found "
                f"{', '.join(found) or 'none'}): resume with the process count that saved it")
        record = json.loads(path.read_text())
        state = record["bytes"].encode("utf-8") if "bytes" in record else record["json"]
        args.iterator.set_state(state)
        return args.iterator

    def metadata(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: Any


def _data_save(it):
    return DataIteratorSave(it)


def _data_restore(it):
    return DataIteratorRestore(it)
