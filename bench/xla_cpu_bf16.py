"""What XLA-CPU does with bfloat16 on this CPU: matmul and conv timings, JAX against PyTorch.

    python bench/xla_cpu_bf16.py                       # the table (a few minutes)
    python bench/xla_cpu_bf16.py --size 1024 --repeats 3

Each row runs in its own subprocess (``XLA_FLAGS`` is read once per process; the thread
count is set by CPU affinity for XLA, ``torch.set_num_threads`` for PyTorch) and reports the
best of ``--repeats`` timed calls after a warm-up, in TFLOP/s:

* ``dot``: an N x N x N matmul (2048 by default): float32; bfloat16 operands with a
  bfloat16 result; bfloat16 operands accumulated to float32 (``preferred_element_type``,
  what ``compute_dtype=bfloat16`` emits);
* ``conv``: a 1-D convolution shaped like the vocoder's/SoVITS's (batch 1, 2048 steps,
  512 -> 512 channels, kernel 3), same three dtypes;
* XLA configurations: the default; each real ``--xla_cpu_*`` flag of this jaxlib that could
  change how dots/convs are emitted (``--list-flags`` prints all ``xla_cpu_*`` names found in
  the jaxlib binary); flags this jaxlib rejects are reported as such;
* PyTorch: float32 and bfloat16 ``torch.matmul`` / ``conv1d`` (oneDNN; AMX when the CPU has
  it), the same shapes.

Also printed: ``lscpu``'s bf16/AMX flags and the load average (a shared machine: the figures
are noisy; run it on an idle one for firm numbers). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

CONFIGS = [
    ("default", ""),
    ("thunk runtime off", "--xla_cpu_use_thunk_runtime=false"),
    ("fast math", "--xla_cpu_enable_fast_math=true"),
    ("oneDNN", "--xla_cpu_use_onednn=true"),
    ("oneDNN custom call", "--xla_cpu_use_onednn=true "
                           "--xla_cpu_experimental_onednn_custom_call=true"),
    ("oneDNN dot fusion", "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT"),
    ("XNNPACK", "--xla_cpu_use_xnnpack=true"),
    ("XNN dot fusion", "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT"),
    ("YNN dot fusion", "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"),
    ("max ISA AMX", "--xla_cpu_max_isa=AMX"),
    ("prefer 512-bit vectors", "--xla_cpu_prefer_vector_width=512"),
]


def worker(spec):
    """One configuration in this process: prints one JSON line."""
    threads, lib, size, repeats = spec["threads"], spec["lib"], spec["size"], spec["repeats"]
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    res = {}
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
        dtypes = {"f32": (torch.float32, None), "bf16": (torch.bfloat16, None)}
        g = torch.Generator().manual_seed(0)
        for dt, (tdt, _) in dtypes.items():
            a = torch.randn(size, size, generator=g).to(tdt)
            b = torch.randn(size, size, generator=g).to(tdt)
            x = torch.randn(1, 512, 2048, generator=g).to(tdt)
            w = torch.randn(512, 512, 3, generator=g).to(tdt)
            with torch.no_grad():
                res[f"dot {dt}"] = _best(lambda: torch.matmul(a, b), repeats)
                res[f"conv {dt}"] = _best(lambda: torch.nn.functional.conv1d(x, w, padding=1),
                                          repeats)
        print(json.dumps(res))
        return
    import jax
    import jax.numpy as jnp
    from jax import lax

    k = jax.random.split(jax.random.PRNGKey(0), 4)
    a = jax.random.normal(k[0], (size, size))
    b = jax.random.normal(k[1], (size, size))
    x = jax.random.normal(k[2], (1, 2048, 512))
    w = jax.random.normal(k[3], (3, 512, 512))
    dn = ("NWC", "WIO", "NWC")
    for dt, cast, pref in (("f32", jnp.float32, None), ("bf16", jnp.bfloat16, None),
                           ("bf16->f32", jnp.bfloat16, jnp.float32)):
        aa, bb, xx, ww = (v.astype(cast) for v in (a, b, x, w))
        dot = jax.jit(lambda p, q, pref=pref: lax.dot(p, q, preferred_element_type=pref))
        conv = jax.jit(lambda p, q, pref=pref: lax.conv_general_dilated(
            p, q, (1,), [(1, 1)], dimension_numbers=dn, preferred_element_type=pref))
        try:
            res[f"dot {dt}"] = _best(lambda: dot(aa, bb).block_until_ready(), repeats)
            res[f"conv {dt}"] = _best(lambda: conv(xx, ww).block_until_ready(), repeats)
        except Exception as e:           # a flag this backend cannot honour at run time
            res[f"error {dt}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    print(json.dumps(res))


def _best(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def list_flags():
    import jaxlib
    names = set()
    for lib in glob.glob(os.path.join(os.path.dirname(jaxlib.__file__), "*.so")):
        out = subprocess.run(["strings", "-n", "8", lib], capture_output=True, text=True).stdout
        names.update(re.findall(r"\b(xla_cpu_[a-z0-9_]+)", out))
    return sorted(n for n in names if not n.endswith("_"))


def run_one(lib, flags, threads, size, repeats, timeout):
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    spec = json.dumps(dict(lib=lib, threads=threads, size=size, repeats=repeats))
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec],
                           env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        err = [ln for ln in p.stderr.splitlines() if ln.strip()]
        return {"error": (err[-1] if err else f"exit {p.returncode}")[:160]}
    return json.loads(lines[-1])


def table(threads_list, size, repeats, timeout, configs=CONFIGS):
    dot_flop, conv_flop = 2.0 * size ** 3, 2.0 * 2048 * 512 * 512 * 3
    cols = ["dot f32", "dot bf16", "dot bf16->f32", "conv f32", "conv bf16", "conv bf16->f32"]
    print(f"{'TFLOP/s (best of %d)' % repeats:<36}" + "".join(f"{c:>15}" for c in cols))
    rows = [("PyTorch " + __import__("torch").__version__, "torch", "")] + \
           [("JAX/XLA " + name, "jax", flags) for name, flags in configs]
    out = []
    for threads in threads_list:
        for name, lib, flags in rows:
            r = run_one(lib, flags, threads, size, repeats, timeout)
            label = f"{name} ({threads} thr)"
            if "error" in r and len(r) == 1:
                print(f"{label:<36} {r['error']}", flush=True)
                out.append((label, r))
                continue
            cells = []
            for c in cols:
                sec = r.get(c)
                cells.append("-" if sec is None else
                             f"{(dot_flop if c.startswith('dot') else conv_flop) / sec / 1e12:.3f}")
            extra = "  " + "; ".join(v for k, v in r.items() if k.startswith("error"))
            print(f"{label:<36}" + "".join(f"{c:>15}" for c in cells) + extra.rstrip(), flush=True)
            out.append((label, r))
    return out


def cpu_summary():
    try:
        flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n")[0]
    except (OSError, IndexError):
        flags = ""
    have = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f") if f in flags.split()]
    return f"{os.cpu_count()} CPUs, flags: {' '.join(have) or '(none of avx512/bf16/amx)'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--list-flags", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.list_flags:
        print("\n".join(list_flags()))
        return
    import jax
    print(f"jax {jax.__version__}; {cpu_summary()}; load average "
          f"{os.getloadavg()[0]:.2f} before", flush=True)
    table(args.threads, args.size, args.repeats, args.timeout)
    print(f"load average {os.getloadavg()[0]:.2f} after", flush=True)


if __name__ == "__main__":
    main()
