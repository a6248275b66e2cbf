"""One trainer for everything svcjax trains (big_vision style): the config picks the task.

    python train.py --config configs/sovits_44k.py:variant=tiny --workdir /tmp/svc
    python train.py --config configs/diffusion_44k.py --workdir /tmp/diff

A :class:`~svcjax.train.task.Task` says what is trained: its models and their optimizers, one
jitted step (pure function of parameters, optimizer states, a global batch and a random key),
validation summaries and the data; :mod:`svcjax.train.tasks` maps ``config.kind`` to one
(the loop never imports a task module). :func:`train` does the rest, the same for every task:

* a ``(data, fsdp)`` mesh from ``config.mesh``; parameters and optimizer states sharded by
  :func:`svcjax.runtime.sharding.param_sharding`; per-process batches assembled into global arrays
  by :func:`svcjax.runtime.sharding.global_batch`; one ``jax.jit`` step with ``donate_argnums``;
* random keys: one base key from ``config.seed``, ``fold_in(key, step)`` per step, split by
  purpose inside the step (so a resumed run draws what an uninterrupted one draws);
* AdamW with a staircase LR decay (:func:`svcjax.train.task.make_optimizer`; per epoch for
  the GAN, every ``train.lr_decay_steps`` for diffusion), optional global-norm gradient
  clipping; every setting from ``config.train`` (``configs/*.py`` set them all);
* :class:`svcjax.train.checkpoint.TrainCheckpointer` (Orbax; state + data-iterator position +
  config; every N steps, keep N, async); SIGTERM or a TPU preemption notice saves and stops;
  a run in a workdir that has checkpoints resumes from the newest finished one (the
  half-written save of a killed run is removed first);
* :class:`svcjax.train.metric_writer.MetricWriter`: TensorBoard + ``metrics.jsonl``, losses,
  learning rate, gradient / parameter norms every step, steps/s and audio-seconds/s,
  validation audio and mel images every ``train.eval_every`` steps, a progress bar, and a
  :class:`~svcjax.train.metric_writer.NonFiniteError` naming the quantity and step when a loss or
  norm becomes NaN/inf.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from svcjax.runtime import sharding
from svcjax.train.checkpoint import TrainCheckpointer
from svcjax.train.metric_writer import MetricWriter, NonFiniteError, ProgressBar, check_finite
from svcjax.train.task import LOOP_FIELDS, Task, TrainData, make_optimizer, require
from svcjax.train.tasks import make_task

logger = logging.getLogger(__name__)

__all__ = [
    "Task",
    "TrainData",
    "TrainResult",
    "make_optimizer",
    "make_task",
    "train",
    "NonFiniteError",
]


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    step: int                      # updates done (the newest checkpoint's step)
    preempted: bool                # stopped early by SIGTERM / preemption notice
    metrics: dict                  # the last logged scalars
    workdir: str
    compiles: int = 0              # how many times the step was traced (1 per run)


class _Preemption:
    """SIGTERM (one process) or JAX's preemption sync point (many) -> stop after this step."""

    def __init__(self, ckpt: TrainCheckpointer):
        self.ckpt = ckpt
        self.multi = jax.process_count() > 1
        self.flag = threading.Event()
        self._old = None
        if not self.multi and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.flag.set()

    def reached(self, step: int) -> bool:
        if self.multi:  # must be called every step on every process
            return self.ckpt.reached_preemption(step)
        return self.flag.is_set()

    def close(self):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None


def _global_norm(tree) -> jax.Array:
    return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def _check_batch(batch_size: int, mesh) -> None:
    n = mesh.size
    if batch_size % n or batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {n} devices "
                         f"({jax.process_count()} processes) it is split over")


def train(config, workdir: str, *, task: Task | None = None) -> TrainResult:
    """Train ``config`` in ``workdir`` (resuming from its newest checkpoint if there is one)."""
    workdir = os.path.abspath(os.fspath(workdir))
    task = task or make_task(config)
    tcfg = task.tcfg
    require(tcfg, LOOP_FIELDS)
    pidx = jax.process_index()
    mesh_cfg = config.get("mesh") or {}
    mesh = sharding.make_mesh(int(mesh_cfg.get("data", -1)), int(mesh_cfg.get("fsdp", 1)))
    batch_size = int(tcfg.batch_size)
    _check_batch(batch_size, mesh)
    primary = pidx == 0

    data = task.make_data(mesh)
    steps_per_epoch = int(tcfg.steps_per_epoch) or max(1, data.num_examples // batch_size)
    task.setup_optimizers(steps_per_epoch)

    # --- state: init (or restore) directly into its shardings
    base_key = jax.random.PRNGKey(_seed(config))
    init_key = jax.random.fold_in(base_key, 0x7FFFFFFF)
    eval_key = jax.random.fold_in(base_key, 0x7FFFFFFE)
    dummy = task.dummy_batch(max(1, mesh.size))

    def init_state(key):
        params = task.init_params(key, dummy)
        return {"params": params,
                "opt_state": {n: task.tx[n].init(params[n]) for n in task.model_names}}

    abstract = jax.eval_shape(init_state, init_key)
    state_sharding = sharding.param_sharding(
        mesh, abstract, min_size=int(mesh_cfg.get("fsdp_min_size", 2 ** 18)))
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            abstract, state_sharding)

    if primary:
        _remove_unfinished_saves(os.path.join(workdir, "checkpoints"))
    ckpt = TrainCheckpointer(os.path.join(workdir, "checkpoints"),
                             save_every=int(tcfg.checkpoint_every),
                             keep=int(tcfg.keep_checkpoints),
                             async_save=bool(tcfg.async_checkpoint))
    writer = bar = preempt = None
    try:
        start = ckpt.latest_step()
        writer = MetricWriter(workdir, enabled=primary,
                              purge_from=None if start is None else start + 1)
        writer.write_config(_resolved(config, steps_per_epoch))
        if start is not None:
            state = ckpt.restore(start, abstract, data.iterator)
            if primary:
                logger.info(f"resumed from {ckpt.directory}/{start}")
        else:
            start = 0
            state = jax.jit(init_state, out_shardings=state_sharding)(init_key)
            params = task.pretrained(state["params"])
            if params is not state["params"]:
                state["params"] = jax.device_put(params, state_sharding["params"])
        preempt = _Preemption(ckpt)
        bar = ProgressBar(int(tcfg.num_steps), start, enabled=primary and bool(tcfg.progress),
                          keys=task.progress_keys)
        return _loop(task, config, mesh, data, ckpt, writer, bar, preempt, state,
                     state_sharding, start, base_key, eval_key, workdir)
    finally:
        for r in (preempt, bar, ckpt, writer):
            if r is not None:
                r.close()


def _loop(task, config, mesh, data, ckpt, writer, bar, preempt, state, state_sharding, start,
          base_key, eval_key, workdir) -> "TrainResult":
    tcfg = task.tcfg
    primary = jax.process_index() == 0
    trace_count = [0]

    def step_fn(state, batch, key):
        trace_count[0] += 1
        params, opt_state, metrics = task.step(state["params"], state["opt_state"], batch, key)
        for n in task.model_names:
            metrics[f"param_norm/{n}"] = _global_norm(params[n])
        return {"params": params, "opt_state": opt_state}, metrics

    jstep = jax.jit(step_fn, in_shardings=(state_sharding, None, None),
                    out_shardings=(state_sharding, sharding.replicated(mesh)),
                    donate_argnums=(0,))
    jsummaries = None
    if data.val_batch is not None and int(tcfg.eval_every) > 0:
        jsummaries = jax.jit(task.summaries, out_shardings=sharding.replicated(mesh))
        val_batch = jax.device_put(data.val_batch, sharding.replicated(mesh))

    num_steps = int(tcfg.num_steps)
    hop = task.hop_length()
    sr = task.sample_rate()
    last: dict = {}
    pending: list = []
    preempted = False
    saved_at = start

    def flush():
        """Fetch the pending steps' metrics, log them, stop on non-finite values."""
        nonlocal last
        for s, m in pending:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            audio_s = m.pop("audio_frames", 0.0) * hop / sr
            check_finite(s, m, task.nonfinite_hint)
            bar.update(s, audio_s, m)
            m["learning_rate"] = next(iter(task.schedules.values()))(s - 1)
            m["steps_per_s"] = bar.steps_per_s
            m["audio_seconds_per_s"] = bar.audio_s_per_s
            if s % int(tcfg.log_every) == 0 or s == num_steps:
                writer.scalars(s, m)
            last = m
        pending.clear()

    step = start
    every = int(tcfg.checkpoint_every)
    while step < num_steps:
        batch = next(data.iterator)
        if not isinstance(jax.tree.leaves(batch)[0], jax.Array):  # per-process NumPy
            batch = sharding.global_batch(batch, mesh)
        state, metrics = jstep(state, batch, jax.random.fold_in(base_key, step))
        flush()  # the previous step's metrics, while this one runs
        step += 1
        pending.append((step, metrics))
        stop = preempt.reached(step)
        if jsummaries is not None and step % int(tcfg.eval_every) == 0:
            flush()
            out = jax.device_get(jsummaries(state["params"], val_batch,
                                            jax.random.fold_in(eval_key, step)))
            _write_summaries(writer, step, out, sr, hop)
        if stop or step == num_steps or (every > 0 and step % every == 0):
            flush()  # never checkpoint a non-finite state
            ckpt.save(step, state, data.iterator, config, force=True)
            saved_at = step
        if stop:
            preempted = True
            if primary:
                logger.info(f"stopping at step {step}: preemption/SIGTERM received; checkpoint "
                            f"saved in {ckpt.directory}; rerun the same command to resume")
            break
    flush()
    if saved_at != step:
        ckpt.save(step, state, data.iterator, config, force=True)
    return TrainResult(step=step, preempted=preempted, metrics=last, workdir=workdir,
                       compiles=trace_count[0])


# Orbax writes a step to "<step>.orbax-checkpoint-tmp[-<time>]" and renames it on commit.
_UNFINISHED = ".orbax-checkpoint-tmp"


def _remove_unfinished_saves(directory: str) -> None:
    """Delete the temporary folders of checkpoint saves a killed run left half-written (they
    are never restored: the newest committed step is). Runs on process 0 before the run's
    own checkpointer exists, so no save of this run is in flight."""
    import shutil

    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if _UNFINISHED in name and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            logger.warning(f"removed {path}: a checkpoint save that was interrupted (the run "
                           f"resumes from the newest finished checkpoint)")


def _seed(config) -> int:
    """``config.seed``, else the reference's ``train.seed``, else 0."""
    if config.get("seed") is not None:
        return int(config.seed)
    return int((config.get("train") or {}).get("seed", 0) or 0)


def _resolved(config, steps_per_epoch: int):
    """The config as run (references resolved, the derived steps per epoch filled in)."""
    cfg = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") \
        else ml_collections.ConfigDict(config)
    with cfg.unlocked():
        if "train" not in cfg:
            cfg.train = ml_collections.ConfigDict()
        cfg.train.steps_per_epoch = int(steps_per_epoch)
    return cfg


def _write_summaries(writer: MetricWriter, step: int, out: Mapping, sample_rate: int,
                     hop: int) -> None:
    """Scalars, audio and mel images of a task's ``summaries``; ``out['frames'][i]`` (valid
    frames of clip i) trims audio ``*_i`` and the mels of clip 0 to their valid part."""
    scalars = {k: float(v) for k, v in (out.get("scalars") or {}).items()}
    if scalars:
        writer.scalars(step, scalars)
    frames = np.asarray(out["frames"]) if out.get("frames") is not None else None
    for name, wav in (out.get("audio") or {}).items():
        wav = np.asarray(wav).reshape(-1)
        idx = name.rsplit("_", 1)[-1]
        if frames is not None and idx.isdigit() and int(idx) < len(frames):
            wav = wav[:int(frames[int(idx)]) * hop]
        writer.audio(step, name, wav, sample_rate)
    for name, mel in (out.get("mels") or {}).items():
        mel = np.asarray(mel)
        if frames is not None and len(frames):
            mel = mel[:max(1, int(frames[0]))]
        writer.image(step, name, mel)
