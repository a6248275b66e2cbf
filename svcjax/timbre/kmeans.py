"""K-means in JAX and the cluster model of a built corpus (``svcjax train-cluster``).

    svcjax train-cluster DATA_DIR OUT.npz|OUT.pt [--n-clusters 10000] [--minibatch]

K-means runs in JAX: k-means++ initialisation (greedy, ``2 + log k`` candidates per centre,
as scikit-learn) on a sample, then full Lloyd iterations or mini-batch updates, with the
points split over all local devices (each device assigns its share, partial sums are
``psum``-ed). Work is saved after every iteration under ``OUT.partial/`` and resumed when
the same command is run again; a finished speaker is not retrained.

``train-cluster`` writes svcjax's ``.npz`` or, for an ``OUT`` ending in ``.pt``, the
reference's ``kmeans_10000.pt`` layout (``{speaker: {'n_features_in_', '_n_threads',
'cluster_centers_'}}`` in a ``torch.save`` zip; the reference loads it as its own).
The retrieval index (``svcjax train-index``) is :mod:`svcjax.timbre.retrieval`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from svcjax.files import atomic_write
from svcjax.timbre import index as timbre

__all__ = ["kmeans", "kmeans_once", "kmeans_plus_plus", "corpus_units", "train_cluster",
           "write_reference_cluster"]

_BLOCK = 4096


# ---------------------------------------------------------------------------------- k-means


def _mesh():
    return jax.sharding.Mesh(np.array(jax.local_devices()), ("frames",))


@jax.jit
def _assign_stats(x, w, centres):
    """Per-centre sums, counts and total inertia of weighted points ``x`` (sharded)."""
    mesh = _mesh()
    k, c = centres.shape

    def per_device(xd, wd, cent):
        xd, wd = xd[0], wd[0]
        cn = jnp.sum(cent * cent, axis=1)

        def step(carry, blk):
            sums, counts, inertia = carry
            xb, wb = blk
            lab = timbre.nearest_centres(xb, cent)
            d = jnp.sum(jnp.square(xb - cent[lab]), axis=1)
            sums = sums + jax.ops.segment_sum(xb * wb[:, None], lab, num_segments=k)
            counts = counts + jax.ops.segment_sum(wb, lab, num_segments=k)
            return (sums, counts, inertia + jnp.sum(d * wb)), None

        init = (jnp.zeros((k, c), jnp.float32), jnp.zeros((k,), jnp.float32), jnp.float32(0))
        (s, n, i), _ = jax.lax.scan(step, init, (xd, wd))
        del cn
        return (jax.lax.psum(s, "frames"), jax.lax.psum(n, "frames"),
                jax.lax.psum(i, "frames"))

    return jax.shard_map(per_device, mesh=mesh, in_specs=(P("frames"), P("frames"), P()),
                         out_specs=(P(), P(), P()), check_vma=False)(x, w, centres)


def _shard_points(x: np.ndarray):
    """Points as ``(devices, blocks, block, C)`` on device (padding rows weigh 0)."""
    mesh = _mesh()
    ndev = mesh.devices.size
    n, c = x.shape
    block = min(_BLOCK, max(1, -(-n // ndev)))
    per = -(-n // (ndev * block)) * block
    pad = per * ndev - n
    xp = np.pad(x, ((0, pad), (0, 0))).reshape(ndev, per // block, block, c)
    wp = np.pad(np.ones(n, np.float32), (0, pad)).reshape(ndev, per // block, block)
    sh = NamedSharding(mesh, P("frames"))
    return jax.device_put(xp, sh), jax.device_put(wp, sh)


@jax.jit
def _kpp_step(x, xn, min_d, centres, i, key, n_trials):
    """One greedy k-means++ step: the best of ``n_trials`` D^2-sampled candidates."""
    total = jnp.sum(min_d)
    u = jax.random.uniform(key, (n_trials.shape[0],)) * total
    cand = jnp.clip(jnp.searchsorted(jnp.cumsum(min_d), u), 0, x.shape[0] - 1)
    xc = x[cand]
    d = jnp.maximum(xn[None, :] + jnp.sum(xc * xc, 1)[:, None]
                    - 2.0 * jnp.einsum("lc,nc->ln", xc, x,
                                       precision=jax.lax.Precision.HIGHEST), 0.0)
    pot = jnp.sum(jnp.minimum(min_d[None, :], d), axis=1)
    best = jnp.argmin(pot)
    return jnp.minimum(min_d, d[best]), centres.at[i].set(xc[best])


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int = 0, n_trials: int | None = None
                     ) -> np.ndarray:
    """Greedy k-means++ centres (scikit-learn's ``_kmeans_plusplus``: ``2 + log k`` trials)."""
    n_trials = n_trials or 2 + int(math.log(k))
    xs = jnp.asarray(x, jnp.float32)
    xn = jnp.sum(xs * xs, axis=1)
    key = jax.random.PRNGKey(seed)
    key, sub = jax.random.split(key)
    first = int(jax.random.randint(sub, (), 0, x.shape[0]))
    centres = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(xs[first])
    min_d = jnp.maximum(xn + xn[first] - 2.0 * jnp.einsum(
        "nc,c->n", xs, xs[first], precision=jax.lax.Precision.HIGHEST), 0.0)
    trials = jnp.zeros((n_trials,))
    for i in range(1, k):
        key, sub = jax.random.split(key)
        min_d, centres = _kpp_step(xs, xn, min_d, centres, i, sub, trials)
    return np.asarray(centres)


@jax.jit
def _minibatch_update(centres, counts, xb):
    """scikit-learn's mini-batch step: each centre moves to the running mean of its points.
    Returns the new centres and counts and the batch's inertia before the step."""
    lab = timbre.nearest_centres(xb, centres)
    inertia = jnp.sum(jnp.square(xb - centres[lab]))
    k = centres.shape[0]
    sums = jax.ops.segment_sum(xb, lab, num_segments=k)
    cnt = jax.ops.segment_sum(jnp.ones(xb.shape[0], jnp.float32), lab, num_segments=k)
    new_counts = counts + cnt
    moved = (centres * counts[:, None] + sums) / jnp.maximum(new_counts, 1.0)[:, None]
    return jnp.where(cnt[:, None] > 0, moved, centres), new_counts, inertia


def _fingerprint(x: np.ndarray, **kw) -> str:
    h = hashlib.sha256(json.dumps(kw, sort_keys=True).encode())
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x[:: max(1, len(x) // 997)]).tobytes())
    return h.hexdigest()[:16]


def _save_state(path: str | None, **arrays) -> None:
    if not path:
        return
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def kmeans(x: np.ndarray, k: int, *, n_init: int = 1, seed: int = 0,
           state_path: str | None = None, log: Callable[[str], None] = lambda m: None,
           **kw) -> tuple[np.ndarray, float]:
    """K-means centres ``(k, C)`` of ``x (N, C)`` and their inertia on all of ``x``: the best
    of ``n_init`` runs (seeds ``seed * 1000 + r``), each :func:`kmeans_once` (``kw``)."""
    best = None
    for r in range(n_init):
        sp = state_path if n_init == 1 or not state_path else f"{state_path[:-4]}.r{r}.npz"
        res = kmeans_once(x, k, seed=seed * 1000 + r if n_init > 1 else seed,
                          state_path=sp, log=log, **kw)
        if n_init > 1:
            log(f"  run {r + 1}/{n_init}: inertia {res[1]:.6g}")
        if best is None or res[1] < best[1]:
            best = res
    return best


def kmeans_once(x: np.ndarray, k: int, *, minibatch: bool = False,
                max_iter: int | None = None, batch_size: int = 4096, tol: float = 1e-4,
                seed: int = 0, init: str = "k-means++", init_size: int | None = None,
                state_path: str | None = None, log: Callable[[str], None] = lambda m: None,
                final_inertia: bool = True) -> tuple[np.ndarray, float]:
    """One k-means run: centres ``(k, C)`` of ``x (N, C)`` and their inertia on all of ``x``.

    ``init``: ``"k-means++"`` (greedy, on ``init_size`` sampled points: default
    ``max(3 * batch_size, 3 * k)`` as scikit-learn's mini-batch k-means; all points for full
    Lloyd up to 10 * k points) or ``"random"`` (``k`` distinct points, as train_index.py's
    reduction). Full Lloyd (default) runs ``max_iter`` (300) iterations or until the inertia
    improves by less than ``tol`` (relative); ``minibatch`` runs ``max_iter`` (80) epochs of
    random batches of ``batch_size`` (stopping as scikit-learn does when the smoothed batch
    inertia has not improved for 10 batches). ``final_inertia=False`` skips the last pass
    over all points (mini-batch only: the smoothed batch inertia is returned).
    ``state_path`` (``.npz``) is written after every iteration and resumed from when it
    matches this data and these settings.
    """
    x = np.ascontiguousarray(x, np.float32)
    n = x.shape[0]
    if n < k:
        raise ValueError(f"{n} points cannot make {k} clusters; use --n-clusters {n} or fewer")
    max_iter = max_iter or (80 if minibatch else 300)
    fp = _fingerprint(x, k=k, minibatch=minibatch, batch_size=batch_size, seed=seed, init=init)
    rng = np.random.default_rng(seed)
    start, counts, history = 0, np.zeros(k, np.float32), []
    centres = None
    if state_path and os.path.exists(state_path):
        try:
            st = np.load(state_path)
            if str(st["fingerprint"]) == fp:
                centres, start = st["centres"], int(st["iteration"])
                counts, history = st["counts"], list(st["history"])
                rng = np.random.default_rng([seed, start])
                log(f"  resuming k-means at iteration {start}")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            centres = None
    if centres is None:
        if init == "random":
            centres = x[rng.choice(n, k, replace=False)]
        else:
            size = init_size or (max(3 * batch_size, 3 * k) if minibatch
                                 else (n if n <= 10 * k else max(10 * k, 3 * batch_size)))
            sample = x if size >= n else x[rng.choice(n, size, replace=False)]
            t = time.time()
            centres = kmeans_plus_plus(sample, k, seed=seed)
            log(f"  k-means++ over {len(sample)} points: {time.time() - t:.1f} s")
        _save_state(state_path, fingerprint=fp, centres=centres, iteration=0, counts=counts,
                    history=np.array(history, np.float64))
    cent = jnp.asarray(centres)
    if minibatch:
        # scikit-learn's stopping rule: the batches' inertia, smoothed (EWA), has not
        # improved for max_no_improvement=10 steps (or max_iter epochs are done)
        steps_per_epoch = max(1, n // batch_size)
        counts_j = jnp.asarray(counts)
        b = min(batch_size, n)
        alpha = min(1.0, 2.0 * b / (n + 1))
        ewa, best, stale = None, np.inf, 0
        for it in range(start, max_iter):
            for _ in range(steps_per_epoch):
                xb = jnp.asarray(x[rng.integers(0, n, b)])
                cent, counts_j, batch_inertia = _minibatch_update(cent, counts_j, xb)
                v = float(batch_inertia) / b
                ewa = v if ewa is None else ewa * (1 - alpha) + v * alpha
                if ewa < best:
                    best, stale = ewa, 0
                else:
                    stale += 1
                if stale >= 10:
                    break
            _save_state(state_path, fingerprint=fp, centres=np.asarray(cent),
                        iteration=it + 1, counts=np.asarray(counts_j),
                        history=np.array(history, np.float64))
            if stale >= 10:
                log(f"  mini-batch k-means converged in epoch {it + 1}")
                break
        if not final_inertia:  # the smoothed batch inertia only (no pass over all points)
            return np.asarray(cent), float(ewa * n)
        _, _, inertia = _assign_stats(*_shard_points(x), cent)
        return np.asarray(cent), float(inertia)
    xs, ws = _shard_points(x)
    prev = history[-1] if history else None
    inertia = prev
    for it in range(start, max_iter):
        sums, cnt, inertia_j = _assign_stats(xs, ws, cent)
        inertia = float(inertia_j)  # inertia of the centres before this update
        cent = jnp.where(cnt[:, None] > 0, sums / jnp.maximum(cnt, 1.0)[:, None], cent)
        history.append(inertia)
        _save_state(state_path, fingerprint=fp, centres=np.asarray(cent), iteration=it + 1,
                    counts=counts, history=np.array(history, np.float64))
        if prev is not None and prev - inertia <= tol * max(prev, 1e-30):
            break
        prev = inertia
    _, _, final = _assign_stats(xs, ws, cent)
    return np.asarray(cent), float(final)


# --------------------------------------------------------------------------------- corpus


def corpus_units(data_dir: str | os.PathLike, splits=("train", "validation")
                 ) -> dict[str, np.ndarray]:
    """Every unit frame of a built corpus, per speaker name: ``{name: (N, C) float32}``."""
    from svcjax.data import corpus, input_pipeline
    meta = corpus.load_metadata(data_dir)
    names = list(meta["speakers"])
    frames: dict[str, list[np.ndarray]] = {s: [] for s in names}
    for split in splits:
        try:
            src = input_pipeline.data_source(data_dir, split)
        except ValueError:
            continue
        for i in range(len(src)):
            ex = src[i]
            if "units" not in ex:
                raise ValueError(f"the corpus at {data_dir} has no content units (built with "
                                 f"--features without units)")
            frames[names[int(ex["speaker"])]].append(np.asarray(ex["units"], np.float32))
    out = {s: np.concatenate(v, 0) for s, v in frames.items() if v}
    if not out:
        raise ValueError(f"the corpus at {data_dir} has no clips")
    return out


# ------------------------------------------------------------------------------ training


def _partial_dir(out: str) -> Path:
    return Path(out + ".partial")


def train_cluster(data_dir, out: str, n_clusters: int = 10000, *, minibatch: bool = False,
                  max_iter: int | None = None, seed: int = 0,
                  log: Callable[[str], None] = print) -> str:
    """Per-speaker k-means over a corpus's units; writes ``out`` (``.npz`` or ``.pt``)."""
    if not (out.endswith(".npz") or out.endswith(".pt")):
        raise ValueError(f"the cluster model's file name must end in .npz (svcjax) or .pt "
                         f"(the reference's layout), got {out!r}")
    units = corpus_units(data_dir)
    work = _partial_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    centres = {}
    for i, (spk, x) in enumerate(units.items()):
        done = work / f"speaker{i}.done.npy"
        if done.exists():
            centres[spk] = np.load(done)
            log(f"{spk}: done before ({len(centres[spk])} centres)")
            continue
        k = min(n_clusters, len(x))
        if k < n_clusters:
            log(f"{spk}: only {len(x)} frames, using {k} clusters")
        t = time.time()
        c, inertia = kmeans(x, k, minibatch=minibatch, max_iter=max_iter, seed=seed,
                            state_path=str(work / f"speaker{i}.state.npz"), log=log)
        log(f"{spk}: {len(x)} frames -> {k} centres, inertia {inertia:.4g} "
            f"({time.time() - t:.1f} s)")
        with atomic_write(done) as f:
            np.save(f, c)
        centres[spk] = c
    if out.endswith(".pt"):
        write_reference_cluster(centres, out)
    else:
        timbre.TimbreIndex("cluster", {s: timbre.SpeakerArrays(c) for s, c in centres.items()}
                           ).save(out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def write_reference_cluster(centres: dict[str, np.ndarray], path: str) -> str:
    """The reference's ``kmeans_10000.pt``: ``torch.save`` of ``{speaker: {n_features_in_,
    _n_threads, cluster_centers_}}`` with NumPy arrays, written atomically without torch."""
    obj = {spk: {"n_features_in_": int(c.shape[1]), "_n_threads": 4,
                 "cluster_centers_": np.ascontiguousarray(c, np.float32)}
           for spk, c in centres.items()}
    name = os.path.splitext(os.path.basename(path))[0] or "archive"
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{name}/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr(f"{name}/byteorder", "little")
        zf.writestr(f"{name}/version", "3\n")
    return path
