"""So-VITS-SVC 4.1 generator inference: svcjax (jit) vs the PyTorch reference, same CPU.

    python bench/sovits_infer.py                                   # svcjax only
    python bench/sovits_infer.py --ref .ref/so-vits-svc  # side by side

Template config (192 hidden, 768 filter, 6 layers, HiFiGAN 512 channels) with random weights,
10 s of audio (861 frames at 44.1 kHz / 512), batch 1 and 8, the reference's default noise
scale 0.4 with its random draws (latent noise, sine phases and noise). svcjax runs through the
public API (``SovitsModel.infer``: length bucket, mask, device placement, result back to
NumPy); its compile time is reported separately. With ``--ref`` both run the SAME weights
(the reference model's, imported) on the same threads, and the printed max difference of the
deterministic outputs is a parity check at full size. Prints seconds per call and ratios;
never asserts anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def inputs(b, t, ssl_dim, seed=0):
    rs = np.random.RandomState(seed)
    f0 = (220.0 * np.exp(0.2 * np.sin(np.arange(t) / 20.0)))[None].repeat(b, 0)
    uv = (rs.rand(b, t) > 0.15).astype(np.float32)
    return dict(c=rs.randn(b, t, ssl_dim).astype(np.float32),
                f0=(f0 * uv).astype(np.float32), uv=uv)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", help="so-vits-svc 4.1-Stable checkout: also time the reference")
    ap.add_argument("--frames", type=int, default=861, help="861 frames = 10 s")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()

    os.environ.setdefault("XLA_FLAGS", "")
    import jax
    import jax.numpy as jnp

    from configs import sovits_44k
    from svcjax.interop import sovits as conv
    from svcjax.runtime.sovits import SovitsModel
    from svcjax.models import synthesizer

    cfg = conv.config_from_reference(sovits_44k.get_config().to_dict())
    cfg.model.n_speakers = 4
    cfg.spk = {"a": 0, "b": 1, "c": 2, "d": 3}
    net = None
    if args.ref:
        import torch

        from tests.fixtures import make_sovits as mk

        torch.set_num_threads(args.threads)
        R = mk.import_reference(args.ref)
        torch.manual_seed(0)
        net = mk.build(R, json.loads(json.dumps(cfg.to_dict())))
        mk.randomise(net, 0)
        sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        params = conv.sovits_params(cfg, sd, with_posterior=False)
    else:
        model = synthesizer.from_config(cfg, with_posterior=False)
        params = synthesizer.init_params(model, jax.random.PRNGKey(0))
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    svc = SovitsModel(params, conv.model_dir_config(cfg, False), dtype=dtype)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, threads: {args.threads}, "
          f"frames: {args.frames} ({args.frames * 512 / 44100:.2f} s of audio), dtype {args.dtype}")

    for b in [int(x) for x in args.batch.split(",")]:
        x = inputs(b, args.frames, cfg.model.ssl_dim)
        key = jax.random.PRNGKey(1)
        run = lambda: svc.infer(x["c"], x["f0"], x["uv"], speaker=0, noise_scale=0.4,  # noqa
                                rng=key)
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        jax_s = _median_time(run, args.repeats)
        line = (f"B={b}: svcjax {jax_s:.3f} s/call (compile+first call {first:.1f} s, "
                f"compile ~{first - jax_s:.1f} s)")
        if net is not None:
            import torch

            c = torch.from_numpy(x["c"]).transpose(1, 2)
            f0, uv = torch.from_numpy(x["f0"]), torch.from_numpy(x["uv"])
            sid = torch.zeros((b, 1), dtype=torch.long)
            ref_run = lambda: net.infer(c, f0=f0, uv=uv, g=sid, noice_scale=0.4)  # noqa: E731
            ref_run()
            ref_s = _median_time(ref_run, args.repeats)
            line += f" | reference {ref_s:.3f} s/call | speed-up x{ref_s / jax_s:.2f}"
            if b == 1:  # deterministic parity at full size
                with mk.zero_draws():
                    ref_wav = net.infer(c, f0=f0, uv=uv, g=sid, noice_scale=0.4)[0][:, 0].numpy()
                wav, _ = svc.infer(x["c"], x["f0"], x["uv"], speaker=0, noise_scale=0.4)
                line += f" | max |diff| (rng=None) {np.abs(wav - ref_wav).max():.2e}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
