"""Spectrograms with So-VITS-SVC 4.1's exact framing: linear, training mel and vocoder mel.

Audio is ``(..., L)`` float (usually ``(B, L)``, values in [-1, 1]); features come back
channels-last ``(..., T, C)`` in float32. Every function is jit-compiled (sizes are static
arguments) and can be called inside another jit.

=========================  ==========================================  =====================
function                   what (reference)                            frames, channels
=========================  ==========================================  =====================
:func:`linear_spectrogram` posterior-encoder input, ``sqrt(|X|^2 +     ``L // 512``, 1025
                           1e-6)`` (mel_processing.spectrogram_torch)
:func:`mel_spectrogram`    training mel-loss target, 80 Slaney bins    ``L // 512``, 80
                           0-22050 Hz, ``ln(max(mel, 1e-5))``
                           (mel_spectrogram_torch)
:func:`spec_to_mel`        the same mel from a linear spectrogram      as its input, 80
                           (spec_to_mel_torch)
:func:`vocoder_mel`        NSF-HiFiGAN / diffusion mel, 128 bins       ``L // 512``, 128
                           40-16000 Hz, ``sqrt(|X|^2 + 1e-9)``, with
                           key-shift / speed (nvSTFT.STFT.get_mel)
=========================  ==========================================  =====================

Framing (both STFTs): the signal is reflect-padded by ``(win - hop) // 2`` on the left (and
about as much on the right), then cut into frames of ``n_fft`` every ``hop`` samples with no
further centring, each frame multiplied by a periodic Hann window; so a clip of ``L`` samples
gives exactly ``L // hop`` frames, frame ``t`` centred on sample ``t * hop + hop / 2``.
Reflection needs the clip to be longer than the pad (768 samples at the defaults).

Mel filterbanks are computed once on the host with ``librosa.filters.mel`` (Slaney scale and
normalisation, as the reference) and applied on the device at full float32 precision.

Padded batches: pass ``lengths`` (``(B,)`` valid samples per row) and each row is reflected
at its own end, so its first ``lengths[b] // hop`` frames equal those of the unpadded clip;
the frames after those are padding (unspecified values; mask them).

Key shift (``vocoder_mel``): the reference analyses with an FFT ``2^(k/12)`` times longer
(a Hann window of the same length), keeps the first ``n_fft // 2 + 1`` bins (zero-filled when
fewer) and scales by ``win / win_new``; shifting the harmonics by ``k`` semitones on the mel
axis. A Python-number ``keyshift`` runs that exact-size FFT (one compilation per value);
an array ``keyshift`` (a scalar or one value per row) runs a jit-friendly chirp-z transform of
the varying length, so a whole corpus of random key shifts compiles once.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svcjax.audio.constants import HOP, SAMPLING_RATE

__all__ = [
    "num_frames", "mel_filterbank", "hann_window", "stft", "linear_spectrogram",
    "spec_to_mel", "mel_spectrogram", "vocoder_mel", "dynamic_range_compression",
]

_HIGHEST = lax.Precision.HIGHEST


def num_frames(length: int, hop_length: int = HOP) -> int:
    """Frames the reference's spectrograms, mels and volume give for ``length`` samples."""
    return int(length) // int(hop_length)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sampling_rate: int = SAMPLING_RATE, n_fft: int = 2048, n_mels: int = 80,
                   fmin: float = 0.0, fmax: float | None = 22050.0) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` float32 Slaney mel filterbank (``librosa.filters.mel``).

    Transposed from librosa's layout so ``spectrogram @ filterbank`` maps ``(..., T, F)`` to
    ``(..., T, n_mels)``. Cached; the returned array is read-only.
    """
    import librosa  # host-only, imported lazily

    fb = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                             fmax=fmax)
    fb = np.ascontiguousarray(fb.T, dtype=np.float32)
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=32)
def hann_window(win_length: int, n_fft: int | None = None) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window``), zero-padded to ``n_fft`` in the centre."""
    n_fft = win_length if n_fft is None else n_fft
    if win_length > n_fft:
        raise ValueError(f"win_length {win_length} exceeds n_fft {n_fft}")
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    w = np.pad(w, (left, n_fft - win_length - left)).astype(np.float32)
    w.setflags(write=False)
    return w


def dynamic_range_compression(x: jax.Array, clip_val: float = 1e-5) -> jax.Array:
    """``ln(max(x, clip_val))``: the log the reference applies to every mel."""
    return jnp.log(jnp.maximum(x, clip_val))


# ----------------------------------------------------------------------------- framing


def _flatten(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError("audio must have at least one (time) axis")
    lead = x.shape[:-1]
    return x.reshape((math.prod(lead), x.shape[-1])), lead


def _reflect_index(i: jax.Array, length: jax.Array) -> jax.Array:
    """Map indices outside ``[0, length)`` back inside by one reflection (no edge repeat)."""
    i = jnp.abs(i)
    return jnp.where(i >= length, 2 * (length - 1) - i, i)


def _pad(x: jax.Array, left: int, right: int, mode: str,
         lengths: jax.Array | None) -> jax.Array:
    """Pad ``(B, L)`` rows; with ``lengths`` each row is reflected at its own end."""
    if lengths is None:
        if mode == "reflect" and max(left, right) >= x.shape[-1]:
            raise ValueError(f"audio of {x.shape[-1]} samples is too short for the "
                             f"spectrogram's reflect padding ({max(left, right)} samples); "
                             f"need more than that")
        return jnp.pad(x, ((0, 0), (left, right)), mode=mode)
    length = lengths.astype(jnp.int32)[:, None]
    src = jnp.arange(x.shape[-1] + left + right, dtype=jnp.int32)[None, :] - left
    if mode == "reflect":
        src = _reflect_index(src, length)
        inside = None
    else:
        inside = (src >= 0) & (src < length)
    src = jnp.clip(src, 0, x.shape[-1] - 1)
    out = jnp.take_along_axis(x, jnp.broadcast_to(src, (x.shape[0], src.shape[-1])), axis=-1)
    return out if inside is None else jnp.where(inside, out, 0.0)


def _frames(x: jax.Array, frame_length: int, hop: int, n_frames: int) -> jax.Array:
    """``(B, Lp) -> (B, n_frames, frame_length)`` with ``out[b, t, n] = x[b, t * hop + n]``.

    Built from ``hop``-sized blocks (reshape + shifted slices), which lowers to plain copies
    on every backend instead of a gather.
    """
    m = -(-frame_length // hop)
    need = (n_frames + m - 1) * hop
    if x.shape[-1] < need:
        x = jnp.pad(x, ((0, 0), (0, need - x.shape[-1])))
    blocks = x[:, :need].reshape(x.shape[0], n_frames + m - 1, hop)
    frames = jnp.concatenate([blocks[:, i:i + n_frames] for i in range(m)], axis=-1)
    return frames[..., :frame_length]


def _check_audio(audio, pad: int, lengths, what: str = "audio") -> None:
    """Validate shapes and (concrete) lengths before tracing: one clear error, not a trace."""
    shape = jnp.shape(audio)
    if len(shape) == 0:
        raise ValueError(f"{what} must have a time axis, got a scalar")
    total = shape[-1]
    if lengths is None:
        if total <= pad:
            raise ValueError(f"{what} of {total} samples is too short: the reference's "
                             f"reflect padding needs more than {pad} samples")
        return
    if isinstance(lengths, jax.core.Tracer):
        return
    arr = np.asarray(lengths)
    rows = int(np.prod(shape[:-1]))
    if len(shape) != 2 or arr.shape != (rows,):
        raise ValueError(f"lengths needs (B, L) {what} and shape (B,); got {what} {shape} and "
                         f"lengths {arr.shape}")
    if arr.size and (arr.min() <= pad or arr.max() > total):
        raise ValueError(f"lengths must lie in ({pad}, {total}] samples (longer than the "
                         f"reflect padding, at most the padded length); got "
                         f"{arr.min()}..{arr.max()}")


def stft(audio: jax.Array, n_fft: int, hop_length: int, win_length: int | None = None, *,
         pad: tuple[int, int] | None = None, pad_mode: str = "reflect",
         lengths: jax.Array | None = None) -> jax.Array:
    """Complex STFT ``(..., L) -> (..., T, n_fft // 2 + 1)`` as ``torch.stft(center=False)``.

    The signal is first padded by ``pad = (left, right)`` (default ``(n_fft - hop) // 2``
    each side, the reference's framing) with ``pad_mode`` (``"reflect"`` or ``"constant"``),
    then framed every ``hop_length`` samples, windowed by a periodic Hann window of
    ``win_length`` centred in ``n_fft``, and transformed; ``T = (L + left + right - n_fft)
    // hop + 1``.
    """
    return _stft(audio, n_fft, hop_length, win_length or n_fft, pad, pad_mode, lengths)


def _stft(audio, n_fft, hop, win, pad, pad_mode, lengths):
    x, lead = _flatten(audio)
    x = x.astype(jnp.float32)
    left, right = ((n_fft - hop) // 2,) * 2 if pad is None else pad
    lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    xp = _pad(x, left, right, pad_mode, lengths)
    t = (xp.shape[-1] - n_fft) // hop + 1
    if t < 1:
        raise ValueError(f"audio of {x.shape[-1]} samples gives no {n_fft}-sample frame")
    frames = _frames(xp, n_fft, hop, t) * jnp.asarray(hann_window(win, n_fft))
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)
    return spec.reshape(lead + spec.shape[1:])


def _magnitude(spec: jax.Array, eps: float) -> jax.Array:
    return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + eps)


def _mel(spec, fb, clip_val):
    mel = jnp.matmul(spec, jnp.asarray(fb), precision=_HIGHEST)
    return dynamic_range_compression(mel, clip_val)


def linear_spectrogram(audio: jax.Array, *, n_fft: int = 2048, hop_length: int = HOP,
                       win_length: int = 2048, lengths: jax.Array | None = None) -> jax.Array:
    """Linear magnitude spectrogram ``(..., L) -> (..., L // hop, n_fft // 2 + 1)``.

    ``sqrt(re^2 + im^2 + 1e-6)`` of the reference's STFT (``spectrogram_torch``): the
    posterior encoder's input (1025 bins at the defaults).
    """
    _check_audio(audio, (n_fft - hop_length) // 2, lengths)
    return _linear_jit(audio, lengths, n_fft=int(n_fft), hop_length=int(hop_length),
                       win_length=int(win_length))


@functools.partial(jax.jit, static_argnames=("n_fft", "hop_length", "win_length"))
def _linear_jit(audio, lengths, *, n_fft, hop_length, win_length):
    return _magnitude(_stft(audio, n_fft, hop_length, win_length, None, "reflect", lengths),
                      1e-6)


def spec_to_mel(spec: jax.Array, *, sampling_rate: int = SAMPLING_RATE, n_fft: int = 2048,
                n_mels: int = 80, fmin: float = 0.0,
                fmax: float | None = 22050.0) -> jax.Array:
    """Log-mel of a linear spectrogram ``(..., T, n_fft // 2 + 1) -> (..., T, n_mels)``.

    ``ln(max(spec @ mel_filterbank, 1e-5))`` (``spec_to_mel_torch``): the mel-loss target the
    reference computes from the stored spectrogram.
    """
    if jnp.shape(spec)[-1] != n_fft // 2 + 1:
        raise ValueError(f"spectrogram must have n_fft // 2 + 1 = {n_fft // 2 + 1} channels "
                         f"(last axis), got shape {jnp.shape(spec)}")
    return _spec_to_mel_jit(spec, **_mel_kw(sampling_rate, n_fft, n_mels, fmin, fmax))


def _mel_kw(sampling_rate, n_fft, n_mels, fmin, fmax):
    return dict(sampling_rate=int(sampling_rate), n_fft=int(n_fft), n_mels=int(n_mels),
                fmin=float(fmin), fmax=None if fmax is None else float(fmax))


@functools.partial(jax.jit, static_argnames=("sampling_rate", "n_fft", "n_mels", "fmin",
                                             "fmax"))
def _spec_to_mel_jit(spec, *, sampling_rate, n_fft, n_mels, fmin, fmax):
    fb = mel_filterbank(sampling_rate, n_fft, n_mels, fmin, fmax)
    return _mel(jnp.asarray(spec, jnp.float32), fb, 1e-5)


def mel_spectrogram(audio: jax.Array, *, sampling_rate: int = SAMPLING_RATE, n_fft: int = 2048,
                    hop_length: int = HOP, win_length: int = 2048, n_mels: int = 80,
                    fmin: float = 0.0, fmax: float | None = 22050.0,
                    lengths: jax.Array | None = None) -> jax.Array:
    """Training log-mel ``(..., L) -> (..., L // hop, n_mels)`` (``mel_spectrogram_torch``).

    :func:`spec_to_mel` of :func:`linear_spectrogram`; the generator's mel loss compares this
    of its output with that of the target.
    """
    _check_audio(audio, (n_fft - hop_length) // 2, lengths)
    return _mel_jit(audio, lengths, hop_length=int(hop_length), win_length=int(win_length),
                    **_mel_kw(sampling_rate, n_fft, n_mels, fmin, fmax))


@functools.partial(jax.jit, static_argnames=("sampling_rate", "n_fft", "hop_length",
                                             "win_length", "n_mels", "fmin", "fmax"))
def _mel_jit(audio, lengths, *, sampling_rate, n_fft, hop_length, win_length, n_mels, fmin,
             fmax):
    spec = _linear_jit(audio, lengths, n_fft=n_fft, hop_length=hop_length,
                       win_length=win_length)
    return _spec_to_mel_jit(spec, sampling_rate=sampling_rate, n_fft=n_fft, n_mels=n_mels,
                            fmin=fmin, fmax=fmax)


# ----------------------------------------------------------------------------- vocoder mel


def vocoder_mel(audio: jax.Array, *, keyshift: float | jax.Array = 0.0, speed: float = 1.0,
                sampling_rate: int = SAMPLING_RATE, n_fft: int = 2048, win_length: int = 2048,
                hop_length: int = HOP, n_mels: int = 128, fmin: float = 40.0,
                fmax: float | None = 16000.0, clip_val: float = 1e-5,
                max_keyshift: float = 5.0,
                lengths: jax.Array | None = None) -> jax.Array:
    """NSF-HiFiGAN / shallow-diffusion log-mel ``(..., L) -> (..., T, n_mels)``.

    The reference's ``nvSTFT.STFT.get_mel`` (44.1 kHz, 128 bins, 40-16000 Hz at the
    defaults): magnitude ``sqrt(|X|^2 + 1e-9)``, ``ln(max(mel, clip_val))``,
    ``T = L // round(hop * speed)`` (one frame for a clip shorter than a hop).

    ``keyshift`` (semitones) analyses with ``n_fft`` and window scaled by ``2^(keyshift/12)``
    (rounded), keeps ``n_fft // 2 + 1`` bins and rescales by ``win / win_new``: the
    diffusion model's key-shift augmentation. A Python number takes the exact-size FFT path
    (one compilation per value). An array (scalar, or ``(B,)`` with one shift per row of
    ``(B, L)`` audio) takes a traced path that compiles once for every shift in
    ``[-max_keyshift, max_keyshift]`` (default 5: the reference's augmentation range; rows
    outside come back NaN; its cost grows with the largest FFT it allows); it needs
    ``win_length == n_fft``, rounds the new FFT size in float32 (so a shift whose
    ``n_fft * 2^(k/12)`` lies within ~3e-4 of a half-integer may pick the neighbouring size
    the float64 reference would not), and costs a few times the plain FFT.
    ``speed`` scales the hop and must be a Python number (it changes the frame count).
    """
    if not isinstance(speed, (int, float)):
        raise TypeError(f"speed must be a Python number (it sets the frame count), got "
                        f"{type(speed).__name__}")
    fmax = None if fmax is None else float(fmax)
    kw = dict(speed=float(speed), sampling_rate=int(sampling_rate), n_fft=int(n_fft),
              win_length=int(win_length), hop_length=int(hop_length), n_mels=int(n_mels),
              fmin=float(fmin), fmax=fmax, clip_val=float(clip_val))
    shape = jnp.shape(audio)
    if len(shape) == 0 or shape[-1] == 0:
        raise ValueError(f"audio must have a non-empty time axis, got shape {shape}")
    if isinstance(keyshift, (int, float, np.integer, np.floating)):
        _, win_new, hop = _shifted_sizes(n_fft, win_length, hop_length, float(keyshift), speed)
        if lengths is not None:  # rows are reflected at their own ends
            _check_audio(audio, (win_new - hop + 1) // 2, lengths)
        return _vocoder_mel_static(audio, lengths, keyshift=float(keyshift), **kw)
    if n_fft != win_length:
        raise ValueError(f"an array keyshift needs win_length == n_fft, got {win_length} and "
                         f"{n_fft}; pass a Python number instead")
    if lengths is not None:
        _check_audio(audio, 0, lengths)
    rows = int(np.prod(shape[:-1]))
    if jnp.ndim(keyshift) not in (0, 1) or (jnp.ndim(keyshift) == 1
                                           and jnp.shape(keyshift) != (rows,)):
        raise ValueError(f"keyshift must be a number, a scalar array or one value per row "
                         f"(shape ({rows},)), got shape {jnp.shape(keyshift)}")
    return _vocoder_mel_traced(audio, jnp.asarray(keyshift, jnp.float32), lengths,
                               max_keyshift=float(max_keyshift), **kw)


def _shifted_sizes(n_fft, win_length, hop_length, keyshift, speed):
    factor = 2.0 ** (keyshift / 12.0)
    return (int(np.round(n_fft * factor)), int(np.round(win_length * factor)),
            int(np.round(hop_length * speed)))


@functools.partial(jax.jit, static_argnames=(
    "keyshift", "speed", "sampling_rate", "n_fft", "win_length", "hop_length", "n_mels",
    "fmin", "fmax", "clip_val"))
def _vocoder_mel_static(audio, lengths, *, keyshift, speed, sampling_rate, n_fft, win_length,
                        hop_length, n_mels, fmin, fmax, clip_val):
    n_new, win_new, hop = _shifted_sizes(n_fft, win_length, hop_length, keyshift, speed)
    length = jnp.shape(audio)[-1]
    left = (win_new - hop) // 2
    right = max((win_new - hop + 1) // 2, win_new - length - left)
    mode = "reflect" if right < length else "constant"
    spec = _stft(audio, n_new, hop, win_new, (left, right), mode, lengths)
    mag = _magnitude(spec, 1e-9)
    if keyshift != 0:
        size = n_fft // 2 + 1
        if mag.shape[-1] < size:
            mag = jnp.pad(mag, [(0, 0)] * (mag.ndim - 1) + [(0, size - mag.shape[-1])])
        mag = mag[..., :size] * (win_length / win_new)
    fb = mel_filterbank(sampling_rate, n_fft, n_mels, fmin, fmax)
    return _mel(mag, fb, clip_val)


def _fast_fft_size(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (sizes every FFT backend handles quickly)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


@functools.partial(jax.jit, static_argnames=(
    "max_keyshift", "speed", "sampling_rate", "n_fft", "win_length", "hop_length", "n_mels",
    "fmin", "fmax", "clip_val"))
def _vocoder_mel_traced(audio, keyshift, lengths, *, max_keyshift, speed, sampling_rate,
                        n_fft, win_length, hop_length, n_mels, fmin, fmax, clip_val):
    # Bluestein's chirp-z: with n k = (n^2 + k^2 - (k - n)^2) / 2, the length-N DFT
    #   X_k = conj(c_k) * sum_n (x_n w_n conj(c_n)) c_(k-n),  c_m = exp(i pi m^2 / N),
    # is one convolution of static size for every N <= n_max, and |X_k| = |that sum|.
    x, lead = _flatten(audio)
    x = x.astype(jnp.float32)
    b, length = x.shape
    hop = int(np.round(hop_length * speed))
    n_bins = n_fft // 2 + 1
    n_max = int(np.round(n_fft * 2.0 ** (max_keyshift / 12.0))) + 1
    size = _fast_fft_size(n_max + n_bins - 1)
    t = max(length // hop, 1)

    shift = jnp.broadcast_to(keyshift, (b,))
    big_n = jnp.round(n_fft * jnp.exp2(shift / 12.0)).astype(jnp.int32)  # == window length
    ok = (jnp.abs(shift) <= max_keyshift) & (big_n <= n_max)
    big_n = jnp.where(ok, big_n, n_fft)

    if lengths is None:
        valid = jnp.full((b,), length, jnp.int32)
    else:
        valid = jnp.asarray(lengths, jnp.int32)
    left = (big_n - hop) // 2
    right = jnp.maximum((big_n - hop + 1) // 2, big_n - valid - left)
    reflect = right < valid

    # Each row padded at its own offsets (one gather over samples), then framed statically:
    # frame t is padded samples [t * hop, t * hop + n_max); the window is zero past N.
    n = jnp.arange(n_max, dtype=jnp.int32)
    src = jnp.arange((t - 1) * hop + n_max, dtype=jnp.int32)[None, :] - left[:, None]
    vb = valid[:, None]
    inside = (src >= 0) & (src < vb)
    src = jnp.where(reflect[:, None], _reflect_index(src, vb), src)
    keep = reflect[:, None] | inside
    padded = jnp.take_along_axis(x, jnp.clip(src, 0, length - 1), axis=-1)
    frames = _frames(jnp.where(keep, padded, 0.0), n_max, hop, t)

    nb = big_n[:, None]
    two_n = 2 * nb
    in_win = n[None, :] < nb
    window = jnp.where(in_win, 0.5 - 0.5 * jnp.cos(2.0 * jnp.pi * n[None, :] / nb), 0.0)

    def chirp(m):  # exp(i pi m^2 / N) with m^2 reduced mod 2N exactly in integers
        r = jnp.mod(m * m, two_n).astype(jnp.float32)
        ang = jnp.pi * r / nb.astype(jnp.float32)
        return lax.complex(jnp.cos(ang), jnp.sin(ang))

    a = frames * window[:, None, :]
    a = a.astype(jnp.complex64) * jnp.conj(chirp(n[None, :]))[:, None, :]
    a = jnp.pad(a, ((0, 0), (0, 0), (0, size - n_max)))
    j = jnp.arange(size, dtype=jnp.int32)[None, :]
    lag = jnp.where(j < n_bins, j, j - size)          # c_(k - n) for k - n in (-n_max, n_bins)
    kernel = jnp.where((j < n_bins) | (j > size - n_max), chirp(lag), 0.0)
    conv = jnp.fft.ifft(jnp.fft.fft(a, axis=-1) * jnp.fft.fft(kernel, axis=-1)[:, None, :],
                        axis=-1)[..., :n_bins]

    mag = _magnitude(conv, 1e-9)
    k = jnp.arange(n_bins, dtype=jnp.int32)
    mag = jnp.where(k[None, None, :] < (big_n // 2 + 1)[:, None, None], mag, 0.0)
    mag = mag * (win_length / big_n.astype(jnp.float32))[:, None, None]
    fb = mel_filterbank(sampling_rate, n_fft, n_mels, fmin, fmax)
    mel = _mel(mag, fb, clip_val)
    mel = jnp.where(ok[:, None, None], mel, jnp.nan)
    return mel.reshape(lead + mel.shape[1:])
