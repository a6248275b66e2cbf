"""Global-view data parallelism: one mesh, ``NamedSharding``s, batches padded to the devices.

Every jitted model call in svcjax runs over a ``jax.make_mesh`` mesh with a ``data`` axis (and
an ``fsdp`` axis where parameters get large): the batch is split over both axes, parameters
are replicated (or split along ``fsdp`` by :func:`param_sharding`). This is what the design
card's "pmap-sharded" means, written the way current JAX recommends; it runs unchanged on one
CPU, 8 fake CPU devices, a GPU node or a multi-host TPU pod.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")

__all__ = [
    "BATCH_AXES",
    "make_mesh",
    "batch_sharding",
    "replicated",
    "param_sharding",
    "pad_to_multiple",
    "global_batch",
]


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (all devices by default; ``-1`` = the rest)."""
    devices = list(devices) if devices is not None else jax.devices()
    n = len(devices)
    if data == -1:
        if n % fsdp:
            raise ValueError(f"fsdp={fsdp} does not divide the {n} devices")
        data = n // fsdp
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, have {n}")
    # Auto axes: jit propagates shardings from the inputs (current JAX defaults make_mesh to
    # Explicit axes, under which e.g. an embedding lookup with batch-sharded ids must name its
    # output sharding by hand).
    return jax.make_mesh((data, fsdp), BATCH_AXES, devices=devices,
                         axis_types=(AxisType.Auto,) * len(BATCH_AXES))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh, the rest whole."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, params: Any, min_size: int = 2 ** 18) -> Any:
    """FSDP rule: split each large parameter's largest axis divisible by the ``fsdp`` size.

    Small parameters (fewer than ``min_size`` elements) and meshes with ``fsdp == 1`` stay
    replicated. Returns a pytree of ``NamedSharding`` matching ``params``.
    """
    n = mesh.shape["fsdp"]

    def rule(x):
        shape = np.shape(x)
        if n == 1 or math.prod(shape) < min_size:
            return replicated(mesh)
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] % n == 0:
                spec = [None] * len(shape)
                spec[axis] = "fsdp"
                return NamedSharding(mesh, P(*spec))
        return replicated(mesh)

    return jax.tree.map(rule, params)


def pad_to_multiple(x: Any, multiple: int, axis: int = 0) -> tuple[Any, int]:
    """Pad every array of ``x`` along ``axis`` with zeros up to a multiple; return the old size."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        return x, 0
    n = leaves[0].shape[axis]
    target = -(-n // multiple) * multiple
    if target == n:
        return x, n

    def pad(a):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, target - n)
        return (jnp if isinstance(a, jax.Array) else np).pad(a, widths)

    return jax.tree.map(pad, x), n


def global_batch(local: Any, mesh: Mesh) -> Any:
    """Assemble per-host batches into global arrays sharded over the mesh's batch axes.

    Each process passes its own slice (leading axis = local batch); the result's leading axis
    is the global batch. On one process this is a plain ``device_put`` with the sharding.
    """
    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, a.ndim), a)

    return jax.tree.map(put, local)
