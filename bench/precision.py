"""How far ``compute_dtype=bfloat16`` moves conversion from float32, component by component.

    python bench/precision.py --variant test                       # tiny test models (minutes)
    python bench/precision.py --variant full --ref .ref/so-vits-svc   # full-size models
    python bench/precision.py --variant test --xla-table           # + the XLA-CPU bf16 table

On the committed test voices (``tests/fixtures/voices``, resampled to 44.1 kHz; DIO F0), each
component runs twice on the same float32 inputs - once as is, once with its matmuls and
convolutions on bfloat16 operands (:func:`svcjax.models.precision.matmuls_in`, what
``ConvertOptions.compute_dtype="bfloat16"`` does inside the conversion program) - so each
row is that component's own error, not the accumulated one:

* ``units``: the content encoder's units (relative RMS / max abs of the difference);
* ``sovits``: SoVITS ``infer`` audio (relative RMS, max abs) and its vocoder mel (mean
  absolute log-mel difference, natural log);
* ``diffusion``: the shallow-diffusion mel (k=100 DPM-Solver++ x10 for ``full``, the test
  config's k=4 DDIM x2 for ``test``) from SoVITS's mel: log-mel L1, relative RMS, and the
  difference relative to the update the sampler made (output - start mel): shallow diffusion
  keeps most of its start, so the whole mel's relative figure understates the denoiser's;
* ``vocoder``: NSF-HiFiGAN audio from the diffusion mel: relative RMS, max abs, F0 (DIO)
  difference in cents on frames voiced in both (median and 95th percentile);
* ``end to end``: ``Converter.convert`` with each compute dtype (every component's error,
  accumulated): the same audio and F0 figures, and the warm time of each.

``growth`` = relative RMS / 2**-8 (bf16's machine epsilon): how many epsilons of error the
component adds. With random weights (no trained checkpoint ships) the figures describe the
arithmetic, not a trained voice. ``--xla-table`` also prints ``bench/xla_cpu_bf16.py``'s
matmul/conv table (JAX/XLA flags and PyTorch, bf16 vs f32). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

SR, HOP, EPS = 44100, 512, 2.0 ** -8
VOICES = ("slt_up5_44k.wav", "hts_32k.wav", "kal_16k.wav")


def voices(max_seconds):
    import soundfile as sf

    from svcjax.audio import resample

    out = []
    for name in VOICES:
        x, sr = sf.read(os.path.join(ROOT, "tests", "fixtures", "voices", name),
                        dtype="float32", always_2d=True)
        x = np.asarray(resample.resample(x.mean(1), sr, SR), np.float32)
        out.append((name, x[:int(max_seconds * SR)]))
    n = min(len(x) for _, x in out) // HOP * HOP      # one length: each program compiles once
    return [(name, x[:n]) for name, x in out]


def converter(variant, ref):
    from svcjax.runtime import converter as pipeline

    if variant == "test":
        from tests import tiny_models
        d = tiny_models.make_model_dirs(Path(tempfile.mkdtemp()))
        conv = pipeline.Converter.from_paths(d / "sovits", encoder=d / "encoder",
                                             diffusion=d / "diffusion",
                                             vocoder=tiny_models.VOCODER)
        return conv, dict(k=4, method="ddim", speedup=2)
    if not ref:
        raise SystemExit("--variant full needs --ref (the reference builds the full-size "
                         "SoVITS with its own random initialisation)")
    import batch_eval
    conv, _ = batch_eval.build(ref)
    return conv, dict(k=100, method="dpm-solver++", speedup=10)


def rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / max(np.mean(a ** 2), 1e-30)))


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def cents(a, b):
    """DIO F0 of two signals: median and 95th percentile of |difference| in cents over the
    frames voiced in both (nan when none are)."""
    from svcjax.audio.f0 import extract_f0
    fa, _ = extract_f0(np.asarray(a, np.float32), SR, method="dio")
    fb, _ = extract_f0(np.asarray(b, np.float32), SR, method="dio")
    n = min(len(fa), len(fb))
    fa, fb = np.asarray(fa[:n]), np.asarray(fb[:n])
    v = (fa > 0) & (fb > 0)
    if not v.any():
        return float("nan"), float("nan"), 0.0
    c = np.abs(1200 * np.log2(fb[v] / fa[v]))
    return float(np.median(c)), float(np.percentile(c, 95)), float(v.mean())


def components(conv, clip, setting):
    """Each component's float32 and bfloat16 outputs on the same float32 inputs."""
    from svcjax.audio import features, spectrogram
    from svcjax.audio import resample as resample_lib
    from svcjax.audio.features import align_table
    from svcjax.models.precision import matmuls_in
    from svcjax.runtime.diffusion import sample_mel
    from svcjax.runtime.vocoder import vocode

    enc, sov, dif, voc = conv.encoder, conv.sovits, conv.diffusion, conv.vocoder
    n = len(clip)
    frames = n // HOP
    audio = clip[None]
    lens = np.array([n], np.int32)
    f0, uv = conv.f0_fn(audio, SR, "dio", lens)
    f0 = np.asarray(f0, np.float32)[:, :frames]
    uv = np.asarray(uv, np.float32)[:, :frames]
    mask = np.ones((1, frames), np.float32)
    wav16 = np.asarray(resample_lib.resample(audio, SR, 16000))
    wav16 = np.pad(wav16, ((0, 0), (0, -wav16.shape[1] % int(enc.hop))))
    lens16 = np.array([resample_lib.resampled_length(n, SR, 16000)], np.int32)
    ulen = int(np.asarray(enc.num_frames(lens16)).reshape(-1)[0])
    i0, i1, w1 = align_table(ulen, frames, conv.unit_mode)
    vol = np.asarray(features.volume(audio))[:, :frames]
    g = np.zeros((1,), np.int32)
    key = jax.random.PRNGKey(0)
    c = voc.config

    def mel_of(wav):
        return np.asarray(spectrogram.vocoder_mel(
            jnp.asarray(wav), sampling_rate=voc.sampling_rate, n_fft=int(c.n_fft),
            win_length=int(c.win_size), hop_length=voc.hop_size, n_mels=voc.num_mels,
            fmin=float(c.fmin), fmax=float(c.fmax), lengths=lens))[:, :frames]

    def run(dtype):
        @jax.jit
        def units_fn(p, w):
            u, _ = matmuls_in(dtype, enc.model.apply)({"params": p}, w, lens16)
            u = u[0].astype(jnp.float32)
            return (((1 - w1[:, None]) * u[i0] + w1[:, None] * u[i1]))[None]

        @jax.jit
        def sovits_fn(p, units):
            wav, _ = matmuls_in(dtype, sov.module.apply)(
                {"params": p}, units, f0, uv, g, mask,
                vol if sov.module.vol_embedding else None, noise_scale=0.4, predict_f0=False,
                method="infer", rngs={"noise": key})
            return wav[:, :n]

        @jax.jit
        def diffusion_fn(p, units, start):
            spk = None if dif.n_spk <= 1 else dif.speaker_weights([0], 1, frames)
            return matmuls_in(dtype, sample_mel)(
                dif.model, dif.schedule, p, units, f0, vol, spk, None, start, mask, key,
                k=setting["k"], method=setting["method"], speedup=setting["speedup"])

        @jax.jit
        def vocoder_fn(p, mel):
            return matmuls_in(dtype, vocode)(voc.module, p, mel, f0, mask, None)[:, :n]

        return units_fn, sovits_fn, diffusion_fn, vocoder_fn

    f32, b16 = run("float32"), run("bfloat16")
    res = {}
    u32 = np.asarray(f32[0](enc.params, wav16))
    u16 = np.asarray(b16[0](enc.params, wav16))
    res["units"] = dict(rel_rms=rel_rms(u32, u16), max_abs=max_abs(u32, u16),
                        scale=float(np.abs(u32).max()))
    w32 = np.asarray(f32[1](sov.params, u32))
    w16 = np.asarray(b16[1](sov.params, u32))
    m32, m16 = mel_of(w32), mel_of(w16)
    res["sovits"] = dict(rel_rms=rel_rms(w32, w16), max_abs=max_abs(w32, w16),
                         mel_l1=float(np.mean(np.abs(m32 - m16))), scale=float(np.abs(w32).max()))
    d32 = np.asarray(f32[2](dif.params, u32, m32))
    d16 = np.asarray(b16[2](dif.params, u32, m32))
    res["diffusion"] = dict(rel_rms=rel_rms(d32, d16), max_abs=max_abs(d32, d16),
                            mel_l1=float(np.mean(np.abs(d32 - d16))), scale=float(np.abs(d32).max()),
                            update=float(np.sqrt(np.mean((d32 - d16) ** 2)
                                                 / max(np.mean((d32 - m32) ** 2), 1e-30))))
    v32 = np.asarray(f32[3](voc.params, d32))
    v16 = np.asarray(b16[3](voc.params, d32))
    med, p95, voiced = cents(v32[0], v16[0])
    res["vocoder"] = dict(rel_rms=rel_rms(v32, v16), max_abs=max_abs(v32, v16),
                          mel_l1=float(np.mean(np.abs(mel_of(v32) - mel_of(v16)))),
                          cents=med, cents95=p95, voiced=voiced, scale=float(np.abs(v32).max()))
    return res


def end_to_end(conv, clips, setting):
    from svcjax.runtime import converter as pipeline

    outs, secs = {}, {}
    for dtype in ("float32", "bfloat16"):
        opt = pipeline.ConvertOptions(speaker=0, f0_method="dio", k_step=setting["k"],
                                      method=setting["method"], speedup=setting["speedup"],
                                      seed=0, compute_dtype=dtype, batch_size=len(clips))
        conv.convert(clips, opt, progress=False)                     # compile
        t0 = time.perf_counter()
        outs[dtype] = conv.convert(clips, opt, progress=False)
        secs[dtype] = time.perf_counter() - t0
    rows = []
    for a, b in zip(outs["float32"], outs["bfloat16"]):
        med, p95, voiced = cents(a, b)
        rows.append(dict(rel_rms=rel_rms(a, b), max_abs=max_abs(a, b), cents=med, cents95=p95,
                         voiced=voiced, scale=float(np.abs(a).max())))
    return rows, secs


def fmt_row(name, r):
    parts = [f"{name:<28}", f"rel RMS {r['rel_rms']:.2e}", f"growth {r['rel_rms'] / EPS:6.2f}",
             f"max|d| {r['max_abs']:.2e} (of {r['scale']:.2f})"]
    if "mel_l1" in r:
        parts.append(f"log-mel L1 {r['mel_l1']:.2e}")
    if "update" in r:
        parts.append(f"of the update {r['update']:.2e}")
    if "cents" in r:
        parts.append(f"F0 cents median {r['cents']:.2f} p95 {r['cents95']:.2f} "
                     f"({100 * r['voiced']:.0f}% voiced)")
    return "  ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="test", choices=["test", "full"])
    ap.add_argument("--ref", help="So-VITS-SVC checkout (needed for --variant full)")
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="clip length (every voice is cut to the shortest, at most this)")
    ap.add_argument("--voices", type=int, default=len(VOICES), help="how many test voices")
    ap.add_argument("--xla-table", action="store_true",
                    help="also run bench/xla_cpu_bf16.py (subprocesses, a few minutes)")
    args = ap.parse_args()
    print(f"{args.variant} models, {jax.device_count()} {jax.devices()[0].platform} "
          f"device(s), load average {os.getloadavg()[0]:.2f}; bf16 eps = 2^-8 = {EPS:.2e}",
          flush=True)
    with jax.default_matmul_precision("highest"):
        conv, setting = converter(args.variant, args.ref)
        clips = voices(args.seconds)[:args.voices]
        print(f"shallow diffusion k={setting['k']} {setting['method']} x{setting['speedup']}",
              flush=True)
        worst: dict[str, dict] = {}
        for name, clip in clips:
            res = components(conv, clip, setting)
            for comp, r in res.items():
                print(fmt_row(f"{name} {comp}", r), flush=True)
                if comp not in worst or r["rel_rms"] > worst[comp]["rel_rms"]:
                    worst[comp] = r
        rows, secs = end_to_end(conv, [c for _, c in clips], setting)
        for (name, _), r in zip(clips, rows):
            print(fmt_row(f"{name} end to end", r), flush=True)
        worst["end to end"] = max(rows, key=lambda r: r["rel_rms"])
        print("worst per component: " + ", ".join(
            f"{k} {v['rel_rms']:.2e} ({v['rel_rms'] / EPS:.2f} eps)" for k, v in worst.items()))
        print(f"end to end warm on this CPU: float32 {secs['float32']:.2f} s, bfloat16 "
              f"{secs['bfloat16']:.2f} s (ratio {secs['float32'] / secs['bfloat16']:.2f}x); "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.xla_table:
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "xla_cpu_bf16.py")],
                       check=False)


if __name__ == "__main__":
    main()
