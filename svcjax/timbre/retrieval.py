"""The feature-retrieval index of a built corpus (``svcjax train-index``).

    svcjax train-index DATA_DIR OUT.npz

As the reference's ``train_index.py``: all unit frames per speaker (shuffled), reduced to
10000 k-means centres above 2e5 frames (mini-batch, random init), plus inverted lists
(``min(16 sqrt(N), N / 39)`` coarse centroids, trained on at most 256 points per list as
faiss does) for IVF search. The file is svcjax's plain-array ``.npz``
(:func:`svcjax.timbre.index.load_timbre_index`); it is searched exactly by default (it has at most
2e5 rows per speaker), ``search="ivf"`` searches it as the reference searches its faiss index.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import jax.numpy as jnp
import numpy as np

from svcjax.timbre import index as timbre
from svcjax.timbre.kmeans import corpus_units, kmeans

__all__ = ["build_retrieval", "train_index", "REDUCE_ABOVE", "REDUCED_CENTRES"]

REDUCE_ABOVE = 200_000   # train_index.py: k-means to 10000 centres above 2e5 frames
REDUCED_CENTRES = 10_000


def build_retrieval(x: np.ndarray, *, seed: int = 0, log: Callable[[str], None] = print
                    ) -> timbre.SpeakerArrays:
    """One speaker's retrieval rows (reduced above 2e5 frames) with IVF lists."""
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x[rng.permutation(len(x))], np.float32)
    if len(x) > REDUCE_ABOVE:
        log(f"  {len(x)} frames: k-means to {REDUCED_CENTRES} centres (as train_index.py)")
        x, _ = kmeans(x, REDUCED_CENTRES, minibatch=True, batch_size=256 * (os.cpu_count() or 1),
                      init="random", seed=seed, log=log, final_inertia=False)
    n = len(x)
    n_ivf = min(int(16 * math.sqrt(n)), n // 39)
    if n_ivf < 1:
        return timbre.SpeakerArrays(x)
    # the coarse quantiser: k-means on at most 256 points per list (faiss's training sample)
    sample = x if n <= 256 * n_ivf else x[rng.choice(n, 256 * n_ivf, replace=False)]
    cent, _ = kmeans(sample, n_ivf, max_iter=10, init="random", seed=seed)
    cj = jnp.asarray(cent)
    assign = np.concatenate([np.asarray(timbre.nearest_centres(jnp.asarray(x[i:i + 8192]), cj))
                             for i in range(0, n, 8192)])
    return timbre.SpeakerArrays(x, cent, timbre.lists_from_assignment(assign, n_ivf))


def train_index(data_dir, out: str, *, seed: int = 0, log: Callable[[str], None] = print
                ) -> str:
    """Per-speaker retrieval index of a corpus's units; writes svcjax's ``.npz``."""
    if not out.endswith(".npz"):
        raise ValueError(f"the index file name must end in .npz, got {out!r}")
    units = corpus_units(data_dir)
    speakers = {}
    for spk, x in units.items():
        t = time.time()
        speakers[spk] = build_retrieval(x, seed=seed, log=log)
        s = speakers[spk]
        lists = "" if s.lists is None else f", {len(s.centroids)} inverted lists"
        log(f"{spk}: {len(x)} frames -> {len(s.vectors)} rows{lists} ({time.time() - t:.1f} s)")
    timbre.TimbreIndex("retrieval", speakers).save(out)
    return out
