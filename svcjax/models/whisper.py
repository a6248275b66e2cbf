"""Whisper's audio encoder in Flax: So-VITS-SVC's ``whisper-ppg`` / ``whisper-ppg-large`` units.

=====================  =====================================  =========================  ====
kind                   checkpoint the reference loads         network                    dim
=====================  =====================================  =========================  ====
``whisper-ppg``        OpenAI's ``medium.pt``                 24 layers, 16 heads        1024
``whisper-ppg-large``  OpenAI's ``large-v2.pt``               32 layers, 20 heads        1280
=====================  =====================================  =========================  ====

Both kinds run the same code on whatever ``dims`` the checkpoint records, so any size of
Whisper loads under either name (the name only says which ``speech_encoder`` it serves). The
reference's front-end accepts only 80 mel bins; svcjax builds the filterbank for the
checkpoint's ``n_mels`` (so large-v3's 128 would load too, beyond the reference).

What the reference computes for a clip of ``n`` samples at 16 kHz (``n <= 480000``, 30 s):

1. the clip is padded with zeros to exactly 30 s (``pad_or_trim``);
2. log-mel spectrogram: centred STFT (400-point periodic Hann window, hop 160, reflect
   padding of 200 samples at both ends), power spectrum, the last of the 3001 frames
   dropped, a Slaney mel filterbank (``librosa.filters.mel(sr=16000, n_fft=400)``), ``log10``
   of the power clamped at 1e-10, floored at the maximum *over the whole padded 30 s* minus 8,
   then ``(x + 4) / 4``;
3. two convolutions (kernel 3, the second with stride 2: 3000 -> 1500 frames) with GELU,
   the (checkpoint's) sinusoidal position table added, pre-LN transformer blocks (attention
   scaled by ``d ** -0.25`` on both queries and keys, 4x GELU MLP), a final LayerNorm;
4. units = the first ``n // 320`` of the 1500 frames (50 Hz).

Attention is not masked: every output frame depends on the zero padding to 30 s, so svcjax
runs the full 30 s window for every clip, exactly as the reference does, and a padded batch
gives each clip the frames it gives alone (samples past a row's length are zeroed first).

Clips longer than 30 s: the reference trims them to 30 s and returns at most 1500 frames,
which So-VITS-SVC then stretches over the whole clip's F0 frames, silently misaligning
everything after 30 s. svcjax instead cuts a long clip into consecutive 30 s windows and
encodes each as the reference encodes a 30 s (or, for the last, shorter) clip, concatenating
their frames: ``n // 320`` frames in all, each window's frames identical to the reference's
on that window. A clip of at most 30 s is one window, so nothing changes for it.

Parameter names follow OpenAI's state_dict under ``encoder.`` (``conv1``, ``conv2``,
``positional_embedding``, ``blocks.N.attn.query``, ``blocks.N.mlp.0``, ``ln_post``); the
position table is a parameter because the reference loads it from the checkpoint (float16
in OpenAI's files).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from svcjax.audio.spectrogram import mel_filterbank
from svcjax.models.layers import Conv1d, LayerNorm, Linear

Array = jax.Array

__all__ = [
    "FAMILY",
    "KIND_DIMS",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "default_config",
    "build_model",
    "num_frames",
    "min_samples",
    "max_samples",
    "window_samples",
    "unit_dim",
    "hop",
    "sinusoids",
    "log_mel",
    "WhisperEncoder",
]

FAMILY = "whisper"
SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
WINDOW_SAMPLES = 30 * SAMPLE_RATE            # the reference's pad_or_trim length (N_SAMPLES)
MEL_FRAMES = WINDOW_SAMPLES // HOP_LENGTH    # 3000
HOP = 2 * HOP_LENGTH                         # 320 samples per unit frame (50 Hz)
WINDOW_FRAMES = WINDOW_SAMPLES // HOP         # 1500

# The encoder dims of the OpenAI checkpoint each kind's reference class loads by default.
KIND_DIMS: dict[str, dict[str, int]] = {
    "whisper-ppg": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=1024, n_audio_head=16,
                        n_audio_layer=24),           # medium.pt
    "whisper-ppg-large": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                              n_audio_layer=32),     # large-v2.pt
}


def _check_kind(kind: str) -> None:
    if kind not in KIND_DIMS:
        raise ValueError(f"unknown Whisper kind {kind!r}; known: {', '.join(KIND_DIMS)}")


def default_config(kind: str = "whisper-ppg", **overrides) -> ml_collections.ConfigDict:
    """The full-size config of ``kind`` (override the dims for small test models)."""
    _check_kind(kind)
    cfg = ml_collections.ConfigDict(dict(kind=kind, family=FAMILY, **KIND_DIMS[kind]))
    for key, value in overrides.items():
        if key not in cfg or key in ("kind", "family"):
            raise KeyError(f"unknown Whisper config field {key!r}; known: "
                           f"{', '.join(k for k in cfg if k not in ('kind', 'family'))}")
        cfg[key] = int(value)
    return cfg


def num_frames(n_samples, config=None):
    """Unit frames of a clip of ``n_samples`` (ints or NumPy/JAX arrays): ``n // 320``."""
    if isinstance(n_samples, jax.Array):
        return n_samples // HOP
    n = np.asarray(n_samples) // HOP
    return int(n) if np.ndim(n) == 0 else n


def min_samples(config=None) -> int:
    """The shortest clip that gives a unit frame."""
    return HOP


def max_samples(config=None) -> None:
    """None: longer clips are encoded in consecutive 30 s windows (see the module docstring)."""
    return None


def window_samples(config=None) -> int:
    """Samples per encoded window (30 s): any input length up to a multiple of it costs the
    same, so a runner may pad to a multiple of it without extra work (one program per count)."""
    return WINDOW_SAMPLES


def unit_dim(config) -> int:
    return int(config.n_audio_state)


def hop(config=None) -> int:
    return HOP


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's position table: ``[sin(t * f_i), cos(t * f_i)]`` with geometric ``f_i``.

    Computed in float32 as torch does (``exp`` of float32 increments, float32 products).
    """
    if channels % 2:
        raise ValueError(f"the position table needs an even width, got {channels}")
    half = channels // 2
    increment = np.float32(np.log(max_timescale) / (half - 1))
    inv = np.exp(-increment * np.arange(half, dtype=np.float32)).astype(np.float32)
    t = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _hann() -> np.ndarray:
    n = np.arange(N_FFT, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)  # periodic


def log_mel(wav: Array, n_mels: int = 80, precision: Any = lax.Precision.HIGHEST) -> Array:
    """Whisper's normalised log-mel of 30 s windows: ``(N, 480000)`` -> ``(N, 3000, n_mels)``.

    Zero-padded windows reproduce ``log_mel_spectrogram(pad_or_trim(clip))``; the floor at the
    maximum minus 8 is taken over each window's whole spectrogram, as there.
    """
    x = wav.astype(jnp.float32)
    pad = N_FFT // 2
    # reflect padding (torch.stft's pad_mode='reflect'): x[pad], ..., x[1] | x | x[-2], ...
    x = jnp.concatenate([x[:, pad:0:-1], x, x[:, -2:-pad - 2:-1]], axis=1)
    n_frames = (x.shape[1] - N_FFT) // HOP_LENGTH + 1                  # 3001
    idx = np.arange(n_frames - 1)[:, None] * HOP_LENGTH + np.arange(N_FFT)[None, :]
    frames = x[:, idx] * jnp.asarray(_hann())                           # last frame dropped
    spec = jnp.fft.rfft(frames, axis=-1)
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    fb = jnp.asarray(mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, 0.0, None))   # (201, n_mels)
    mel = jnp.matmul(power, fb, precision=precision)
    logs = jnp.log10(jnp.maximum(mel, 1e-10))
    peak = jnp.max(logs, axis=(1, 2), keepdims=True)
    logs = jnp.maximum(logs, peak - 8.0)
    return (logs + 4.0) / 4.0


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)  # torch's default (erf) GELU


class Attention(nn.Module):
    """Whisper's unmasked multi-head self-attention (``query``/``key``/``value``/``out``;
    the key projection has no bias). Queries go in blocks of at most ``query_block`` frames
    (a ``lax.map``), bounding the score matrix on long windows."""

    num_heads: int
    query_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, t, c = x.shape
        h = self.num_heads
        if c % h:
            raise ValueError(f"attention: width {c} not divisible by {h} heads")
        d = c // h
        scale = d ** -0.25
        lin = dict(dtype=self.dtype, precision=self.precision)
        q = (Linear(c, name="query", **lin)(x) * scale).reshape(b, t, h, d)
        k = (Linear(c, use_bias=False, name="key", **lin)(x) * scale).reshape(b, t, h, d)
        v = Linear(c, name="value", **lin)(x).reshape(b, t, h, d)

        def attend(qb):
            logits = jnp.einsum("bqhd,bkhd->bhqk", qb, k, precision=self.precision)
            weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
            return jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=self.precision)

        nblk = max(1, -(-t // max(1, self.query_block)))
        if nblk == 1:
            out = attend(q)
        else:
            blk = -(-t // nblk)
            qp = jnp.pad(q, ((0, 0), (0, nblk * blk - t), (0, 0), (0, 0)))
            qp = qp.reshape(b, nblk, blk, h, d).swapaxes(0, 1)
            out = lax.map(attend, qp).swapaxes(0, 1).reshape(b, nblk * blk, h, d)[:, :t]
        return Linear(c, name="out", **lin)(out.reshape(b, t, c))


class Block(nn.Module):
    """A pre-LN residual block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    num_heads: int
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        lin = dict(dtype=self.dtype, precision=self.precision)
        c = x.shape[-1]
        x = x + Attention(self.num_heads, self.attention_block, name="attn", **lin)(
            LayerNorm(name="attn_ln")(x))
        y = LayerNorm(name="mlp_ln")(x)
        y = _gelu(Linear(4 * c, name="mlp_0", **lin)(y))
        return x + Linear(c, name="mlp_2", **lin)(y)


class AudioEncoder(nn.Module):
    """Log-mel frames ``(N, 3000, n_mels)`` -> encoder states ``(N, 1500, n_state)``.

    The blocks keep their own parameters (``blocks_0`` ..., as in the checkpoint) but run as
    one ``lax.scan`` over their stacked parameters, so XLA compiles one block, not 24 or 32.
    """

    n_ctx: int
    n_state: int
    n_head: int
    n_layer: int
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, mel: Array) -> Array:
        lin = dict(dtype=self.dtype, precision=self.precision)
        x = _gelu(Conv1d(self.n_state, 3, padding=1, name="conv1", **lin)(mel))
        x = _gelu(Conv1d(self.n_state, 3, stride=2, padding=1, name="conv2", **lin)(x))
        table = self.param("positional_embedding",
                           lambda _k: jnp.asarray(sinusoids(self.n_ctx, self.n_state)))
        t = x.shape[1]
        if t > table.shape[0]:
            raise ValueError(f"{t} encoder frames exceed the position table's {table.shape[0]}")
        x = x + table[:t].astype(x.dtype)
        n = self.n_layer
        if n:
            block = Block(self.n_head, self.attention_block, parent=None, **lin)
            if self.is_initializing():
                fresh = jax.vmap(lambda key: block.init(
                    key, jnp.zeros((1, 1, self.n_state), x.dtype))["params"])(
                        jax.random.split(self.make_rng("params"), n))
                for i in range(n):
                    self.param(f"blocks_{i}", lambda _key, i=i: jax.tree.map(lambda a: a[i], fresh))
            params = self.variables["params"]
            stacked = jax.tree.map(lambda *p: jnp.stack(p),
                                   *[params[f"blocks_{i}"] for i in range(n)])
            x, _ = lax.scan(lambda h, p: (block.apply({"params": p}, h), None), x, stacked)
        return LayerNorm(name="ln_post")(x)


class WhisperEncoder(nn.Module):
    """16 kHz audio ``(B, L)`` with ``lengths`` -> ``(units (B, T, C), frames (B,))``.

    ``T`` is 1500 per started 30 s window of ``L``; ``frames = lengths // 320``; frames past a
    clip's end are zero. ``mel_only=True`` returns the log-mel windows instead (for checks).
    """

    n_mels: int = 80
    n_ctx: int = 1500
    n_state: int = 1024
    n_head: int = 16
    n_layer: int = 24
    attention_block: int = 1024
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, wav: Array, lengths: Array | None = None, *, mel_only: bool = False):
        wav = jnp.asarray(wav, jnp.float32)
        if wav.ndim != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {wav.shape}")
        b, n = wav.shape
        lengths = (jnp.full((b,), n, jnp.int32) if lengths is None
                   else jnp.minimum(jnp.asarray(lengths, jnp.int32), n))
        if self.is_initializing() and not mel_only:
            # The parameters do not depend on the input: initialise on a few mel frames instead
            # of a 30 s window (the init program compiles in a fraction of the time).
            x = AudioEncoder(self.n_ctx, self.n_state, self.n_head, self.n_layer,
                             self.attention_block, dtype=self.dtype, precision=self.precision,
                             name="encoder")(jnp.zeros((b, 4, self.n_mels), jnp.float32))
            return x, lengths // HOP
        wins = max(1, -(-n // WINDOW_SAMPLES))
        wav = jnp.where(jnp.arange(n)[None, :] < lengths[:, None], wav, 0.0)
        wav = jnp.pad(wav, ((0, 0), (0, wins * WINDOW_SAMPLES - n)))
        mel = log_mel(wav.reshape(b * wins, WINDOW_SAMPLES), self.n_mels)
        if mel_only:
            return mel.reshape(b, wins, MEL_FRAMES, self.n_mels)
        x = AudioEncoder(self.n_ctx, self.n_state, self.n_head, self.n_layer,
                         self.attention_block, dtype=self.dtype, precision=self.precision,
                         name="encoder")(mel)
        x = x.reshape(b, wins * WINDOW_FRAMES, self.n_state)
        frames = lengths // HOP
        keep = jnp.arange(x.shape[1])[None, :] < frames[:, None]
        return jnp.where(keep[..., None], x, 0).astype(x.dtype), frames


def build_model(config, *, dtype: Any = None, precision: Any = None, attention_block: int = 1024,
                full: bool = False) -> WhisperEncoder:
    """The :class:`WhisperEncoder` of ``config`` (every layer is used: ``full`` changes nothing)."""
    _check_kind(config.kind)
    if int(config.n_audio_ctx) < WINDOW_FRAMES:
        raise ValueError(
            f"a Whisper encoder with n_audio_ctx {config.n_audio_ctx} cannot take the 30 s "
            f"window ({WINDOW_FRAMES} frames) the reference pads every clip to")
    del full
    return WhisperEncoder(
        n_mels=int(config.n_mels), n_ctx=int(config.n_audio_ctx),
        n_state=int(config.n_audio_state), n_head=int(config.n_audio_head),
        n_layer=int(config.n_audio_layer), attention_block=attention_block, dtype=dtype,
        precision=precision)
