"""Public inference API for So-VITS-SVC 4.1 generators.

    import svcjax
    model = svcjax.load_sovits("G_800.pth", "config.json")   # or an imported model directory
    wav, f0 = model.infer(units, f0, uv, speaker="alto")      # 44.1 kHz, 512 samples per frame

``infer`` is jit-compiled once per length bucket (:mod:`svcjax.runtime.buckets`): inputs are padded to
the bucket with a frame mask, which never changes the valid output. Batches of more than one
clip are padded to a multiple of the local device count and split over all devices
(:mod:`svcjax.runtime.sharding`); a single clip runs on one device.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.runtime import buckets, sharding

__all__ = ["load_sovits", "SovitsModel"]


def _as_np(x, dtype=np.float32, name="input"):
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None


# Traces of the jitted body per architecture (a SynthesizerTrn is a hashable dataclass, so
# models of the same architecture share compiled code).
_TRACES: dict[Any, int] = {}


def _infer_body(module, params, c, f0, uv, g, mask, vol, noise_scale, rng, *, predict_f0):
    _TRACES[module] = _TRACES.get(module, 0) + 1  # runs only while tracing
    rngs = {"noise": rng} if rng is not None else {}
    return module.apply({"params": params}, c, f0, uv, g, mask, vol, noise_scale=noise_scale,
                        predict_f0=predict_f0, method="infer", rngs=rngs)


_infer_jit = jax.jit(_infer_body, static_argnames=("module", "predict_f0"))


class SovitsModel:
    """A loaded generator: ``config`` (ConfigDict), ``params``, ``speakers`` (name -> id)."""

    def __init__(self, params: Any, config: Any, *, dtype: Any = None, devices=None):
        from svcjax.models import synthesizer

        self.config = config
        self.speakers: dict[str, int] = {str(k): int(v) for k, v in dict(config.get("spk") or {}).items()}
        self.n_speakers = int(config.model.n_speakers)
        self.hop = int(config.data.hop_length)
        self.sampling_rate = int(config.data.sampling_rate)
        self.module = synthesizer.from_config(config, with_posterior=False, dtype=dtype)
        params = {k: v for k, v in dict(params).items() if k != "enc_q"}
        self.mesh = sharding.make_mesh(devices=devices or jax.local_devices())
        self.n_devices = self.mesh.devices.size
        self.params = jax.device_put(params, sharding.replicated(self.mesh))
        # One-device copy for single clips: the replica already on the mesh's first device.
        self._device = self.mesh.devices.flat[0]
        if self.n_devices > 1:
            self._params_one = jax.tree.map(
                lambda a: next(s.data for s in a.addressable_shards if s.device == self._device),
                self.params)
        else:
            self._params_one = self.params
        self._lock = threading.Lock()

    @property
    def trace_count(self) -> int:
        """How many times ``infer`` was traced for this architecture (all models sharing it)."""
        return _TRACES.get(self.module, 0)

    # -- input handling ------------------------------------------------------------------------

    def speaker_index(self, speaker: Any) -> int:
        if isinstance(speaker, (str, np.str_)):
            if str(speaker) not in self.speakers:
                known = ", ".join(sorted(self.speakers, key=self.speakers.get)) or "(none named)"
                raise ValueError(f"speaker {str(speaker)!r} not in model; known: {known}")
            return self.speakers[str(speaker)]
        if isinstance(speaker, (int, np.integer)) and not isinstance(speaker, bool):
            if not 0 <= int(speaker) < self.n_speakers:
                raise ValueError(f"speaker id {int(speaker)} out of range: the model has "
                                 f"{self.n_speakers} speaker(s) (ids 0..{self.n_speakers - 1})")
            return int(speaker)
        raise ValueError(f"speaker must be a name, an id, a list of either per clip, a "
                         f"{{name: weight}} dict or (B, T, {self.n_speakers}) mixing weights; got "
                         f"{type(speaker).__name__}")

    def _speaker(self, speaker, b: int, t: int) -> np.ndarray:
        if isinstance(speaker, Mapping):
            w = np.zeros(self.n_speakers, np.float32)
            for k, v in speaker.items():
                w[self.speaker_index(k)] += float(v)
            return np.broadcast_to(w, (b, t, self.n_speakers)).copy()
        if isinstance(speaker, (list, tuple)) and speaker and \
                all(isinstance(s, (str, int, np.integer)) for s in speaker):
            if len(speaker) != b:
                raise ValueError(f"{len(speaker)} speakers given for a batch of {b}")
            return np.asarray([self.speaker_index(s) for s in speaker], np.int32)
        if isinstance(speaker, (np.ndarray, jax.Array)) and np.ndim(speaker) >= 1:
            arr = np.asarray(speaker)
            if np.issubdtype(arr.dtype, np.integer) and arr.ndim == 1:
                return self._speaker(arr.tolist(), b, t)
            arr = arr.astype(np.float32)
            if arr.ndim == 2:
                arr = arr[None]
            if arr.shape != (b, t, self.n_speakers):
                raise ValueError(f"speaker mixing weights must be (B, T, n_speakers) = "
                                 f"({b}, {t}, {self.n_speakers}), got {np.shape(speaker)}")
            return arr
        return np.full((b,), self.speaker_index(speaker), np.int32)

    # -- public --------------------------------------------------------------------------------

    def infer(self, units, f0, uv, speaker: Any = 0, vol=None, noise_scale: float = 0.4,
              predict_f0: bool = False, rng: jax.Array | None = None, lengths=None):
        """Convert content ``units`` (B, T, ssl_dim) with ``f0``/``uv`` (B, T) to a waveform.

        ``speaker``: a name, an id, a list of names/ids (one per clip), a ``{name: weight}``
        dict, or per-frame mixing weights (B, T, n_speakers) over the speaker embeddings.
        ``vol`` (B, T) frame RMS for models with ``vol_embedding`` (None: no volume term, as
        the reference). ``noise_scale`` scales the prior's noise (0.4 is the reference's CLI
        default). ``predict_f0`` replaces ``f0`` by the model's own prediction.
        ``rng``: a key for the reference's random draws (latent noise, sine phases, source
        noise); None gives the deterministic output (every draw zero). ``lengths`` (B,) valid
        frames per clip when the batch holds clips of different lengths.

        Unbatched inputs (T, ssl_dim) / (T,) are accepted. Returns NumPy ``wav``
        (B, T * hop) in [-1, 1] (zero past each clip's length) and the ``f0`` (B, T) used.
        """
        units = _as_np(units, name="units")
        unbatched = units.ndim == 2
        if unbatched:
            units = units[None]
        if units.ndim != 3:
            raise ValueError(f"units must be (B, T, {self.module.ssl_dim}), got shape "
                             f"{units.shape}")
        b, t, d = units.shape
        if d != self.module.ssl_dim:
            enc = self.config.model.get("speech_encoder", "?")
            raise ValueError(f"units have {d} channels, the model expects "
                             f"{self.module.ssl_dim} (speech_encoder {enc})")
        if t == 0:
            raise ValueError("units have no frames")

        def frames(x, name):
            x = _as_np(x, name=name)
            x = x[None] if unbatched and x.ndim == 1 else x
            if x.shape != (b, t):
                raise ValueError(f"{name} must be (B, T) = ({b}, {t}) like the units, got "
                                 f"{np.shape(x)}")
            return x

        f0 = frames(f0, "f0")
        uv = frames(uv, "uv")
        vol = frames(vol, "vol") if (vol is not None and self.module.vol_embedding) else None
        if predict_f0 and not self.module.use_automatic_f0_prediction:
            raise ValueError("predict_f0=True needs a model trained with "
                             "use_automatic_f0_prediction=true; this one has no F0 decoder")
        if lengths is None:
            lengths = np.full((b,), t, np.int64)
        else:
            lengths = np.asarray(lengths, np.int64).reshape(-1)
            if lengths.shape != (b,) or (lengths < 1).any() or (lengths > t).any():
                raise ValueError(f"lengths must be {b} values in 1..{t}, got {lengths.tolist()}")
        g = self._speaker(speaker, b, t)

        tb = buckets.bucket_length(t)
        mask = buckets.length_mask(lengths, tb)
        pad_t = lambda x: buckets.pad_axis(x, tb, axis=1)  # noqa: E731
        inputs = [pad_t(units), pad_t(f0), pad_t(uv), pad_t(g) if g.ndim == 3 else g, mask,
                  None if vol is None else pad_t(vol)]
        # Past each clip's end f0 and uv are zero, as if the clip were alone (uv enters the
        # voiced mean of the F0 decoder's input normalisation).
        inputs[1] = inputs[1] * mask
        inputs[2] = inputs[2] * mask
        if b > 1 and self.n_devices > 1:
            inputs, _ = sharding.pad_to_multiple(inputs, self.n_devices)
            put = lambda x: None if x is None else jax.device_put(  # noqa: E731
                x, sharding.batch_sharding(self.mesh, np.ndim(x)))
            params = self.params
            key = None if rng is None else jax.device_put(rng, sharding.replicated(self.mesh))
        else:
            dev = self._device
            put = lambda x: None if x is None else jax.device_put(x, dev)  # noqa: E731
            params = self._params_one
            key = None if rng is None else jax.device_put(rng, dev)
        inputs = [put(x) for x in inputs]
        scale = np.float32(noise_scale)
        with self._lock:
            wav, f0_used = _infer_jit(self.module, params, *inputs, scale, key,
                                      predict_f0=bool(predict_f0))
        wav = np.asarray(wav)[:b, :t * self.hop]
        f0_used = np.asarray(f0_used)[:b, :t]
        if unbatched:
            return wav[0], f0_used[0]
        return wav, f0_used


def load_sovits(path: str | os.PathLike, config: str | os.PathLike | None = None, *,
                dtype: Any = None, devices=None) -> SovitsModel:
    """Load a So-VITS-SVC 4.1 generator.

    ``path``: an svcjax model directory (``svcjax import-sovits``), or a reference ``G_*.pth``
    with its ``config`` (default: ``config.json`` beside the checkpoint, where training puts
    it). ``dtype``: computation dtype (e.g. ``jnp.bfloat16``; parameters stay float32).
    """
    from svcjax.train import checkpoint
    from svcjax.interop import sovits

    path = os.fspath(path)
    if os.path.isdir(path):
        if config is not None:
            raise ValueError(f"{path} is a model directory; it carries its own config "
                             "(do not pass one)")
        params, cfg = checkpoint.load_model_dir(path)
        if cfg.get("kind") != sovits.KIND:
            raise ValueError(f"{path} holds a {cfg.get('kind')!r} model, not a So-VITS-SVC "
                             "generator")
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist (expected a G_*.pth checkpoint or "
                                    "an svcjax model directory)")
        if config is None:
            config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
            if not os.path.isfile(config):
                raise FileNotFoundError(f"no config given for {path} and no config.json beside "
                                        "it; pass load_sovits(checkpoint, config_json)")
        params, cfg = sovits.load_sovits_checkpoint(path, config, with_posterior=False)
    return SovitsModel(params, cfg, dtype=dtype, devices=devices)
