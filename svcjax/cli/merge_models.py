"""``svcjax merge-models``: a convex or linear mix of models' weights
(:func:`svcjax.interop.merge.merge_models`)."""

from __future__ import annotations

from svcjax.interop.merge import merge_models, mix_rates


def add_parser(subparsers):
    p = subparsers.add_parser(
        "merge-models", help="merge models: convex or linear mix of their weights",
        description="The reference webUI's static model fusion (utils.mix_model) on .pth "
                    "files or svcjax model directories with the same shapes.")
    p.add_argument("models", nargs="+", help="two or more models, then OUT (.pth or a "
                                             "directory)")
    p.add_argument("--rates", required=True,
                   help="comma-separated rates, one per model (e.g. 50,50; in percent)")
    p.add_argument("--mode", default="convex", choices=("convex", "linear"),
                   help="convex: softmax(rates/100) (default); linear: rates/100")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
    _intermixed(p)  # OUT may follow the options: A.pth B.pth --rates 50,50 OUT.pth
    return p


def _intermixed(p):
    """Let positionals come after options (the parent parser calls parse_known_args)."""
    plain = p.parse_known_args

    def parse(args=None, namespace=None):
        p.parse_known_args = plain
        try:
            return p.parse_known_intermixed_args(args, namespace)
        finally:
            p.parse_known_args = parse

    p.parse_known_args = parse


def run(args) -> int:
    if len(args.models) < 3:
        raise ValueError("give at least two models and the output: "
                         "svcjax merge-models A.pth B.pth --rates 50,50 OUT.pth")
    *paths, out = args.models
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated numbers, got {args.rates!r}") \
            from None
    merge_models(paths, rates, out, mode=args.mode, overwrite=args.overwrite)
    f = mix_rates(rates, args.mode)
    print(f"merged {len(paths)} models ({', '.join(f'{x:.4f}' for x in f)}) into {out}")
    return 0
