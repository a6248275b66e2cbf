"""Content units: run a speech content encoder over clips, and align units to the frame rate.

    enc = svcjax.load_content_encoder("checkpoint_best_legacy_500.pt", kind="vec768l12")
    units = enc(wav_16k)                          # (B, T50, C) at 50 Hz
    c = enc.frames(wav_16k, n_frames)             # (B, n_frames, C) at 44.1 kHz / 512

:class:`ContentEncoder` is a view on the shared runtime layer (:mod:`svcjax.runtime.runner`): it
pads a batch to a length bucket (:meth:`ContentEncoder.bucket`), so a corpus of clips
compiles a handful of programs, runs ``row_count`` rows split over the local devices, and
shares compiled programs with encoders of the same network; every clip gives the units it
would give alone.

So-VITS-SVC stretches the 50 Hz units to its 86.13 Hz frame rate with
``utils.repeat_expand_2d``: ``mode='nearest'`` (the 4.1 config templates) is
``torch.nn.functional.interpolate(mode='nearest')``, ``mode='left'`` (what the reference
falls back to when a config has no ``unit_interpolate_mode``) is its own stepping rule;
:func:`interpolate_units` reproduces both index maps exactly, float32 rounding included.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from svcjax.audio.features import ALIGN_MODES, align_table
from svcjax.models import content_encoder as ce
from svcjax.models import encoders
from svcjax.runtime import buckets, runner

__all__ = [
    "ContentEncoder",
    "load_content_encoder",
    "init_content_encoder",
    "interpolate_units",
]


def interpolate_units(units, n_frames, mode: str = "nearest", unit_lengths=None) -> np.ndarray:
    """Stretch 50 Hz units to ``n_frames`` frames (So-VITS-SVC's ``repeat_expand_2d``).

    ``units`` is ``(T, C)`` with an int ``n_frames``, or a padded batch ``(B, T, C)`` with
    ``unit_lengths`` and ``n_frames`` per clip (ints or sequences); the batch result is
    ``(B, max(n_frames), C)``, zero past each clip's ``n_frames``. ``mode`` is the config's
    ``unit_interpolate_mode``: ``nearest`` (the 4.1 templates, the default here), ``left``
    (the reference's fallback when a config has none) or ``linear``; the index maps are
    :func:`svcjax.audio.features.align_frames`'s, which reproduce the reference's exactly.
    ``nearest`` and ``left`` gather on the host (NumPy): clips of new lengths compile
    nothing; ``linear`` runs the same float32 arithmetic as ``align_frames`` in one jitted
    program per (source, target) length bucket (:func:`svcjax.runtime.runner.frame_bucket`).
    """
    units = np.asarray(units, np.float32)
    if units.ndim == 2:
        return _align_host(units, int(n_frames), mode)
    if units.ndim != 3:
        raise ValueError(f"expected units of shape (T, C) or (B, T, C), got {units.shape}")
    b, t, c = units.shape
    unit_lengths = np.broadcast_to(t if unit_lengths is None else np.asarray(unit_lengths), (b,))
    n_frames = np.broadcast_to(np.asarray(n_frames), (b,))
    out = np.zeros((b, int(n_frames.max()) if b else 0, c), np.float32)
    for j in range(b):
        n = int(n_frames[j])
        out[j, :n] = _align_host(units[j, : int(unit_lengths[j])], n, mode)
    return out


def _align_host(x: np.ndarray, n: int, mode: str) -> np.ndarray:
    """:func:`svcjax.audio.features.align_frames` of ``(T, C)`` float32: a host gather with the
    same index table for ``nearest`` / ``left`` (no program per length); ``linear`` blends
    the gathered rows in a jitted program on bucketed shapes (NumPy's float32
    ``(1 - w) a + w b`` can differ from XLA's by an ulp), one per (source, target) bucket."""
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; expected one of {ALIGN_MODES}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be (..., frames, channels) with at least one frame, got "
                         f"shape {x.shape}")
    if n < 0:
        raise ValueError(f"target_len must be >= 0, got {n}")
    i0, i1, w1 = align_table(x.shape[0], n, mode)
    if mode != "linear":
        return x[i0]
    if n == 0:
        return np.zeros((0, x.shape[1]), np.float32)
    sb, nb = runner.frame_bucket(x.shape[0]), runner.frame_bucket(n)
    xp = np.zeros((sb, x.shape[1]), np.float32)
    xp[:x.shape[0]] = x
    tables = [np.zeros(nb, np.int32), np.zeros(nb, np.int32), np.zeros(nb, np.float32)]
    for t, v in zip(tables, (i0, i1, w1)):
        t[:n] = v
    return np.asarray(_blend(xp, *tables))[:n]


@jax.jit
def _blend(x, i0, i1, w1):
    """``(1 - w1) x[i0] + w1 x[i1]``, as :func:`svcjax.audio.features.align_frames`'s."""
    a, b = jnp.take(x, i0, axis=0), jnp.take(x, i1, axis=0)
    w = w1[:, None]
    return (1.0 - w) * a + w * b


def _as_batch(wav, lengths) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(wav, (list, tuple)):
        clips = [np.asarray(w, np.float32) for w in wav]
        for j, w in enumerate(clips):
            if w.ndim != 1:
                raise ValueError(f"clip {j} has shape {w.shape}; expected mono samples (L,)")
        if lengths is not None:
            raise ValueError("pass lengths only with a padded (B, L) array, not a list of clips")
        if not clips:
            raise ValueError("no clips to encode")
        lengths = np.array([len(w) for w in clips])
        wav = np.zeros((len(clips), int(lengths.max())), np.float32)
        for j, w in enumerate(clips):
            wav[j, : len(w)] = w
        return wav, lengths
    wav = np.asarray(wav, np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2 or wav.shape[0] == 0:
        raise ValueError(f"expected mono 16 kHz samples (L,) or a batch (B, L), got shape {wav.shape}")
    if lengths is None:
        lengths = np.full((wav.shape[0],), wav.shape[1])
    lengths = np.asarray(lengths).astype(np.int64).reshape(-1)
    if lengths.shape != (wav.shape[0],) or (lengths > wav.shape[1]).any() or (lengths < 0).any():
        raise ValueError(f"lengths {lengths.tolist()} do not fit a batch of shape {wav.shape}")
    return wav, lengths


class ContentEncoder:
    """A content encoder ready to run: parameters, config, compiled programs per device count.

    Calls take 16 kHz mono audio: ``(L,)``, a padded batch ``(B, L)`` with ``lengths``, or a
    list of clips, and return NumPy units ``(B, T, C)`` (``T`` = the longest clip's frames;
    frames past a shorter clip's end are zero). A call pads to a length bucket (:meth:`bucket`)
    and runs ``row_count(B)`` rows split over the local devices (one clip: one device); on a
    multi-host job each process encodes its own clips. ``model`` / ``params`` are the Flax
    module and its parameters, for use inside your own jitted code.
    """

    sample_rate = ce.SAMPLE_RATE

    def __init__(self, params: Any, config: ml_collections.ConfigDict, *, pretrained: bool = True,
                 source: str | None = None, dtype: Any = None, precision: Any = None,
                 min_bucket: int = 16000, bucket_growth: float = 1.25,
                 attention_block: int = 1024, devices=None, runtime=None):
        self.config = config
        self.kind = encoders.get_kind(config.kind)
        self.family = encoders.family_of(config)
        self._net = encoders.model_module(self.family)
        self.model = self._net.build_model(config, dtype=dtype, precision=precision,
                                           attention_block=attention_block)
        self.params = self._prune(params)
        self.pretrained = pretrained
        self.source = source
        self.min_bucket = int(min_bucket)
        self.bucket_growth = float(bucket_growth)
        self.runtime = runtime or runner.shared(devices)

    @property
    def trace_count(self) -> int:
        """Traces of the forward pass for this network (all encoders sharing it), from the
        runtime's count."""
        return sum(self.runtime.trace_counts("encoder", lambda k: k == (self.model,)).values())

    # -- shapes ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self._net.unit_dim(self.config))

    @property
    def hop(self) -> int:
        """Input samples per output frame (320: 50 frames per second at 16 kHz)."""
        return int(self._net.hop(self.config))

    def num_frames(self, n_samples):
        """Unit frames of a clip of ``n_samples`` samples (int or array)."""
        return self._net.num_frames(n_samples, self.config)

    @property
    def max_samples(self) -> int | None:
        """The longest clip the network takes (``None``: any length)."""
        m = self._net.max_samples(self.config)
        return None if m is None else int(m)

    def __repr__(self):
        weights = "pretrained" if self.pretrained else "RANDOM weights (not pretrained)"
        return (f"ContentEncoder(kind={self.kind.name}, family={self.family}, dim={self.dim}, "
                f"{weights}" + (f", from {self.source}" if self.source else "") + ")")

    def _prune(self, params):
        shapes = jax.eval_shape(self.model.init, jax.random.key(0),
                                jax.ShapeDtypeStruct((1, 16000), jnp.float32),
                                jax.ShapeDtypeStruct((1,), jnp.int32))["params"]
        want = traverse_util.flatten_dict(shapes)
        have = traverse_util.flatten_dict(dict(params.get("params", params)))
        missing = [p for p in want if p not in have]
        wrong = [p for p in want if p in have and tuple(np.shape(have[p])) != want[p].shape]
        if missing or wrong:
            raise ValueError(
                f"parameters do not fit a {self.kind.name} encoder built from its config: "
                f"missing {['/'.join(p) for p in missing][:8]}, "
                f"wrong shape {['/'.join(p) for p in wrong][:8]}")
        return traverse_util.unflatten_dict({p: jnp.asarray(have[p]) for p in want})

    # -- running --------------------------------------------------------------------------
    def encode(self, wav, lengths=None) -> tuple[np.ndarray, np.ndarray]:
        """``(units (B, T, C), frames (B,))``: units and each clip's number of valid frames."""
        wav, lengths = _as_batch(wav, lengths)
        frames = np.asarray(self.num_frames(lengths)).reshape(-1)
        short = np.flatnonzero(frames < 1)
        if short.size:
            j = int(short[0])
            raise ValueError(
                f"clip {j} has {int(lengths[j])} samples at 16 kHz; the {self.kind.name} encoder "
                f"needs at least {self.min_samples} (one frame)")
        longest = self.max_samples
        if longest is not None and int(lengths.max()) > longest:
            j = int(np.argmax(lengths))
            raise ValueError(
                f"clip {j} has {int(lengths[j])} samples at 16 kHz; the {self.kind.name} encoder "
                f"takes at most {longest} ({longest / ce.SAMPLE_RATE:g} s): slice it first")
        b = wav.shape[0]
        rt = self.runtime
        target = self.bucket(int(lengths.max()))
        rows = rt.rows(b)
        padded = np.zeros((b, target), np.float32)
        cols = min(target, wav.shape[1])
        padded[:, :cols] = wav[:, :cols]
        inputs = rt.put_rows(rt.pad_rows([padded, lengths.astype(np.int32)], rows), rows)
        params = rt.params("encoder", self.params, rows, owner=self)
        model = self.model
        fn = rt.program("encoder", (model,), lambda: functools.partial(_forward, model))
        units, _ = fn(params, *inputs)
        t = int(frames.max())
        return np.asarray(units, np.float32)[:b, :t], frames

    def bucket(self, n_samples: int) -> int:
        """The padded length a clip of ``n_samples`` runs at (one compiled program per bucket).

        Buckets grow by ``bucket_growth`` from ``min_bucket`` in multiples of the hop;
        ``bucket_growth <= 1`` pads only to a multiple of the hop (a program per length). A
        fixed-window network (Whisper: every clip costs a 30 s window) pads to whole windows.
        """
        window = getattr(self._net, "window_samples", None)
        if window is not None:  # a fixed-window network (Whisper): one program per window count
            w = int(window(self.config))
            return max(1, -(-int(n_samples) // w)) * w
        if self.bucket_growth <= 1:
            target = -(-int(n_samples) // self.hop) * self.hop
        else:
            target = buckets.bucket_length(int(n_samples), min_len=self.min_bucket,
                                           growth=self.bucket_growth, multiple=self.hop)
        longest = self.max_samples
        return target if longest is None else max(min(target, longest), int(n_samples))

    def __call__(self, wav, lengths=None) -> np.ndarray:
        return self.encode(wav, lengths)[0]

    @property
    def min_samples(self) -> int:
        """The shortest clip that gives one frame (400 samples, 25 ms, for HuBERT-base)."""
        return int(self._net.min_samples(self.config))

    def frames(self, wav, n_frames, lengths=None, mode: str = "nearest") -> np.ndarray:
        """Units stretched to ``n_frames`` frames per clip (the So-VITS frame rate, 44.1 kHz/512).

        ``n_frames`` is an int or one per clip (e.g. the clip's F0 length); ``mode`` as
        :func:`interpolate_units`. Returns ``(B, max(n_frames), C)``.
        """
        units, frames = self.encode(wav, lengths)
        return interpolate_units(units, n_frames, mode, frames)


def _forward(model, params, wav, lengths):
    return model.apply({"params": params}, wav, lengths)


def _kind_config(config: ml_collections.ConfigDict, kind: str | None) -> ml_collections.ConfigDict:
    if kind is None or kind == config.kind:
        return config
    want = encoders.get_kind(kind)
    family = encoders.family_of(config)
    if want.family != family:
        raise ValueError(f"this model was imported as {config.kind} ({family} family); it cannot "
                         f"compute {kind} units, which need {want.source}")
    if family == "hubert":
        have_soft = config.get("layout", "") == "hubert_soft"
        if (want.name == "hubertsoft") != have_soft:
            raise ValueError(
                f"this model was imported as {config.kind} from a "
                f"{'HuBERT-Soft' if have_soft else 'ContentVec/HuBERT'} checkpoint; it cannot "
                f"compute {kind} units")
    config = ml_collections.ConfigDict(config.to_dict())
    config.kind = kind
    return config


def load_content_encoder(path: str | os.PathLike, kind: str | None = None, **kwargs) -> ContentEncoder:
    """A :class:`ContentEncoder` from a checkpoint file or an imported model directory.

    Files: ContentVec / HuBERT fairseq checkpoints (``checkpoint_best_legacy_500.pt``), Hugging
    Face ``HubertModel`` weights (``pytorch_model.bin`` / ``model.safetensors``, or their
    directory) and HuBERT-Soft (``hubert-soft-0d54a1f4.pt``); ``kind`` picks what to extract
    (default: ``vec768l12``, or ``hubertsoft`` for a HuBERT-Soft file). A directory written
    by ``svcjax import-encoder`` loads faster. ``kwargs`` go to :class:`ContentEncoder`.
    """
    from svcjax.train import checkpoint

    path = os.fspath(path)
    if checkpoint.is_model_dir(path):
        params, config = checkpoint.load_model_dir(path)
        kwargs.setdefault("pretrained", bool(config.get("pretrained", True)))
        return ContentEncoder(params, _kind_config(config, kind), source=path, **kwargs)
    from svcjax.interop.content_encoder import import_encoder
    params, config = import_encoder(path, kind)
    return ContentEncoder(params, config, source=path, **kwargs)


def init_content_encoder(kind: str = "vec768l12", rng: Any = 0,
                         config: ml_collections.ConfigDict | None = None, **kwargs) -> ContentEncoder:
    """A randomly initialised encoder (no pretrained file): full size unless ``config`` is given.

    Its units carry no linguistic content; it exists for demos and tests without the
    user-supplied weights (``repr`` and ``.pretrained`` say so).
    """
    net = encoders.model_module(encoders.get_kind(kind).family)
    config = net.default_config(kind) if config is None else config
    if config.kind != kind:
        config = ml_collections.ConfigDict(config.to_dict())
        config.kind = kind
    # An int seed uses XLA's RngBitGenerator keys: the init program compiles twice as fast as
    # with threefry (this runs once, for a demo); pass a key to choose its implementation.
    key = jax.random.key(rng, impl="rbg") if isinstance(rng, int) else rng
    model = net.build_model(config, full=True)
    n = max(int(net.min_samples(config)), 400)
    params = jax.jit(model.init)(key, jnp.zeros((1, n), jnp.float32),
                                 jnp.full((1,), n, jnp.int32))["params"]
    return ContentEncoder(params, config, pretrained=False, **kwargs)
