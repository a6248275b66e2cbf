"""Conversion speed: vocoder, shallow diffusion and end to end, side by side with the reference.

    python bench/convert.py --ref .ref/so-vits-svc            # the figures
    python bench/convert.py --seconds 2 --batches 1 --variant test       # a quick smoke run

On ``--seconds`` of audio (10 by default: 861 frames) and each batch size in ``--batches``
(1 and 8), with full-size random weights (``--variant test``: tiny ones):

* ``vocoder``: NSF-HiFiGAN, mel + F0 -> waveform;
* ``shallow k100 dpm-solver++ x10`` and ``shallow k100 ddpm``: the diffusion model alone,
  refining a given mel (10 and 100 denoiser calls);
* ``models end to end``: SoVITS ``infer`` -> vocoder mel -> shallow diffusion (k100
  dpm-solver++ x10) -> vocoder on given units and F0, the template-size models with the same
  random weights on both sides (with ``--ref``);
* ``end to end``: ``svcjax.Converter`` on a 44.1 kHz clip (F0 with DIO, a random full-size
  content encoder, then the chain above; svcjax only: the reference's encoder needs a
  ContentVec checkpoint).

svcjax times are the median of ``--repeats`` warm calls (compiled once before; host arrays
in and out). With ``--ref`` the reference builds the same models with the same random
weights (imported into svcjax from its state_dicts) and runs them with torch on the same CPU
(``torch.no_grad``, every random draw zero): its seconds, the ratio reference / svcjax (> 1:
svcjax faster) and the largest output difference are printed. The reference DDPM run takes
about 49 s per clip, so it is timed for batch 1 only unless ``--ref-ddpm-all``. Nothing is
asserted. (Timings on this machine, 2 CPU threads, 10 s, batch 1: the reference took 5.18 s
for the 10-step shallow diffusion and 3.44 s for the vocoder.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

SR, HOP = 44100, 512


def timeit(fn, repeats):
    out = fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@contextlib.contextmanager
def zero_random(torch):
    saved = torch.rand, torch.randn, torch.randn_like, torch.rand_like

    def zeros(*size, **kw):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        return torch.zeros(*size, dtype=kw.get("dtype"), device=kw.get("device"))

    torch.rand = torch.randn = zeros
    torch.randn_like = torch.rand_like = lambda x, **kw: torch.zeros_like(x)
    try:
        yield
    finally:
        torch.rand, torch.randn, torch.randn_like, torch.rand_like = saved


def report(name, sec, n_audio_seconds, ref=None, diff=None):
    line = f"{name:<34} svcjax {sec:8.3f} s (RTF {sec / n_audio_seconds:6.3f})"
    if ref is not None:
        line += f" | reference {ref:8.3f} s | ratio {ref / sec:6.2f}x"
    if diff is not None:
        line += f" | max |diff| {diff:.1e}"
    print(line, flush=True)


# ----------------------------------------------------------------------------- vocoder


def build_vocoder(variant, ref, tmp):
    import make_vocoder
    from svcjax.runtime import vocoder

    cfg = dict(make_vocoder.CONFIG)
    cfg["upsample_initial_channel"] = 512 if variant == "full" else 32
    path = os.path.join(tmp, "model")
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)
    ref_gen = None
    if ref:
        import torch

        models = make_vocoder._import_reference(ref)
        torch.manual_seed(0)
        ref_gen = models.Generator(models.AttrDict(cfg))
        torch.save({"generator": ref_gen.state_dict()}, path)
        ref_gen.eval()
        ref_gen.remove_weight_norm()
        return vocoder.load_vocoder(path), ref_gen
    from svcjax.interop import nsf_hifigan

    gen = nsf_hifigan.build_generator(cfg)
    params = gen.init(jax.random.PRNGKey(0), np.zeros((1, 4, 128), np.float32),
                      np.zeros((1, 4), np.float32))["params"]
    params = jax.tree.map(lambda a: np.asarray(a) * 0 + 0.02 * np.random.RandomState(0)
                          .randn(*a.shape).astype(np.float32), params)
    return vocoder.Vocoder(params, nsf_hifigan.read_config(os.path.join(tmp, "config.json"))), None


# ----------------------------------------------------------------------------- diffusion


def build_diffusion(variant, ref, n_spk=2):
    """The template Unit2Mel with random weights (the reference's own with ``ref``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_diffusion", os.path.join(ROOT, "bench", "diffusion.py"))
    bench_diffusion = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_diffusion)
    _, diff, ref_model = bench_diffusion.build_models(variant, ref, n_spk)
    return diff, ref_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=None, help="So-VITS-SVC checkout (reference timings)")
    ap.add_argument("--variant", default="full", choices=["full", "test"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-ddpm-all", action="store_true",
                    help="time the reference's DDPM for every batch size (slow)")
    ap.add_argument("--skip", default="",
                    help="comma-separated: vocoder,shallow,ddpm,models,e2e")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    batches = [int(b) for b in args.batches.split(",")]
    t = int(args.seconds * SR) // HOP
    torch = None
    if args.ref:
        import torch
    print(f"{args.variant} models, {args.seconds:g} s = {t} frames, {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)"
          + (f", torch {torch.get_num_threads()} threads" if torch else ""), flush=True)
    rs = np.random.RandomState(1)

    if "vocoder" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            voc, ref_gen = build_vocoder(args.variant, args.ref, tmp)
            for b in batches:
                mel = (-6 + rs.randn(b, t, 128)).astype(np.float32)
                f0 = (150 + 200 * rs.rand(b, t)).astype(np.float32)
                sec, wav = timeit(lambda: voc(mel, f0), args.repeats)
                ref_sec = diff = None
                if ref_gen is not None:
                    def run_ref():
                        with torch.no_grad(), zero_random(torch):
                            return ref_gen(torch.from_numpy(mel).transpose(1, 2),
                                           torch.from_numpy(f0))[:, 0].numpy()
                    ref_sec, ref_wav = timeit(run_ref, args.repeats)
                    diff = float(np.abs(ref_wav - wav).max())
                report(f"vocoder B={b}", sec, b * args.seconds, ref_sec, diff)

    if not {"shallow", "ddpm"} <= skip:
        diff_model, ref_model = build_diffusion(args.variant, args.ref)
        n_spk = 2
        for b in batches:
            units = rs.randn(b, t, int(diff_model.config.data.encoder_out_channels)).astype(np.float32)
            f0 = (150 + 200 * rs.rand(b, t)).astype(np.float32)
            vol = (0.1 * rs.rand(b, t)).astype(np.float32)
            mel = (-6 + rs.randn(b, t, 128)).astype(np.float32)
            spk = np.arange(b) % n_spk
            for name, method, s in (("shallow k100 dpm-solver++ x10", "dpm-solver++", 10),
                                    ("shallow k100 ddpm", "ddpm", 1)):
                if (method == "ddpm" and "ddpm" in skip) or (method != "ddpm" and "shallow" in skip):
                    continue
                run = lambda: diff_model.sample(units, f0, vol, speaker=spk, start_mel=mel,  # noqa: E731
                                                k_step=100, method=method, speedup=s)
                sec, out = timeit(run, args.repeats if method != "ddpm" else 1)
                ref_sec = d = None
                if ref_model is not None and (method != "ddpm" or b == 1 or args.ref_ddpm_all):
                    tt = torch.from_numpy

                    def run_ref():
                        with torch.no_grad(), zero_random(torch):
                            return ref_model(tt(units), tt(f0[..., None]), tt(vol[..., None]),
                                             tt(spk[:, None]), gt_spec=tt(mel), infer=True,
                                             infer_speedup=s, method=method, k_step=100,
                                             use_tqdm=False).numpy()
                    ref_sec, ref_out = timeit(run_ref, 1)
                    d = float(np.abs(ref_out - out).max())
                report(f"{name} B={b}", sec, b * args.seconds, ref_sec, d)

    if "models" not in skip and args.ref:
        models_end_to_end(args, batches, t, rs)
    if "e2e" not in skip:
        end_to_end(args, batches, t, rs)


def models_end_to_end(args, batches, t, rs):
    """SoVITS -> mel -> shallow diffusion -> vocoder, svcjax vs the reference, same weights."""
    import torch

    try:
        import make_sovits
        from svcjax.interop import sovits as sovits_convert
        from svcjax.runtime.sovits import SovitsModel
    except ImportError as e:
        print(f"models end to end: skipped ({e})")
        return
    R = make_sovits.import_reference(args.ref)
    cfg = make_sovits.reference_config(args.ref, n_speakers=2)
    cfg["spk"] = {"spk0": 0, "spk1": 1}
    net = make_sovits.build(R, cfg)
    make_sovits.randomise(net, 0)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    mcfg = sovits_convert.config_from_reference(cfg)
    sov = SovitsModel(sovits_convert.sovits_params(mcfg, sd, with_posterior=False), mcfg)
    diff, ref_diff = build_diffusion("full", args.ref, n_spk=2)
    with tempfile.TemporaryDirectory() as tmp:
        voc, ref_gen = build_vocoder("full", args.ref, tmp)
    sys.path.insert(0, os.path.abspath(args.ref))
    from vdecoder.nsf_hifigan.nvSTFT import STFT

    from svcjax.audio.features import volume

    stft = STFT(SR, 128, 2048, 2048, HOP, 40, 16000)
    ssl = int(mcfg.model.ssl_dim)
    for b in batches:
        units = rs.randn(b, t, ssl).astype(np.float32)
        f0 = (150 + 200 * rs.rand(b, t)).astype(np.float32)
        uv = np.ones((b, t), np.float32)
        spk = np.arange(b) % 2

        def ours():
            wav, f = sov.infer(units, f0, uv, speaker=spk, rng=None)
            mel = np.asarray(voc.mel(wav))
            vol = np.asarray(volume(wav))
            mel = diff.sample(units, f, vol, speaker=spk, start_mel=mel, k_step=100,
                              method="dpm-solver++", speedup=10)
            return voc(mel, f)

        def theirs():
            tt = torch.from_numpy
            with torch.no_grad(), zero_random(torch):
                wav, f = net.infer(tt(units).transpose(1, 2), f0=tt(f0), uv=tt(uv),
                                   g=tt(spk)[:, None], noice_scale=0.4, predict_f0=False)
                wav = wav[:, 0]
                mel = stft.get_mel(wav).transpose(1, 2)
                # the same volume function on both sides (a cheap step, not what is compared)
                vol = torch.from_numpy(np.asarray(volume(wav.numpy())))
                mel = ref_diff(tt(units), f[..., None], vol[..., None], tt(spk)[:, None],
                               gt_spec=mel, infer=True, infer_speedup=10,
                               method="dpm-solver++", k_step=100, use_tqdm=False)
                return ref_gen(mel.transpose(1, 2), f)[:, 0].numpy()

        sec, out = timeit(ours, args.repeats)
        ref_sec, ref_out = timeit(theirs, 1)
        report(f"models end to end B={b}", sec, b * args.seconds, ref_sec,
               float(np.abs(ref_out - out).max()))


def end_to_end(args, batches, t, rs):
    try:
        from configs.sovits_44k import get_config
        from svcjax.runtime import converter as pipeline, units
        from svcjax.runtime.sovits import SovitsModel
        from svcjax.models import synthesizer
        import svcjax.audio.f0  # noqa: F401
    except ImportError as e:
        print(f"end to end: skipped ({e}; it needs the generator, content-encoder and F0 "
              "modules)")
        return
    config = get_config("variant=full")
    sov = SovitsModel(synthesizer.init_params(synthesizer.from_config(
        config, with_posterior=False)), config)
    enc = units.init_content_encoder(config.model.get("speech_encoder", "vec768l12"))
    diff, _ = build_diffusion("full", None, n_spk=int(config.model.n_speakers))
    with tempfile.TemporaryDirectory() as tmp:
        voc, _ = build_vocoder("full", None, tmp)
    conv = pipeline.Converter(sov, enc, diff, voc)
    n = int(args.seconds * SR)
    for b in batches:
        clips = [(0.3 * np.sin(np.arange(n) * 2 * np.pi * (200 + 20 * i) / SR)
                  * (1 + 0.05 * rs.randn(n))).astype(np.float32) for i in range(b)]
        opts = pipeline.ConvertOptions(speaker=0, f0_method="dio", k_step=100,
                                       method="dpm-solver++", speedup=10, batch_size=b,
                                       pad_seconds=0.0, slice_db=-200.0)
        conv.convert(clips, opts, progress=False)       # compile
        sec, _ = timeit(lambda: conv.convert(clips, opts, progress=False), args.repeats)
        report(f"end to end (shallow k100) B={b}", sec, b * args.seconds)
        print("    last call: " + ", ".join(f"{k} {v:.2f} s" for k, v in conv.timings.items()),
              flush=True)


if __name__ == "__main__":
    main()
