"""``svcjax import-encoder``: a speech content encoder checkpoint as an svcjax model directory
(:func:`svcjax.interop.content_encoder.import_encoder_dir`)."""

from __future__ import annotations

import json
import os

from svcjax.interop.content_encoder import import_encoder_dir
from svcjax.models import encoders


def add_parser(subparsers):
    kinds = "; ".join(f"{k.name}: {k.source}" for k in encoders.KINDS.values())
    p = subparsers.add_parser(
        "import-encoder",
        help="import a speech content encoder checkpoint as an svcjax model directory",
        description="Import a speech content encoder checkpoint (the file So-VITS-SVC loads for "
                    f"each speech_encoder: {kinds}; Hugging Face HubertModel weights are read "
                    "too). The network is recognised from the file.")
    p.add_argument("file", help="checkpoint file (or a Hugging Face model directory)")
    p.add_argument("outdir", help="model directory to write")
    p.add_argument("--kind", choices=sorted(encoders.KINDS), default=None,
                   help="units to extract (default: the usual kind for the file, e.g. vec768l12 "
                        "for ContentVec, hubertsoft for HuBERT-Soft)")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, where the file does not record them (default: width/64)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTDIR")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    out = import_encoder_dir(args.file, args.outdir, args.kind, num_heads=args.num_heads,
                             overwrite=args.overwrite)
    print(f"imported {args.file} -> {out}: {_summary(out)}")
    return 0


def _summary(outdir: str) -> str:
    """What was written: the kind, and the network's depth and width where recorded."""
    with open(os.path.join(outdir, "config.json")) as f:
        cfg = json.load(f)
    if not {"num_layers", "embed_dim"} <= set(cfg):
        return f"kind {cfg['kind']} ({cfg.get('family', 'hubert')} family)"
    return (f"kind {cfg['kind']}, {cfg['num_layers']} layers of width {cfg['embed_dim']}"
            + (f", final_proj to {cfg['final_dim']}" if cfg.get("final_dim") else ""))
