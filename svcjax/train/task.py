"""What the trainer trains: the :class:`Task` interface, the :class:`TrainData` it hands over,
and the optimizer every task builds from its config (:func:`make_optimizer`).

:func:`svcjax.train.loop.train` depends only on this module and the registry
(:mod:`svcjax.train.tasks`); the tasks (:mod:`svcjax.train.sovits`,
:mod:`svcjax.train.diffusion`) subclass :class:`Task` here and never import the loop.

Training settings come from the config (``configs/sovits_44k.py``, ``configs/diffusion_44k.py``
set every ``train.*`` field the trainer reads); this module holds no values of its own. A
task's ``script_constants`` are the exception the port needs: settings its reference
training script hard-codes instead of reading from its config file (so a config imported
from the reference lacks them), used where ``config.train`` leaves them unset (``None``;
the config files declare those fields as typed placeholders, so they can be overridden but
their values live only in the task).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

__all__ = ["Task", "TrainData", "make_optimizer", "train_config", "require", "note"]

logger = logging.getLogger(__name__)

PyTree = Any

# The fields of ``config.train`` the loop reads (:func:`svcjax.train.loop.train`).
LOOP_FIELDS = ("num_steps", "batch_size", "steps_per_epoch", "log_every", "eval_every",
               "checkpoint_every", "keep_checkpoints", "async_checkpoint", "progress")
# ... and :func:`make_optimizer`.
OPTIMIZER_FIELDS = ("learning_rate", "betas", "eps", "weight_decay", "lr_decay",
                    "lr_decay_steps", "lr_decay_begin", "grad_clip")


def note(msg: str, level: int = logging.INFO) -> None:
    """A line for the user from process 0 only, through the ``svcjax`` logger (``train.py``
    shows it as ``svcjax train: ...``, :func:`svcjax.log.configure`)."""
    if jax.process_index() == 0:
        logger.log(level, msg)


def require(tcfg, names, what: str = "config.train") -> None:
    """One sentence naming every field of ``names`` that ``tcfg`` lacks (or leaves None)."""
    missing = [n for n in names if tcfg.get(n) is None]
    if missing:
        raise ValueError(f"{what} has no {', '.join(missing)}; the training configs in "
                         "configs/ (sovits_44k.py, diffusion_44k.py) set every training field")


def train_config(config, script_constants: Mapping[str, Any] | None = None
                 ) -> ml_collections.ConfigDict:
    """``config.train`` (references resolved) with ``script_constants`` filling the fields it
    leaves unset or None."""
    train = config.get("train") or {}
    if hasattr(train, "copy_and_resolve_references"):
        train = train.copy_and_resolve_references()
    out = ml_collections.ConfigDict(dict(train))
    for k, v in (script_constants or {}).items():
        if out.get(k) is None:
            out[k] = v
    return out


def make_optimizer(tcfg, steps_per_epoch: int) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW with a staircase exponential LR:
    ``lr * lr_decay ** (max(step - lr_decay_begin, 0) // decay_steps)``.

    ``decay_steps`` is ``tcfg.lr_decay_steps`` or, when 0, one epoch (torch's
    ``ExponentialLR`` stepped per epoch). The schedule's count lives in the optimizer state,
    so a restored run continues the schedule where it stopped. Returns ``(tx, lr_at)``,
    ``lr_at(count)`` the learning rate of the update after ``count`` updates (host floats).
    ``grad_clip`` > 0 clips the global gradient norm first (0: off).
    """
    require(tcfg, OPTIMIZER_FIELDS)
    every = int(tcfg.lr_decay_steps) or int(steps_per_epoch)
    if every <= 0:
        raise ValueError(f"LR decay period must be positive (lr_decay_steps={tcfg.lr_decay_steps}, "
                         f"steps_per_epoch={steps_per_epoch})")
    lr0, decay = float(tcfg.learning_rate), float(tcfg.lr_decay)
    begin = int(tcfg.lr_decay_begin)
    schedule = optax.exponential_decay(lr0, every, decay, transition_begin=begin,
                                       staircase=True)
    b1, b2 = (float(b) for b in tcfg.betas)
    tx = optax.adamw(schedule, b1=b1, b2=b2, eps=float(tcfg.eps),
                     weight_decay=float(tcfg.weight_decay))
    if float(tcfg.grad_clip) > 0:
        tx = optax.chain(optax.clip_by_global_norm(float(tcfg.grad_clip)), tx)

    def lr_at(count: int) -> float:
        periods = max(int(count) - begin, 0) // every
        return float(np.float32(lr0) * np.float32(decay) ** periods)

    return tx, lr_at


@dataclasses.dataclass
class TrainData:
    """What a task's data pipeline hands the trainer.

    ``iterator`` yields either global batches (dicts of ``jax.Array`` sharded over the mesh,
    e.g. :class:`svcjax.data.input_pipeline.GlobalBatches`) or this process's share of each (dicts
    of NumPy arrays, leading axis ``batch_size // process_count``); it is checkpointable
    (``get_state``/``set_state``, as grain iterators). ``val_batch`` is one small batch every process holds whole
    (for validation summaries), or None. ``num_examples`` sizes an epoch.
    """

    iterator: Iterator[Mapping[str, np.ndarray]]
    num_examples: int
    val_batch: Mapping[str, np.ndarray] | None = None


class Task:
    """What :func:`svcjax.train.loop.train` trains. Subclasses set ``kind`` and
    ``model_names`` and implement :meth:`init_params`, :meth:`step`, :meth:`make_data` and
    :meth:`dummy_batch`; :mod:`svcjax.train.tasks` maps ``config.kind`` to them.

    ``self.tcfg`` is ``config.train`` with ``script_constants`` filling the fields it leaves
    unset; ``train_fields`` are the fields the task itself reads (checked here, one sentence
    naming those missing)."""

    kind: str = ""
    model_names: tuple[str, ...] = ()
    progress_keys: tuple[str, ...] = ()
    train_fields: tuple[str, ...] = ()
    # Neither reference script clips gradients or trains in reduced precision by default.
    script_constants: Mapping[str, Any] = {"grad_clip": 0.0, "compute_dtype": "float32"}
    nonfinite_hint = ("lower train.learning_rate, set train.grad_clip, or check the data; "
                      "training resumes from the newest checkpoint")

    def __init__(self, config):
        self.config = config
        self.tcfg = train_config(config, self.script_constants)
        require(self.tcfg, ("compute_dtype",) + tuple(self.train_fields))
        self.tx: dict[str, optax.GradientTransformation] = {}
        self.schedules: dict[str, Callable] = {}

    # -- set by the trainer once the data size is known
    def setup_optimizers(self, steps_per_epoch: int) -> None:
        for name in self.model_names:
            self.tx[name], self.schedules[name] = make_optimizer(self.tcfg, steps_per_epoch)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.tcfg.compute_dtype)

    def update(self, name: str, grads, opt_state, params):
        """One optimizer update of model ``name`` (inside the jitted step)."""
        updates, opt_state = self.tx[name].update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # -- to implement
    def init_params(self, rng, batch) -> dict[str, PyTree]:
        raise NotImplementedError

    def pretrained(self, params: dict[str, PyTree]) -> dict[str, PyTree]:
        """Replace freshly initialised parameters by ``config.init_from`` ones (fine-tuning)."""
        return params

    def step(self, params, opt_state, batch, rng) -> tuple[dict, dict, dict]:
        """One training step (traced once, inside jit): new params, opt states, metrics."""
        raise NotImplementedError

    def make_data(self, mesh) -> TrainData:
        raise NotImplementedError

    def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch of the right shapes/dtypes (zeros) to initialise parameters."""
        raise NotImplementedError

    def summaries(self, params, batch, rng) -> dict:
        """Validation outputs (traced, inside jit): {'scalars': {}, 'audio': {}, 'mels': {}}."""
        return {}

    def sample_rate(self) -> int:
        """The audio rate of the task's data (``config.data.sampling_rate``)."""
        data = self.config.get("data") or {}
        require(data, ("sampling_rate",), "config.data")
        return int(data["sampling_rate"])

    def hop_length(self) -> int:
        """Audio samples per frame of the task's data (``config.data.hop_length``)."""
        data = self.config.get("data") or {}
        require(data, ("hop_length",), "config.data")
        return int(data["hop_length"])

    def export(self, params, step: int, outdir: str) -> list[str]:
        """Write the trained model in the reference's file format; returns the paths."""
        raise NotImplementedError(f"{self.kind} has no export")
