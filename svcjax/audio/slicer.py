"""Cutting long recordings at silences, and putting converted pieces back together.

The conversion pipeline of So-VITS-SVC 4.1 (``inference/slicer.py``, ``Svc.slice_inference``)
cuts the input where it is quiet, converts each voiced chunk with ``pad_seconds`` of zeros
on both sides (dropped again afterwards), optionally splits long chunks into overlapping
pieces joined by a linear crossfade, and fills silent chunks with zeros. This module has
those steps as host-side NumPy functions (their outputs have data-dependent lengths):

* :func:`slice_on_silence`: the reference ``Slicer``'s chunk boundaries, exactly
  (:func:`slice_rms` from RMS computed block by block, for a file not held whole).
* :func:`frame_rms`: ``librosa.feature.rms`` (float32, centred, zero padding), which the
  slicer and :func:`svcjax.audio.prepare.trim_silence` threshold.
* :func:`crossfade_join`: the crossfade of the ``clip_seconds`` / ``linear_gradient``
  pieces (the padding and the cutting into pieces are the converter's own, in
  :mod:`svcjax.runtime.converter`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["Chunk", "frame_rms", "RunningRMS", "slicer_frames", "slice_on_silence", "slice_rms",
           "crossfade_join"]


class Chunk(NamedTuple):
    """Samples ``[start, end)`` of the input; ``silent`` chunks are not converted."""
    start: int
    end: int
    silent: bool


class RunningRMS:
    """:func:`frame_rms` of audio that arrives in blocks (:meth:`feed`, then :meth:`finish`).

    Frames are computed in the same groups of a few thousand as :func:`frame_rms` (which is
    this class fed once), so the result is bit for bit the same however the audio is cut
    into blocks; only the samples of the next group are kept.
    """

    def __init__(self, frame_length: int, hop_length: int):
        self.frame_length, self.hop = int(frame_length), int(hop_length)
        self.pad = self.frame_length // 2
        # a few thousand frames at a time: the (frame_length, n) squares of a long recording
        # would take frame_length / hop_length times its size (4x for the slicer)
        self.step = max(1, (1 << 22) // self.frame_length)
        self._buf = None            # samples [self._start, ...) of the clip
        self._start = 0
        self._next = 0              # first frame not yet computed
        self._out: list[np.ndarray] = []

    def _group(self, m: int, length: int | None) -> None:
        a, hop, fl, pad = self._next, self.hop, self.frame_length, self.pad
        lo, hi = a * hop - pad, (a + m - 1) * hop + fl - pad
        end = hi if length is None else min(hi, length)
        seg = np.pad(self._buf[max(lo, 0) - self._start:end - self._start],
                     (max(0, -lo), max(0, hi - end)))
        frames = np.lib.stride_tricks.as_strided(
            seg, shape=(fl, m), strides=(seg.strides[0], hop * seg.strides[0]), writeable=False)
        self._out.append(np.sqrt(np.mean(np.abs(frames) ** 2, axis=-2)))
        self._next += m
        drop = max(0, self._next * hop - pad) - self._start
        if drop > 0:
            self._buf, self._start = self._buf[drop:], self._start + drop

    def feed(self, block) -> None:
        """Append the next samples (1-D)."""
        b = np.asarray(block)
        if b.ndim != 1:
            raise ValueError(f"frame_rms needs 1-D audio, got shape {b.shape}")
        if not np.issubdtype(b.dtype, np.floating):
            b = b.astype(np.float32)
        self._buf = b if self._buf is None or not len(self._buf) else \
            np.concatenate([self._buf, b])
        while (self._next + self.step - 1) * self.hop + self.frame_length - self.pad \
                <= self._start + len(self._buf):
            self._group(self.step, None)

    def finish(self) -> np.ndarray:
        """The RMS of every frame of the whole clip fed so far."""
        if self._buf is None:
            self._buf = np.zeros(0, np.float32)
        length = self._start + len(self._buf)
        total = length + 2 * self.pad          # the zero-padded clip, never built whole
        if total < self.frame_length:
            raise ValueError(f"audio of {length} samples is too short for "
                             f"{self.frame_length}-sample frames")
        n = 1 + (total - self.frame_length) // self.hop
        while self._next < n:
            self._group(min(self.step, n - self._next), length)
        out = np.concatenate(self._out)
        self._out, self._buf = [out], None
        return out


def frame_rms(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``librosa.feature.rms(y=audio, frame_length, hop_length)[0]``, bit for bit.

    The clip is zero-padded by ``frame_length // 2`` on each side and frame ``t`` covers
    padded samples ``[t * hop, t * hop + frame_length)``: ``1 + L // hop`` frames (for
    ``L >= frame_length // 2``); ``sqrt(mean(x^2))`` in the input's precision (float32).
    Computed a few thousand frames at a time (:class:`RunningRMS`).
    """
    y = np.asarray(audio)
    if y.ndim != 1:
        raise ValueError(f"frame_rms needs 1-D audio, got shape {y.shape}")
    r = RunningRMS(frame_length, hop_length)
    r.feed(y)
    return r.finish()


def slicer_frames(sr: int, *, min_interval_ms: int = 300, hop_ms: int = 20) -> tuple[int, int]:
    """``(frame_length, hop_length)`` of the RMS that :func:`slice_on_silence` thresholds."""
    min_interval = sr * min_interval_ms / 1000
    hop = round(sr * hop_ms / 1000)
    return min(round(min_interval), 4 * hop), hop


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
    y = _to_mono(audio)
    _check_slicer(min_length_ms, min_interval_ms, hop_ms, max_silence_kept_ms)
    kw = dict(threshold_db=threshold_db, min_length_ms=min_length_ms,
              min_interval_ms=min_interval_ms, hop_ms=hop_ms,
              max_silence_kept_ms=max_silence_kept_ms)
    if y.shape[0] <= round(sr * min_length_ms / 1000 / round(sr * hop_ms / 1000)):
        return slice_rms(None, y.shape[0], sr, **kw)
    win, hop = slicer_frames(sr, min_interval_ms=min_interval_ms, hop_ms=hop_ms)
    return slice_rms(frame_rms(y, win, hop), y.shape[0], sr, **kw)


def _check_slicer(min_length_ms, min_interval_ms, hop_ms, max_silence_kept_ms) -> None:
    if not min_length_ms >= min_interval_ms >= hop_ms:
        raise ValueError(f"need min_length_ms >= min_interval_ms >= hop_ms, got "
                         f"{min_length_ms}, {min_interval_ms}, {hop_ms}")
    if not max_silence_kept_ms >= hop_ms:
        raise ValueError(f"need max_silence_kept_ms >= hop_ms, got {max_silence_kept_ms} and "
                         f"{hop_ms}")


def slice_rms(rms, total: int, sr: int, *, threshold_db: float = -40.0,
              min_length_ms: int = 5000, min_interval_ms: int = 300, hop_ms: int = 20,
              max_silence_kept_ms: int = 5000) -> list[Chunk]:
    """:func:`slice_on_silence` of a ``total``-sample clip from its frame RMS (``frame_rms``
    with :func:`slicer_frames`; computed in a first pass over a file that is not held
    whole, e.g. by :class:`RunningRMS`). ``rms`` may be ``None`` for a clip of at most
    ``min_length_ms / hop_ms`` samples, which is one chunk.
    """
    _check_slicer(min_length_ms, min_interval_ms, hop_ms, max_silence_kept_ms)
    min_interval = sr * min_interval_ms / 1000
    hop = round(sr * hop_ms / 1000)
    min_length = round(sr * min_length_ms / 1000 / hop)      # in frames
    min_gap = round(min_interval / hop)                      # in frames
    keep = round(sr * max_silence_kept_ms / 1000 / hop)      # in frames
    threshold = 10 ** (threshold_db / 20.0)
    # The reference compares the sample count with a frame count here; kept for parity.
    if total <= min_length:
        return [Chunk(0, total, False)] if total else []
    rms = np.asarray(rms)
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
    keep_prev = rest // 2
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
