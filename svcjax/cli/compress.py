"""``svcjax compress``: the release copy of a ``G_*.pth``, without optimizer state or enc_q
(:func:`svcjax.interop.compress.compress`)."""

from __future__ import annotations

import os

from svcjax.files import refuse_existing
from svcjax.interop.compress import compress


def add_parser(subparsers):
    p = subparsers.add_parser(
        "compress", help="release copy of a G_*.pth: no optimizer state or enc_q",
        description="Write what the reference's compress_model.py writes: the generator "
                    "without the posterior encoder (enc_q) and without optimizer state, "
                    "optionally in fp16. The result loads in svcjax and in the reference.")
    p.add_argument("src", help="G_*.pth (a training checkpoint)")
    p.add_argument("out", help="OUT.pth")
    p.add_argument("--half", action="store_true", help="store the weights as fp16")
    p.add_argument("--config", default=None,
                   help="the model's config.json (the fresh optimizer's lr, betas, eps)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    refuse_existing(args.out, args.overwrite)
    compress(args.src, args.out, half=args.half, config=args.config)
    size = os.path.getsize(args.out) / 2 ** 20
    print(f"release copy written to {args.out} ({size:.1f} MiB)")
    return 0
