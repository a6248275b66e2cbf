"""``svcjax import-diffusion``: a So-VITS-SVC shallow-diffusion ``model_*.pt`` (+ config.yaml) as
an svcjax model directory (:func:`svcjax.interop.diffusion.import_diffusion`)."""

from __future__ import annotations

from svcjax.interop.diffusion import import_diffusion


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import-diffusion",
        help="import a So-VITS-SVC shallow-diffusion model_*.pt (+ config.yaml) as a model dir",
        description="Convert a So-VITS-SVC 4.1 diffusion checkpoint (model_<step>.pt) and its "
                    "config.yaml (default: the one beside it) into an svcjax model directory.")
    p.add_argument("model", help="model_<step>.pt")
    p.add_argument("config", nargs="?", default=None,
                   help="its config.yaml (default: config.yaml beside the model)")
    p.add_argument("outdir", help="the svcjax model directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUTDIR if it exists")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    out = import_diffusion(args.model, args.config, args.outdir, overwrite=args.overwrite)
    print(out)
    return 0
