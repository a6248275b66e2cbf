"""Batch conversion speed: svcjax's compiled batch program against the reference's per-clip loop.

    python bench/batch_eval.py --ref .ref/so-vits-svc              # the figures
    python bench/batch_eval.py --ref .ref/so-vits-svc --clips 4 --max-seconds 3   # quicker

``--clips`` clips (32) of ``--min-seconds``..``--max-seconds`` (2-12 s) of varied lengths,
full-size models with random weights (the reference's own modules with the same weights on
its side), shallow diffusion k=100 with DPM-Solver++ x10, speaker 0, every random draw zero
on the reference side:

* **svcjax**: ``Converter.convert`` on all clips at once (``--batch`` pieces a program):
  DIO F0 on the host, then per batch one compiled program: resampling to 16 kHz, a
  full-size random vec768l12 content encoder, SoVITS, the vocoder mel, shallow diffusion,
  NSF-HiFiGAN. *cold*: the first call in a process without a persistent cache (every
  compilation included, counted with ``jax.monitoring``); *warm*: the same call again.
* **reference**: for each clip, DIO F0 (pyworld, as the reference's dio predictor), the
  content units (``librosa.resample`` to 16 kHz as ``inference/infer_tool.py``, then
  transformers' PyTorch ``HubertModel``: HuBERT base, the network of the reference's
  ``vec768l12`` ContentVec, whose fairseq checkpoint is a user file; the same random weights
  as svcjax's encoder; nearest-neighbour stretch to the frames), then SoVITS ``infer`` ->
  ``nvSTFT`` mel -> ``Unit2Mel`` shallow diffusion -> NSF-HiFiGAN with torch (``no_grad``).
* **one 10 s file** (``--file-seconds``): the same on one clip, warm.
* ``--components``: svcjax component by component (each model's public API in turn, host
  arrays between them), the path the fused program replaces, for comparison.
* ``--compute-dtype bfloat16``: svcjax's programs with bfloat16 matmuls/convolutions.

Robustness on a shared machine: the reference's torch thread count is set explicitly
(``--torch-threads``, default 1 and the core count: each is timed and printed, with its
ratios), XLA uses its default pool (all cores; its size is printed); the load average is
printed before and after every phase. *cold* runs with an empty persistent compilation cache
(a fresh temporary ``--cache-dir`` unless one is given: every program compiled, and stored
if worth storing, as a user's first run); *cold, cache filled* drops the in-memory programs
(``jax.clear_caches()`` and a new runtime) and converts again, loading them from that cache,
as a second process would. Compiles (executables obtained: compiled or loaded) and compile
seconds are printed for each.

Printed: seconds, clips per second, seconds of audio per second, compiles, and the ratios
reference / svcjax (> 1: svcjax faster). Nothing is asserted; on a shared machine the
figures are noisy (compare the load averages printed with them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

SR, HOP = 44100, 512


def clips_of(lengths, seed=0):
    rs = np.random.RandomState(seed)
    out = []
    for i, s in enumerate(lengths):
        n = int(s * SR)
        t = np.arange(n) / SR
        f = 160 + 15 * (i % 9) + 10 * np.sin(2 * np.pi * 5 * t)
        out.append((0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR)
                    * (1 + 0.05 * rs.randn(n))).astype(np.float32))
    return out


def build(ref):
    """svcjax Converter and the reference's callables, same random weights."""
    import torch
    import transformers  # before the reference's imports, which stand in a torchaudio module

    import convert as bench_convert
    import make_sovits
    from svcjax.runtime import converter as pipeline, units
    from svcjax.interop import sovits as sovits_convert
    from svcjax.runtime.sovits import SovitsModel

    R = make_sovits.import_reference(ref)
    cfg = make_sovits.reference_config(ref, n_speakers=2)
    cfg["spk"] = {"spk0": 0, "spk1": 1}
    net = make_sovits.build(R, cfg)
    make_sovits.randomise(net, 0)
    net.eval()
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    mcfg = sovits_convert.config_from_reference(cfg)
    sov = SovitsModel(sovits_convert.sovits_params(mcfg, sd, with_posterior=False), mcfg)
    diff, ref_diff = bench_convert.build_diffusion("full", ref, n_spk=2)
    with tempfile.TemporaryDirectory() as tmp:
        voc, ref_gen = bench_convert.build_vocoder("full", ref, tmp)
    if mcfg.model.get("speech_encoder", "vec768l12") != "vec768l12":
        raise SystemExit("the benchmark's reference side runs vec768l12 (HuBERT base) units")
    torch.manual_seed(0)
    hubert = transformers.HubertModel(transformers.HubertConfig()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hubert.save_pretrained(tmp)
        enc = units.load_content_encoder(tmp, kind="vec768l12")
    conv = pipeline.Converter(sov, enc, diff, voc)
    sys.path.insert(0, os.path.abspath(ref))
    from vdecoder.nsf_hifigan.nvSTFT import STFT

    from svcjax.audio.f0 import extract_f0
    from svcjax.audio.features import volume

    stft = STFT(SR, 128, 2048, 2048, HOP, 40, 16000)
    ssl = int(mcfg.model.ssl_dim)
    zero_random = bench_convert.zero_random

    def reference(clip, rs):
        import librosa

        f0, uv = extract_f0(clip, SR, method="dio")
        t = len(f0)
        tt = torch.from_numpy
        with torch.no_grad(), zero_random(torch):
            wav16 = librosa.resample(clip, orig_sr=SR, target_sr=16000)
            c = hubert(tt(wav16[None])).last_hidden_state.transpose(1, 2)   # (1, 768, T50)
            c = torch.nn.functional.interpolate(c, size=t, mode="nearest")
            u = c.transpose(1, 2).numpy()
            assert u.shape == (1, t, ssl)
            spk = torch.zeros(1, 1, dtype=torch.long)
            wav, f = net.infer(tt(u).transpose(1, 2), f0=tt(f0[None]), uv=tt(uv[None]),
                               g=spk, noice_scale=0.4, predict_f0=False)
            wav = wav[:, 0]
            mel = stft.get_mel(wav).transpose(1, 2)
            vol = torch.from_numpy(np.asarray(volume(wav.numpy())))
            mel = ref_diff(tt(u), f[..., None], vol[..., None], spk, gt_spec=mel, infer=True,
                           infer_speedup=10, method="dpm-solver++", k_step=100,
                           use_tqdm=False)
            return ref_gen(mel.transpose(1, 2), f)[:, 0].numpy()

    return conv, reference


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="So-VITS-SVC checkout")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=12.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--file-seconds", type=float, default=10.0)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--components", action="store_true",
                    help="svcjax component by component (the path before the fused program)")
    ap.add_argument("--torch-threads", type=int, nargs="+", default=None,
                    help="reference thread counts to time (default: 1 and the core count)")
    ap.add_argument("--cache-dir", help="persistent compilation cache for the cold runs "
                    "(default: a fresh empty temporary directory)")
    ap.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
    args = ap.parse_args()
    import torch

    from svcjax.runtime import compilation_cache, converter as pipeline, runner as runtime

    cores = os.cpu_count() or 1
    threads = args.torch_threads or sorted({1, cores})
    tmp_cache = None
    if args.cache_dir is None:
        tmp_cache = tempfile.TemporaryDirectory(prefix="svcjax-bench-cache-")
    cache = compilation_cache.enable(args.cache_dir or tmp_cache.name)
    n_cached = len(os.listdir(cache))
    print(f"{args.clips} clips of {args.min_seconds:g}-{args.max_seconds:g} s, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s), {cores} CPU cores "
          f"(XLA: its default pool), torch threads {threads} (set per run), compute dtype "
          f"{args.compute_dtype}, persistent cache {cache} ({n_cached} entries at start)",
          flush=True)
    load("start")
    conv, reference = build(args.ref)
    if args.components:
        conv._fusable = lambda opt: False
    lengths = np.linspace(args.min_seconds, args.max_seconds, args.clips)
    lengths = np.random.RandomState(0).permutation(lengths)
    clips = clips_of(lengths)
    seconds = float(sum(len(c) for c in clips)) / SR
    opts = pipeline.ConvertOptions(speaker=0, f0_method="dio", k_step=100,
                                   method="dpm-solver++", speedup=10, batch_size=args.batch,
                                   pad_seconds=0.0, slice_db=-200.0, seed=None,
                                   compute_dtype=args.compute_dtype)

    def timed(fn):
        with runtime.CompileCounter() as cc:
            t0 = time.perf_counter()
            out = fn()
            sec = time.perf_counter() - t0
        return sec, cc, out

    def show(name, sec, cc, extra=""):
        print(f"svcjax {name:<22} {sec:8.1f} s  {args.clips / sec:6.3f} clips/s  "
              f"{seconds / sec:6.2f} s audio/s  compiles {cc.compiles} "
              f"({cc.compile_seconds:.1f} s compiling){extra}", flush=True)

    cold, cc_cold, _ = timed(lambda: conv.convert(clips, opts, progress=False))
    show("cold (empty cache)", cold, cc_cold)
    load("after svcjax cold")
    warm, cc_warm, _ = timed(lambda: conv.convert(clips, opts, progress=False))
    show("warm", warm, cc_warm, "; last call: " + ", ".join(
        f"{k} {v:.1f} s" for k, v in conv.timings.items()))
    load("after svcjax warm")
    jax.clear_caches()                       # in-memory programs gone: load from the cache
    conv.__dict__.pop("_runtime", None)
    cached, cc_cached, _ = timed(lambda: conv.convert(clips, opts, progress=False))
    show("cold, cache filled", cached, cc_cached,
         f"; cache now {len(os.listdir(cache))} entries")
    one = clips_of([args.file_seconds], seed=1)
    conv.convert(one, opts, progress=False)
    file_sec, cc_file, _ = timed(lambda: conv.convert(one, opts, progress=False))
    print(f"svcjax one {args.file_seconds:g} s file warm {file_sec:.2f} s "
          f"(compiles {cc_file.compiles})", flush=True)
    load("after svcjax")
    if args.skip_reference:
        return
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        rs = np.random.RandomState(0)
        reference(clips_of([2.0], seed=2)[0], rs)                 # torch warm-up
        load(f"before reference ({n_threads} torch threads)")
        t0 = time.perf_counter()
        for c in clips:
            reference(c, rs)
        ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference(one[0], rs)
        ref_file = time.perf_counter() - t0
        print(f"reference per-clip loop, torch {torch.get_num_threads()} thread(s) {ref:8.1f} s"
              f"  {args.clips / ref:6.3f} clips/s  {seconds / ref:6.2f} s audio/s; one file "
              f"{ref_file:.2f} s", flush=True)
        print(f"ratio (reference with {n_threads} torch thread(s) / svcjax with {cores} cores): "
              f"batch warm {ref / warm:.2f}x, batch cold (empty cache) {ref / cold:.2f}x, "
              f"batch cold (cache filled) {ref / cached:.2f}x, one {args.file_seconds:g} s "
              f"file warm {ref_file / file_sec:.2f}x", flush=True)
        load(f"after reference ({n_threads} torch threads)")
    if tmp_cache is not None:
        tmp_cache.cleanup()


def load(when):
    one, five, fifteen = os.getloadavg()
    print(f"  load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)",
          flush=True)


if __name__ == "__main__":
    main()
