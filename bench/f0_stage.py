"""The F0 stage of conversion: CREPE inside the compiled program, host trackers one batch ahead.

    python bench/f0_stage.py                        # full-size SoVITS + content encoder
    python bench/f0_stage.py --variant test --seconds 3 --clips 4    # a quick smoke run

``svcjax.Converter.convert`` (SoVITS + a random full-size vec768l12 content encoder, no
diffusion; ``--variant test``: the tiny test models) on one ``--seconds`` file (10 s) and on
``--clips`` clips (8) of 2-4 s in batches of ``--batch`` (4), with each F0 tracker of
``--f0`` (crepe-tiny, dio), *before* and *after*:

* ``crepe-tiny`` before: F0 on the host first (``extract_f0`` as an explicit ``f0_fn``: its
  own 16 kHz resampling, the CREPE runner, the post-processing program), then the
  conversion program; after: the default ``f0_fn``, CREPE inside the conversion program.
* ``dio`` before: each batch's F0, then its program, in turn; after: a worker thread
  computes batch ``i + 1``'s F0 while the device runs batch ``i``.

Warm: the median of ``--repeats`` calls after one call that compiles, before and after
alternating. Printed: seconds, seconds of audio per second, before / after (> 1: after is
faster), the load average (the machine may be shared). Nothing is asserted.

First figures (2-core Xeon shared with other jobs, load average 7-15, ``--repeats 3``,
full-size models): crepe-tiny 10 s file 28.2 -> 29.1 s (0.97x), 8 clips 49.5 -> 51.8 s
(0.96x); dio 10 s file 21.2 -> 17.6 s (1.20x: one batch, nothing to overlap, so this is
the noise of that machine), 8 clips 46.2 -> 39.7 s (1.16x). On a CPU the F0 stage is a
small share of a full-size conversion; in the program CREPE also runs over the padded
frames of the length bucket, which the host path's packed frames avoid.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SR = 44100


def build(variant):
    from configs.sovits_44k import get_config
    from svcjax.models import synthesizer
    from svcjax.runtime import units
    from svcjax.runtime.sovits import SovitsModel

    config = get_config(f"variant={variant}")
    sov = SovitsModel(synthesizer.init_params(synthesizer.from_config(
        config, with_posterior=False)), config)
    kind = config.model.get("speech_encoder", "vec768l12")
    if variant == "full":
        enc = units.init_content_encoder(kind)
    else:
        from svcjax.models import content_encoder as ce
        import jax
        enc_cfg = ce.default_config(kind, embed_dim=int(config.model.ssl_dim), ffn_dim=64,
                                    num_heads=2, conv_pos=16, conv_pos_groups=4,
                                    conv_layers=[(16, k, s) for _, k, s in ce.BASE_CONV_LAYERS])
        enc = units.init_content_encoder(kind, config=enc_cfg, rng=jax.random.PRNGKey(0))
    return sov, enc


def voice(n, seed):
    """A sung-like test signal: a vibrato tone with harmonics and noise, pause-free."""
    r = np.random.RandomState(seed)
    t = np.arange(n) / SR
    f = 160 + 25 * seed + 6 * np.sin(2 * np.pi * 5.5 * t)
    ph = 2 * np.pi * np.cumsum(f) / SR
    x = sum(0.3 / k * np.sin(k * ph) for k in range(1, 6)) + 0.01 * r.randn(n)
    return x.astype(np.float32)


def timed_pair(before, after, repeats):
    """Median seconds of ``before()`` and ``after()``, each called once first (compiling),
    then alternately (so a change of machine load falls on both)."""
    before(), after()
    tb, ta = [], []
    for _ in range(repeats):
        for fn, acc in ((before, tb), (after, ta)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(tb), statistics.median(ta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="full", choices=["full", "test"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--f0", default="crepe-tiny,dio")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from svcjax.audio import f0 as f0_lib
    from svcjax.runtime import converter as pipeline

    sov, enc = build(args.variant)

    def host_f0(audio, sr, method, lengths, **kw):
        return f0_lib.extract_f0(audio, sr, method, lengths=lengths, **kw)

    def sequential(self, batches, opt):
        for batch in batches:
            yield self._fused_inputs(batch, opt)

    after = pipeline.Converter(sov, enc)
    host = pipeline.Converter(sov, enc, f0_fn=host_f0)
    seq = pipeline.Converter(sov, enc)
    seq._inputs_ahead = sequential.__get__(seq)
    # one Runtime: the host-F0 program (its key holds no tracker) compiles once for all three
    seq._runtime = after._runtime = host.runtime
    r = np.random.RandomState(0)
    cases = [(f"one {args.seconds:g} s file", [voice(int(args.seconds * SR), 0)], 1)]
    lengths = r.uniform(2.0, 4.0, args.clips)
    cases.append((f"{args.clips} clips of 2-4 s, batches of {args.batch}",
                  [voice(int(s * SR), i) for i, s in enumerate(lengths)], args.batch))
    print(f"svcjax F0 stage, {args.variant} SoVITS + content encoder, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for method in args.f0.split(","):
        for name, clips, batch in cases:
            opt = pipeline.ConvertOptions(speaker=0, f0_method=method, batch_size=batch,
                                          pad_seconds=0.0, slice_db=-300.0, seed=0)
            before_conv = host if method in after.DEVICE_F0 else seq
            audio_s = sum(len(c) for c in clips) / SR
            t_before, t_after = timed_pair(
                lambda: before_conv.convert(clips, opt, progress=False),
                lambda: after.convert(clips, opt, progress=False), args.repeats)
            print(f"{method:>10}  {name:<36} before {t_before:7.2f} s "
                  f"({audio_s / t_before:6.1f} s/s)  after {t_after:7.2f} s "
                  f"({audio_s / t_after:6.1f} s/s)  before/after {t_before / t_after:5.2f}x"
                  f"  load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
