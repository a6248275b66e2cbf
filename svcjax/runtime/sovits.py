"""Public inference API for So-VITS-SVC 4.1 generators.

    import svcjax
    model = svcjax.load_sovits("G_800.pth", "config.json")   # or an imported model directory
    wav, f0 = model.infer(units, f0, uv, speaker="alto")      # 44.1 kHz, 512 samples per frame

``infer`` is a view on the shared runtime layer (:mod:`svcjax.runtime.runner`): inputs are
padded to the frame bucket with a frame mask, which never changes the valid output; a batch
of more than one clip runs as ``row_count`` rows split over all local devices, a single clip
on one device; one compiled program per (bucket, rows, ``predict_f0``), shared by every model
of the same architecture.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from svcjax.runtime import buckets, runner

__all__ = ["load_sovits", "SovitsModel"]


def _as_np(x, dtype=np.float32, name="input"):
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None


def _infer_program(module, predict_f0: bool):
    """The jitted body of :meth:`SovitsModel.infer` (closes over the module only)."""
    def run(params, c, f0, uv, g, mask, vol, noise_scale, rng):
        rngs = {"noise": rng} if rng is not None else {}
        return module.apply({"params": params}, c, f0, uv, g, mask, vol,
                            noise_scale=noise_scale, predict_f0=predict_f0, method="infer",
                            rngs=rngs)
    return run


class SovitsModel(runner.RuntimeView):
    """A loaded generator: ``config`` (ConfigDict), ``params``, ``speakers`` (name -> id)."""

    def __init__(self, params: Any, config: Any, *, dtype: Any = None, devices=None,
                 runtime=None):
        from svcjax.models import synthesizer
        from svcjax.runtime import speakers

        self.config = config
        self.speakers: dict[str, int] = {str(k): int(v) for k, v in dict(config.get("spk") or {}).items()}
        self.n_speakers = int(config.model.n_speakers)
        self.speaker_table = speakers.SpeakerTable(self.speakers, self.n_speakers)
        self.hop = int(config.data.hop_length)
        self.sampling_rate = int(config.data.sampling_rate)
        self.runtime = runtime or runner.shared(devices)
        self.module = synthesizer.from_config(
            config, with_posterior=False, dtype=dtype,
            unroll_layers=bool(self.runtime.kernels["unroll_layers"]),
            conv_kernels=self.runtime.kernels["conv"])
        self.params = {k: v for k, v in dict(params).items() if k != "enc_q"}

    @property
    def traces(self) -> dict:
        """Traces of ``infer`` per ``(predict_f0, per-clip keys)`` for this architecture (all
        models sharing it), from the runtime's count."""
        return {k[1:]: v for k, v in self.runtime.trace_counts(
            "sovits.infer", lambda k: k[0] == self.module).items()}

    @property
    def trace_count(self) -> int:
        """How many times ``infer`` was traced for this architecture (all models sharing it)."""
        return sum(self.traces.values())

    # -- input handling ------------------------------------------------------------------------

    def speaker_index(self, speaker: Any) -> int:
        return self.speaker_table.index(speaker)

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
        noise), or one key per clip (``jax.random.split(key, B)``: each clip then draws
        what it draws alone with its key); None gives the deterministic output (every draw
        zero). ``lengths`` (B,) valid frames per clip when the batch holds clips of different
        lengths.

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
        lengths = runner.frame_lengths(lengths, b, t)
        g = self.speaker_table.rows(speaker, b, t)

        rt = self.runtime
        tb = runner.frame_bucket(t)
        rows = rt.rows(b)
        mask = buckets.length_mask(lengths, tb)
        pad_t = lambda x: buckets.pad_axis(x, tb, axis=1)  # noqa: E731
        # Past each clip's end f0 and uv are zero, as if the clip were alone (uv enters the
        # voiced mean of the F0 decoder's input normalisation).
        inputs = [pad_t(units), pad_t(f0) * mask, pad_t(uv) * mask,
                  pad_t(g) if g.ndim == 3 else g, mask, None if vol is None else pad_t(vol)]
        inputs = rt.put_rows(rt.pad_rows(inputs, rows), rows)
        params = rt.params("sovits", self.params, rows, owner=self)
        key, per_row = runner.row_keys(rng, b)
        key = rt.put_rows(rt.pad_rows(key, rows), rows) if per_row else \
            rt.put_replicated(key, rows)
        module, pf0 = self.module, bool(predict_f0)
        fn = rt.program("sovits.infer", (module, pf0, per_row),
                        lambda: runner.per_row(_infer_program(module, pf0), 6) if per_row
                        else _infer_program(module, pf0))
        wav, f0_used = fn(params, *inputs, np.float32(noise_scale), key)
        wav = np.asarray(wav)[:b, :t * self.hop]
        f0_used = np.asarray(f0_used)[:b, :t]
        if unbatched:
            return wav[0], f0_used[0]
        return wav, f0_used


def load_sovits(path: str | os.PathLike, config: str | os.PathLike | None = None, *,
                dtype: Any = None, devices=None, runtime=None) -> SovitsModel:
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
    return SovitsModel(params, cfg, dtype=dtype, devices=devices, runtime=runtime)
