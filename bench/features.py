"""Feature extraction, svcjax vs PyTorch on the same CPU in one run (prints seconds and ratios).

    python bench/features.py                          # every section, 60 s of audio
    python bench/features.py --only units --seconds 60 --clip 10 --batch 3

Sections (add one with ``@section("name")``; each gets the parsed args and the audio):

``units``
    Content units (vec768l12: full-size HuBERT-base, random weights) for ``--seconds`` of
    real speech cut into ``--clip``-second clips, ``--batch`` clips per call: svcjax's
    :class:`~svcjax.units.ContentEncoder` against transformers' PyTorch ``HubertModel`` (the
    same architecture, the same weights, imported through ``svcjax import-encoder``'s code).
    Clips have equal lengths so that PyTorch batches exactly too.

Each side is timed ``--repeat`` times after one warm-up call (the JAX compile is reported
apart); the best time counts. Needs the ``reference`` extra (transformers) and torch.
Timings on a busy machine are noisy: compare ratios from one quiet run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VOICES = os.path.join(ROOT, "tests", "fixtures", "voices")
SECTIONS: dict[str, Callable] = {}


def section(name):
    def register(fn):
        SECTIONS[name] = fn
        return fn
    return register


def speech_16k(seconds: float) -> np.ndarray:
    """``seconds`` of real speech at 16 kHz: the test voices, tiled."""
    import librosa
    clips = []
    for name in sorted(os.listdir(VOICES)):
        wav, _ = librosa.load(os.path.join(VOICES, name), sr=16000, mono=True)
        clips.append(wav.astype(np.float32))
    audio = np.concatenate(clips)
    reps = int(np.ceil(seconds * 16000 / len(audio)))
    return np.tile(audio, reps)[: int(seconds * 16000)]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def report(name: str, seconds_audio: float, jax_s: float, torch_s: float, extra: str = ""):
    print(f"  {name}: svcjax {jax_s:7.2f} s ({seconds_audio / jax_s:6.1f}x real time)   "
          f"torch {torch_s:7.2f} s ({seconds_audio / torch_s:6.1f}x real time)   "
          f"torch/svcjax {torch_s / jax_s:5.2f}" + (f"   {extra}" if extra else ""))


@section("units")
def bench_units(args, audio: np.ndarray):
    import torch
    import transformers

    from svcjax.units import load_content_encoder

    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = audio[: n * clip].reshape(n, clip)
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    print(f"units (vec768l12, HuBERT-base 12 layers, random weights): {n} clips of {args.clip:g} s, "
          f"batches of {args.batch}; torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    hf = transformers.HubertModel(transformers.HubertConfig()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        enc = load_content_encoder(tmp, kind="vec768l12", bucket_growth=args.bucket_growth)

    def run_jax():
        return [enc(b) for b in batches]

    def run_torch():
        with torch.inference_mode():
            return [hf(torch.from_numpy(b)).last_hidden_state.numpy() for b in batches]

    print(f"  svcjax pads each clip of {clip} samples to {enc.bucket(clip)}")
    t = time.perf_counter()
    got = run_jax()
    first = time.perf_counter() - t
    want = run_torch()
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    jax_s = best_of(run_jax, args.repeat)
    torch_s = best_of(run_torch, args.repeat)
    report("units", n * args.clip, jax_s, torch_s,
           f"(svcjax first call incl. compile {first:.1f} s; max |diff| {err:.1e})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append",
                    help="run only these sections (repeatable)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of audio (default 60)")
    ap.add_argument("--clip", type=float, default=10.0, help="clip length in seconds (default 10)")
    ap.add_argument("--batch", type=int, default=3, help="clips per call (default 3)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per side; the best counts")
    ap.add_argument("--bucket-growth", type=float, default=1.0,
                    help="svcjax length buckets (library default 1.25; 1 = pad only to the hop, "
                         "the same work as PyTorch, default here)")
    args = ap.parse_args(argv)
    import jax
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.local_device_count()} "
          f"device(s)); {os.cpu_count()} CPU cores")
    audio = speech_16k(args.seconds)
    for name in args.only or SECTIONS:
        SECTIONS[name](args, audio)


if __name__ == "__main__":
    main()
