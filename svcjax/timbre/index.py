"""Timbre-leakage controls: the k-means cluster model and feature retrieval, on device.

So-VITS-SVC's two inference options that pull the content units toward the target speaker:

* **cluster model** (the reference's ``cluster/``): per-speaker k-means centres over the
  corpus's units; each frame moves toward its nearest centre,
  ``c = r * centre + (1 - r) * c``.
* **feature retrieval** (the reference's ``train_index.py`` and ``-fr``): a per-speaker index
  of unit frames; each frame's 8 nearest rows (squared L2) are averaged with weights
  ``(1 / score)^2`` normalised, and mixed in the same way.

Both are :class:`TimbreIndex` objects: ``load_timbre_index(PATH)`` reads a reference
``kmeans_10000.pt`` (read with an allowlisted unpickler; sklearn is not needed), a reference
``feature_and_index.pkl`` (faiss ``IVF{n},Flat`` indexes; needs the optional ``faiss-cpu``
package) or svcjax's own ``.npz`` file (plain arrays, no pickle) written by
``svcjax train-cluster`` / ``svcjax train-index``. ``index.mix(units, speaker=..., ratio=...)``
takes units ``(B, T, C)`` and returns the mixed units.

Search runs in jitted JAX, with the query frames split over all local devices (``shard_map``)
and the index replicated: nearest centre by ``argmin(|c|^2 - 2 x.c)`` in blocks; exact top-k
by blocked brute force with a running top-k merge; and, for IVF indexes (imported faiss ones,
or svcjax indexes built with lists), the coarse quantiser's nearest list (``nprobe = 1``, as
the reference searches) and an exact scan of that list only. ``search="exact"`` searches any
index exhaustively instead.

Speaker mixes: with per-frame speaker weights ``w[b, t, s]`` the target of each frame is
``sum_s w[b, t, s] * target_s`` (each speaker's own nearest centre / retrieved rows), which is
the single-speaker rule when the weights are one-hot. (The reference itself turns both
options off when a speaker mix is used.)
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from svcjax.files import atomic_write

__all__ = ["TimbreIndex", "load_timbre_index", "TimbreFileError", "nearest_centres",
           "topk_exact", "topk_ivf", "retrieval_weights", "FORMAT_VERSION"]

FORMAT_VERSION = 1
TOPK = 8  # the reference's feature_index.search(feat_np, k=8)


class TimbreFileError(ValueError):
    """A cluster / index file that is not what svcjax can read."""


# ------------------------------------------------------------------------------ jax kernels


def _jax():
    import jax
    import jax.numpy as jnp
    return jax, jnp


def _hp(a, b):
    """``a @ b.T`` at full float32 precision (search must not round through bf16)."""
    jax, jnp = _jax()
    return jnp.einsum("mc,nc->mn", a, b, precision=jax.lax.Precision.HIGHEST)


def nearest_centres(x, centres, centre_valid=None, block: int = 2048):
    """Index of each row's nearest centre (squared L2), ``x (M, C)``, ``centres (K, C)``.

    ``argmin_k |c_k|^2 - 2 x.c_k`` (the term ``|x|^2`` is the same for every centre), as
    sklearn's ``KMeans.predict`` computes it. ``centre_valid (K,)`` masks padding centres.
    Centres are visited in blocks of ``block`` with a running minimum.
    """
    jax, jnp = _jax()
    x = jnp.asarray(x, jnp.float32)
    centres = jnp.asarray(centres, jnp.float32)
    k = centres.shape[0]
    nb = -(-k // block)
    pad = nb * block - k
    cn = jnp.sum(centres * centres, axis=1)
    if centre_valid is not None:
        cn = jnp.where(centre_valid, cn, jnp.inf)
    cs = jnp.pad(centres, ((0, pad), (0, 0))).reshape(nb, block, -1)
    cn = jnp.pad(cn, (0, pad), constant_values=jnp.inf).reshape(nb, block)

    def step(carry, blk):
        best_d, best_i = carry
        c, n, off = blk
        d = n[None, :] - 2.0 * _hp(x, c)
        i = jnp.argmin(d, axis=1)
        dmin = jnp.take_along_axis(d, i[:, None], axis=1)[:, 0]
        better = dmin < best_d
        return (jnp.where(better, dmin, best_d), jnp.where(better, i + off, best_i)), None

    init = (jnp.full((x.shape[0],), jnp.inf, jnp.float32), jnp.zeros((x.shape[0],), jnp.int32))
    offs = jnp.arange(nb, dtype=jnp.int32) * block
    (_, idx), _ = jax.lax.scan(step, init, (cs, cn, offs))
    return idx


def topk_exact(q, base, base_valid=None, k: int = TOPK, block: int = 8192):
    """Exact k nearest rows of ``base (N, C)`` for each query ``q (M, C)`` (squared L2).

    Returns ``(dist (M, k), index (M, k))`` ascending, distances
    ``|q|^2 + |b|^2 - 2 q.b`` clamped at 0 (faiss's ``IndexFlatL2``). Rows masked out by
    ``base_valid`` and missing rows (``N < k``) get distance ``inf`` and index ``-1``.
    """
    jax, jnp = _jax()
    q = jnp.asarray(q, jnp.float32)
    base = jnp.asarray(base, jnp.float32)
    n = base.shape[0]
    block = min(block, max(n, 1))
    nb = -(-n // block)
    pad = nb * block - n
    bn = jnp.sum(base * base, axis=1)
    valid = jnp.ones((n,), bool) if base_valid is None else base_valid
    bs = jnp.pad(base, ((0, pad), (0, 0))).reshape(nb, block, -1)
    bn = jnp.pad(bn, (0, pad)).reshape(nb, block)
    vs = jnp.pad(valid, (0, pad)).reshape(nb, block)
    qn = jnp.sum(q * q, axis=1)
    m = q.shape[0]

    def step(carry, blk):
        best_d, best_i = carry
        b, n_, v, off = blk
        d = jnp.maximum(qn[:, None] + n_[None, :] - 2.0 * _hp(q, b), 0.0)
        d = jnp.where(v[None, :], d, jnp.inf)
        ids = jnp.broadcast_to(jnp.arange(block, dtype=jnp.int32)[None, :] + off, d.shape)
        ids = jnp.where(v[None, :], ids, -1)
        all_d = jnp.concatenate([best_d, d], axis=1)
        all_i = jnp.concatenate([best_i, ids], axis=1)
        neg, pos = jax.lax.top_k(-all_d, k)
        return (-neg, jnp.take_along_axis(all_i, pos, axis=1)), None

    init = (jnp.full((m, k), jnp.inf, jnp.float32), jnp.full((m, k), -1, jnp.int32))
    offs = jnp.arange(nb, dtype=jnp.int32) * block
    (d, i), _ = jax.lax.scan(step, init, (bs, bn, vs, offs))
    return d, i


def topk_ivf(q, base, centroids, lists, k: int = TOPK, centroid_valid=None):
    """IVF search with ``nprobe = 1`` (faiss ``IndexIVFFlat`` as the reference searches it).

    ``centroids (L, C)``: the coarse quantiser; ``lists (L, W)``: row ids of ``base`` in each
    inverted list, padded with -1. Each query scans only its nearest centroid's list
    (distances ``sum((q - b)^2)``, as faiss's list scan computes them). Returns
    ``(dist (M, k), index (M, k))`` ascending; slots past the list's length get
    ``inf`` / ``-1`` (faiss's ``-1`` labels).
    """
    jax, jnp = _jax()
    q = jnp.asarray(q, jnp.float32)
    coarse = nearest_centres(q, centroids, centroid_valid)
    rows = lists[coarse]                                    # (M, W)
    vec = jnp.asarray(base, jnp.float32)[jnp.maximum(rows, 0)]  # (M, W, C)
    d = jnp.sum(jnp.square(vec - q[:, None, :]), axis=-1)
    d = jnp.where(rows >= 0, d, jnp.inf)
    kk = min(k, rows.shape[1])
    neg, pos = jax.lax.top_k(-d, kk)
    idx = jnp.take_along_axis(rows, pos, axis=1)
    dist = -neg
    if kk < k:
        dist = jnp.pad(dist, ((0, 0), (0, k - kk)), constant_values=jnp.inf)
        idx = jnp.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
    return dist, jnp.where(jnp.isfinite(dist), idx, -1)


def retrieval_weights(dist):
    """The reference's neighbour weights ``(1/score)^2 / sum (1/score)^2``, computed stably.

    Written as ``(s_min / s)^2`` normalised (the same value) so that tiny scores do not
    overflow; a zero score (the query is in the index) takes all the weight, missing
    neighbours (``inf``) weigh 0. Rows without any neighbour get all-zero weights.
    """
    jax, jnp = _jax()
    s = jnp.maximum(dist, jnp.float32(1e-30))
    smin = jnp.min(s, axis=1, keepdims=True)
    r = jnp.where(jnp.isfinite(s), smin / s, 0.0)
    w = r * r
    tot = jnp.sum(w, axis=1, keepdims=True)
    return jnp.where(tot > 0, w / jnp.where(tot > 0, tot, 1.0), 0.0)


# -------------------------------------------------------------------------- per-speaker data


class SpeakerArrays:
    """One speaker's arrays: ``vectors (N, C)``; with IVF also ``centroids`` and ``lists``."""

    def __init__(self, vectors, centroids=None, lists=None):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.centroids = None if centroids is None else np.ascontiguousarray(centroids, np.float32)
        self.lists = None if lists is None else np.ascontiguousarray(lists, np.int32)


def lists_from_assignment(assign: np.ndarray, nlist: int) -> np.ndarray:
    """Inverted lists ``(nlist, W)`` (row ids, -1 padded) from each row's list number."""
    assign = np.asarray(assign, np.int64)
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=nlist)
    width = max(int(counts.max()) if counts.size else 0, 1)
    out = np.full((nlist, width), -1, np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(assign)) - np.repeat(starts, counts)
    out[assign[order], pos] = order
    return out


# --------------------------------------------------------------------------------- the index


class TimbreIndex:
    """Per-speaker cluster centres (``kind="cluster"``) or retrieval rows (``"retrieval"``).

    ``speakers``: the keys (speaker names, or the reference's speaker ids for an imported
    ``feature_and_index.pkl``). ``search``: ``"exact"`` (default) or ``"ivf"`` (needs
    inverted lists; imported faiss indexes default to it, as the reference searches them).
    """

    def __init__(self, kind: str, speakers: Mapping[Any, SpeakerArrays], *,
                 search: str | None = None, source: str = ""):
        if kind not in ("cluster", "retrieval"):
            raise ValueError(f"kind must be 'cluster' or 'retrieval', got {kind!r}")
        if not speakers:
            raise TimbreFileError(f"{source or 'the index'} holds no speakers")
        self.kind = kind
        self.speakers = dict(speakers)
        dims = {s.vectors.shape[1] for s in self.speakers.values()}
        if len(dims) != 1:
            raise TimbreFileError(f"{source}: speakers have different unit sizes {sorted(dims)}")
        self.dim = dims.pop()
        self.source = source
        has_ivf = all(s.lists is not None for s in self.speakers.values())
        self.search = search or "exact"
        if self.search not in ("exact", "ivf"):
            raise ValueError(f"search must be 'exact' or 'ivf', got {self.search!r}")
        if self.search == "ivf" and not has_ivf:
            raise ValueError(f"{source or 'this index'} has no inverted lists; use search='exact'")
        self._device_cache: dict = {}

    def __repr__(self):
        sizes = ", ".join(f"{k}: {v.vectors.shape[0]}" for k, v in list(self.speakers.items())[:4])
        more = ", ..." if len(self.speakers) > 4 else ""
        return (f"TimbreIndex({self.kind}, dim={self.dim}, search={self.search}, "
                f"{len(self.speakers)} speakers [{sizes}{more}])")

    # -- speakers

    def key(self, speaker) -> Any:
        """The index key of ``speaker`` (a name or an id), or a clear error."""
        if speaker in self.speakers:
            return speaker
        for k in self.speakers:
            if str(k) == str(speaker):
                return k
        raise KeyError(f"speaker {speaker!r} is not in the {self.kind} index {self.source!r} "
                       f"(it has {', '.join(map(str, self.speakers))})")

    # -- the search, as arrays for the compiled program

    def device_arrays(self, keys: Sequence[Any]) -> dict:
        """Stacked, padded arrays of ``keys``'s data (cached), the inputs of :func:`mix_units`."""
        keys = tuple(keys)
        if keys in self._device_cache:
            return self._device_cache[keys]
        spk = [self.speakers[k] for k in keys]
        n = max(s.vectors.shape[0] for s in spk)
        vec = np.zeros((len(spk), n, self.dim), np.float32)
        valid = np.zeros((len(spk), n), bool)
        for i, s in enumerate(spk):
            vec[i, :len(s.vectors)] = s.vectors
            valid[i, :len(s.vectors)] = True
        out = {"vectors": vec, "valid": valid}
        if self.search == "ivf":
            nl = max(s.centroids.shape[0] for s in spk)
            w = max(s.lists.shape[1] for s in spk)
            cent = np.zeros((len(spk), nl, self.dim), np.float32)
            cval = np.zeros((len(spk), nl), bool)
            lists = np.full((len(spk), nl, w), -1, np.int32)
            for i, s in enumerate(spk):
                cent[i, :len(s.centroids)] = s.centroids
                cval[i, :len(s.centroids)] = True
                lists[i, :s.lists.shape[0], :s.lists.shape[1]] = s.lists
            out.update(centroids=cent, centroid_valid=cval, lists=lists)
        import jax
        out = jax.device_put(out)
        self._device_cache = {keys: out}  # keep one set on device
        return out

    def weights_for(self, speaker, shape: tuple[int, int]) -> tuple[tuple, np.ndarray]:
        """``(keys, w (B, T, S))`` for ``speaker``: a name/id, ``{speaker: weight}`` or a
        ``(keys, weights)`` pair with per-frame weights ``(B, T, S)`` / ``(T, S)``."""
        b, t = shape
        if isinstance(speaker, tuple) and len(speaker) == 2 and not isinstance(speaker[0], str):
            keys, w = speaker
            keys = tuple(self.key(k) for k in keys)
            w = np.asarray(w, np.float32)
            if w.ndim == 2:
                w = np.broadcast_to(w[None], (b,) + w.shape)
            if w.shape != (b, t, len(keys)):
                raise ValueError(f"per-frame speaker weights have shape {w.shape}, expected "
                                 f"{(b, t, len(keys))}")
        elif isinstance(speaker, Mapping):
            items = [(self.key(k), float(v)) for k, v in speaker.items() if float(v) != 0]
            if not items:
                raise ValueError("the speaker mix has no speaker with a nonzero weight")
            keys = tuple(k for k, _ in items)
            tot = sum(v for _, v in items)
            w = np.broadcast_to(np.array([v / tot for _, v in items], np.float32),
                                (b, t, len(items)))
        else:
            keys = (self.key(speaker),)
            w = np.ones((b, t, 1), np.float32)
        used = np.flatnonzero(np.asarray(w).reshape(-1, len(keys)).any(axis=0))
        if len(used) == 0:
            used = np.arange(1)
        return tuple(keys[i] for i in used), np.ascontiguousarray(np.asarray(w)[..., used])

    def mix(self, units, speaker=None, ratio: float = 0.5):
        """Units ``(B, T, C)`` (or ``(T, C)``) moved toward ``speaker``'s timbre by ``ratio``.

        ``speaker``: a name or id; ``{speaker: weight}``; or ``(speakers, weights)`` with
        per-frame weights ``(B, T, S)``. ``None`` works for a one-speaker index.
        """
        import jax.numpy as jnp
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"the {self.kind} ratio must be in [0, 1], got {ratio}")
        u = jnp.asarray(units, jnp.float32)
        squeeze = u.ndim == 2
        if squeeze:
            u = u[None]
        if u.ndim != 3 or u.shape[-1] != self.dim:
            raise ValueError(f"units of shape {tuple(np.shape(units))} do not match the "
                             f"{self.kind} index's unit size {self.dim}")
        if speaker is None:
            if len(self.speakers) != 1:
                raise ValueError(f"name a speaker: the {self.kind} index has "
                                 f"{', '.join(map(str, self.speakers))}")
            speaker = next(iter(self.speakers))
        keys, w = self.weights_for(speaker, u.shape[:2])
        arrays = self.device_arrays(keys)
        # IVF gathers (block, list width, C) rows per block: smaller blocks
        out = mix_units(u, jnp.asarray(w), jnp.float32(ratio), arrays, kind=self.kind,
                        search=self.search, block=128 if self.search == "ivf" else 512)
        return out[0] if squeeze else out

    # -- saving

    def save(self, path: str | os.PathLike) -> str:
        """Write svcjax's own index file (``.npz``, plain arrays, no pickle), atomically."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise ValueError(f"svcjax index files end in .npz, got {path!r}")
        arrays = {"format": np.array(FORMAT_VERSION), "kind": np.array(self.kind),
                  "keys": np.array([str(k) for k in self.speakers]),
                  "key_is_int": np.array([isinstance(k, (int, np.integer)) for k in self.speakers]),
                  "search": np.array(self.search)}
        for i, s in enumerate(self.speakers.values()):
            arrays[f"s{i}_vectors"] = s.vectors
            if s.lists is not None:
                arrays[f"s{i}_centroids"] = s.centroids
                arrays[f"s{i}_lists"] = s.lists
        with atomic_write(path, make_dirs=True) as f:
            np.savez(f, **arrays)
        return path


# ------------------------------------------------------------------------- the compiled mix


def _local_mesh():
    import jax
    devs = jax.local_devices()
    return jax.sharding.Mesh(np.array(devs), ("frames",))


@functools.partial(jax.jit, static_argnames=("kind", "search", "block"))
def mix_units(units, weights, ratio, arrays, *, kind: str, search: str, block: int = 512):
    """Units ``(B, T, C)`` mixed toward the per-frame weighted speakers' targets (jitted).

    ``weights (B, T, S)`` over the speakers stacked in ``arrays`` (:meth:`TimbreIndex.
    device_arrays`). Frames are split over the local devices; each device searches its
    frames in blocks of ``block``.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    b, t, c = units.shape
    s = weights.shape[-1]
    x = units.reshape(b * t, c)
    w = weights.reshape(b * t, s)
    mesh = _local_mesh()
    ndev = mesh.devices.size
    m = b * t
    per = -(-m // (ndev * block)) * block
    pad = per * ndev - m
    xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(ndev, per // block, block, c)
    wp = jnp.pad(w, ((0, pad), (0, 0))).reshape(ndev, per // block, block, s)

    def target_one(q, a):
        """Target of frames ``q (M, C)`` for one speaker's arrays ``a``."""
        if kind == "cluster":
            i = nearest_centres(q, a["vectors"], a["valid"])
            return a["vectors"][i]
        if search == "ivf":
            d, i = topk_ivf(q, a["vectors"], a["centroids"], a["lists"],
                            centroid_valid=a["centroid_valid"])
        else:
            d, i = topk_exact(q, a["vectors"], a["valid"])
        wt = retrieval_weights(d)
        rows = a["vectors"][jnp.maximum(i, 0)]
        tgt = jnp.einsum("mk,mkc->mc", wt, rows, precision=jax.lax.Precision.HIGHEST)
        # no neighbour at all (an empty inverted list): keep the frame as it is
        return jnp.where(jnp.sum(wt, axis=1, keepdims=True) > 0, tgt, q)

    def per_device(xd, wd, ar):
        xd, wd = xd[0], wd[0]

        def blk(args):
            q, wq = args
            tgts = jax.lax.map(lambda a: target_one(q, a), ar)  # (S, block, C)
            return jnp.einsum("ms,smc->mc", wq, tgts, precision=jax.lax.Precision.HIGHEST)

        return jax.lax.map(blk, (xd, wd))[None]

    tgt = jax.shard_map(per_device, mesh=mesh, in_specs=(P("frames"), P("frames"), P()),
                        out_specs=P("frames"), check_vma=False)(xp, wp, arrays)
    tgt = tgt.reshape(-1, c)[:m].reshape(b, t, c)
    return ratio * tgt + (1.0 - ratio) * units


# ---------------------------------------------------------------------------------- reading


_CLUSTER_LAYOUT = ("a dict {speaker: {'n_features_in_': int, '_n_threads': int, "
                   "'cluster_centers_': float array (n_clusters, n_features_in_)}} saved with "
                   "torch.save (the reference's cluster/train_cluster.py)")


def _read_cluster_pt(path: str) -> TimbreIndex:
    from svcjax.interop import torch_pickle
    try:
        ckpt = torch_pickle.load(path)
    except torch_pickle.TorchFileError as e:
        raise TimbreFileError(f"{path} is not a readable cluster model ({e}); expected "
                              f"{_CLUSTER_LAYOUT}") from None
    if not isinstance(ckpt, dict) or not ckpt:
        raise TimbreFileError(f"{path} holds a {type(ckpt).__name__}, not a cluster model; "
                              f"expected {_CLUSTER_LAYOUT}")
    speakers = {}
    for spk, d in ckpt.items():
        centres = d.get("cluster_centers_") if isinstance(d, dict) else None
        if not isinstance(centres, np.ndarray) or centres.ndim != 2 or centres.size == 0:
            got = (f"keys {sorted(map(str, d))}" if isinstance(d, dict)
                   else f"a {type(d).__name__}")
            raise TimbreFileError(f"{path}: speaker {spk!r} has {got}, not a 2-D "
                                  f"'cluster_centers_' array; expected {_CLUSTER_LAYOUT}")
        nf = d.get("n_features_in_")
        if nf is not None and int(nf) != centres.shape[1]:
            raise TimbreFileError(f"{path}: speaker {spk!r} has n_features_in_={nf} but centres "
                                  f"of shape {centres.shape}; expected {_CLUSTER_LAYOUT}")
        if not np.all(np.isfinite(centres)):
            raise TimbreFileError(f"{path}: speaker {spk!r} has non-finite cluster centres")
        speakers[spk] = SpeakerArrays(centres.astype(np.float32))
    return TimbreIndex("cluster", speakers, source=path)


class _FaissRecord:
    """What the pickle says about a faiss index: its serialized bytes (``state['this']``)."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _IndexUnpickler(pickle.Unpickler):
    """Only plain containers and faiss index records; nothing in the file is executed."""

    def find_class(self, module, name):
        if module.split(".")[0] == "faiss" and name.startswith("Index"):
            return type(name, (_FaissRecord,), {"faiss_class": name})
        if module == "builtins" and name in ("dict", "list", "tuple", "int", "str"):
            return getattr(__import__("builtins"), name)
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


_RETRIEVAL_LAYOUT = ("a pickled dict {speaker id: faiss IndexIVFFlat} (the reference's "
                     "train_index.py, feature_and_index.pkl)")


def _read_retrieval_pkl(path: str, search: str | None) -> TimbreIndex:
    try:
        with open(path, "rb") as f:
            data = _IndexUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise TimbreFileError(f"{path} is not a readable feature-retrieval index ({e}); "
                              f"expected {_RETRIEVAL_LAYOUT}") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, _FaissRecord) for v in data.values()):
        raise TimbreFileError(f"{path} does not hold faiss indexes per speaker; expected "
                              f"{_RETRIEVAL_LAYOUT}")
    try:
        import faiss
    except ImportError:
        raise TimbreFileError(
            f"{path} is a faiss index file; reading it needs the faiss-cpu package "
            f"(pip install 'svcjax[timbre]'), or convert it once where faiss is installed "
            f"with `svcjax import-index {os.path.basename(path)} OUT.npz`") from None
    speakers = {}
    for spk, rec in data.items():
        blob = rec.state.get("this") if isinstance(rec.state, dict) else None
        if not isinstance(blob, (bytes, bytearray)):
            raise TimbreFileError(f"{path}: speaker {spk!r}'s index has no serialized data")
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, np.uint8))
        except RuntimeError as e:
            raise TimbreFileError(f"{path}: speaker {spk!r}'s faiss index is unreadable "
                                  f"({str(e).splitlines()[0]})") from None
        speakers[spk] = _speaker_from_faiss(index, path, spk)
    return TimbreIndex("retrieval", speakers, search=search or "ivf", source=path)


def _speaker_from_faiss(index, path, spk) -> SpeakerArrays:
    import faiss
    if index.metric_type != faiss.METRIC_L2:
        raise TimbreFileError(f"{path}: speaker {spk!r}'s index is not an L2 index")
    n = index.ntotal
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is None:  # a flat index: exact search only
        return SpeakerArrays(index.reconstruct_n(0, n))
    ivf = faiss.downcast_index(ivf)
    if not isinstance(ivf, faiss.IndexIVFFlat) or ivf.code_size != 4 * index.d:
        raise TimbreFileError(f"{path}: speaker {spk!r} has a {type(ivf).__name__}; only "
                              f"IVF{{n}},Flat indexes (the reference's) are supported")
    nlist = ivf.nlist
    centroids = ivf.quantizer.reconstruct_n(0, nlist)
    invl = ivf.invlists
    vectors = np.zeros((n, index.d), np.float32)
    assign = np.zeros((n,), np.int64)
    seen = np.zeros((n,), bool)
    for li in range(nlist):
        size = invl.list_size(li)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(invl.get_ids(li), size).copy()
        codes = faiss.rev_swig_ptr(invl.get_codes(li), size * invl.code_size).copy()
        if ids.min() < 0 or ids.max() >= n:
            raise TimbreFileError(f"{path}: speaker {spk!r}'s index has ids outside 0..{n - 1}")
        vectors[ids] = codes.view(np.float32).reshape(size, index.d)
        assign[ids] = li
        seen[ids] = True
    if not seen.all():
        raise TimbreFileError(f"{path}: speaker {spk!r}'s index does not list every row")
    return SpeakerArrays(vectors, centroids, lists_from_assignment(assign, nlist))


def _read_npz(path: str, search: str | None) -> TimbreIndex:
    try:
        z = np.load(path, allow_pickle=False)
        kind = str(z["kind"])
        search = search or (str(z["search"]) if "search" in z else None)
        keys = [str(k) for k in z["keys"]]
        is_int = z["key_is_int"]
        if int(z["format"]) > FORMAT_VERSION:
            raise TimbreFileError(f"{path} was written by a newer svcjax (format "
                                  f"{int(z['format'])})")
        speakers = {}
        for i, (k, isi) in enumerate(zip(keys, is_int)):
            key = int(k) if isi else k
            vec = z[f"s{i}_vectors"]
            if vec.ndim != 2:
                raise TimbreFileError(f"{path}: speaker {k!r}'s rows are not a 2-D array")
            if f"s{i}_lists" in z:
                lists = z[f"s{i}_lists"]
                if lists.size and (lists.max() >= len(vec) or lists.min() < -1):
                    raise TimbreFileError(f"{path}: speaker {k!r}'s lists name rows outside "
                                          f"0..{len(vec) - 1}")
                speakers[key] = SpeakerArrays(vec, z[f"s{i}_centroids"], lists)
            else:
                speakers[key] = SpeakerArrays(vec)
    except KeyError as e:
        raise TimbreFileError(f"{path} is not an svcjax timbre index (missing {e.args[0]!r}); "
                              f"write one with `svcjax train-cluster` or `svcjax train-index`"
                              ) from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        if isinstance(e, TimbreFileError):
            raise
        raise TimbreFileError(f"{path} is not a readable svcjax timbre index ({e})") from None
    return TimbreIndex(kind, speakers, search=search, source=path)


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _is_legacy_torch(path: str) -> bool:
    """Whether ``path`` starts with the legacy ``torch.save`` magic number (a pickled int)."""
    from svcjax.interop import torch_pickle
    try:
        with open(path, "rb") as f:
            return _NoGlobals(f).load() == torch_pickle.LEGACY_MAGIC
    except Exception:  # noqa: BLE001 - a first object that is not a plain int: not torch
        return False


def load_timbre_index(path: str | os.PathLike, search: str | None = None) -> TimbreIndex:
    """Read a cluster model or a retrieval index: the reference's ``kmeans_*.pt`` or
    ``feature_and_index.pkl``, or svcjax's own ``.npz``. ``search``: ``"exact"`` or ``"ivf"``
    (default: IVF for indexes with inverted lists, as the reference searches them)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cluster model / index not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") and path.endswith(".npz"):
        return _read_npz(path, search)
    if head.startswith(b"\x80") and not _is_legacy_torch(path):
        return _read_retrieval_pkl(path, search)  # the reference's feature_and_index.pkl
    if head.startswith(b"PK") or head[:1] == b"\x80":
        idx = _read_cluster_pt(path)
        if search == "ivf":
            raise ValueError("a cluster model has no inverted lists; search='ivf' is for "
                             "retrieval indexes")
        return idx
    raise TimbreFileError(f"{path} is neither a cluster model (kmeans_*.pt), a retrieval "
                          f"index (feature_and_index.pkl) nor an svcjax .npz index")
