"""Band-limited resampling between any two integer rates: polyphase windowed sinc, in JAX.

``resample(audio, orig_sr, target_sr)`` maps ``(..., L)`` to ``(..., ceil(L * target /
orig))`` with the rates reduced to ``up / down``. Output sample ``m`` is

    y[m] = sum_n x[n] h(m * down - n * up),

``h`` a Kaiser-windowed sinc low-pass on the ``up``-times upsampled grid, cut at ``rolloff``
times the lower Nyquist frequency, ``zeros`` lower-rate samples long on each side, and
normalised to unit DC gain: exactly what ``scipy.signal.resample_poly`` computes with that
filter (its default filter is the ``"scipy"`` preset). The input is taken as zero outside
the clip, so a zero-padded row gives the same leading ``resampled_length(L)`` samples as the
unpadded clip: pad batches to a few bucket lengths and one compilation serves them all.

On the device the sum runs as one strided convolution with ``up`` output channels (a
dense ``(down + taps, up)`` kernel: matrix-unit friendly); for awkward rate pairs whose
kernel would be huge (say 44056 -> 44100 Hz) it runs as ``taps`` shifted multiply-adds
instead. :func:`resample_host` computes the same on the host (SciPy) without compiling,
for file loading.

Presets (``quality=``):

================  =====  ========  =======  ====================================================
preset            zeros  beta      rolloff  note
================  =====  ========  =======  ====================================================
``kaiser_best``   64     14.7697   0.9476   resampy's ``kaiser_best`` design: what the
                                            reference's preprocessing used (librosa 0.9.1
                                            default); the default here
``kaiser_fast``   16     8.5555    0.85     resampy's ``kaiser_fast`` design, ~4x cheaper
``scipy``         10     5.0       1.0      ``scipy.signal.resample_poly``'s default filter
================  =====  ========  =======  ====================================================

``"torchaudio_hann128"`` (a :class:`HannSincFilter`) is torchaudio's ``Resample`` with
``lowpass_filter_width=128`` (its default ``sinc_interp_hann``, rolloff 0.99): a sinc cut at
``rolloff`` times the lower Nyquist frequency under a Hann (``cos^2``) window ``128`` zero
crossings wide, not normalised; So-VITS-SVC's enhancer resamples with it.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["ResampleFilter", "HannSincFilter", "PRESETS", "resample",
           "resample_host", "resampled_length", "design_filter", "rate_ratio"]


class ResampleFilter(NamedTuple):
    """Kaiser-windowed sinc design: half-width in lower-rate samples, window beta, cutoff."""
    zeros: int = 64
    beta: float = 14.769656459379492
    rolloff: float = 0.9475937167399596


class HannSincFilter(NamedTuple):
    """torchaudio's ``sinc_interp_hann`` design (``torchaudio.transforms.Resample``)."""
    lowpass_filter_width: int = 6
    rolloff: float = 0.99


PRESETS: dict[str, ResampleFilter | HannSincFilter] = {
    "kaiser_best": ResampleFilter(64, 14.769656459379492, 0.9475937167399596),
    "kaiser_fast": ResampleFilter(16, 8.555504641634386, 0.85),
    "scipy": ResampleFilter(10, 5.0, 1.0),
    "torchaudio_hann128": HannSincFilter(128, 0.99),
}

# Dense-kernel entries above which the device path switches to shifted multiply-adds.
_DENSE_LIMIT = 1 << 22


def _filter_spec(quality) -> ResampleFilter | HannSincFilter:
    if isinstance(quality, (ResampleFilter, HannSincFilter)):
        spec = quality
    elif isinstance(quality, str) and quality in PRESETS:
        spec = PRESETS[quality]
    else:
        raise ValueError(f"unknown resampling quality {quality!r}; expected one of "
                         f"{', '.join(PRESETS)}, a ResampleFilter or a HannSincFilter")
    if isinstance(spec, HannSincFilter):
        if int(spec.lowpass_filter_width) < 1 or not 0 < spec.rolloff <= 1:
            raise ValueError(f"invalid resampling filter {spec}: need lowpass_filter_width "
                             ">= 1 and 0 < rolloff <= 1")
        return HannSincFilter(int(spec.lowpass_filter_width), float(spec.rolloff))
    if spec.zeros < 1 or not 0 < spec.rolloff <= 1 or spec.beta < 0:
        raise ValueError(f"invalid resampling filter {spec}: need zeros >= 1, 0 < rolloff <= 1"
                         f", beta >= 0")
    return ResampleFilter(int(spec.zeros), float(spec.beta), float(spec.rolloff))


def _check_rate(name: str, sr) -> int:
    if isinstance(sr, bool) or int(sr) != sr or int(sr) <= 0:
        raise ValueError(f"{name} must be a positive integer sample rate in Hz, got {sr!r}")
    return int(sr)


def rate_ratio(orig_sr: int, target_sr: int) -> tuple[int, int]:
    """``(up, down)``: the rates divided by their greatest common divisor."""
    orig_sr = _check_rate("orig_sr", orig_sr)
    target_sr = _check_rate("target_sr", target_sr)
    g = math.gcd(orig_sr, target_sr)
    return target_sr // g, orig_sr // g


def resampled_length(length: int, orig_sr: int, target_sr: int) -> int:
    """``ceil(length * target / orig)``: samples :func:`resample` returns (exact integers)."""
    up, down = rate_ratio(orig_sr, target_sr)
    return -(-int(length) * up // down)


@functools.lru_cache(maxsize=64)
def design_filter(up: int, down: int, spec: ResampleFilter = PRESETS["kaiser_best"]
                  ) -> np.ndarray:
    """Low-pass ``h`` (float64, odd length ``2 * zeros * max(up, down) + 1``, gain ``up``;
    a :class:`HannSincFilter` gives torchaudio's design, :func:`_hann_sinc`).

    ``scipy.signal.firwin`` with a Kaiser window, cutoff ``rolloff / max(up, down)`` of the
    upsampled grid's Nyquist; identical to ``resample_poly``'s own filter for the ``"scipy"``
    preset. Read-only (cached).
    """
    if isinstance(spec, HannSincFilter):
        return _hann_sinc(up, down, spec)
    from scipy.signal import firwin  # host-only

    max_rate = max(up, down)
    half = spec.zeros * max_rate
    h = firwin(2 * half + 1, spec.rolloff / max_rate, window=("kaiser", spec.beta)) * up
    h.setflags(write=False)
    return h


def _hann_sinc(up: int, down: int, spec: HannSincFilter) -> np.ndarray:
    """``h[k + half]`` = the windowed sinc at ``tau = k / (up * down)`` (time between an input
    and an output sample, in units of the reduced rates): with ``b = rolloff * min(up, down)``
    and ``t = clip(tau * b, -w, w)``, ``sinc(t) cos^2(pi t / 2w) b / down``, over every ``k``
    with ``|tau b| <= w``, so the gain at DC is ~1 without normalisation."""
    w = spec.lowpass_filter_width
    base = min(up, down) * spec.rolloff
    half = int(np.floor(w * up * down / base))
    t = np.clip(np.arange(-half, half + 1) / (up * down) * base, -w, w)
    h = np.sinc(t) * np.cos(t * np.pi / (2 * w)) ** 2 * (base / down)
    h.setflags(write=False)
    return h


@functools.lru_cache(maxsize=64)
def _polyphase(up: int, down: int, spec: ResampleFilter):
    """Polyphase tables for ``y[r * up + s] = sum_j x[r * down + j] h[s * down - j * up + half]``.

    Returns ``(j_min, dense (W, up) or None, start (up,), taps (up, Q))`` in float32, where
    the dense kernel holds ``h`` at ``[j - j_min, s]`` and the compact form holds phase
    ``s``'s ``Q`` taps starting at input offset ``start[s]``.
    """
    h = design_filter(up, down, spec)
    half = (len(h) - 1) // 2
    s = np.arange(up)
    # taps j of phase s satisfy 0 <= s*down - j*up + half <= 2*half
    j_lo = -((half - s * down) // up)          # ceil((s*down - half) / up)
    j_hi = (s * down + half) // up
    q = int((j_hi - j_lo).max()) + 1
    taps = np.zeros((up, q), np.float64)
    for p in range(up):
        j = np.arange(j_lo[p], j_hi[p] + 1)
        taps[p, :len(j)] = h[p * down - j * up + half]
    j_min = int(j_lo.min())
    width = int(j_hi.max()) - j_min + 1
    dense = None
    if width * up <= _DENSE_LIMIT:
        dense = np.zeros((width, up), np.float64)
        for p in range(up):
            n = j_hi[p] - j_lo[p] + 1
            dense[j_lo[p] - j_min:j_lo[p] - j_min + n, p] = taps[p, :n]
        dense = dense.astype(np.float32)
    return j_min, dense, (j_lo - j_min).astype(np.int32), taps.astype(np.float32)


def resample(audio: jax.Array, orig_sr: int, target_sr: int, *,
             quality: str | ResampleFilter = "kaiser_best", method: str = "auto") -> jax.Array:
    """Resample ``(..., L)`` audio from ``orig_sr`` to ``target_sr`` Hz on the device.

    Returns ``(..., resampled_length(L, orig_sr, target_sr))`` float32 (the input itself,
    as float32, when the rates are equal). ``quality`` picks the filter (module docstring);
    ``method`` ``"auto"`` / ``"conv"`` / ``"taps"`` picks the device algorithm (same result).
    jit-compiled per (shape, rates, quality); usable inside jit.
    """
    up, down = rate_ratio(orig_sr, target_sr)
    spec = _filter_spec(quality)
    if method not in ("auto", "conv", "taps"):
        raise ValueError(f"unknown method {method!r}; expected 'auto', 'conv' or 'taps'")
    shape = jnp.shape(audio)
    if len(shape) == 0:
        raise ValueError("audio must have a time axis, got a scalar")
    if up == down:
        return jnp.asarray(audio, jnp.float32)
    if method == "conv" and _polyphase(up, down, spec)[1] is None:
        raise ValueError(f"{orig_sr} -> {target_sr} Hz needs a {up}-channel kernel too large "
                         f"for method='conv'; use 'auto' or 'taps'")
    if method == "auto":
        method = "conv" if _polyphase(up, down, spec)[1] is not None else "taps"
    return _resample_jit(audio, up=up, down=down, spec=spec, method=method)


@functools.partial(jax.jit, static_argnames=("up", "down", "spec", "method"))
def _resample_jit(audio, *, up, down, spec, method):
    x = jnp.asarray(audio, jnp.float32)
    lead, n_in = x.shape[:-1], x.shape[-1]
    n_out = -(-n_in * up // down)
    if n_out == 0:
        return jnp.zeros(lead + (0,), jnp.float32)
    x = x.reshape(-1, n_in)
    j_min, dense, start, taps = _polyphase(up, down, spec)
    rows = -(-n_out // up)                          # output blocks of `up` samples
    left = -j_min                                   # x[r*down + j] sits at xp[r*down + j + left]
    if method == "conv":
        width = dense.shape[0]
        need = (rows - 1) * down + width
        xp = jnp.pad(x, ((0, 0), (left, max(0, need - n_in - left))))
        y = lax.conv_general_dilated(
            xp[:, :, None], jnp.asarray(dense)[:, None, :], window_strides=(down,),
            padding="VALID", dimension_numbers=("NWC", "WIO", "NWC"),
            precision=lax.Precision.HIGHEST)[:, :rows]
    else:
        q = taps.shape[1]
        need = (rows - 1) * down + int(start.max()) + q
        xp = jnp.pad(x, ((0, 0), (left, max(0, need - n_in - left))))
        base = (jnp.arange(rows, dtype=jnp.int32)[:, None] * down
                + jnp.asarray(start)[None, :])                       # (rows, up)
        taps_t = jnp.asarray(taps.T)                                  # (Q, up)

        def step(k, acc):
            return acc + jnp.take(xp, base + k, axis=-1) * taps_t[k]

        y = lax.fori_loop(0, q, step, jnp.zeros((x.shape[0], rows, up), jnp.float32))
    return y.reshape(lead + (rows * up,))[..., :n_out]


def resample_host(audio: np.ndarray, orig_sr: int, target_sr: int, *,
                  quality: str | ResampleFilter = "kaiser_best") -> np.ndarray:
    """:func:`resample` on the host (``scipy.signal.resample_poly`` with the same filter).

    Same definition and length, no compilation: for loading files of every length.
    ``(..., L)`` NumPy in, float32 out.
    """
    from scipy.signal import resample_poly

    up, down = rate_ratio(orig_sr, target_sr)
    x = np.asarray(audio, np.float32)
    if up == down:
        return x.copy()
    h = design_filter(up, down, _filter_spec(quality))
    if x.shape[-1] == 0:
        return np.zeros(x.shape, np.float32)
    return resample_poly(x, up, down, axis=-1, window=h / up).astype(np.float32)
