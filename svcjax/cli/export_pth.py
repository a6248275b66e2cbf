"""``svcjax export-pth``: a training run's checkpoint in the reference's file format
(:func:`svcjax.train.export.export_run`)."""

from __future__ import annotations

from svcjax.train.export import export_run


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export-pth", help="write a training run's checkpoint as the reference's .pth files",
        description="Write a training workdir's newest (or --step) checkpoint in So-VITS-SVC's "
        "own format: G_{step}.pth, D_{step}.pth and config.json (generator runs) or "
        "model_{step}.pt and config.yaml (diffusion runs). No PyTorch needed.")
    p.add_argument("workdir")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--step", type=int, default=None)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    print("\n".join(export_run(args.workdir, args.out, args.step)))
    return 0
