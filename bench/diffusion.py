"""Shallow-diffusion sampling speed, side by side with the PyTorch reference.

    python bench/diffusion.py --ref .ref/so-vits-svc [--batch 4 --seconds 5]

Builds the template Unit2Mel (20 layers x 512 channels; ``--variant test`` for the tiny one)
with random weights - the reference's own when ``--ref`` is given, imported into svcjax - and
times one shallow-diffusion call per sampler (``--methods``, default dpm-solver++ with
speedup 10 at k_step 100, the inference default): svcjax's ``Diffusion.sample`` (jit-compiled,
warmed up, host arrays in and out, median of ``--repeats``) and the reference's
``Unit2Mel.forward`` on the same inputs (torch on CPU, ``torch.no_grad``). Prints seconds,
frames per second and the ratio reference / svcjax (> 1: svcjax is faster), and the largest
difference between the two mels. Never asserts anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.diffusion_44k import get_config  # noqa: E402
from svcjax.interop.torch_params import state_dict_to_params  # noqa: E402
from svcjax.runtime.diffusion import Diffusion  # noqa: E402
from svcjax.models.diffusion.unit2mel import build_model  # noqa: E402


def timeit(fn, repeats):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _shapes(model, config, n_spk):
    import jax.numpy as jnp
    b, t = 1, 4
    spk = jnp.zeros((b, t, n_spk)) if n_spk > 1 else None
    return jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.zeros((b, t, config.data.encoder_out_channels)),
        jnp.zeros((b, t)), jnp.zeros((b, t)), jnp.zeros((b, t, 128)), jnp.zeros((b,)), spk,
        jnp.zeros((b,))))["params"]


def build_models(variant, ref=None, n_spk=2):
    """``(config, Diffusion, reference Unit2Mel or None)``: the template Unit2Mel with random
    weights; with ``ref`` the reference builds it and svcjax imports its state_dict."""
    config = get_config(f"variant={variant},n_spk={n_spk}")
    shapes = _shapes(build_model(config), config, n_spk)
    ref_model = None
    if ref:
        import torch
        sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
        from make_diffusion import _import_reference
        unit2mel = _import_reference(ref)
        m = config.model
        torch.manual_seed(0)
        ref_model = unit2mel.Unit2Mel(config.data.encoder_out_channels, n_spk, m.use_pitch_aug, 128,
                                      m.n_layers, m.n_chans, m.n_hidden, m.timesteps, m.k_step_max)
        with torch.no_grad():
            torch.nn.init.normal_(ref_model.decoder.denoise_fn.output_projection.weight, std=0.02)
        ref_model.eval()
        sd = {k: v.numpy() for k, v in ref_model.state_dict().items()}
        prefix = "decoder.denoise_fn."
        params = state_dict_to_params(sd, shapes, rename=lambda k: (
            "denoise_fn." + k[len(prefix):]) if k.startswith(prefix) else (
            None if k.startswith("decoder.") else k))
    else:
        rs = np.random.RandomState(0)
        params = jax.tree.map(lambda s: (0.02 * rs.randn(*s.shape)).astype(np.float32), shapes)
    return config, Diffusion(params, config), ref_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=None, help="So-VITS-SVC checkout (reference timings)")
    ap.add_argument("--variant", default="full", choices=["full", "test"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--k-step", type=int, default=100)
    ap.add_argument("--methods", default="dpm-solver++:10",
                    help="comma-separated method:speedup (e.g. ddim:10,pndm:10,unipc:10,ddpm:1)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    n_spk = 2
    config, diff, ref_model = build_models(args.variant, args.ref, n_spk)

    b, t = args.batch, int(round(args.seconds * 44100 / 512))
    rs = np.random.RandomState(1)
    units = rs.randn(b, t, config.data.encoder_out_channels).astype(np.float32)
    f0 = (150 + 200 * rs.rand(b, t)).astype(np.float32)
    vol = (0.1 * rs.rand(b, t)).astype(np.float32)
    mel = (-6 + rs.randn(b, t, 128)).astype(np.float32)
    spk = np.arange(b) % n_spk
    print(f"{args.variant} Unit2Mel, batch {b} x {t} frames ({args.seconds:g} s), k_step {args.k_step}, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s), torch threads "
          f"{__import__('torch').get_num_threads() if args.ref else '-'}")
    for item in args.methods.split(","):
        method, _, s = item.partition(":")
        s = int(s or 10)
        run = lambda: diff.sample(units, f0, vol, speaker=spk, start_mel=mel,  # noqa: E731
                                  k_step=args.k_step, method=method, speedup=s)
        sec = timeit(run, args.repeats)
        line = f"{method:>13} speedup {s:>3}: svcjax {sec:8.3f} s ({b * t / sec:9.0f} frames/s)"
        if ref_model is not None:
            import torch
            tt = torch.from_numpy
            per_item = method == "pndm"  # the reference's PLMS step only runs with batch 1

            def ref_run():
                with torch.no_grad():
                    if per_item:
                        return torch.cat([ref_model(
                            tt(units[i:i + 1]), tt(f0[i:i + 1, :, None]), tt(vol[i:i + 1, :, None]),
                            torch.tensor([[spk[i]]]), gt_spec=tt(mel[i:i + 1]), infer=True,
                            infer_speedup=s, method=method, k_step=args.k_step, use_tqdm=False)
                            for i in range(b)])
                    return ref_model(tt(units), tt(f0[..., None]), tt(vol[..., None]),
                                     tt(spk[:, None]), gt_spec=tt(mel), infer=True, infer_speedup=s,
                                     method=method, k_step=args.k_step, use_tqdm=False)

            with_zero = torch.randn, torch.randn_like
            torch.randn = lambda *a, **k: torch.zeros(*(a[0] if len(a) == 1 else a))
            torch.randn_like = torch.zeros_like
            try:
                ref_sec = timeit(ref_run, args.repeats)
                diff_max = float(np.abs(ref_run().numpy() - run()).max())
            finally:
                torch.randn, torch.randn_like = with_zero
            line += f" | reference {ref_sec:8.3f} s | ratio {ref_sec / sec:6.2f}x | max |diff| {diff_max:.1e}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
