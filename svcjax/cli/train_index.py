"""``svcjax train-index``: a per-speaker feature-retrieval index of a corpus's units
(:func:`svcjax.timbre.retrieval.train_index`)."""

from __future__ import annotations

from svcjax.files import refuse_existing
from svcjax.timbre.retrieval import train_index


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train-index", help="per-speaker feature-retrieval index over a corpus's units",
        description="All unit frames per speaker (k-means to 10000 centres above 2e5 "
                    "frames), with inverted lists for IVF search; the index of "
                    "`svcjax convert --retrieval-index`.")
    p.add_argument("data_dir", help="corpus built with `svcjax build-corpus`")
    p.add_argument("out", help="OUT.npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    refuse_existing(args.out, args.overwrite)
    train_index(args.data_dir, args.out, seed=args.seed)
    print(f"retrieval index written to {args.out}")
    return 0
