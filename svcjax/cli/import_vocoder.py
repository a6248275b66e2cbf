"""``svcjax import-vocoder``: the NSF-HiFiGAN vocoder (``model`` + config.json) as an svcjax
model directory (:func:`svcjax.interop.nsf_hifigan.import_vocoder`)."""

from __future__ import annotations

from svcjax.interop.nsf_hifigan import import_vocoder


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import-vocoder",
        help="import the NSF-HiFiGAN vocoder ('model' + config.json) as a model dir",
        description="Convert the standalone NSF-HiFiGAN vocoder (pretrain/nsf_hifigan/model, "
                    "{'generator': state_dict}) and the config.json beside it into an svcjax "
                    "model directory.")
    p.add_argument("model", help="the vocoder file (e.g. pretrain/nsf_hifigan/model)")
    p.add_argument("outdir", help="the svcjax model directory to write")
    p.add_argument("--config", default=None,
                   help="its config.json (default: config.json beside the model)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTDIR if it exists")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    print(import_vocoder(args.model, args.outdir, args.config, overwrite=args.overwrite))
    return 0
