"""``svcjax train-cluster``: a per-speaker k-means cluster model of a corpus's units
(:func:`svcjax.timbre.kmeans.train_cluster`)."""

from __future__ import annotations

from svcjax.files import refuse_existing
from svcjax.timbre.kmeans import train_cluster


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train-cluster", help="per-speaker k-means cluster model over a corpus's units",
        description="K-means (JAX, all local devices) over each speaker's content units; "
                    "the cluster model of `svcjax convert --cluster-model`. Resumable: "
                    "run the same command again after an interruption.")
    p.add_argument("data_dir", help="corpus built with `svcjax build-corpus`")
    p.add_argument("out", help="OUT.npz (svcjax) or OUT.pt (the reference's kmeans layout)")
    p.add_argument("--n-clusters", type=int, default=10000)
    p.add_argument("--minibatch", action="store_true",
                   help="mini-batch updates (batch 4096, 80 epochs) instead of full Lloyd")
    p.add_argument("--max-iter", type=int, default=None,
                   help="Lloyd iterations (default 300) / mini-batch epochs (default 80)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if args.n_clusters < 1:
        raise ValueError(f"--n-clusters must be >= 1, got {args.n_clusters}")
    refuse_existing(args.out, args.overwrite)
    train_cluster(args.data_dir, args.out, args.n_clusters, minibatch=args.minibatch,
                  max_iter=args.max_iter, seed=args.seed)
    print(f"cluster model written to {args.out}")
    return 0
