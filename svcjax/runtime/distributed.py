"""Multi-host start-up: one call before anything touches a JAX backend.

On a TPU pod slice (and on SLURM / Open MPI / Kubernetes jobs JAX recognises) the processes
find each other by themselves. Elsewhere name the coordinator (process 0's ``host:port``),
the number of processes and this process's index, by flags or environment::

    python train.py ... --coordinator 10.0.0.1:1234 --num_processes 2 --process_id 0
    SVCJAX_COORDINATOR=10.0.0.1:1234 SVCJAX_NUM_PROCESSES=2 SVCJAX_PROCESS_ID=0 python train.py ...

On CPU-only hosts cross-process collectives go through gloo.
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize", "cluster_detected"]

_ENV = ("SVCJAX_COORDINATOR", "SVCJAX_NUM_PROCESSES", "SVCJAX_PROCESS_ID")


def cluster_detected() -> bool:
    """Whether JAX can find this job's processes by itself (TPU pod, SLURM, MPI, k8s...)."""
    try:
        from jax._src import clusters

        return any(env.is_env_present() for env in clusters.ClusterEnv._cluster_types
                   if not getattr(env, "opt_in_only_method", False))
    except Exception:  # noqa: BLE001 - private API; treat as "no cluster"
        return False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None) -> bool:
    """Start ``jax.distributed`` when this is a multi-process job; returns whether it did.

    Explicit arguments win over ``SVCJAX_*`` environment variables; with neither, JAX's own
    cluster detection decides (a single process on a workstation does nothing).
    """
    coordinator = coordinator or os.environ.get("SVCJAX_COORDINATOR") or None
    if num_processes is None and os.environ.get("SVCJAX_NUM_PROCESSES"):
        num_processes = int(os.environ["SVCJAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("SVCJAX_PROCESS_ID"):
        process_id = int(os.environ["SVCJAX_PROCESS_ID"])
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if explicit:
        missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num_processes),
                                  ("process_id", process_id)) if v is None]
        if missing:
            raise ValueError("a multi-process run needs --coordinator, --num_processes and "
                             f"--process_id together; missing: {', '.join(missing)}")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id {process_id} is not in [0, {num_processes})")
        if num_processes == 1:
            return False
    elif not cluster_detected():
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if platforms.split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if explicit:
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes,
                      process_id=process_id)
    if local_device_ids is not None:
        kwargs["local_device_ids"] = local_device_ids
    jax.distributed.initialize(**kwargs)
    return True
