"""Data throughput: corpus featurization and training batches, beside the reference loader.

    python bench/input_pipeline.py                          # builds a corpus from the test voices
    python bench/input_pipeline.py --corpus DATA_DIR        # an existing svc_corpus
    python bench/input_pipeline.py --ref .ref/so-vits-svc   # + the PyTorch loader

Prints seconds and rates (audio seconds per second, batches per second) and, with ``--ref``,
the reference's ``TextAudioSpeakerLoader`` + ``TextAudioCollate`` (batch 6, 790-frame crops)
on the same clips exported in its file layout (wav + .soft.pt + .f0.npy + .spec.pt), with the
ratio. Never asserts anything: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_corpus(tmp: str, copies: int, f0: str) -> tuple[str, float]:
    """A 2-speaker corpus of the test voices (``copies`` times each); (data_dir, seconds)."""
    from svcjax.data import corpus
    from svcjax.data.featurizer import Featurizer
    voices = os.path.join(ROOT, "tests", "fixtures", "voices")
    raw = os.path.join(tmp, "raw")
    for spk, names in (("alto", ["slt_16k", "hts_32k", "slt_up5_44k"]),
                       ("tenor", ["rms_16k", "rms_22k_stereo", "kal_16k"])):
        os.makedirs(os.path.join(raw, spk))
        for c in range(copies):
            for n in names:
                shutil.copy(os.path.join(voices, n + ".wav"),
                            os.path.join(raw, spk, f"{n}_{c}.wav"))
    feat = Featurizer.from_config(dict(random_encoder=True, f0_method=f0))
    data_dir = os.path.join(tmp, "data")
    t0 = time.perf_counter()
    corpus.build_corpus(raw, data_dir, feat, log=lambda m: None)
    return data_dir, time.perf_counter() - t0


def bench_svcjax(data_dir: str, n: int, batch: int, workers: int) -> dict:
    from svcjax.data import input_pipeline as ip
    cfg = ip.default_config("generator")
    cfg.update(dict(data_dir=data_dir, batch_size=batch, worker_count=workers))
    it = iter(ip.make_loader(cfg))
    next(it)  # open files, start workers
    t0 = time.perf_counter()
    frames = 0
    for _ in range(n):
        b = next(it)
        frames += int(b["length"].sum())
    dt = time.perf_counter() - t0
    return dict(seconds=dt, batches_per_s=n / dt, audio_s_per_s=frames * 512 / 44100 / dt)


def export_reference_layout(data_dir: str, out: str) -> tuple[str, dict]:
    """Write the train split as the reference's dataset/44k files; (filelist, speaker map)."""
    import torch
    from scipy.io import wavfile

    from svcjax.data import corpus, input_pipeline as ip
    meta = corpus.load_metadata(data_dir)
    src = ip.data_source(data_dir, "train")
    names = []
    for i in range(len(src)):
        ex = src[i]
        spk = list(meta["speakers"])[int(ex["speaker"])]
        os.makedirs(os.path.join(out, spk), exist_ok=True)
        path = os.path.join(out, spk, f"{i:05d}.wav")
        wavfile.write(path, 44100, ex["audio"])
        np.save(path + ".f0.npy", np.asanyarray((ex["f0"], ex["uv"]), dtype=object))
        torch.save(torch.from_numpy(ex["units"].astype(np.float32).T[None]), path + ".soft.pt")
        names.append(path)
    filelist = os.path.join(out, "train.txt")
    with open(filelist, "w") as f:
        f.write("\n".join(names) + "\n")
    return filelist, meta["speakers"]


def bench_reference(ref: str, filelist: str, speakers: dict, n: int, batch: int,
                    workers: int) -> dict:
    for mod in ("faiss", "sklearn", "sklearn.cluster"):  # unused by the loader
        if mod not in sys.modules:
            try:
                __import__(mod)
            except ImportError:
                stub = types.ModuleType(mod)
                stub.MiniBatchKMeans = object
                sys.modules[mod] = stub
    sys.path.insert(0, ref)
    import torch
    import utils
    from data_utils import TextAudioCollate, TextAudioSpeakerLoader
    with open(os.path.join(ref, "configs_template", "config_template.json")) as f:
        cfg = json.load(f)
    cfg["spk"] = speakers
    hps = utils.HParams(**cfg)
    ds = TextAudioSpeakerLoader(filelist, hps)
    for i in range(len(ds)):  # first pass writes .spec.pt, as a prepared reference corpus has
        ds[i]
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True,
                                         collate_fn=TextAudioCollate(), num_workers=workers,
                                         drop_last=True)
    got, frames, t0 = 0, 0, None
    while got < n + 1:
        for b in loader:
            if t0 is None:
                t0 = time.perf_counter()
            else:
                got += 1
                frames += int(b[5].sum())
            if got >= n:
                break
        if got >= n:
            break
    dt = time.perf_counter() - t0
    return dict(seconds=dt, batches_per_s=n / dt, audio_s_per_s=frames * 512 / 44100 / dt)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="an existing svc_corpus DATA_DIR (else one is built)")
    p.add_argument("--copies", type=int, default=4, help="copies of each test voice to build")
    p.add_argument("--f0", default="dio")
    p.add_argument("--ref", help="path to the so-vits-svc reference checkout")
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="svcjax_bench_")
    try:
        data_dir = args.corpus
        if not data_dir:
            data_dir, dt = build_corpus(tmp, args.copies, args.f0)
            from svcjax.data import corpus
            meta = corpus.load_metadata(data_dir)
            audio = sum(c["seconds"] for c in meta["counts"].values())
            print(f"build-corpus: {audio:.0f} s of audio in {dt:.1f} s "
                  f"({audio / dt:.1f} audio-s/s, random full-size encoder, f0 {args.f0})")
        ours = bench_svcjax(data_dir, args.batches, args.batch_size, args.workers)
        print(f"svcjax grain loader: {args.batches} batches of {args.batch_size} in "
              f"{ours['seconds']:.2f} s = {ours['batches_per_s']:.1f} batches/s, "
              f"{ours['audio_s_per_s']:.0f} audio-s/s")
        if args.ref:
            filelist, speakers = export_reference_layout(data_dir, os.path.join(tmp, "ref"))
            theirs = bench_reference(args.ref, filelist, speakers, args.batches,
                                     args.batch_size, args.workers)
            print(f"reference DataLoader: {args.batches} batches in {theirs['seconds']:.2f} s = "
                  f"{theirs['batches_per_s']:.1f} batches/s, "
                  f"{theirs['audio_s_per_s']:.0f} audio-s/s")
            print(f"ratio (reference time / svcjax time): "
                  f"{theirs['seconds'] / ours['seconds']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
