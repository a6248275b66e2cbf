"""``svcjax import-index``: the reference's ``kmeans_*.pt`` / ``feature_and_index.pkl`` as
svcjax's plain-array ``.npz`` (:func:`svcjax.timbre.index.load_timbre_index`)."""

from __future__ import annotations

from svcjax.files import refuse_existing
from svcjax.timbre.index import load_timbre_index


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import-index", help="convert a reference kmeans_*.pt / feature_and_index.pkl to .npz",
        description="Read the reference's cluster model or feature-retrieval index (the "
                    ".pkl needs faiss-cpu) and write svcjax's plain-array .npz.")
    p.add_argument("path", help="kmeans_10000.pt or feature_and_index.pkl")
    p.add_argument("out", help="OUT.npz")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    refuse_existing(args.out, args.overwrite)
    idx = load_timbre_index(args.path)
    idx.save(args.out)
    print(f"{idx} written to {args.out}")
    return 0
