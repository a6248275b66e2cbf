"""Shallow diffusion as a user calls it: load a model, refine (or generate) mel spectrograms.

    diff = svcjax.load_diffusion("model_100000.pt", "config.yaml")   # or a model dir
    mel = diff.sample(units, f0, volume, speaker="alto", start_mel=mel, k_step=100,
                      method="dpm-solver++", speedup=10, rng=None)

Shapes are channels-last: ``units (B, T, C)``, ``f0`` and ``volume (B, T)``, mels
``(B, T, 128)`` (natural-log mel of the NSF-HiFiGAN vocoder). With ``start_mel`` the mel is
noised to step ``k_step - 1`` and denoised back (shallow diffusion, ``k_step <=
k_step_max``); without it the sampler starts from noise at step ``timesteps`` (models trained
on all steps only).

Each call pads time to a length bucket (:mod:`svcjax.runtime.buckets`) with a frame mask, splits a
batch of more than one over the local devices (:mod:`svcjax.runtime.sharding`), and runs one jitted
function per ``(bucket, batch, k_step, method, speedup)``: condition, project, and the whole
sampling loop (:mod:`svcjax.models.diffusion.sampling`). :func:`sample_mel` is that function, pure, for use
inside other jitted code.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.runtime import buckets, sharding

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

    def __init__(self, params: Any, config: ml_collections.ConfigDict):
        self.config = config
        self.model = build_model(config)
        self.schedule = Schedule.from_config(config)
        self.params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
        self.speakers: dict[str, int] = speaker_map(config)
        self.n_spk = max(int(config.model.n_spk or 1), 1)
        self._fns: dict[tuple, Any] = {}
        self._placed: dict[Any, Any] = {}
        self.traces: collections.Counter = collections.Counter()  # traces per compiled key

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
        ``{speaker: weight}`` mix, or per-frame weights ``(T, n_spk)`` / ``(B, T, n_spk)``."""
        known = ", ".join(sorted(self.speakers, key=self.speakers.get)) or "(no names in config)"
        if self.n_spk <= 1:
            if speaker is not None and not (isinstance(speaker, str) and speaker in self.speakers) \
                    and not (_is_int(speaker) and int(speaker) == 0):
                raise ValueError(f"speaker {speaker!r} not in this single-speaker model; known: {known}")
            return None
        if speaker is None:
            raise ValueError(f"this model has {self.n_spk} speakers; pass speaker= (known: {known})")

        def sid(s) -> int:
            if isinstance(s, str):
                if s not in self.speakers:
                    raise ValueError(f"speaker {s!r} not in checkpoint; known: {known}")
                return self.speakers[s]
            if _is_int(s):
                if not 0 <= int(s) < self.n_spk:
                    raise ValueError(f"speaker id {int(s)} out of range [0, {self.n_spk})")
                return int(s)
            raise ValueError(f"speaker must be a name, an id or weights, got {s!r}")

        if isinstance(speaker, Mapping):
            w = np.zeros(self.n_spk, np.float32)
            for s, v in speaker.items():
                w[sid(s)] += float(v)
            return np.broadcast_to(w, (batch, frames, self.n_spk)).copy()
        if isinstance(speaker, (str, int, np.integer)):
            return np.broadcast_to(np.eye(self.n_spk, dtype=np.float32)[sid(speaker)],
                                   (batch, frames, self.n_spk)).copy()
        if isinstance(speaker, (list, tuple)) and all(isinstance(s, (str, int, np.integer)) for s in speaker):
            speaker = [sid(s) for s in speaker]
        arr = np.asarray(speaker)
        if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
            if len(arr) != batch:
                raise ValueError(f"got {len(arr)} speakers for a batch of {batch}")
            ids = [sid(s) for s in arr]
            return np.broadcast_to(np.eye(self.n_spk, dtype=np.float32)[ids][:, None],
                                   (batch, frames, self.n_spk)).copy()
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = np.broadcast_to(arr, (batch,) + arr.shape)
        if arr.shape != (batch, frames, self.n_spk):
            raise ValueError(f"speaker weights must be (B, T, n_spk) = {(batch, frames, self.n_spk)} "
                             f"or (T, n_spk); got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("speaker weights contain NaN or inf")
        return np.array(arr)

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
        (shallow) or all steps (from noise). ``rng``: a PRNG key or int seed; ``None`` makes
        every random draw zero. ``keyshift`` (semitones, scalar or ``(B,)``) feeds the
        pitch-augmentation embedding of models trained with it. ``lengths`` marks the valid
        frames of a right-padded batch. Returns a float32 ``(B, T, out_dims)`` log mel
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
        if lengths is None:
            lengths = np.full(b, t)
        lengths = np.asarray(lengths, np.int64).reshape(-1)
        if len(lengths) != b or (lengths < 1).any() or (lengths > t).any():
            raise ValueError(f"lengths must be {b} values in [1, {t}], got {lengths.tolist()}")
        if rng is not None and not isinstance(rng, jax.Array):
            rng = jax.random.PRNGKey(int(rng))

        tb = buckets.bucket_length(t)
        mask = buckets.length_mask(lengths, tb)
        inputs = dict(units=buckets.pad_axis(units, tb), f0=buckets.pad_axis(f0, tb),
                      volume=buckets.pad_axis(volume, tb), mask=mask,
                      spk=None if spk is None else buckets.pad_axis(spk, tb),
                      aug=aug,
                      start_mel=None if start_mel is None else buckets.pad_axis(start_mel, tb))
        devices = jax.local_devices()
        if b > 1 and len(devices) > 1:
            inputs, _ = sharding.pad_to_multiple(inputs, len(devices))
            mesh = sharding.make_mesh(devices=devices)
            placed = {k_: None if v is None else jax.device_put(v, sharding.batch_sharding(mesh, v.ndim))
                      for k_, v in inputs.items()}
            params = self._params_on(("mesh", tuple(d.id for d in devices)),
                                     sharding.replicated(mesh))
        else:
            dev = devices[0]
            placed = {k_: None if v is None else jax.device_put(v, dev) for k_, v in inputs.items()}
            params = self._params_on(("one", dev.id), dev)
        fn = self._compiled(k, method, speedup, start_mel is not None)
        out = fn(params, placed["units"], placed["f0"], placed["volume"], placed["spk"],
                 placed["aug"], placed["start_mel"], placed["mask"], rng)
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

    def _params_on(self, key, target):
        if key not in self._placed:
            self._placed[key] = jax.device_put(self.params, target)
        return self._placed[key]

    def _compiled(self, k: int, method: str, speedup: int, shallow: bool):
        key = (k, method, speedup, shallow)
        fn = self._fns.get(key)
        if fn is None:
            def run(params, units, f0, volume, spk, aug, start_mel, mask, rng):
                self.traces[key] += 1
                return sample_mel(self.model, self.schedule, params, units, f0, volume, spk, aug,
                                  start_mel, mask, rng, k=k, method=method, speedup=speedup)

            fn = self._fns[key] = jax.jit(run)
        return fn


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


def load_diffusion(path: str | os.PathLike, config: str | os.PathLike | None = None) -> Diffusion:
    """A :class:`Diffusion` from an svcjax model directory, or from a reference
    ``model_*.pt`` with its ``config.yaml`` (default: the one beside it)."""
    path = os.fspath(path)
    if checkpoint.is_model_dir(path):
        if config is not None:
            raise ValueError(f"{path} is a model directory (it has its own config); drop the config argument")
        params, cfg = checkpoint.load_model_dir(path)
        if cfg.get("kind") != "diffusion":
            raise ValueError(f"{path} holds a {cfg.get('kind')!r} model, not a diffusion model")
        return Diffusion(params, cfg)
    if os.path.isdir(path):
        raise checkpoint.ModelDirError(f"{path} is a directory but not an svcjax model directory")
    params, cfg = import_checkpoint(path, config)
    return Diffusion(params, cfg)
