"""Timbre leakage on the demo voices: speaker similarity of conversions at several ratios.

    python -m svcjax.demo --workdir /tmp/svcjax_demo        # once (trains the tiny model)
    python bench/timbre_leakage.py --demo /tmp/svcjax_demo [--n-clusters 200]

Trains a cluster model (``svcjax train-cluster``) and a retrieval index (``svcjax
train-index``) on the demo corpus, converts every held-out clip of each source speaker to the
target speaker (the demo's last speaker) with SoVITS at ratio 0 and at the given ratios with
each control, and prints the resemblyzer (GE2E) cosine similarity of each output with the
target speaker's mean embedding (from the target's training clips) and with the source
speaker's. Needs the ``eval`` extra (resemblyzer). Reports numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True, help="the demo's workdir (python -m svcjax.demo)")
    ap.add_argument("--n-clusters", type=int, default=200)
    ap.add_argument("--max-iter", type=int, default=30, help="Lloyd iterations")
    ap.add_argument("--ratios", default="0.5,1.0")
    ap.add_argument("--train-clips", type=int, default=8, help="clips per speaker embedded")
    args = ap.parse_args()
    from svcjax.eval import metrics as evaluate
    from svcjax.timbre import kmeans, retrieval
    from svcjax.runtime import converter as pipeline
    from svcjax.audio import io

    work = Path(args.demo)
    data_dir = work / "data"
    g = sorted((work / "models" / "sovits").glob("G_*.pth"))
    if not g or not data_dir.exists():
        raise SystemExit(f"{work} has no trained demo model; run python -m svcjax.demo first")
    out = work / "timbre"
    out.mkdir(exist_ok=True)
    km, ix = out / f"kmeans_{args.n_clusters}.npz", out / "index.npz"
    if not km.exists():
        kmeans.train_cluster(str(data_dir), str(km), args.n_clusters, max_iter=args.max_iter)
    if not ix.exists():
        retrieval.train_index(str(data_dir), str(ix))
    conv = pipeline.Converter.from_paths(str(g[-1]),
                                         encoder=str(work / "models" / "encoder_random"))
    names = sorted(conv.speakers, key=conv.speakers.get)
    target = names[-1]

    def mean_emb(spk):
        files = sorted((work / "train" / spk).iterdir())[:args.train_clips]
        e = [evaluate.speaker_embedding(*io.load_audio(str(f), sr=16000)) for f in files]
        m = np.mean(e, axis=0)
        return m / np.linalg.norm(m)

    emb = {s: mean_emb(s) for s in names}
    ratios = [float(r) for r in args.ratios.split(",")]
    settings = [("none", None, 0.0)] + [(c, p, r) for r in ratios
                                        for c, p in (("cluster", km), ("retrieval", ix))]
    print(f"target speaker: {target}; similarity = cosine of GE2E embeddings")
    print(f"{'source':10s} {'clip':28s} {'control':10s} {'ratio':>5s} "
          f"{'sim(target)':>11s} {'sim(source)':>11s}")
    rows = []
    for src in names[:-1]:
        for clip in sorted((work / "heldout" / src).iterdir()):
            audio, _ = io.load_audio(str(clip), sr=44100)
            for control, path, r in settings:
                opt = pipeline.ConvertOptions(speaker=target, f0_method="dio", seed=0,
                                              cluster_model=str(path) if path else None,
                                              cluster_ratio=r)
                (y,) = conv.convert([audio], opt, progress=False)
                e = evaluate.speaker_embedding(y, 44100)
                st, ss = float(e @ emb[target]), float(e @ emb[src])
                rows.append((src, control, r, st, ss))
                print(f"{src:10s} {clip.name[:28]:28s} {control:10s} {r:5.2f} {st:11.4f} "
                      f"{ss:11.4f}", flush=True)
    print("\nmeans over clips:")
    for control, _, r in settings:
        sel = [x for x in rows if x[1] == control and x[2] == r]
        print(f"  {control:10s} ratio {r:.2f}: sim(target) {np.mean([x[3] for x in sel]):.4f}"
              f"  sim(source) {np.mean([x[4] for x in sel]):.4f}  ({len(sel)} clips)")


if __name__ == "__main__":
    main()
