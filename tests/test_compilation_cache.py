"""The persistent compilation cache: a second process loads every stored program and stores
no tiny one."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

SCRIPT = """
import sys, numpy as np
from svcjax.runtime import compilation_cache
compilation_cache.enable()
import jax
from jax._src import monitoring
hits = []
monitoring.register_event_listener(lambda name, **kw: hits.append(name))
monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: hits.append(name))
from svcjax.runtime import vocoder
d = np.load(sys.argv[1])
voc = vocoder.load_vocoder(sys.argv[2])
voc(d["mel"][:1], d["f0"][:1])
jax.jit(lambda x: x * 2 + 1)(np.ones(3, np.float32))     # a tiny program, quick to compile
print("HITS", sum(1 for h in hits if h == "/jax/compilation_cache/cache_hits"))
print("MISSES", sum(1 for h in hits if h == "/jax/compilation_cache/cache_misses"))
print("COMPILES", sum(1 for h in hits if h == "/jax/core/compile/backend_compile_duration"))
"""


def _run(cache, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SVCJAX_CACHE=str(cache))
    fix = ROOT / "tests" / "fixtures" / "vocoder"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(fix / "vocoder.npz"),
                        str(fix / "model")], capture_output=True, text=True, env=env,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = dict(line.split() for line in r.stdout.splitlines()
               if line[:4] in ("HITS", "MISS", "COMP"))
    return int(out["HITS"]), int(out["MISSES"]), int(out["COMPILES"])


def test_second_process_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    hits1, writes1, compiles1 = _run(cache, tmp_path)   # (JAX counts a write as a miss)
    files = sorted(p.name for p in cache.rglob("*") if p.is_file())
    stored = [f for f in files if f.endswith("-cache")]
    # the first run compiles everything and stores only what took long enough to compile
    # (the vocoder; not the tiny program nor the placement ones)
    assert hits1 == 0 and writes1 == len(stored) >= 1 and compiles1 > len(stored)
    hits2, writes2, compiles2 = _run(cache, tmp_path)
    # the second run loads every stored program, compiles only the tiny ones again and
    # stores nothing (JAX's compile event counts loaded programs too)
    assert hits2 == len(stored) and writes2 == 0 and compiles2 == compiles1
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == files
