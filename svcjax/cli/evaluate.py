"""``svcjax eval``: a model evaluated on a set of clips (:func:`svcjax.eval.runner.run_evaluation`).

    svcjax eval --workdir runs/eval --config.model=G_800.pth --config.data.path=eval_clips ...

The config and its overrides are read as ``eval.py`` reads them (:mod:`svcjax.configlib`):
``--config FILE[:ARG]`` (default: the evaluation config that ships with svcjax,
:mod:`svcjax.eval.config`) and ``--config.KEY=VALUE`` for any field.
"""

from __future__ import annotations

from svcjax import configlib
from svcjax.eval import config as eval_config


def add_parser(subparsers):
    p = subparsers.add_parser(
        "eval", help="evaluate a model on a set of clips (metrics table, TensorBoard)",
        description="Convert an evaluation set with several settings and write "
                    "WORKDIR/eval/metrics.json, metrics.csv, clips.csv and TensorBoard files "
                    "(the same as `python eval.py`, with the same flags). Any config field "
                    "is set with --config.KEY=VALUE, e.g. --config.model=G_800.pth "
                    "--config.data.path=clips --config.diffusion_k='(20,100)'.")
    p.add_argument("--config", default=None, metavar="FILE[:ARG]",
                   help="config file and its argument (default: the evaluation config that "
                        "ships with svcjax, svcjax/eval/config.py; a checkout's "
                        "configs/eval.py:variant=test is its test preset)")
    p.add_argument("--workdir", required=True, help="where eval/ (metrics, TensorBoard) goes")
    p.set_defaults(func=run)
    _collect_overrides(p)
    return p


def _collect_overrides(p):
    """Hand every argument the parser does not know (the ``--config.KEY=VALUE`` overrides and
    their values) to ``args.overrides``, in order, for :func:`svcjax.configlib.load_config`
    (which refuses anything that is not an override)."""
    plain = p.parse_known_args

    def parse(args=None, namespace=None):
        ns, extras = plain(args, namespace)
        ns.overrides = list(extras)
        return ns, []

    p.parse_known_args = parse


def run(args) -> int:
    from svcjax.eval import runner
    from svcjax.runtime import compilation_cache

    config = configlib.load_config(args.config or eval_config.PATH, args.overrides)
    compilation_cache.enable()
    metrics = runner.run_evaluation(config, args.workdir)
    for k in sorted(metrics):
        if k.count("/") == 1:
            print(f"{k}\t{metrics[k]:.6g}")
    return 0
