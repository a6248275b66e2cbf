"""``svcjax import-sovits``: a So-VITS-SVC 4.1 ``G_*.pth`` + config.json as an svcjax model
directory (:func:`svcjax.interop.sovits.import_sovits`)."""

from __future__ import annotations

from svcjax.interop.sovits import import_sovits
from svcjax.train import checkpoint


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import-sovits", help="convert a So-VITS-SVC 4.1 G_*.pth + config.json to a model dir",
        description="Convert a So-VITS-SVC 4.1 generator checkpoint (full, or compressed "
                    "without enc_q, fp32 or fp16) and its config.json into an svcjax model "
                    "directory (config.json + Orbax parameters).")
    p.add_argument("checkpoint", help="G_*.pth")
    p.add_argument("config", help="the config.json it was trained with")
    p.add_argument("outdir", help="model directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUTDIR if it exists")
    p.add_argument("--inference-only", action="store_true",
                   help="leave out the posterior encoder enc_q (only training needs it)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    out = import_sovits(args.checkpoint, args.config, args.outdir, overwrite=args.overwrite,
                        with_posterior=False if args.inference_only else None)
    _, cfg = checkpoint.load_model_dir(out)
    spk = ", ".join(sorted(cfg.spk, key=lambda k: cfg.spk[k])) or "(none named)"
    print(f"wrote {out}: {cfg.model.n_speakers} speaker(s) [{spk}], "
          f"enc_q {'included' if cfg.has_enc_q else 'absent (inference only)'}")
    return 0
