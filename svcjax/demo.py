"""``make demo``: the whole svcjax job on a fresh machine, on CPU, in about a quarter of an hour.

    python -m svcjax.demo [--workdir /tmp/svcjax_demo] [--encoder checkpoint_best_legacy_500.pt]
                          [--vocoder pretrain/nsf_hifigan/model] [--sovits-steps N] ...
                          [--init-from G_N.pth]
    python -m svcjax.demo --base-steps N     # only build the base model --init-from takes

1. **Voices**: a small multi-speaker corpus from the real voices Debian ships (flite and
   festival, made sung-like with sox: ``data/demo_corpus.py``); one clip per speaker is held
   out for evaluation.
2. **Corpus**: ``svcjax build-corpus`` into a TFDS ArrayRecord dataset: content units, F0
   (dio), volume, mels. No pretrained ContentVec exists offline, so unless ``--encoder`` names
   one, a randomly initialised vec768l12 encoder is saved and used (its units carry acoustic
   but no linguistic content; say so when you listen).
3. **Training**: the tiny So-VITS-SVC generator (GAN, ``configs/sovits_44k.py:variant=tiny``)
   and a small shallow-diffusion score network (``configs/diffusion_44k.py:variant=shallow``,
   narrowed) for 200 and 1500 steps, with Orbax checkpoints and TensorBoard logs; both
   are exported in the reference's own file formats (``G_*.pth``, ``model_*.pt``).
4. **Conversion**: a held-out clip to another speaker, SoVITS alone and with shallow
   diffusion (DPM-Solver++), written as wav files.
5. **Evaluation**: ``eval.py``'s runner on the held-out clips: mel distance, MCD, F0 RMSE /
   GPE / V-UV error against the source, real-time factor, into JSON, CSV and TensorBoard.

Without ``--vocoder`` the diffusion mel is turned into audio by the weightless Griffin-Lim
fallback (:class:`svcjax.runtime.vocoder.GriffinLimVocoder`): NSF-HiFiGAN weights are a user file.
The point is the complete, real path, every stage of which scales to real data and
accelerators; it is not quality. What a few CPU minutes of training give is measured on the
held-out clips and printed at the end, each figure next to what it means (F0 RMSE in cents
against the source pitch, gross pitch error, V/UV error, mel L1, MCD): at the demo's default
budget the converted voice does not keep the source's pitch, and the shallow-diffusion output
is not usable yet (no frame of it is voiced where the source is). Re-running resumes: finished
stages are skipped, training continues from its checkpoints.

A longer-trained starting point: ``--base-steps N`` (``make base-model``) builds the same
corpus and trains the demo's generator configuration for N steps, resumably (hours on CPU:
about 1.7 s per step on 2 cores), and exports it; ``--init-from WORKDIR/models/base/G_N.pth``
then makes the demo fine-tune from it instead of starting from random weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("flite", "text2wave", "sox")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _check_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"svcjax.demo: {', '.join(missing)} not found; the demo corpus is "
                         "made with Debian's flite, festival and sox (`make demo-tools` "
                         "installs them)")


def make_voices(workdir: Path, per_speaker: int) -> tuple[Path, Path]:
    """Synthesize the corpus; hard-link all but one clip per speaker into ``train/`` and the
    held-out ones into ``heldout/``. Returns (train root, held-out root)."""
    script = REPO / "data" / "demo_corpus.py"
    if not script.exists():
        raise SystemExit(f"svcjax.demo: {script} not found; run the demo from a checkout of "
                         "svcjax (`make demo`)")
    raw = workdir / "voices"
    subprocess.run([sys.executable, str(script), str(raw), "--per-speaker", str(per_speaker)],
                   check=True)
    train, held = workdir / "train", workdir / "heldout"
    for spk_dir in sorted(p for p in raw.iterdir() if p.is_dir()):
        files = sorted(p for p in spk_dir.iterdir() if p.is_file())
        for i, f in enumerate(files):
            dst = (held if i == 0 else train) / spk_dir.name / f.name
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, dst)
    return train, held


def content_encoder(workdir: Path, encoder: str | None) -> tuple[str, bool]:
    """The encoder file or directory to use, and whether it is pretrained."""
    if encoder:
        if not os.path.exists(encoder):
            raise SystemExit(f"svcjax.demo: content encoder {encoder!r} not found")
        return encoder, True
    path = workdir / "models" / "encoder_random"
    from svcjax.train import checkpoint

    if not checkpoint.is_model_dir(path):
        import svcjax

        _say("no pretrained ContentVec is available offline: using a RANDOMLY INITIALISED "
             "vec768l12 encoder (pass --encoder checkpoint_best_legacy_500.pt for real units)")
        enc = svcjax.init_content_encoder("vec768l12", rng=0)
        cfg = enc.config.copy_and_resolve_references()
        cfg.pretrained = False
        checkpoint.save_model_dir(path, enc.params, cfg)
    return str(path), False


def build_corpus(train_root: Path, data_dir: Path, encoder: str) -> dict:
    from svcjax.data import corpus, featurizer

    feat = featurizer.Featurizer.from_config(dict(encoder=encoder, f0_method="dio"))
    corpus.build_corpus(train_root, data_dir, feat, dict(val_per_speaker=1), log=_say)
    return corpus.load_metadata(data_dir)


def sovits_config(data_dir: Path, speakers: dict, steps: int, batch: int, init_from: str = ""):
    from configs import sovits_44k

    c = sovits_44k.get_config("variant=tiny")
    c.spk = dict(speakers)
    c.model.n_speakers = len(speakers)
    c.data.data_dir = str(data_dir)
    c.data.crop_frames = 64
    # A quarter-width discriminator (1/16 of its FLOPs; the full one is most of a CPU step):
    # the demo trains for minutes, not days.
    c.discriminator.width_div = 4
    c.train.update(num_steps=steps, batch_size=batch, eval_interval=max(steps // 2, 1),
                   keep_ckpts=2, log_every=10)
    c.init_from = str(init_from or "")
    return c


def base_config(data_dir: Path, speakers: dict, steps: int, batch: int):
    """The base model's run: the demo's generator config trained for ``steps`` (resumable),
    a checkpoint every 1000 steps, the newest 25 kept (about 340 MB each) for its curve."""
    c = sovits_config(data_dir, speakers, steps, batch)
    c.train.update(eval_interval=1000, keep_ckpts=25, log_every=50)
    return c


def check_init_from(path: str | None) -> str:
    """``--init-from``: an existing ``G_*.pth`` (its ``D_*.pth`` beside it is used too)."""
    if not path:
        return ""
    if not os.path.isfile(path):
        raise SystemExit(f"svcjax.demo: --init-from {path!r}: no such file (expected a G_*.pth, "
                         "e.g. WORKDIR/models/base/G_20000.pth from --base-steps)")
    if not (os.path.basename(path).startswith("G_") and path.endswith(".pth")):
        raise SystemExit(f"svcjax.demo: --init-from {path!r}: expected a generator checkpoint "
                         "named G_*.pth (its D_*.pth beside it initialises the discriminator)")
    return os.path.abspath(path)


def diffusion_config(data_dir: Path, speakers: dict, steps: int, batch: int, k_step_max: int):
    from configs import diffusion_44k

    c = diffusion_44k.get_config(f"variant=shallow,k_step_max={k_step_max}")
    c.spk = dict(speakers)
    c.model.n_spk = len(speakers)
    c.model.update(n_layers=6, n_chans=128, n_hidden=128)
    c.data.data_dir = str(data_dir)
    c.data.duration = 1.0
    c.train.update(num_steps=steps, batch_size=batch, interval_val=max(steps // 2, 1),
                   log_every=10)
    return c


def train_and_export(config, run_dir: Path, out_dir: Path, what: str) -> list[str]:
    from svcjax.train import loop as trainer
    from svcjax.train.export import export_run

    _say(f"training the {what} for {config.train.num_steps} steps in {run_dir} "
         "(re-running resumes)")
    t0 = time.perf_counter()
    result = trainer.train(config, str(run_dir))
    if result.preempted:
        raise SystemExit(f"svcjax.demo: {what} training was interrupted at step "
                         f"{result.step}; run the demo again to resume")
    _say(f"{what}: step {result.step} in {time.perf_counter() - t0:.0f} s; last losses: "
         + ", ".join(f"{k}={v:.3g}" for k, v in sorted(result.metrics.items())
                     if k.startswith("loss")))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    return export_run(str(run_dir), str(out_dir))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m svcjax.demo", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default=os.environ.get("DEMO_DIR", "/tmp/svcjax_demo"))
    p.add_argument("--encoder", help="a ContentVec / HuBERT checkpoint (vec768l12); default: "
                                     "a random-initialised encoder")
    p.add_argument("--vocoder", help="NSF-HiFiGAN 'model' file (config.json beside it); "
                                     "default: the Griffin-Lim fallback")
    p.add_argument("--per-speaker", type=int, default=24, help="clips per speaker")
    p.add_argument("--sovits-steps", type=int, default=200)
    p.add_argument("--diffusion-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=4, help="generator batch")
    p.add_argument("--diffusion-batch-size", type=int, default=8)
    p.add_argument("--k-step", type=int, default=100, help="shallow diffusion depth")
    p.add_argument("--init-from", metavar="G_N.pth",
                   help="fine-tune the demo's generator from this checkpoint (the D_N.pth "
                        "beside it initialises the discriminator), e.g. a base model built "
                        "with --base-steps; trained in WORKDIR/runs/sovits_from_G_N")
    p.add_argument("--base-steps", type=int, metavar="N",
                   help="instead of the demo: build the corpus, train the demo's generator "
                        "config for N steps in WORKDIR/runs/base (re-running resumes; a "
                        "larger N continues) and export WORKDIR/models/base/G_N.pth, D_N.pth")
    args = p.parse_args(argv)
    init_from = check_init_from(args.init_from)
    if args.base_steps is not None and args.base_steps < 1:
        raise SystemExit(f"svcjax.demo: --base-steps {args.base_steps}: expected a positive "
                         "number of steps")
    _check_tools()
    sys.path.insert(0, str(REPO))            # configs/ and data/ live in the checkout
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    of = 3 if args.base_steps is not None else 5      # stages
    _say(f"1/{of} voices -> {work / 'voices'}")
    train_root, held_root = make_voices(work, args.per_speaker)

    _say(f"2/{of} corpus (TFDS ArrayRecord): units, F0 (dio), volume, mels")
    encoder, pretrained = content_encoder(work, args.encoder)
    data_dir = work / "data"
    meta = build_corpus(train_root, data_dir, encoder)
    speakers = dict(meta["speakers"])
    _say(f"speakers: {', '.join(speakers)}")

    if args.base_steps is not None:
        _say("3/3 base model")
        files = train_and_export(
            base_config(data_dir, speakers, args.base_steps, args.batch_size),
            work / "runs" / "base", work / "models" / "base", "base generator")
        g = next(f for f in files if os.path.basename(f).startswith("G_"))
        print(f"\n  base model         {g} (+ D_*.pth beside it)")
        print(f"  its curve          python bench/learning_curve.py --workdir "
              f"{work / 'base_curve'} --checkpoints {work / 'runs' / 'base'}")
        print(f"  the demo from it   python -m svcjax.demo --workdir {work} --init-from {g}")
        return 0

    _say("3/5 training")
    run_name = "sovits"
    if init_from:
        run_name = "sovits_from_" + Path(init_from).stem
        _say(f"the generator fine-tunes from {init_from}")
    sov_files = train_and_export(
        sovits_config(data_dir, speakers, args.sovits_steps, args.batch_size, init_from),
        work / "runs" / run_name, work / "models" / run_name, "tiny So-VITS-SVC generator")
    dif_files = train_and_export(
        diffusion_config(data_dir, speakers, args.diffusion_steps, args.diffusion_batch_size,
                         args.k_step),
        work / "runs" / "diffusion", work / "models" / "diffusion",
        "shallow-diffusion score network")
    g_pth = next(f for f in sov_files if os.path.basename(f).startswith("G_"))
    d_pt = next(f for f in dif_files if f.endswith(".pt"))

    _say("4/5 conversion")
    from svcjax.eval import runner as evaluate
    from svcjax.runtime import converter as pipeline
    from svcjax.audio import io

    vocoder = args.vocoder or "griffin-lim"
    if not args.vocoder:
        _say("no NSF-HiFiGAN weights offline: the diffusion mel is rendered with the "
             "Griffin-Lim fallback (pass --vocoder pretrain/nsf_hifigan/model)")
    conv = pipeline.Converter.from_paths(g_pth, encoder=encoder, diffusion=d_pt,
                                         vocoder=vocoder)
    names = list(speakers)
    source_spk = names[0]
    target = names[-1]
    src = sorted((held_root / source_spk).iterdir())[0]
    out_dir = work / "converted"
    out_dir.mkdir(exist_ok=True)
    outputs = {}
    for tag, shallow in (("sovits", False), (f"diffusion_k{args.k_step}", True)):
        opt = pipeline.ConvertOptions(speaker=target, f0_method="dio", k_step=args.k_step,
                                      method="dpm-solver++", speedup=10,
                                      shallow_diffusion=shallow)
        out = out_dir / f"{src.stem}_to_{target}_{tag}.wav"
        written, failed = pipeline.convert_files(conv, [str(src)], [str(out)], opt,
                                                 progress=False, log=_say)
        if failed:
            raise SystemExit(f"svcjax.demo: conversion failed: {failed}")
        outputs[tag] = out
    wav, _ = io.load_audio(str(src), sr=44100)
    io.save_audio(str(out_dir / f"{src.stem}_source.wav"), wav, 44100)

    _say("5/5 evaluation (eval.py's runner) on the held-out clips")
    from svcjax.eval import config as eval_config

    ec = eval_config.get_config("variant=full")
    ec.speakers = (target,)
    ec.diffusion_k = (args.k_step,)
    ec.samplers = ("dpm-solver++",)
    ec.metrics = ("mel", "mcd", "f0", "rtf")
    ec.audio_samples = 1
    ec.data.path = str(held_root)
    eval_dir = work / "eval_run"
    metrics = evaluate.run_evaluation(ec, eval_dir, converter=conv, log=_say)

    _say(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")
    print()
    print(f"  source clip        {out_dir / (src.stem + '_source.wav')}  ({source_spk})")
    for tag, out in outputs.items():
        print(f"  converted ({tag:<14}) {out}  (-> {target})")
    print(f"  metrics            {eval_dir / evaluate.EVAL_DIR / 'metrics.csv'}")
    print(f"  models             {work / 'models'}  (G_*.pth, model_*.pt: the reference's "
          "formats)")
    print(f"  TensorBoard        {tensorboard_command(work)}")
    report = measured_report(metrics)
    if report:
        print("\n  Measured on the held-out clips, converted to " + target + ":")
        print(report)
    if not pretrained:
        print("\n  (units from a random-initialised content encoder: pass --encoder for "
              "real ContentVec units)")
    return 0


def tensorboard_command(logdir) -> str:
    """The command that shows the logs: the ``tensorboard`` installed beside this Python
    (``.venv/bin/tensorboard`` after ``make demo``), else how to install it."""
    exe = Path(sys.executable).parent / "tensorboard"
    if exe.exists():
        try:
            exe = exe.relative_to(Path.cwd())
        except ValueError:
            pass
        return f"{exe} --logdir {logdir}"
    found = shutil.which("tensorboard")
    if found:
        return f"tensorboard --logdir {logdir}"
    return f"pip install tensorboard, then: tensorboard --logdir {logdir}"


# metric -> (format of the value, what it means). Pitch figures compare the converted
# clip's F0 with the source's (the conversion should keep the melody).
MEANINGS = {
    "f0_rmse_cents": ("{:.0f} cents", "F0 RMSE against the source over frames voiced in both "
                                      "(100 cents = a semitone; <= 50 keeps the melody)"),
    "gpe": ("{:.0%}", "gross pitch error: frames voiced in both that are > 50 cents off"),
    "vuv_error": ("{:.0%}", "frames whose voiced/unvoiced decision differs from the source"),
    "mel_l1": ("{:.2f}", "mean |log-mel difference| to the source (lower: closer spectra)"),
    "mcd": ("{:.1f} dB", "mel-cepstral distortion to the source (lower: closer timbre+content)"),
    "rtf": ("{:.2f}", "real-time factor: seconds of compute per second of audio"),
}


def measured_report(metrics: dict) -> str:
    """The demo's closing table: each setting's figures next to what they mean.

    A figure that could not be measured (NaN or missing, e.g. no frame voiced in both the
    source and the output) is printed as such with its reason, never as a number.
    """
    import math

    settings = sorted({k.split("/")[0] for k in metrics if k.count("/") == 1})
    lines = []
    for setting in settings:
        lines.append(f"  [{setting}]")
        for name, (fmt, meaning) in MEANINGS.items():
            key = f"{setting}/{name}"
            if key not in metrics and name not in ("f0_rmse_cents", "gpe"):
                continue
            value = metrics.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                missing = metrics.get(f"{key}_missing")
                clips = f" in {missing:.0f} clip(s)" if missing else ""
                why = f"no frame is voiced in both the source and the output{clips}"
                text, meaning = "not measured", f"{meaning} [{why}]"
            else:
                text = fmt.format(value)
            lines.append(f"    {name:<14} {text:<13} {meaning}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
