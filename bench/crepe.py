"""CREPE pitch tracking: svcjax (JAX) side by side with torchcrepe (PyTorch), same weights.

    python bench/crepe.py --seconds 10 --capacity full
    python bench/crepe.py --seconds 30 --capacity tiny --batch 4

Times the network over a clip's frames (16 kHz, hop 185: So-VITS-SVC's rate) plus decoding,
after one warm-up call each, and prints seconds and the ratio. torchcrepe is optional (it
imports torchaudio only to load files; a stub stands in for it here). Never asserts times.
"""

import argparse
import sys
import time
import types

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--capacity", default="full", choices=["full", "tiny"])
    ap.add_argument("--batch", type=int, default=1, help="clips per call")
    ap.add_argument("--decoder", default="viterbi", choices=["viterbi", "weighted_argmax"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from svcjax.audio import f0 as F

    rng = np.random.RandomState(0)
    n = int(args.seconds * 16000)
    t = np.arange(n) / 16000
    clips = [(0.3 * np.sin(2 * np.pi * (150 + 50 * b) * t) + 0.01 * rng.randn(n)).astype(np.float32)
             for b in range(args.batch)]
    n_out = [F.num_frames(n, 16000)] * args.batch

    def ours():
        return F.crepe_f0_16k(clips, n_out, capacity=args.capacity, decoder=args.decoder)

    ours()
    best = min(_timed(ours) for _ in range(args.repeats))
    frames = args.batch * (1 + n // F.CREPE_HOP)
    print(f"svcjax  CREPE {args.capacity}: {best:.3f} s for {args.batch} x {args.seconds:.0f} s "
          f"({frames} frames, {frames / best:.0f} frames/s)")

    try:
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        import torch
        import torchcrepe
    except ImportError as e:
        print(f"torchcrepe not importable ({e}); no side-by-side figure")
        return
    decoder = getattr(torchcrepe.decode, args.decoder)

    def theirs():
        with torch.no_grad():
            for x in clips:
                torchcrepe.predict(torch.tensor(x)[None], 16000, F.CREPE_HOP, 50, 1100,
                                   args.capacity, decoder, return_periodicity=True,
                                   batch_size=1024)

    theirs()
    ref = min(_timed(theirs) for _ in range(args.repeats))
    print(f"torchcrepe {args.capacity}: {ref:.3f} s ({torch.get_num_threads()} threads)")
    print(f"ratio torchcrepe / svcjax: {ref / best:.2f}")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
