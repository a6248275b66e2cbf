"""Cutting long recordings at silences, and putting converted pieces back together.

The conversion pipeline of So-VITS-SVC 4.1 (``inference/slicer.py``, ``Svc.slice_inference``)
cuts the input where it is quiet, converts each voiced chunk with ``pad_seconds`` of zeros
on both sides (dropped again afterwards), optionally splits long chunks into overlapping
pieces joined by a linear crossfade, and fills silent chunks with zeros. This module has
those steps as host-side NumPy functions (their outputs have data-dependent lengths):

* :func:`slice_on_silence`: the reference ``Slicer``'s chunk boundaries, exactly.
* :func:`frame_rms`: ``librosa.feature.rms`` (float32, centred, zero padding), which the
  slicer and :func:`svcjax.audio.prepare.trim_silence` threshold.
* :func:`pad_chunk` / :func:`strip_padding`: the ``pad_seconds`` round trip.
* :func:`split_with_overlap` / :func:`crossfade_join`: the ``clip_seconds`` /
  ``linear_gradient`` pieces and their crossfade.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["Chunk", "frame_rms", "slice_on_silence", "pad_chunk", "strip_padding",
           "split_with_overlap", "crossfade_join"]


class Chunk(NamedTuple):
    """Samples ``[start, end)`` of the input; ``silent`` chunks are not converted."""
    start: int
    end: int
    silent: bool


def frame_rms(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``librosa.feature.rms(y=audio, frame_length, hop_length)[0]``, bit for bit.

    The clip is zero-padded by ``frame_length // 2`` on each side and frame ``t`` covers
    padded samples ``[t * hop, t * hop + frame_length)``: ``1 + L // hop`` frames (for
    ``L >= frame_length // 2``); ``sqrt(mean(x^2))`` in the input's precision (float32).
    """
    y = np.asarray(audio)
    if y.ndim != 1:
        raise ValueError(f"frame_rms needs 1-D audio, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    pad = frame_length // 2
    total = y.shape[0] + 2 * pad               # the zero-padded clip, never built whole
    if total < frame_length:
        raise ValueError(f"audio of {len(audio)} samples is too short for {frame_length}-sample"
                         f" frames")
    n = 1 + (total - frame_length) // hop_length
    # a few thousand frames at a time: the (frame_length, n) squares of a long recording
    # would take frame_length / hop_length times its size (4x for the slicer)
    step = max(1, (1 << 22) // frame_length)
    out = []
    for a in range(0, n, step):
        m = min(step, n - a)
        lo, hi = a * hop_length - pad, (a + m - 1) * hop_length + frame_length - pad
        seg = np.pad(y[max(lo, 0):min(hi, y.shape[0])],
                     (max(0, -lo), max(0, hi - y.shape[0])))
        frames = np.lib.stride_tricks.as_strided(
            seg, shape=(frame_length, m), strides=(seg.strides[0], hop_length * seg.strides[0]),
            writeable=False)
        out.append(np.sqrt(np.mean(np.abs(frames) ** 2, axis=-2)))
    return np.concatenate(out)


def _to_mono(audio) -> np.ndarray:
    y = np.asarray(audio)
    if y.ndim == 2:
        y = np.mean(y, axis=0)
    if y.ndim != 1:
        raise ValueError(f"audio must be (L,) or (channels, L), got shape {np.shape(audio)}")
    return y.astype(np.float32) if not np.issubdtype(y.dtype, np.floating) else y


def slice_on_silence(audio, sr: int, *, threshold_db: float = -40.0, min_length_ms: int = 5000,
                     min_interval_ms: int = 300, hop_ms: int = 20,
                     max_silence_kept_ms: int = 5000) -> list[Chunk]:
    """Split ``audio`` into voiced and silent chunks as the reference ``Slicer.slice`` does.

    RMS over windows of ``min(min_interval, 4 hops)`` every ``hop_ms``; a run of frames below
    ``threshold_db`` (dBFS) becomes a silent chunk when it is long enough
    (``min_interval_ms``) and the voiced chunk before it has reached ``min_length_ms`` (or it
    is a leading silence longer than ``max_silence_kept_ms``). Up to ``max_silence_kept_ms``
    of a silence is kept on the voiced side(s), cut at the quietest frame. Chunks are
    returned in order, covering ``[0, len(audio))`` without gaps; empty ones are dropped (as
    the reference's ``chunks2audio`` does). ``audio`` is ``(L,)`` or ``(channels, L)``
    (averaged). The inference CLI uses ``threshold_db=-40`` and the other defaults.
    """
    if not min_length_ms >= min_interval_ms >= hop_ms:
        raise ValueError(f"need min_length_ms >= min_interval_ms >= hop_ms, got "
                         f"{min_length_ms}, {min_interval_ms}, {hop_ms}")
    if not max_silence_kept_ms >= hop_ms:
        raise ValueError(f"need max_silence_kept_ms >= hop_ms, got {max_silence_kept_ms} and "
                         f"{hop_ms}")
    y = _to_mono(audio)
    total = y.shape[0]
    min_interval = sr * min_interval_ms / 1000
    hop = round(sr * hop_ms / 1000)
    win = min(round(min_interval), 4 * hop)
    min_length = round(sr * min_length_ms / 1000 / hop)      # in frames
    min_gap = round(min_interval / hop)                      # in frames
    keep = round(sr * max_silence_kept_ms / 1000 / hop)      # in frames
    threshold = 10 ** (threshold_db / 20.0)
    # The reference compares the sample count with a frame count here; kept for parity.
    if total <= min_length:
        return [Chunk(0, total, False)] if total else []

    rms = frame_rms(y, win, hop)
    n = rms.shape[0]

    def quietest(lo, hi):  # first quietest frame in [lo, hi)
        return lo + int(np.argmin(rms[lo:hi]))

    quiet = np.concatenate([[False], rms < threshold, [False]])
    edges = np.flatnonzero(quiet[1:] != quiet[:-1])
    runs = list(zip(edges[0::2].tolist(), edges[1::2].tolist()))   # [start, end) frames
    cuts: list[tuple[int, int]] = []    # silent spans to cut out, in frames
    voiced_from = 0
    for start, end in runs:
        if end == n:      # runs to the end of the clip: the trailing silence below
            if n - start >= min_gap:
                pos = quietest(start, min(n, start + keep) + 1)
                cuts.append((pos, n + 1))
            break
        span = end - start
        leading = start == 0 and end > keep
        if not leading and not (span >= min_gap and end - voiced_from >= min_length):
            continue
        # The loud frame `end` is a candidate cut point too, as in the reference.
        right = quietest(end - keep, end + 1) if span > keep else None
        if span <= keep:
            pos = quietest(start, end + 1)
            cut = (0, pos) if start == 0 else (pos, pos)
            voiced_from = pos
        elif start == 0:
            cut = (0, right)
            voiced_from = right
        else:
            left = quietest(start, start + keep + 1)
            if span <= 2 * keep:
                mid = quietest(end - keep, start + keep + 1)
                cut = (min(left, mid), max(right, mid))
            else:
                cut = (left, right)
            voiced_from = cut[1]
        cuts.append(cut)

    if not cuts:
        return [Chunk(0, total, False)]
    bounds: list[Chunk] = []
    prev_end = 0
    for a, b in cuts:
        bounds.append(Chunk(prev_end, min(total, a * hop), False))
        bounds.append(Chunk(a * hop, min(total, b * hop), True))
        prev_end = b * hop
    if prev_end < total:
        bounds.append(Chunk(prev_end, total, False))
    return [c for c in bounds if c.start != c.end]


def pad_chunk(audio, sr: int, pad_seconds: float) -> np.ndarray:
    """``int(sr * pad_seconds)`` zeros before and after ``audio`` (1-D)."""
    y = np.asarray(audio)
    pad = int(sr * pad_seconds)
    if pad < 0:
        raise ValueError(f"pad_seconds must be >= 0, got {pad_seconds}")
    return np.pad(y, (pad, pad))


def strip_padding(converted, sr: int, pad_seconds: float, length: int) -> np.ndarray:
    """Drop the ``pad_seconds`` margins from converted audio and centre it in ``length``.

    ``int(sr * pad_seconds)`` samples go from each end (none for ``pad_seconds=0``; the
    reference's ``x[0:-0]`` would drop everything there), then zeros are added equally on
    both sides (the extra one on the right) up to ``length``; longer audio is returned
    as is, like the reference's ``pad_array``.
    """
    y = np.asarray(converted)
    pad = int(sr * pad_seconds)
    if pad:
        y = y[pad:-pad]
    short = length - y.shape[0]
    if short <= 0:
        return y
    return np.pad(y, (short // 2, short - short // 2))


def split_with_overlap(audio, size: int, overlap: int) -> list[np.ndarray]:
    """Pieces of ``size`` samples, each after the first starting ``overlap`` samples early.

    Piece ``k`` is ``audio[k * size - overlap : (k + 1) * size]`` (from ``k * size`` when
    that start would be negative), as the reference's ``split_list_by_n``.
    """
    y = np.asarray(audio)
    if size <= 0 or overlap < 0:
        raise ValueError(f"need size > 0 and overlap >= 0, got {size} and {overlap}")
    starts = range(0, y.shape[0], size)
    return [y[(s - overlap if s >= overlap else s):s + size] for s in starts]


def crossfade_join(pieces: Sequence[np.ndarray], overlap: int,
                   fade_ratio: float = 0.75) -> np.ndarray:
    """Join pieces that overlap their predecessor by ``overlap`` samples.

    Inside each overlap, ``int(overlap * fade_ratio)`` samples in the middle crossfade
    linearly (``linspace(0, 1)``) from the previous piece to the next; before them the
    previous piece is kept (``(rest) // 2`` samples), after them the next one. The result
    has ``sum(len) - (n - 1) * overlap`` samples. ``overlap=0`` concatenates.
    """
    if not 0 < fade_ratio <= 1:
        raise ValueError(f"fade_ratio must be in (0, 1], got {fade_ratio}")
    if not pieces:
        return np.zeros(0, np.float32)
    out = np.asarray(pieces[0])
    if overlap <= 0:
        return np.concatenate([np.asarray(p) for p in pieces])
    fade = int(overlap * fade_ratio)
    rest = overlap - fade
    keep_prev, keep_next = rest // 2, rest - rest // 2
    ramp = np.linspace(0, 1, fade)
    for k, piece in enumerate(pieces[1:], 1):
        piece = np.asarray(piece)
        if min(out.shape[0], piece.shape[0]) < overlap:
            raise ValueError(f"piece {k} (or the audio before it) is shorter than the "
                             f"{overlap}-sample overlap")
        head = out.shape[0] - overlap + keep_prev          # first crossfaded sample of out
        mixed = out[head:head + fade] * (1 - ramp) + piece[keep_prev:keep_prev + fade] * ramp
        out = np.concatenate([out[:head], mixed, piece[keep_prev + fade:]])
    return out
