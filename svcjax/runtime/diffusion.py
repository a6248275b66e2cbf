"""Shallow diffusion as a user calls it: load a model, refine (or generate) mel spectrograms.

    diff = svcjax.load_diffusion("model_100000.pt", "config.yaml")   # or a model dir
    mel = diff.sample(units, f0, volume, speaker="alto", start_mel=mel, k_step=100,
                      method="dpm-solver++", speedup=10, rng=None)

Shapes are channels-last: ``units (B, T, C)``, ``f0`` and ``volume (B, T)``, mels
``(B, T, 128)`` (natural-log mel of the NSF-HiFiGAN vocoder). With ``start_mel`` the mel is
noised to step ``k_step - 1`` and denoised back (shallow diffusion, ``k_step <=
k_step_max``); without it the sampler starts from noise at step ``timesteps`` (models trained
on all steps only).

``sample`` is a view on the shared runtime layer (:mod:`svcjax.runtime.runner`): time is padded
to the frame bucket with a frame mask, a batch of more than one runs as ``row_count`` rows split
over the local devices, and one jitted program runs per ``(bucket, rows, k_step, method,
speedup)``: condition, project, and the whole sampling loop
(:mod:`svcjax.models.diffusion.sampling`). :func:`sample_mel` is that function, pure, for use
inside other jitted code.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.runtime import buckets, runner

from svcjax.train import checkpoint

from svcjax.models.diffusion import sampling
from svcjax.interop.diffusion import import_checkpoint, speaker_map
from svcjax.models.diffusion.gaussian import Schedule, check_k_step
from svcjax.models.diffusion.unit2mel import Unit2Mel, build_model

Array = jax.Array

__all__ = ["Diffusion", "load_diffusion", "sample_mel", "DEFAULT_K_STEP"]

DEFAULT_K_STEP = 100  # inference_main.py's default shallow-diffusion depth


def sample_mel(model: Unit2Mel, schedule: Schedule, params: Any, units: Array, f0: Array,
               volume: Array, spk: Array | None, aug_shift: Array | None,
               start_mel: Array | None, mask: Array | None, rng: Array | None, *, k: int,
               method: str | None, speedup: int) -> Array:
    """The mel ``(B, T, out_dims)`` after ``k`` steps of ``method``; pure, jit-friendly.

    ``start_mel`` (log mel) is noised to step ``k - 1`` first; ``None`` starts from noise.
    ``rng`` draws that noise and DDPM's per-step noise (``None``: all zero).
    """
    variables = {"params": params}
    cond = model.apply(variables, units, f0, volume, spk, aug_shift, method=Unit2Mel.condition)
    cond_proj = model.apply(variables, cond, method=Unit2Mel.project_condition)

    def eps_fn(x, t):
        return model.apply(variables, x, t, cond_proj, mask, method=Unit2Mel.denoise)

    shape = tuple(units.shape[:2]) + (model.out_dims,)
    if rng is None:
        noise, rng_steps = jnp.zeros(shape, cond.dtype), None
    else:
        rng_start, rng_steps = jax.random.split(rng)
        noise = jax.random.normal(rng_start, shape, cond.dtype)
    if start_mel is None:
        x = noise
    else:
        x = sampling.shallow_start(schedule, schedule.norm_spec(start_mel), k, noise)
    x = sampling.sample(eps_fn, x, schedule, k, method, speedup, rng_steps)
    return schedule.denorm_spec(x)


class Diffusion:
    """A Unit2Mel score network with its schedule, speakers and compiled samplers."""

    def __init__(self, params: Any, config: ml_collections.ConfigDict, *, devices=None,
                 runtime=None):
        from svcjax.runtime import speakers

        self.config = config
        self.model = build_model(config)
        self.schedule = Schedule.from_config(config)
        self.params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
        self.speakers: dict[str, int] = speaker_map(config)
        self.n_spk = max(int(config.model.n_spk or 1), 1)
        self.speaker_table = speakers.SpeakerTable(self.speakers, self.n_spk)
        self.runtime = runtime or runner.shared(devices)

    @property
    def traces(self) -> collections.Counter:
        """Traces of the sampler per ``(k_step, method, speedup, shallow)`` for this network
        and schedule (all models sharing them), from the runtime's count."""
        return collections.Counter({k[2:6]: v for k, v in self.runtime.trace_counts(
            "diffusion.sample", lambda k: k[:2] == (self.model, self.schedule)).items()})

    # -- properties ---------------------------------------------------------------------------

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps

    @property
    def k_step_max(self) -> int:
        """Deepest shallow diffusion this model supports (``timesteps`` if trained on all)."""
        return self.schedule.effective_k_step_max()

    # -- inputs -------------------------------------------------------------------------------

    def speaker_weights(self, speaker: Any, batch: int, frames: int) -> np.ndarray | None:
        """``(B, T, n_spk)`` speaker weights from a name, an id, one per example, a
        ``{speaker: weight}`` mix, or per-frame weights ``(T, n_spk)`` / ``(B, T, n_spk)``
        (:class:`svcjax.runtime.speakers.SpeakerTable`); ``None`` for a single-speaker model."""
        table = self.speaker_table
        if self.n_spk <= 1:
            if speaker is not None and not (isinstance(speaker, str) and speaker in self.speakers) \
                    and not (_is_int(speaker) and int(speaker) == 0):
                raise ValueError(f"speaker {speaker!r} not in this single-speaker model; "
                                 f"known: {table.known}")
            return None
        if speaker is None:
            raise ValueError(f"this model has {self.n_spk} speakers; pass speaker= "
                             f"(known: {table.known})")
        return table.weights(speaker, batch, frames)

    def _resolve_k(self, start_mel, k_step) -> int:
        t = self.timesteps
        if start_mel is None:
            if self.schedule.shallow_only:
                raise ValueError(
                    f"this model was trained on k_step_max={self.k_step_max} of {t} steps: it can "
                    "only refine a given mel (pass start_mel), not generate from noise")
            if k_step is not None and int(k_step) != t:
                raise ValueError(f"without start_mel sampling starts from noise at step {t}; "
                                 f"k_step must be None or {t}, got {k_step}")
            return t
        return check_k_step(DEFAULT_K_STEP if k_step is None else k_step, timesteps=t,
                            k_step_max=self.k_step_max)

    # -- sampling -----------------------------------------------------------------------------

    def sample(self, units, f0, volume, speaker: Any = None, start_mel=None, *,
               k_step: int | None = None, method: str | None = None, speedup: int | None = None,
               rng: Any = None, keyshift: Any = None,
               lengths: Sequence[int] | None = None) -> np.ndarray:
        """Refine ``start_mel`` (or generate a mel) conditioned on units, F0, volume, speaker.

        ``method``/``speedup`` default to the config's ``infer`` section; ``k_step`` to 100
        (shallow) or all steps (from noise). ``rng``: a PRNG key or int seed, or one key per
        example (``jax.random.split(key, B)``: each draws what it draws alone with its key);
        ``None`` makes every random draw zero. ``keyshift`` (semitones, scalar or ``(B,)``)
        feeds the pitch-augmentation embedding of models trained with it. ``lengths`` marks
        the valid frames of a right-padded batch. Returns a float32 ``(B, T, out_dims)`` log mel
        (frames past ``lengths`` are zero). Unbatched ``(T, C)`` inputs give ``(T, out_dims)``.
        """
        units = np.asarray(units, np.float32)
        unbatched = units.ndim == 2
        if unbatched:
            units = units[None]
        if units.ndim != 3:
            raise ValueError(f"units must be (B, T, C), got shape {units.shape}")
        b, t, c = units.shape
        if c != int(self.config.data.encoder_out_channels):
            raise ValueError(f"units have {c} channels; this model takes "
                             f"{self.config.data.encoder_out_channels} (data.encoder_out_channels)")
        f0 = _frames("f0", f0, b, t, unbatched)
        volume = _frames("volume", volume, b, t, unbatched)
        for name, a in (("units", units), ("f0", f0), ("volume", volume)):
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contains NaN or inf")
        if (f0 < 0).any():
            raise ValueError("f0 must be >= 0 Hz (0 for unvoiced frames)")
        m = self.model.out_dims
        if start_mel is not None:
            start_mel = np.asarray(start_mel, np.float32)
            if unbatched:
                start_mel = start_mel[None]
            if start_mel.shape != (b, t, m):
                raise ValueError(f"start_mel must be (B, T, {m}) = {(b, t, m)}, got {start_mel.shape}")
            if not np.isfinite(start_mel).all():
                raise ValueError("start_mel contains NaN or inf")
        k = self._resolve_k(start_mel, k_step)
        method = self.config.infer.method if method is None else method
        speedup = int(self.config.infer.speedup if speedup is None else speedup)
        method = sampling.check(method, k, speedup, self.timesteps)
        if method == "ddpm":
            speedup = 1
        spk = self.speaker_weights(speaker, b, t)
        aug = self._keyshift(keyshift, b)
        lengths = runner.frame_lengths(lengths, b, t)
        if rng is not None and not isinstance(rng, (jax.Array, np.ndarray)):
            rng = jax.random.PRNGKey(int(rng))
        rng, per_row = runner.row_keys(rng, b)

        rt = self.runtime
        tb = runner.frame_bucket(t)
        rows = rt.rows(b)
        mask = buckets.length_mask(lengths, tb)
        inputs = [buckets.pad_axis(units, tb), buckets.pad_axis(f0, tb),
                  buckets.pad_axis(volume, tb), None if spk is None else buckets.pad_axis(spk, tb),
                  aug, None if start_mel is None else buckets.pad_axis(start_mel, tb), mask]
        inputs = rt.put_rows(rt.pad_rows(inputs, rows), rows)
        params = rt.params("diffusion", self.params, rows, owner=self)
        model, schedule = self.model, self.schedule
        static = (model, schedule, k, method, speedup, start_mel is not None, per_row)
        fn = rt.program("diffusion.sample", static, lambda: (
            runner.per_row(_sample_program(model, schedule, k, method, speedup), 7) if per_row
            else _sample_program(model, schedule, k, method, speedup)))
        key = rt.put_rows(rt.pad_rows(rng, rows), rows) if per_row else \
            rt.put_replicated(rng, rows)
        out = fn(params, *inputs, key)
        out = np.asarray(out)[:b, :t] * mask[:b, :t, None]
        return out[0] if unbatched else out

    def _keyshift(self, keyshift, b) -> np.ndarray | None:
        if keyshift is None:
            return None
        ks = np.broadcast_to(np.asarray(keyshift, np.float32).reshape(-1), (b,)).copy() \
            if np.size(keyshift) in (1, b) else None
        if ks is None:
            raise ValueError(f"keyshift must be a scalar or one value per example ({b}), "
                             f"got shape {np.shape(keyshift)}")
        if not self.config.model.use_pitch_aug:
            if np.any(ks != 0):
                raise ValueError("this model was trained without use_pitch_aug; keyshift must be 0/None")
            return None
        return ks


def _sample_program(model, schedule, k: int, method: str, speedup: int):
    """The jitted body of :meth:`Diffusion.sample` (closes over the network and schedule)."""
    def run(params, units, f0, volume, spk, aug, start_mel, mask, rng):
        return sample_mel(model, schedule, params, units, f0, volume, spk, aug, start_mel,
                          mask, rng, k=k, method=method, speedup=speedup)
    return run


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _frames(name: str, x, b: int, t: int, unbatched: bool) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if unbatched:
        x = x[None]
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.shape != (b, t):
        raise ValueError(f"{name} must be (B, T) = {(b, t)} like units, got shape {x.shape}")
    return x


def load_diffusion(path: str | os.PathLike, config: str | os.PathLike | None = None, *,
                   devices=None, runtime=None) -> Diffusion:
    """A :class:`Diffusion` from an svcjax model directory, or from a reference
    ``model_*.pt`` with its ``config.yaml`` (default: the one beside it)."""
    path = os.fspath(path)
    if checkpoint.is_model_dir(path):
        if config is not None:
            raise ValueError(f"{path} is a model directory (it has its own config); drop the config argument")
        params, cfg = checkpoint.load_model_dir(path)
        if cfg.get("kind") != "diffusion":
            raise ValueError(f"{path} holds a {cfg.get('kind')!r} model, not a diffusion model")
        return Diffusion(params, cfg, devices=devices, runtime=runtime)
    if os.path.isdir(path):
        raise checkpoint.ModelDirError(f"{path} is a directory but not an svcjax model directory")
    params, cfg = import_checkpoint(path, config)
    return Diffusion(params, cfg, devices=devices, runtime=runtime)
