"""Feature-retrieval index build and search: svcjax (JAX) against faiss-cpu, same CPU, same run.

    python bench/retrieval.py [--sizes 100000,1000000] [--dim 768] [--seconds 10]

For each corpus size N (frames x dim, clustered random units):

* build: svcjax's ``retrieval.build_retrieval`` (as train_index.py: shuffle, k-means to
  10000 centres above 2e5 frames, IVF lists) against the reference's recipe on faiss
  (shuffle, scikit-learn MiniBatchKMeans reduction above 2e5 frames when sklearn is
  installed, ``IVF{n},Flat`` train + add);
* search: ``--seconds`` of audio (86.13 frames a second) of queries, top-8: svcjax exact
  (blocked brute force) and IVF (nprobe 1), faiss ``IndexFlatL2`` and the reference's IVF
  index (nprobe 1); then svcjax's whole mix (search + weights + mixing, the jitted program
  the conversion runs) as seconds per second of audio.

Timings are medians of ``--repeats`` after a warm-up (JAX compiled). Never asserts anything.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from svcjax.timbre import retrieval, index as timbre  # noqa: E402

FRAMES_PER_SECOND = 44100 / 512


def units(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((256, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        out[i:i + m] = mu[rng.integers(0, 256, m)] + 0.5 * rng.standard_normal((m, dim),
                                                                               np.float32)
    return out


def timeit(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def faiss_build(x, faiss):
    """train_index.py's recipe (utils.train_index), on the same data."""
    big = x[np.random.default_rng(0).permutation(len(x))]
    if len(big) > retrieval.REDUCE_ABOVE:
        try:
            from sklearn.cluster import MiniBatchKMeans
        except ImportError:
            return None, "sklearn missing: no reduction"
        big = MiniBatchKMeans(n_clusters=retrieval.REDUCED_CENTRES,
                              batch_size=256 * (os.cpu_count() or 1), compute_labels=False,
                              init="random").fit(big).cluster_centers_.astype(np.float32)
    n_ivf = min(int(16 * math.sqrt(len(big))), len(big) // 39)
    index = faiss.index_factory(big.shape[1], f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(big)
    for i in range(0, len(big), 8192):
        index.add(big[i:i + 8192])
    return index, big


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import faiss
    except ImportError:
        faiss = None
        print("faiss-cpu is not installed: svcjax timings only")
    print(f"devices: {jax.devices()}, CPUs: {os.cpu_count()}")
    nq = int(round(args.seconds * FRAMES_PER_SECOND))
    for n in (int(s) for s in args.sizes.split(",")):
        x = units(n, args.dim, 0)
        q = units(nq, args.dim, 1)
        print(f"\n== {n} frames x {args.dim}; queries: {args.seconds:g} s of audio = {nq} "
              f"frames")
        t = time.perf_counter()
        spk = retrieval.build_retrieval(x, log=lambda m: None)
        t_ours = time.perf_counter() - t
        print(f"build   svcjax: {t_ours:8.2f} s  ({len(spk.vectors)} rows, "
              f"{len(spk.centroids)} lists)")
        index = big = None
        if faiss is not None:
            t = time.perf_counter()
            index, big = faiss_build(x, faiss)
            t_f = time.perf_counter() - t
            if index is None:
                print(f"build   faiss : skipped ({big})")
            else:
                print(f"build   faiss : {t_f:8.2f} s  ({index.ntotal} rows, "
                      f"{faiss.extract_index_ivf(index).nlist} lists)  "
                      f"(svcjax / faiss = {t_ours / t_f:.2f})")
        del x
        gc.collect()
        idx_exact = timbre.TimbreIndex("retrieval", {0: spk}, search="exact")
        idx_ivf = timbre.TimbreIndex("retrieval", {0: spk}, search="ivf")
        rows = jnp.asarray(spk.vectors)
        qj = jnp.asarray(q)
        exact = jax.jit(lambda a, b: timbre.topk_exact(a, b))
        t_ex = timeit(lambda: jax.block_until_ready(exact(qj, rows)), args.repeats)
        a = idx_ivf.device_arrays((0,))
        ivf = jax.jit(lambda qq: timbre.topk_ivf(qq, a["vectors"][0], a["centroids"][0],
                                                 a["lists"][0]))
        t_iv = timeit(lambda: jax.block_until_ready(ivf(qj)), args.repeats)
        per = lambda s: s / args.seconds  # noqa: E731
        print(f"search  svcjax exact : {t_ex:8.4f} s = {per(t_ex):.4f} s per s of audio")
        print(f"search  svcjax IVF   : {t_iv:8.4f} s = {per(t_iv):.4f} s per s of audio "
              f"(list width {a['lists'].shape[-1]})")
        if index is not None:
            flat = faiss.IndexFlatL2(big.shape[1])
            flat.add(big)
            t_ff = timeit(lambda: flat.search(q, 8), args.repeats)
            t_fi = timeit(lambda: index.search(q, 8), args.repeats)
            print(f"search  faiss flat   : {t_ff:8.4f} s = {per(t_ff):.4f} s per s of audio "
                  f"(svcjax exact / faiss = {t_ex / t_ff:.2f})")
            print(f"search  faiss IVF    : {t_fi:8.4f} s = {per(t_fi):.4f} s per s of audio "
                  f"(svcjax IVF / faiss = {t_iv / t_fi:.2f})")
            if len(big) == len(spk.vectors) and n <= retrieval.REDUCE_ABOVE:
                # same rows in the same order (both shuffle with default_rng(0))
                _, i_f = flat.search(q, 8)
                i_o = np.asarray(exact(qj, rows)[1])
                same = np.mean(np.all(np.sort(i_o, 1) == np.sort(i_f, 1), axis=1))
                print(f"        exact top-8 sets equal to faiss flat's: {same:.4f}")
            else:
                print("        (reduced indexes: svcjax's and sklearn's centres differ)")
            del flat
        u = q.reshape(1, nq, args.dim)
        for name, ix in (("exact", idx_exact), ("IVF", idx_ivf)):
            t_mix = timeit(lambda: jax.block_until_ready(ix.mix(u, speaker=0, ratio=0.5)),
                           args.repeats)
            print(f"mix     svcjax {name:5s} (search + weights + mix, in conversion): "
                  f"{per(t_mix):.4f} s per s of audio")
        del index, big, spk, idx_exact, idx_ivf, rows, a
        gc.collect()


if __name__ == "__main__":
    main()
