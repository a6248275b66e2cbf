"""Length buckets: pad variable-length inputs to a few static shapes so jit compiles rarely.

A length of ``n`` frames is padded to the smallest bucket ``>= n``. Buckets grow
geometrically (ratio ``growth``) and are rounded up to a multiple of ``multiple``, so padding
wastes at most ``growth - 1`` of the compute while a whole corpus of clips compiles a handful
of shapes. Models that accept padded inputs take a frame mask and give the same valid frames
as on the unpadded input.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bucket_length", "bucket_lengths", "pad_axis", "length_mask"]


def bucket_lengths(max_len: int, min_len: int = 64, growth: float = 1.25,
                   multiple: int = 16) -> list[int]:
    """All bucket sizes up to (and covering) ``max_len``."""
    out, b = [], float(min_len)
    while True:
        size = int(math.ceil(b / multiple) * multiple)
        if not out or size > out[-1]:
            out.append(size)
        if size >= max_len:
            return out
        b *= growth


def bucket_length(n: int, min_len: int = 64, growth: float = 1.25, multiple: int = 16) -> int:
    """The bucket a length of ``n`` frames is padded to."""
    if n <= 0:
        raise ValueError(f"length must be positive, got {n}")
    return bucket_lengths(n, min_len, growth, multiple)[-1]


def pad_axis(x: np.ndarray, length: int, axis: int = 1, value: float = 0) -> np.ndarray:
    """Pad ``x`` with ``value`` along ``axis`` up to ``length`` (never truncates)."""
    x = np.asarray(x)
    n = x.shape[axis]
    if n > length:
        raise ValueError(f"cannot pad length {n} down to {length}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - n)
    return np.pad(x, widths, constant_values=value)


def length_mask(lengths, max_len: int) -> np.ndarray:
    """``(B, max_len)`` float mask, 1 on the first ``lengths[b]`` frames."""
    lengths = np.asarray(lengths).reshape(-1, 1)
    return (np.arange(max_len)[None, :] < lengths).astype(np.float32)
