"""Training-step speed, side by side with the PyTorch reference.

    python bench/train_step.py --ref .ref/so-vits-svc
    python bench/train_step.py --model sovits --batch 2 --frames 100      # svcjax only
    python bench/train_step.py --model diffusion --variant full --batch 48 --frames 172

Times one jitted training step of the template models with random weights on a synthetic
batch (the compile excluded; median of ``--repeats``):

* ``sovits``: generator + discriminator GAN step (:class:`svcjax.train.sovits.SovitsTask`):
  forward, discriminator update, generator update against the updated discriminator.
  The reference: the same step as its ``train.py`` (forward, ``D`` backward/step, ``G``
  backward/step, fp32, no autocast). Its recorded time here: 3.10 s for batch 2 x 100
  frames with a 20-frame slice on 2 CPU threads.
* ``diffusion``: one Unit2Mel step (eps-MSE, t < k_step_max) and the reference's
  ``Unit2Mel.forward(infer=False)`` + backward + AdamW step.

Prints seconds per step, steps/s, audio-seconds/s and the ratio reference / svcjax (> 1:
svcjax is faster). On an accelerator it also prints the model FLOPs of the step (XLA's cost
analysis) and the model-FLOP utilisation against ``--peak-tflops`` (default: a table of
known devices; dense bf16 peak for ``--dtype bfloat16``, TF32 for float32). Never asserts.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# dense peak TFLOP/s per device: (bf16, tf32/fp32 matmul)
PEAK_TFLOPS = {
    "H100": (989.0, 494.0), "H200": (989.0, 494.0), "A100": (312.0, 156.0),
    "TPU v4": (275.0, 275.0), "TPU v5 lite": (197.0, 197.0), "TPU v5p": (459.0, 459.0),
    "TPU v6 lite": (918.0, 918.0),
}


def median_time(fn, repeats):
    fn()  # warm-up (compiled already; first run allocates)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak(dtype: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    kind = jax.devices()[0].device_kind
    for name, (bf16, f32) in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return (bf16 if dtype == "bfloat16" else f32) * 1e12
    return None


# ------------------------------------------------------------------------------- svcjax side

def sovits_batch(config, b, frames, rs):
    hop = int(config.data.hop_length)
    seg = int(config.train.segment_size) // hop
    t = np.arange(frames * hop) / 44100.0
    return dict(
        audio=(0.3 * np.sin(2 * np.pi * 220 * t)[None].repeat(b, 0)).astype(np.float32),
        units=rs.randn(b, frames, int(config.model.ssl_dim)).astype(np.float32),
        f0=np.full((b, frames), 220.0, np.float32), uv=np.ones((b, frames), np.float32),
        volume=np.full((b, frames), 0.1, np.float32), mask=np.ones((b, frames), np.float32),
        length=np.full((b,), frames, np.int32), speaker=np.zeros((b,), np.int32),
        slice_start=rs.randint(0, frames - seg + 1, b).astype(np.int32),
        valid=np.ones((b,), np.float32))


def diffusion_batch(config, b, frames, rs):
    return dict(
        mel=(rs.randn(b, frames, 128) - 5).astype(np.float32),
        units=rs.randn(b, frames, int(config.data.encoder_out_channels)).astype(np.float32),
        f0=np.full((b, frames), 220.0, np.float32), volume=np.full((b, frames), 0.1, np.float32),
        mask=np.ones((b, frames), np.float32), length=np.full((b,), frames, np.int32),
        speaker=np.zeros((b,), np.int32), aug_shift=np.zeros((b,), np.float32),
        valid=np.ones((b,), np.float32))


def jax_step(task, batch, repeats):
    """(seconds per step, XLA flops per step) of ``task.step`` on one device."""
    task.setup_optimizers(1000)
    batch = jax.tree.map(jnp.asarray, batch)
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0), batch)
    opt = {n: task.tx[n].init(params[n]) for n in task.model_names}
    state = {"params": params, "opt": opt}

    def step(state, batch, key):
        p, o, m = task.step(state["params"], state["opt"], batch, key)
        return {"params": p, "opt": o}, m

    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch,
                                                         jax.random.PRNGKey(1)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    box = [state]
    counter = [0]

    def run():
        counter[0] += 1
        box[0], m = compiled(box[0], batch, jax.random.PRNGKey(counter[0]))
        jax.block_until_ready(m)

    return median_time(run, repeats), flops


# ---------------------------------------------------------------------------- reference side

def _import_reference(ref):
    import types
    for name in ("faiss", "sklearn", "sklearn.cluster"):
        mod = types.ModuleType(name)
        mod.MiniBatchKMeans = object
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch inspects specs
        sys.modules.setdefault(name, mod)
    sys.path.insert(0, os.path.abspath(ref))


def torch_sovits_step(ref, config, batch, repeats):
    import torch
    import torch.nn.functional as F
    _import_reference(ref)
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    from make_sovits import import_reference  # stubs matplotlib / faiss / torchaudio
    import_reference(ref)
    import models
    from modules import commons
    from modules.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
    from modules.mel_processing import mel_spectrogram_torch, spec_to_mel_torch, spectrogram_torch

    d, t = config.data, config.train
    hop, seg = int(d.hop_length), int(t.segment_size)
    torch.manual_seed(0)
    model_kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.model.items()}
    net_g = models.SynthesizerTrn(int(d.filter_length) // 2 + 1, seg // hop, **model_kw).train()
    net_d = models.MultiPeriodDiscriminator(False).train()
    kw = dict(lr=float(t.learning_rate), betas=tuple(t.betas), eps=float(t.eps))
    optim_g = torch.optim.AdamW(net_g.parameters(), **kw)
    optim_d = torch.optim.AdamW(net_d.parameters(), **kw)
    y_full = torch.from_numpy(batch["audio"])
    spec = spectrogram_torch(y_full, int(d.filter_length), int(d.sampling_rate), hop,
                             int(d.win_length))
    c = torch.from_numpy(batch["units"]).transpose(1, 2)
    f0, uv = torch.from_numpy(batch["f0"]), torch.from_numpy(batch["uv"])
    g = torch.from_numpy(batch["speaker"]).long()[:, None]
    lengths = torch.from_numpy(batch["length"]).long()
    y = y_full[:, None]

    def step():
        mel = spec_to_mel_torch(spec, int(d.filter_length), int(d.n_mel_channels),
                                int(d.sampling_rate), float(d.mel_fmin), float(d.mel_fmax))
        y_hat, ids, z_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0 = net_g(
            c, f0, uv, spec, g=g, c_lengths=lengths, spec_lengths=lengths)
        y_mel = commons.slice_segments(mel, ids, seg // hop)
        y_hat_mel = mel_spectrogram_torch(y_hat.squeeze(1), int(d.filter_length),
                                          int(d.n_mel_channels), int(d.sampling_rate), hop,
                                          int(d.win_length), float(d.mel_fmin), float(d.mel_fmax))
        y_sl = commons.slice_segments(y, ids * hop, seg)
        rs, gs, _, _ = net_d(y_sl, y_hat.detach())
        loss_d, _, _ = discriminator_loss(rs, gs)
        optim_d.zero_grad()
        loss_d.backward()
        optim_d.step()
        rs, gs, fr, fg = net_d(y_sl, y_hat)
        loss = (F.l1_loss(y_mel, y_hat_mel) * float(t.c_mel)
                + kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * float(t.c_kl)
                + feature_loss(fr, fg) + generator_loss(gs)[0] + F.mse_loss(pred_lf0, lf0))
        optim_g.zero_grad()
        loss.backward()
        optim_g.step()

    return median_time(step, repeats)


def torch_diffusion_step(ref, config, batch, repeats):
    import torch
    _import_reference(ref)
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    from make_diffusion import _import_reference as import_unit2mel  # stubs the vocoder
    Unit2Mel = import_unit2mel(ref).Unit2Mel

    m = config.model
    torch.manual_seed(0)
    n_spk = int(m.n_spk or 1)
    model = Unit2Mel(int(config.data.encoder_out_channels), n_spk, bool(m.use_pitch_aug), 128,
                     int(m.n_layers), int(m.n_chans), int(m.n_hidden), int(m.timesteps),
                     int(m.k_step_max)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    units = torch.from_numpy(batch["units"])
    f0 = torch.from_numpy(batch["f0"])[..., None]
    vol = torch.from_numpy(batch["volume"])[..., None]
    mel = torch.from_numpy(batch["mel"])
    spk = torch.from_numpy(batch["speaker"]).long()[:, None] if n_spk > 1 else None
    shift = torch.from_numpy(batch["aug_shift"])[:, None, None]

    def step():
        opt.zero_grad()
        loss = model(units, f0, vol, spk, aug_shift=shift, gt_spec=mel, infer=False,
                     k_step=model.k_step_max)
        loss.backward()
        opt.step()

    return median_time(step, repeats)


# --------------------------------------------------------------------------------------- main

def report(name, b, frames, hop, sr, t_jax, flops, t_ref, dtype, peak_override):
    audio_s = b * frames * hop / sr
    line = (f"{name:10s} batch {b} x {frames} frames: svcjax {t_jax:.3f} s/step "
            f"({1 / t_jax:.2f} steps/s, {audio_s / t_jax:.1f} audio-s/s)")
    if t_ref is not None:
        line += f" | reference {t_ref:.3f} s/step | ratio ref/svcjax {t_ref / t_jax:.2f}x"
    print(line)
    if flops:
        msg = f"{'':10s} {flops / 1e9:.1f} GFLOP/step (XLA cost analysis)"
        peak = _peak(dtype, peak_override)
        if peak and jax.devices()[0].platform != "cpu":
            msg += f", {flops / t_jax / 1e12:.1f} TFLOP/s, MFU {100 * flops / t_jax / peak:.1f}%"
        print(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=None, help="So-VITS-SVC checkout (reference timings)")
    ap.add_argument("--model", default="both", choices=["sovits", "diffusion", "both"])
    ap.add_argument("--variant", default="full", help="config variant (full / tiny / test)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    if args.ref:
        import torch
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"device: {jax.devices()[0].device_kind} ({jax.device_count()} devices; "
          "one is used)")
    rs = np.random.RandomState(0)
    if args.model in ("sovits", "both"):
        from configs.sovits_44k import get_config
        from svcjax.train.sovits import SovitsTask
        cfg = get_config(f"variant={args.variant}")
        cfg.train.compute_dtype = args.dtype
        batch = sovits_batch(cfg, args.batch, args.frames, rs)
        t_jax, flops = jax_step(SovitsTask(cfg), batch, args.repeats)
        t_ref = torch_sovits_step(args.ref, cfg, batch, args.repeats) if args.ref else None
        report("sovits", args.batch, args.frames, 512, 44100, t_jax, flops, t_ref, args.dtype,
               args.peak_tflops)
    if args.model in ("diffusion", "both"):
        from configs.diffusion_44k import get_config
        from svcjax.train.diffusion import DiffusionTask
        variant = args.variant if args.variant in ("full", "shallow", "test") else "full"
        cfg = get_config(f"variant={variant}")
        if args.dtype != "float32":
            cfg.train.compute_dtype = args.dtype
        batch = diffusion_batch(cfg, args.batch, args.frames, rs)
        try:
            t_jax, flops = jax_step(DiffusionTask(cfg), batch, args.repeats)
        except ValueError as e:
            print(f"diffusion: {e}")
            return
        t_ref = torch_diffusion_step(args.ref, cfg, batch, args.repeats) if args.ref else None
        report("diffusion", args.batch, args.frames, 512, 44100, t_jax, flops, t_ref,
               args.dtype, args.peak_tflops)


if __name__ == "__main__":
    main()
