"""Per-clip training features, computed jit-compiled in length-bucketed batches.

A :class:`Featurizer` turns clean 44.1 kHz clips into the frame-aligned features the
So-VITS-SVC 4.1 generator and its shallow-diffusion model train on (hop 512, ``T = L // 512``
frames for a clip of ``L`` samples, the waveform cut to ``512 * T`` samples):

============  ===========  ==================================================================
name          shape        what
============  ===========  ==================================================================
units         (T, C) f16   content-encoder units (50 Hz), nearest-interpolated to the frames
f0, uv        (T,) f32     F0 in Hz (interpolated through unvoiced frames) and voiced flag
volume        (T,) f32     RMS per hop frame
mel           (T, 128)     log-mel of the vocoder / diffusion model (128 bins, 40-16000 Hz)
aug_mel       (T, 128)     ``mel`` of the clip shifted by ``aug_keyshift`` semitones and
                           scaled in volume (the reference's precomputed augmentation)
aug_vol       (T,) f32     ``volume`` of the volume-scaled clip
aug_keyshift  () f32       the key shift, uniform in [-5, 5] semitones
============  ===========  ==================================================================

The linear spectrogram and the 80-bin loss mel are not stored: the trainer computes them on
the accelerator from the (possibly volume-augmented) waveform.

Batching: clips are grouped by :func:`svcjax.buckets.bucket_length` of their frame count,
padded to the bucket and to a multiple of the local device count, and run through one jitted
function sharded over the local devices (one compile per bucket). Padding is by reflection
of the clip's end, so every frame-local feature that reflect-pads its input (spectrograms,
volume) gives on the valid frames exactly what it gives on the unpadded clip. The content
encoder receives the valid lengths; F0 runs per clip on the host (most trackers are not jax).

Random draws (key shift, volume shift) come from the clip's key and the config seed, so a
rebuild - on any host, in any order - gives the same corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax import buckets
from svcjax.sharding import batch_sharding, make_mesh

SAMPLE_RATE = 44100
HOP = 512

ALL_FEATURES = ("units", "f0", "volume", "mel", "aug")
F0_METHODS = ("crepe", "dio", "harvest", "pm", "rmvpe", "fcpe")

__all__ = ["SAMPLE_RATE", "HOP", "ALL_FEATURES", "default_config", "Featurizer",
           "FeatureSpec"]


def default_config() -> ml_collections.ConfigDict:
    """Featurizer defaults (the ``build-corpus`` CLI flags override them)."""
    return ml_collections.ConfigDict(dict(
        # Content encoder: a checkpoint file (ContentVec / HuBERT .pt, or an svcjax model
        # directory), or random initialisation of ``encoder_variant`` (for tests and demos).
        encoder="",
        random_encoder=False,
        encoder_variant="vec768l12",
        encoder_seed=0,
        f0_method="dio",
        # Which features to compute: any of units, f0 (with uv), volume, mel, aug.
        features=",".join(ALL_FEATURES),
        aug_keyshift=5.0,      # aug_mel key shift is uniform in [-aug_keyshift, aug_keyshift]
        batch_size=8,          # clips per jitted call (per host; padded to the local devices)
        bucket_min_frames=64,
        bucket_growth=1.25,
        seed=1234,
    ))


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Per-clip array: ``shape`` (``None`` = the frame axis) and storage dtype."""
    shape: tuple
    dtype: Any


def _clip_seed(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _reflect_extend(x: np.ndarray, length: int) -> np.ndarray:
    """Extend ``x`` to ``length`` samples by reflecting its end (repeatedly if needed)."""
    if len(x) >= length:
        return x[:length]
    if len(x) < 2:
        return np.pad(x, (0, length - len(x)))
    return np.pad(x, (0, length - len(x)), mode="reflect")


class Featurizer:
    """Computes :data:`FEATURES` for batches of clips; see the module docstring.

    The four extractors are injected (``Featurizer.from_config`` wires the real ones):

    * ``units(audio, lengths) -> (B, T, C)``: jax, ``audio`` (B, L) at 44.1 kHz and the valid
      sample counts; resampling to the encoder's rate and frame interpolation included.
    * ``f0(audio, sr) -> (f0, uv)``: host, one clip (numpy), hop 512 at 44.1 kHz.
    * ``mel(audio, keyshift) -> (B, T, n_mels)``: jax, ``keyshift`` (B,) in semitones.
    * ``volume(audio) -> (B, T)``: jax.
    """

    def __init__(self, config: ml_collections.ConfigDict | None = None, *,
                 units: Callable | None = None, unit_dim: int | None = None,
                 f0: Callable | None = None, mel: Callable | None = None,
                 n_mels: int = 128, volume: Callable | None = None,
                 identity: Mapping[str, Any] | None = None,
                 devices: Sequence[jax.Device] | None = None):
        cfg = default_config()
        if config is not None:
            cfg.update(dict(config))
        self.config = cfg
        self.features = parse_features(cfg.features)
        need = {"units": units, "f0": f0, "volume": volume,
                "mel": mel, "aug": mel if "aug" in self.features else True}
        if "aug" in self.features and volume is None:
            raise ValueError("the 'aug' feature needs a volume extractor")
        missing = [name for name in self.features if need[name] is None]
        if missing:
            raise ValueError(f"featurizer computes {', '.join(self.features)} but has no "
                             f"extractor for {', '.join(missing)}")
        if "units" in self.features and not unit_dim:
            raise ValueError("unit_dim is required with the 'units' feature")
        self._units, self._f0, self._mel, self._volume = units, f0, mel, volume
        self.unit_dim = int(unit_dim or 0)
        self.n_mels = int(n_mels)
        # What makes the output what it is, beyond the config (e.g. the encoder file's hash).
        self._identity = dict(identity or {})
        self.mesh = make_mesh(devices=list(devices or jax.local_devices()))
        self._n_dev = self.mesh.size
        self._fn = jax.jit(self._batch)

    # -- description -------------------------------------------------------------------------
    def spec(self) -> dict[str, FeatureSpec]:
        """Names, shapes and storage dtypes of what :meth:`__call__` returns per clip."""
        out: dict[str, FeatureSpec] = {}
        if "units" in self.features:
            out["units"] = FeatureSpec((None, self.unit_dim), np.float16)
        if "f0" in self.features:
            out["f0"] = FeatureSpec((None,), np.float32)
            out["uv"] = FeatureSpec((None,), np.float32)
        if "volume" in self.features:
            out["volume"] = FeatureSpec((None,), np.float32)
        if "mel" in self.features:
            out["mel"] = FeatureSpec((None, self.n_mels), np.float32)
        if "aug" in self.features:
            out["aug_mel"] = FeatureSpec((None, self.n_mels), np.float32)
            out["aug_vol"] = FeatureSpec((None,), np.float32)
            out["aug_keyshift"] = FeatureSpec((), np.float32)
        return out

    def describe(self) -> dict:
        """JSON-able description (stored in the dataset's metadata)."""
        d = {k: v for k, v in self.config.to_dict().items()}
        d.update(unit_dim=self.unit_dim, n_mels=self.n_mels, sample_rate=SAMPLE_RATE,
                 hop_length=HOP, **self._identity)
        return d

    @property
    def fingerprint(self) -> str:
        """Changes whenever the features would (config, encoder identity, shapes)."""
        d = self.describe()
        d.pop("batch_size", None)  # batching does not change the values
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    # -- computation -------------------------------------------------------------------------
    def _batch(self, audio, lengths, keyshift, vol_scale):
        out = {}
        if "units" in self.features:
            out["units"] = self._units(audio, lengths).astype(jnp.float16)
        if "volume" in self.features:
            out["volume"] = self._volume(audio)
        if "mel" in self.features:
            out["mel"] = self._mel(audio, jnp.zeros_like(keyshift))
        if "aug" in self.features:
            scaled = audio * vol_scale[:, None]
            out["aug_mel"] = self._mel(scaled, keyshift)
            out["aug_vol"] = self._volume(scaled)
        return out

    def aug_draws(self, clip: np.ndarray, key: str) -> tuple[float, float]:
        """(key shift in semitones, volume scale) for a clip, as the reference draws them.

        The volume scale is ``10 ** u`` with ``u ~ U(-1, min(1, log10(1 / peak)))`` so the
        scaled clip never clips; the key shift is ``U(-aug_keyshift, aug_keyshift)``.
        """
        rng = _clip_seed(int(self.config.seed), key)
        peak = float(np.max(np.abs(clip))) + 1e-5 if len(clip) else 1.0
        hi = min(1.0, math.log10(1.0 / peak))
        log10_scale = rng.uniform(-1.0, hi)
        a = float(self.config.aug_keyshift)
        keyshift = rng.uniform(-a, a)
        return float(keyshift), float(10.0 ** log10_scale)

    def __call__(self, clips: Sequence[np.ndarray], keys: Sequence[str]) -> list[dict]:
        """Features of each clip (float audio at 44.1 kHz, whole hops); see :meth:`spec`."""
        if len(clips) != len(keys):
            raise ValueError(f"{len(clips)} clips but {len(keys)} keys")
        results: list[dict] = [dict() for _ in clips]
        frames = []
        for clip, key in zip(clips, keys):
            if clip.ndim != 1 or len(clip) < HOP or len(clip) % HOP:
                raise ValueError(f"clip {key!r}: expected mono audio of whole {HOP}-sample "
                                 f"hops, got shape {clip.shape}")
            frames.append(len(clip) // HOP)
        jax_feats = [f for f in self.features if f != "f0"]
        if jax_feats:
            by_bucket: dict[int, list[int]] = {}
            for i, t in enumerate(frames):
                b = buckets.bucket_length(t, min_len=int(self.config.bucket_min_frames),
                                          growth=float(self.config.bucket_growth))
                by_bucket.setdefault(b, []).append(i)
            bs = max(1, int(self.config.batch_size))
            for bucket in sorted(by_bucket):
                idx = by_bucket[bucket]
                for s in range(0, len(idx), bs):
                    self._run_batch([i for i in idx[s:s + bs]], bucket, clips, keys, frames,
                                    results)
        if "f0" in self.features:
            for i, (clip, t) in enumerate(zip(clips, frames)):
                f0, uv = self._f0(np.asarray(clip, np.float32), SAMPLE_RATE)
                results[i]["f0"] = _fit_frames(np.asarray(f0, np.float32), t, keys[i], "f0")
                results[i]["uv"] = _fit_frames(np.asarray(uv, np.float32), t, keys[i], "uv")
        if "aug" in self.features:
            for i, (clip, key) in enumerate(zip(clips, keys)):
                results[i]["aug_keyshift"] = np.float32(self.aug_draws(clip, key)[0])
        return results

    def _run_batch(self, idx, bucket, clips, keys, frames, results):
        n = -(-len(idx) // self._n_dev) * self._n_dev
        length = bucket * HOP
        audio = np.zeros((n, length), np.float32)
        lengths = np.zeros((n,), np.int32)
        keyshift = np.zeros((n,), np.float32)
        scale = np.ones((n,), np.float32)
        for row, i in enumerate(idx):
            audio[row] = _reflect_extend(np.asarray(clips[i], np.float32), length)
            lengths[row] = len(clips[i])
            if "aug" in self.features:
                keyshift[row], scale[row] = self.aug_draws(clips[i], keys[i])
        for row in range(len(idx), n):  # filler rows: a copy of the first (discarded)
            audio[row], lengths[row] = audio[0], lengths[0]
        put = lambda a: jax.device_put(a, batch_sharding(self.mesh, a.ndim))  # noqa: E731
        out = self._fn(put(audio), put(lengths), put(keyshift), put(scale))
        out = jax.tree.map(np.asarray, out)
        for row, i in enumerate(idx):
            t = frames[i]
            for name, arr in out.items():
                if arr.shape[1] < t:
                    raise ValueError(f"{name} extractor gave {arr.shape[1]} frames for a "
                                     f"{bucket}-frame bucket; expected at least {t}")
                results[i][name] = np.ascontiguousarray(arr[row, :t])


def _fit_frames(x: np.ndarray, t: int, key: str, what: str) -> np.ndarray:
    """Cut or edge-pad a per-frame track to ``t`` frames (trackers may differ by a frame)."""
    if abs(len(x) - t) > 2:
        raise ValueError(f"clip {key!r}: {what} has {len(x)} frames, expected {t}")
    if len(x) >= t:
        return x[:t]
    return np.pad(x, (0, t - len(x)), mode="edge")


def parse_features(features: str | Sequence[str]) -> tuple[str, ...]:
    names = [f.strip() for f in (features.split(",") if isinstance(features, str)
                                 else features) if f.strip()]
    bad = [f for f in names if f not in ALL_FEATURES]
    if bad or not names:
        raise ValueError(f"unknown feature(s) {', '.join(bad) or '(none given)'}; "
                         f"choose from {', '.join(ALL_FEATURES)}")
    return tuple(f for f in ALL_FEATURES if f in names)
