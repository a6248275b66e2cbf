"""The task registry: ``config.kind`` -> the :class:`~svcjax.train.task.Task` that trains it.

Entries are ``"module:Class"`` strings, imported only when a config names them, so the loop
(:mod:`svcjax.train.loop`) depends on the registry and the task interface, never on the tasks
themselves (which import neither the loop nor this module).
"""

from __future__ import annotations

import importlib

__all__ = ["TASKS", "register", "task_class", "make_task"]

# config.kind -> "module:Class"
TASKS: dict[str, str] = {
    "sovits": "svcjax.train.sovits:SovitsTask",
    "diffusion": "svcjax.train.diffusion:DiffusionTask",
}


def register(kind: str, target: str) -> None:
    """Make ``config.kind == kind`` train ``target`` (``"package.module:Class"``)."""
    module, sep, name = target.partition(":")
    if not (module and sep and name):
        raise ValueError(f"task {target!r} must be 'module:Class'")
    TASKS[kind] = target


def task_class(kind: str):
    """The task class registered for ``kind``."""
    if kind not in TASKS:
        raise ValueError(f"config.kind={kind!r} is not a trainable model; known: "
                         f"{', '.join(sorted(TASKS))}")
    module, _, name = TASKS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def make_task(config):
    """The task ``config.kind`` names (default ``sovits``), built on the real models and data
    pipeline."""
    return task_class(config.get("kind", "sovits"))(config)
