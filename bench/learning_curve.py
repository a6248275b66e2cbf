"""Learning curves side by side: svcjax's training against the reference's modules.

    PYTHONPATH=. python bench/learning_curve.py --ref .ref/so-vits-svc --workdir /tmp/svcjax_lc \
        [--steps 1000] [--every 100] [--what gan,diffusion]

Both implementations train in lockstep from the same initial weights on the same batches:

* **Data**: the ``make demo`` corpus (``svcjax.demo``: real flite / festival voices made
  sung-like with sox, a random-initialised vec768l12 encoder, dio F0), built once in
  ``WORKDIR`` and reused; the batches come from svcjax's input pipeline (``config.seed``) and
  each batch is given to both sides.
* **GAN**: the demo's generator config (``configs/sovits_44k.py:variant=tiny``, 64-frame
  crops, a quarter-width discriminator). svcjax initialises G and D; they are exported in the
  reference's format (``G_0.pth`` / ``D_0.pth``) and loaded into the reference's
  ``SynthesizerTrn`` and ``MultiPeriodDiscriminator``. svcjax runs its real training step
  (``SovitsTask.step``: AdamW, the exponential LR per epoch); the reference side runs
  ``train.py``'s per-batch update (the reference's ``train.py`` refuses CPU, so its loop is
  driven here): forward, D loss / backward / AdamW, G loss against the updated D / backward /
  AdamW, ``ExponentialLR.step()`` per epoch, with the reference's own random draws (segment
  starts, noise). Every ``--every`` steps each generator converts the validation clips of the
  corpus (one per speaker, 4 s from the start, its own speaker: a reconstruction) with
  ``infer`` (noise scale 0.35), and the same code measures both outputs: mel L1 to the
  source (log mel, the training loss's mel), and dio F0 against the source's F0 (RMSE in
  cents over frames voiced in both, gross pitch error, V/UV error).
* **Diffusion**: the demo's shallow score network (``configs/diffusion_44k.py:variant=shallow``,
  6 layers x 128). svcjax initialises it, exports ``model_0.pt``, the reference's
  ``Unit2Mel`` loads it; the reference side steps as ``train_diff.py`` does (AdamW,
  ``StepLR``). The curve is the eps-prediction MSE on the validation clips' first second,
  with the same fixed diffusion steps and noise on both sides, every ``--every`` steps.

Writes ``WORKDIR/learning_curve.json`` (every measurement, per step, per side; rewritten
after every evaluation, so a run cut short keeps its curve), ``WORKDIR/learning_curve.png``
(one panel per measure, both sides) and each evaluation's converted clips with their sources
(``WORKDIR/curve/gan_outputs/stepNNNNN.npz``), and prints the table. The table also gives
the median F0 dio finds in the outputs: an untrained generator passes its NSF source through
an octave up; within 50 steps both implementations' outputs read as 86.13 Hz
(= 44100 / 512, the frame-rate comb of an early upsampler) voiced on nearly every frame,
which scores the dotted "constant 86.1 Hz, always voiced" figures of the F0 and V/UV
panels (computed from the sources' F0 alone).

    # a GAN run and a diffusion run in parallel, then one JSON / PNG / table from both
    python bench/learning_curve.py --workdir /tmp/lc_gan --what gan
    python bench/learning_curve.py --workdir /tmp/lc_diff --what diffusion
    python bench/learning_curve.py --workdir /tmp/lc --report /tmp/lc_gan/learning_curve.json \
        /tmp/lc_diff/learning_curve.json
    # the curve of a train.py run (e.g. one left training in the background), from its
    # checkpoints, measured the same way
    python bench/learning_curve.py --workdir /tmp/lc_long --checkpoints /tmp/long_gan/run
    # svcjax alone, a variation of the demo's configuration, measured the same way
    python bench/learning_curve.py --workdir /tmp/lc_lr --what gan --sides svcjax --steps 300 \
        --set train.learning_rate=4e-4
Needs the ``convert`` (torch) extra, matplotlib, pyworld, and flite / festival / sox for
the corpus (``make demo-tools``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
VAL_FRAMES = 344          # 4 s of each validation clip (44.1 kHz / 512)
NOISE_SCALE = 0.35        # the reference's infer default
DIFF_VAL_SEED = 1234


def say(msg: str) -> None:
    print(f"[curve] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------

def corpus(work: Path, per_speaker: int) -> tuple[Path, dict]:
    from svcjax import demo

    demo._check_tools()
    train_root, _ = demo.make_voices(work, per_speaker)
    encoder, _ = demo.content_encoder(work, None)
    data_dir = work / "data"
    meta = demo.build_corpus(train_root, data_dir, encoder)
    return data_dir, dict(meta["speakers"])


def validation_clips(icfg, frames: int) -> dict:
    """Every validation clip of the corpus (one per speaker), its first ``frames`` frames."""
    from svcjax.data import input_pipeline

    n = len(input_pipeline.data_source(icfg.data_dir, "validation"))
    v = icfg.copy_and_resolve_references()
    v.update(split="validation", crop="start", shuffle=False, num_epochs=1, crop_frames=frames,
             drop_remainder=False, batch_size=n, worker_count=0, vol_aug=False, aug_prob=0.0,
             segment_frames=0)
    batch = next(iter(input_pipeline.make_loader(v, process_index=0, process_count=1)))
    keep = np.asarray(batch["valid"]) > 0 if "valid" in batch else slice(None)
    return {k: np.asarray(x)[keep] for k, x in batch.items()}


def apply_overrides(cfg, assignments) -> None:
    """``--set train.learning_rate=4e-4``: a config field (dotted path) set to a Python
    literal, for measured variations of the demo's configuration."""
    import ast

    for a in assignments:
        key, sep, value = a.partition("=")
        if not sep:
            raise SystemExit(f"--set {a!r}: expected FIELD=VALUE, e.g. train.learning_rate=4e-4")
        *path, last = key.strip().split(".")
        node = cfg
        for part in path:
            node = node[part]
        if last not in node:
            raise SystemExit(f"--set {a!r}: the config has no field {key.strip()!r}")
        try:
            node[last] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            node[last] = value.strip()


# ---------------------------------------------------------------------------------------------
# measurements shared by both sides
# ---------------------------------------------------------------------------------------------

def comb_baseline(val: dict, sr: int, hop: int) -> dict:
    """The F0 figures of an output that dio reads as voiced everywhere at a constant sr/hop
    (86.13 Hz, the frame-rate comb), from the sources' F0 alone: a curve sitting on these
    numbers measures the comb, not a pitch."""
    from svcjax.eval import metrics as evaluate

    rows = []
    for i in range(len(val["length"])):
        n = int(val["length"][i])
        rows.append(evaluate.f0_metrics(val["f0"][i, :n], np.full(n, sr / hop),
                                        val["uv"][i, :n] > 0.5, np.ones(n, bool)))
    return {"f0_rmse_cents": float(np.mean([r["f0_rmse_cents"] for r in rows])),
            "vuv_error": float(np.mean([r["vuv_error"] for r in rows]))}


def output_f0(wav: np.ndarray, n: int, sr: int, hop: int) -> dict:
    """What dio hears in a converted clip: the share of its ``n`` frames voiced, the median F0
    of those, and the share of those within 50 cents of the frame rate sr/hop (86.13 Hz), the
    comb an early upsampler leaves; a share near 1 means the F0 figures measure that comb."""
    from svcjax.audio.f0 import extract_f0

    f0, uv = extract_f0(np.asarray(wav, np.float32)[:n * hop], sr, "dio")
    m = min(n, len(f0))
    ov = (uv[:m] > 0.5) & (f0[:m] > 0)
    comb = np.abs(1200 * np.log2(np.maximum(f0[:m][ov], 1e-3) * hop / sr)) < 50
    return {"out_voiced": float(ov.mean()),
            "out_f0_median": float(np.median(f0[:m][ov])) if ov.any() else 0.0,
            "comb_share": float(comb.mean()) if ov.any() else float("nan")}


def measure_outputs(outs: list[np.ndarray], val: dict, task) -> dict:
    """Mel L1 and F0 figures of each converted clip against its source, averaged."""
    import jax.numpy as jnp

    from svcjax.eval import metrics as evaluate
    from svcjax.audio import spectrogram
    from svcjax.audio.f0 import extract_f0

    hop = task.hop
    kw = dict(hop_length=hop, win_length=task.stft["win_length"], **task.mel_kw)
    rows = []
    for i, wav in enumerate(outs):
        n = int(val["length"][i])
        src = val["audio"][i, :n * hop].astype(np.float32)
        wav = np.asarray(wav, np.float32)[:n * hop]
        mels = spectrogram.mel_spectrogram(jnp.asarray(np.stack([src, wav])), **kw)
        mel_l1 = float(np.mean(np.abs(np.asarray(mels[0, :n]) - np.asarray(mels[1, :n]))))
        f0, uv = extract_f0(wav, task.sr, "dio")
        m = min(n, len(f0))
        f = evaluate.f0_metrics(val["f0"][i, :m], f0[:m], val["uv"][i, :m] > 0.5, uv[:m] > 0.5)
        rows.append(dict(mel_l1=mel_l1, f0_rmse_cents=f["f0_rmse_cents"], gpe=f["gpe"],
                         vuv_error=f["vuv_error"], voiced_frames=f["voiced_frames"],
                         out_rms=float(np.sqrt(np.mean(wav ** 2))),
                         **output_f0(wav, n, task.sr, hop)))
    out = {}
    for k in rows[0]:
        vals = np.array([r[k] for r in rows], np.float64)
        ok = vals[~np.isnan(vals)]
        out[k] = float(ok.mean()) if ok.size else float("nan")
    return out


# ---------------------------------------------------------------------------------------------
# GAN
# ---------------------------------------------------------------------------------------------

def run_gan(args, work: Path, data_dir: Path, speakers: dict, save=lambda partial: None) -> dict:
    import jax
    import torch
    import torch.nn.functional as F

    from svcjax import demo

    from svcjax.data import input_pipeline
    from svcjax.train.inputs import pipeline_config
    from svcjax.train.sovits import SovitsTask, export_reference_checkpoints

    sys.path.insert(0, str(FIX))
    import make_discriminator
    import make_sovits

    cfg = demo.sovits_config(data_dir, speakers, args.steps, args.batch_size)
    cfg.seed = args.seed
    apply_overrides(cfg, args.set)
    task = SovitsTask(cfg)
    icfg = pipeline_config(cfg, "generator", task.tcfg)
    icfg.segment_frames = task.seg_frames
    n_train = len(input_pipeline.data_source(icfg.data_dir, icfg.split))
    per_epoch = max(1, n_train // args.batch_size)
    task.setup_optimizers(per_epoch)
    t = task.tcfg
    params = jax.jit(task.init_params)(jax.random.key(args.seed), task.dummy_batch(1))
    opt = {n: task.tx[n].init(params[n]) for n in task.model_names}
    init_dir = work / "curve" / "gan_init"
    export_reference_checkpoints(params, cfg, 0, str(init_dir))

    with_ref = "reference" in args.sides
    if not with_ref:
        return _run_gan_loop(args, work, task, icfg, params, opt, per_epoch, n_train,
                             None, None, None, save)
    R = make_sovits.import_reference(args.ref)
    from modules.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
    from modules.mel_processing import (mel_spectrogram_torch, spec_to_mel_torch,
                                        spectrogram_torch)

    with open(init_dir / "config.json") as f:
        ref_cfg = json.load(f)
    hps = R.utils.HParams(**ref_cfg)
    net_g = make_sovits.build(R, ref_cfg)
    net_g.load_state_dict(torch.load(init_dir / "G_0.pth")["model"])
    width = int(cfg.discriminator.width_div)
    net_d = make_discriminator.build_mpd(R.models, torch, width)
    net_d.load_state_dict(torch.load(init_dir / "D_0.pth")["model"])
    net_g.train()
    net_d.train()
    torch.manual_seed(args.seed)
    optim_g = torch.optim.AdamW(net_g.parameters(), float(t.learning_rate), betas=tuple(t.betas),
                                eps=float(t.eps), weight_decay=float(t.weight_decay))
    optim_d = torch.optim.AdamW(net_d.parameters(), float(t.learning_rate), betas=tuple(t.betas),
                                eps=float(t.eps), weight_decay=float(t.weight_decay))
    sched_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=float(t.lr_decay))
    sched_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=float(t.lr_decay))
    d = hps.data
    seg = hps.train.segment_size // d.hop_length

    def ref_step(b):
        audio = torch.from_numpy(b["audio"])
        lengths = torch.from_numpy(b["length"].astype(np.int64))
        spec = torch.zeros(audio.shape[0], d.filter_length // 2 + 1, b["f0"].shape[1])
        for j, n in enumerate(lengths.tolist()):  # each clip's spectrogram, zero-padded
            spec[j, :, :n] = spectrogram_torch(audio[j:j + 1, :n * d.hop_length],
                                               d.filter_length, d.sampling_rate,
                                               d.hop_length, d.win_length)[0, :, :n]
        c = torch.from_numpy(b["units"]).transpose(1, 2)
        f0, uv = torch.from_numpy(b["f0"]), torch.from_numpy(b["uv"])
        g = torch.from_numpy(b["speaker"].astype(np.int64))[:, None]
        mel = spec_to_mel_torch(spec, d.filter_length, d.n_mel_channels, d.sampling_rate,
                                d.mel_fmin, d.mel_fmax)
        y_hat, ids_slice, z_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, _, lf0 = \
            net_g(c, f0, uv, spec, g=g, c_lengths=lengths, spec_lengths=lengths, vol=None)
        y_mel = R.commons.slice_segments(mel, ids_slice, seg)
        y_hat_mel = mel_spectrogram_torch(y_hat.squeeze(1), d.filter_length, d.n_mel_channels,
                                          d.sampling_rate, d.hop_length, d.win_length,
                                          d.mel_fmin, d.mel_fmax)
        y = R.commons.slice_segments(audio[:, None], ids_slice * d.hop_length,
                                     hps.train.segment_size)
        y_d_r, y_d_g, _, _ = net_d(y, y_hat.detach())
        loss_disc, _, _ = discriminator_loss(y_d_r, y_d_g)
        optim_d.zero_grad()
        loss_disc.backward()
        optim_d.step()
        y_d_r, y_d_g, fmap_r, fmap_g = net_d(y, y_hat)
        loss_mel = F.l1_loss(y_mel, y_hat_mel) * hps.train.c_mel
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * hps.train.c_kl
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen, _ = generator_loss(y_d_g)
        loss_lf0 = F.mse_loss(pred_lf0, lf0) if net_g.use_automatic_f0_prediction else 0.0
        total = loss_gen + loss_fm + loss_mel + loss_kl + loss_lf0
        optim_g.zero_grad()
        total.backward()
        optim_g.step()
        return {"loss/d/total": loss_disc.item(), "loss/g/total": total.item(),
                "loss/g/mel": loss_mel.item(), "loss/g/kl": loss_kl.item()}

    def ref_convert(val):
        net_g.eval()
        outs = []
        with torch.no_grad():
            for i, n in enumerate(val["length"].tolist()):
                c = torch.from_numpy(val["units"][i:i + 1, :n]).transpose(1, 2)
                f0 = torch.from_numpy(val["f0"][i:i + 1, :n])
                uv = torch.from_numpy(val["uv"][i:i + 1, :n])
                g = torch.from_numpy(val["speaker"][i:i + 1].astype(np.int64))
                o, _ = net_g.infer(c, f0, uv, g=g, noice_scale=NOISE_SCALE)
                outs.append(o[0, 0].numpy())
        net_g.train()
        return outs

    def ref_epoch():
        sched_g.step()
        sched_d.step()

    return _run_gan_loop(args, work, task, icfg, params, opt, per_epoch, n_train, ref_step,
                         ref_convert, ref_epoch, save)


def gan_infer(task):
    """``(generator params, validation clips, key) -> (B, samples)``: the generator's
    ``infer`` on the validation clips (noise scale 0.35), jitted."""
    import jax

    @jax.jit
    def infer(pg, val, key):
        wav, _ = task.G.apply({"params": pg}, val["units"], val["f0"], val["uv"], val["speaker"],
                              val["mask"], None, noise_scale=NOISE_SCALE, method="infer",
                              rngs={"noise": key})
        return wav.reshape(val["f0"].shape[0], -1)

    return infer


def measure_run(run_dir: Path, work: Path, seed: int) -> int:
    """``--checkpoints RUN_DIR``: the GAN curve of a ``train.py`` run (e.g. one left training
    in the background, resumed as often as needed), measured as the lockstep curve is: every
    checkpoint's generator converts the run's validation clips (first 4 s, own speaker) and
    the same code measures mel L1 and dio F0 against the sources. Writes WORKDIR's JSON
    (``gan.curves.svcjax``), PNG and table."""
    import jax

    from svcjax.train.checkpoint import TrainCheckpointer
    from svcjax.train.export import restore_params
    from svcjax.train.inputs import pipeline_config

    jax.config.update("jax_default_matmul_precision", "highest")  # as the lockstep curves
    ckpt = TrainCheckpointer(str(run_dir / "checkpoints"), async_save=False)
    try:
        steps = sorted(ckpt.all_steps())
    finally:
        ckpt.close()
    if not steps:
        sys.exit(f"--checkpoints {run_dir}: no checkpoint in {run_dir}/checkpoints")
    task = None
    curve = []
    base = jax.random.key(seed + 1)
    for step in steps:
        params, _, task = restore_params(str(run_dir), step, task)
        if not curve:
            icfg = pipeline_config(task.config, "generator", task.tcfg)
            icfg.segment_frames = task.seg_frames
            val = validation_clips(icfg, VAL_FRAMES)
            infer = gan_infer(task)
            config = {"run": str(run_dir), "validation_clips": int(len(val["length"])),
                      "val_frames": VAL_FRAMES,
                      "comb_baseline": comb_baseline(val, task.sr, task.hop)}
        key = jax.random.fold_in(base, 10 ** 7 + step)
        outs = np.asarray(infer(params["g"], {k: val[k] for k in
                                              ("units", "f0", "uv", "speaker", "mask")}, key))
        m = measure_outputs(list(outs), val, task)
        m["step"] = step
        curve.append(m)
        say(f"GAN step {step:6d} checkpoint mel L1 {m['mel_l1']:.3f}  F0 RMSE "
            f"{m['f0_rmse_cents']:.0f} cents  GPE {m['gpe']:.0%}  V/UV {m['vuv_error']:.0%}"
            f"  output F0 {m['out_f0_median']:.0f} Hz")
    return publish({"gan": {"curves": {"svcjax": curve}, "losses": {}, "config": config}},
                   work)


def write_json(result: dict, out: Path) -> None:
    """``result`` as ``out`` (JSON, NaN kept), written whole or not at all."""
    from svcjax.files import atomic_write

    with atomic_write(out, "w", make_dirs=True) as f:
        f.write(json.dumps(result, indent=1, allow_nan=True))


def publish(result: dict, work: Path) -> int:
    """WORKDIR's learning_curve.json and .png from ``result``, and the table printed."""
    out = work / "learning_curve.json"
    write_json(result, out)
    plot(result, work / "learning_curve.png")
    print(table(result))
    print(f"\n{out}\n{work / 'learning_curve.png'}")
    return 0


def _run_gan_loop(args, work, task, icfg, params, opt, per_epoch, n_train, ref_step,
                  ref_convert, ref_epoch, save=lambda partial: None) -> dict:
    """The lockstep loop: svcjax's step, then (``ref_step`` not None) the reference's."""
    import jax

    from svcjax.data import input_pipeline

    step_fn = jax.jit(task.step)
    jax_infer = gan_infer(task)
    loader = iter(input_pipeline.make_loader(icfg, process_index=0, process_count=1))
    val = validation_clips(icfg, VAL_FRAMES)
    say(f"GAN: {len(val['length'])} validation clips, {n_train} training clips, "
        f"{per_epoch} steps per epoch, batch {args.batch_size}")
    sides = ["svcjax"] + (["reference"] if ref_step is not None else [])
    curves = {s: [] for s in sides}
    losses = {s: [] for s in sides}
    base = jax.random.key(args.seed + 1)
    times = {s: 0.0 for s in sides}
    config = {"batch_size": args.batch_size, "steps_per_epoch": per_epoch,
              "overrides": list(args.set), "learning_rate": float(task.tcfg.learning_rate),
              "segment_frames": int(task.seg_frames), "crop_frames": int(icfg.crop_frames),
              "validation_clips": int(len(val["length"])), "val_frames": VAL_FRAMES,
              "comb_baseline": comb_baseline(val, task.sr, task.hop)}

    def evaluate_at(step):
        key = jax.random.fold_in(base, 10 ** 7 + step)
        ours = np.asarray(jax_infer(params["g"], {k: val[k] for k in
                                                  ("units", "f0", "uv", "speaker", "mask")}, key))
        outs = {"svcjax": list(ours)}
        if ref_convert is not None:
            outs["reference"] = ref_convert(val)
        out_dir = work / "curve" / "gan_outputs"  # the converted clips, for a second look
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / f"step{step:05d}.npz",
                 **{side: np.stack([np.pad(np.asarray(o, np.float32)[:ours.shape[1]],
                                           (0, max(0, ours.shape[1] - len(o)))) for o in o_])
                    for side, o_ in outs.items()},
                 **{f"val_{k}": val[k] for k in ("audio", "f0", "uv", "length", "speaker")})
        for side, outs_ in outs.items():
            m = measure_outputs(outs_, val, task)
            m["step"] = step
            curves[side].append(m)
            say(f"GAN step {step:5d} {side:9s} mel L1 {m['mel_l1']:.3f}  F0 RMSE "
                f"{m['f0_rmse_cents']:.0f} cents  GPE {m['gpe']:.0%}  V/UV {m['vuv_error']:.0%}"
                f"  output F0 {m['out_f0_median']:.0f} Hz")
        save({"curves": curves, "losses": losses, "seconds": times, "config": config})

    evaluate_at(0)
    for step in range(args.steps):
        b = {k: np.asarray(v) for k, v in next(loader).items()}
        t0 = time.perf_counter()
        params, opt, m = step_fn(params, opt, b, jax.random.fold_in(base, step))
        m = jax.device_get(m)
        t1 = time.perf_counter()
        times["svcjax"] += t1 - t0
        keys = ("loss/d/total", "loss/g/total", "loss/g/mel", "loss/g/kl")
        losses["svcjax"].append({k: float(m[k]) for k in keys})
        if ref_step is not None:
            r = ref_step(b)
            times["reference"] += time.perf_counter() - t1
            if (step + 1) % per_epoch == 0:
                ref_epoch()
            losses["reference"].append(r)
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            evaluate_at(step + 1)
    return {"curves": curves, "losses": losses, "seconds": times, "config": config}


# ---------------------------------------------------------------------------------------------
# diffusion
# ---------------------------------------------------------------------------------------------

def run_diffusion(args, work: Path, data_dir: Path, speakers: dict,
                  save=lambda partial: None) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    from svcjax import demo

    from svcjax.data import input_pipeline
    from svcjax.models.diffusion import unit2mel
    from svcjax.train.diffusion import DiffusionTask
    from svcjax.train.inputs import pipeline_config

    sys.path.insert(0, str(FIX))
    import make_diffusion

    cfg = demo.diffusion_config(data_dir, speakers, args.steps, args.diffusion_batch_size,
                                args.k_step)
    cfg.seed = args.seed
    apply_overrides(cfg, args.diffusion_set)
    task = DiffusionTask(cfg)
    icfg = pipeline_config(cfg, "diffusion", task.tcfg)
    icfg.crop_frames = task.crop_frames
    n_train = len(input_pipeline.data_source(icfg.data_dir, icfg.split))
    per_epoch = max(1, n_train // args.diffusion_batch_size)
    task.setup_optimizers(per_epoch)
    t = task.tcfg
    params = jax.jit(task.init_params)(jax.random.key(args.seed), task.dummy_batch(1))
    opt = {"model": task.tx["model"].init(params["model"])}
    init_dir = work / "curve" / "diffusion_init"
    pt = task.export(params, 0, str(init_dir))[0]

    U = make_diffusion._import_reference(args.ref)
    m = cfg.model
    model = U.Unit2Mel(int(cfg.data.encoder_out_channels), int(m.n_spk),
                       use_pitch_aug=bool(m.use_pitch_aug), out_dims=int(m.out_dims),
                       n_layers=int(m.n_layers), n_chans=int(m.n_chans),
                       n_hidden=int(m.n_hidden), timesteps=int(m.timesteps),
                       k_step_max=int(m.k_step_max))
    model.load_state_dict(torch.load(pt)["model"])
    model.train()
    torch.manual_seed(args.seed)
    lr, decay_every = float(t.learning_rate), int(t.lr_decay_steps)
    optimizer = torch.optim.AdamW(model.parameters())
    for group in optimizer.param_groups:  # train_diff.py's set-up, fresh run
        group["initial_lr"] = lr
        group["lr"] = lr
        group["weight_decay"] = float(t.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=decay_every,
                                                gamma=float(t.lr_decay), last_epoch=-2)

    def ref_inputs(b):
        return dict(units=torch.from_numpy(b["units"]).float(),
                    f0=torch.from_numpy(b["f0"])[..., None],
                    volume=torch.from_numpy(b["volume"])[..., None],
                    spk_id=torch.from_numpy(b["speaker"].astype(np.int64))[:, None],
                    aug_shift=torch.from_numpy(b["aug_shift"])[:, None, None],
                    gt_spec=torch.from_numpy(b["mel"]).float())

    def ref_loss(b):
        x = ref_inputs(b)
        return model(x["units"], x["f0"], x["volume"], x["spk_id"], aug_shift=x["aug_shift"],
                     gt_spec=x["gt_spec"], infer=False, k_step=model.k_step_max)

    val = validation_clips(icfg, task.crop_frames)
    val["aug_shift"] = np.zeros_like(val["f0"][:, 0])
    k_max = task.k_step_max
    rs = np.random.RandomState(DIFF_VAL_SEED)
    n_val = len(val["length"])
    val_t = [rs.randint(0, k_max, size=(n_val,)) for _ in range(args.val_draws)]
    val_noise = [rs.standard_normal(val["mel"].shape).astype(np.float32)
                 for _ in range(args.val_draws)]

    @jax.jit
    def jax_val_loss(p, batch, t_, noise):
        inputs = task._inputs(batch)
        return unit2mel.training_loss(task.model, p, inputs, jax.random.key(0), task.schedule,
                                      k_step_max=task.k_step_max, loss_type=task.loss_type,
                                      t=t_, noise=noise)

    def ref_val_loss():
        saved = torch.randint, torch.randn_like
        out = []
        model.eval()
        try:
            with torch.no_grad():
                for t_, noise in zip(val_t, val_noise):
                    tt = torch.from_numpy(t_.astype(np.int64))
                    nn_ = torch.from_numpy(noise).transpose(1, 2)[:, None]
                    torch.randint = lambda *a, **kw: tt.clone()
                    torch.randn_like = lambda x, **kw: nn_.clone()
                    out.append(ref_loss(val).item())
        finally:
            torch.randint, torch.randn_like = saved
            model.train()
        return float(np.mean(out))

    jval = {k: jnp.asarray(v) for k, v in val.items()}
    curves = {"svcjax": [], "reference": []}
    losses = {"svcjax": [], "reference": []}
    times = {"svcjax": 0.0, "reference": 0.0}
    step_fn = jax.jit(task.step)
    base = jax.random.key(args.seed + 2)

    def evaluate_at(step):
        ours = float(np.mean([jax_val_loss(params["model"], jval, jnp.asarray(t_, jnp.int32),
                                           jnp.asarray(n_)) for t_, n_ in zip(val_t, val_noise)]))
        for side, v in (("svcjax", ours), ("reference", ref_val_loss())):
            curves[side].append({"step": step, "val_eps_mse": v})
        say(f"diffusion step {step:5d} validation eps-MSE svcjax {ours:.4f} reference "
            f"{curves['reference'][-1]['val_eps_mse']:.4f}")
        save({"curves": curves, "losses": losses, "seconds": times})

    loader = iter(input_pipeline.make_loader(icfg, process_index=0, process_count=1))
    say(f"diffusion: {n_val} validation crops, {n_train} training clips, batch "
        f"{args.diffusion_batch_size}, k_step_max {k_max}")
    evaluate_at(0)
    for step in range(args.steps):
        b = {k: np.asarray(v) for k, v in next(loader).items()}
        t0 = time.perf_counter()
        params, opt, mtr = step_fn(params, opt, b, jax.random.fold_in(base, step))
        ours = float(jax.device_get(mtr["loss/total"]))
        t1 = time.perf_counter()
        optimizer.zero_grad()
        loss = ref_loss(b)
        loss.backward()
        optimizer.step()
        scheduler.step()
        t2 = time.perf_counter()
        times["svcjax"] += t1 - t0
        times["reference"] += t2 - t1
        losses["svcjax"].append({"loss": ours})
        losses["reference"].append({"loss": loss.item()})
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            evaluate_at(step + 1)
    return {"curves": curves, "losses": losses, "seconds": times,
            "config": {"batch_size": args.diffusion_batch_size, "crop_frames": task.crop_frames,
                       "k_step_max": k_max, "validation_crops": n_val,
                       "val_draws": args.val_draws}}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

PANELS = (("gan", "mel_l1", "GAN: validation mel L1 (log mel)"),
          ("gan", "f0_rmse_cents", "GAN: F0 RMSE vs source (cents)"),
          ("gan", "vuv_error", "GAN: V/UV error vs source"),
          ("diffusion", "val_eps_mse", "diffusion: validation eps-MSE"))


def smooth(x, n=25):
    x = np.asarray(x, np.float64)
    if len(x) < n:
        return x
    return np.convolve(x, np.ones(n) / n, mode="valid")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if p[0] in result]
    extra = [w for w in ("gan", "diffusion") if w in result and result[w].get("losses")]
    n = len(panels) + len(extra)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    axes = axes.reshape(-1)
    for ax in axes[n:]:
        ax.set_visible(False)
    styles = {"svcjax": dict(color="tab:blue", marker="o"),
              "reference": dict(color="tab:orange", marker="s", linestyle="--")}
    for ax, (what, key, title) in zip(axes, panels):
        for side, st in styles.items():
            if side not in result[what]["curves"]:
                continue
            pts = result[what]["curves"][side]
            ax.plot([p["step"] for p in pts], [p[key] for p in pts], label=side, ms=3, **st)
        base = result[what].get("config", {}).get("comb_baseline", {})
        if key in base:
            ax.axhline(base[key], color="gray", linestyle=":", linewidth=1,
                       label="constant 86.1 Hz, always voiced")
        if key == "vuv_error":
            ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax, what in zip(axes[len(panels):], extra):
        key = "loss/g/mel" if what == "gan" else "loss"
        for side, st in styles.items():
            if side not in result[what]["losses"]:
                continue
            y = smooth([r[key] for r in result[what]["losses"][side]])
            ax.plot(np.arange(len(y)) + 1, y, label=side, color=st["color"],
                    linestyle=st.get("linestyle", "-"))
        ax.set_title(f"{what}: training {'mel loss (x45)' if what == 'gan' else 'eps-MSE'}, "
                     "25-step mean", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(result: dict) -> str:
    lines = []
    if "gan" in result:
        lines.append("| step | mel L1 svcjax | mel L1 ref | F0 RMSE svcjax (cents) | F0 RMSE ref "
                     "| V/UV svcjax | V/UV ref | output F0 svcjax (Hz) | output F0 ref |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        c = result["gan"]["curves"]
        nan = dict(mel_l1=float("nan"), f0_rmse_cents=float("nan"), vuv_error=float("nan"))
        for a, b in zip(c["svcjax"], c.get("reference") or [nan] * len(c["svcjax"])):
            # the output's median dio F0 (averaged over clips); 86 Hz = the frame-rate comb
            fa, fb = (f"{x['out_f0_median']:.0f}" if "out_f0_median" in x else "-"
                      for x in (a, b))
            lines.append(f"| {a['step']} | {a['mel_l1']:.3f} | {b['mel_l1']:.3f} | "
                         f"{a['f0_rmse_cents']:.0f} | {b['f0_rmse_cents']:.0f} | "
                         f"{a['vuv_error']:.0%} | {b['vuv_error']:.0%} | {fa} | {fb} |")
    if "diffusion" in result:
        lines.append("")
        lines.append("| step | val eps-MSE svcjax | val eps-MSE ref |")
        lines.append("|---:|---:|---:|")
        c = result["diffusion"]["curves"]
        for a, b in zip(c["svcjax"], c["reference"]):
            lines.append(f"| {a['step']} | {a['val_eps_mse']:.4f} | {b['val_eps_mse']:.4f} |")
    return "\n".join(lines)


def remeasure(gan: dict, out_dir: Path, sr: int = 44100, hop: int = 512) -> None:
    """Fill in what dio hears in the outputs (:func:`output_f0`) and the comb baseline from
    the converted clips a run saved, for curves written before those figures existed."""
    for side, pts in gan["curves"].items():
        for p in pts:
            npz = out_dir / f"step{int(p['step']):05d}.npz"
            if "out_f0_median" in p or not npz.is_file():
                continue
            with np.load(npz) as z:
                if side not in z:
                    continue
                rows = [output_f0(z[side][i], int(n), sr, hop)
                        for i, n in enumerate(z["val_length"])]
                p.update({k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]})
                if "comb_baseline" not in gan.setdefault("config", {}):
                    val = {"f0": z["val_f0"], "uv": z["val_uv"], "length": z["val_length"]}
                    gan["config"]["comb_baseline"] = comb_baseline(val, sr, hop)


def report(paths, work: Path) -> int:
    """Merge finished (or cut-short) runs' JSON files into one JSON, PNG and table."""
    merged: dict = {}
    for path in paths:
        try:
            with open(path) as f:
                res = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"--report: cannot read {path} as a learning_curve.json ({e})")
        for k, v in res.items():
            if k in ("gan", "diffusion") and k in merged:
                sys.exit(f"--report: more than one file holds a {k} curve ({path})")
            merged.setdefault(k, v)
        if "gan" in res:
            remeasure(res["gan"], Path(path).resolve().parent / "curve" / "gan_outputs")
    if not any(k in merged for k in ("gan", "diffusion")):
        sys.exit("--report: none of the files holds a gan or diffusion curve")
    return publish(merged, work)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default=os.environ.get("SVCJAX_REF", str(ROOT / ".ref" / "so-vits-svc")),
                   help="so-vits-svc 4.1-Stable checkout (default: $SVCJAX_REF or .ref/so-vits-svc)")
    p.add_argument("--workdir", default="/tmp/svcjax_learning_curve")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=100, help="evaluate every N steps")
    p.add_argument("--what", default="gan,diffusion")
    p.add_argument("--batch-size", type=int, default=4, help="generator batch (the demo's)")
    p.add_argument("--diffusion-batch-size", type=int, default=8)
    p.add_argument("--k-step", type=int, default=100, help="shallow diffusion k_step_max")
    p.add_argument("--val-draws", type=int, default=4, help="(t, noise) draws per validation")
    p.add_argument("--per-speaker", type=int, default=24, help="demo clips per speaker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--sides", default="svcjax,reference",
                   help="svcjax alone (GAN only) to measure a configuration quickly")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the demo's generator config (repeatable), e.g. "
                        "train.learning_rate=4e-4 or data.crop_frames=128")
    p.add_argument("--diffusion-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="the same for the score network's config")
    p.add_argument("--report", nargs="+", metavar="JSON",
                   help="no training: merge these learning_curve.json files (e.g. a GAN run "
                        "and a diffusion run made in parallel) into WORKDIR's JSON, PNG and "
                        "table")
    p.add_argument("--checkpoints", metavar="RUN_DIR",
                   help="no training: measure every checkpoint of a train.py SoVITS run (its "
                        "workdir) on its validation clips, into WORKDIR's JSON, PNG and table")
    args = p.parse_args(argv)
    if args.report:
        return report(args.report, Path(args.workdir))
    if args.checkpoints:
        sys.path.insert(0, str(ROOT))
        return measure_run(Path(args.checkpoints).resolve(), Path(args.workdir).resolve(),
                           args.seed)
    args.sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    if "svcjax" not in args.sides or not set(args.sides) <= {"svcjax", "reference"}:
        sys.exit(f"--sides {','.join(args.sides)}: expected svcjax or svcjax,reference")
    if "reference" not in args.sides and "diffusion" in args.what.split(","):
        sys.exit("--sides svcjax is for the GAN alone (pass --what gan)")
    if "reference" in args.sides and not os.path.isfile(os.path.join(args.ref, "models.py")):
        sys.exit(f"{args.ref} is not a so-vits-svc checkout (pass --ref or set SVCJAX_REF)")
    sys.path.insert(0, str(ROOT))
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")  # both sides in float32
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir, speakers = corpus(work, args.per_speaker)
    result = {"steps": args.steps, "every": args.every, "seed": args.seed,
              "torch_threads": torch.get_num_threads(), "speakers": list(speakers)}
    t0 = time.perf_counter()
    out = work / "learning_curve.json"

    def write(res):
        write_json(res, out)

    for what in args.what.split(","):
        fn = {"gan": run_gan, "diffusion": run_diffusion}[what]

        def save(partial, what=what):  # after every evaluation: a run cut short keeps its curve
            write({**result, what: {**partial, "partial": True}})

        result[what] = fn(args, work, data_dir, speakers, save)
        say(f"{what}: {args.steps} steps, svcjax {result[what]['seconds']['svcjax']:.0f} s, "
            f"reference {result[what]['seconds']['reference']:.0f} s of training")
    result["wall_seconds"] = time.perf_counter() - t0
    write(result)
    plot(result, work / "learning_curve.png")
    print(table(result))
    print(f"\n{out}\n{work / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
