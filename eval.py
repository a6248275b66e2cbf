"""Evaluate a conversion model: ``python eval.py --workdir DIR --config.model=G_800.pth ...``.

Thin entry point: the work is :func:`svcjax.eval.runner.run_evaluation`. ``--config``
defaults to the evaluation config that ships with svcjax (:mod:`svcjax.eval.config`;
``configs/eval.py`` re-exports it, ``configs/eval.py:variant=test`` is its test preset) and
any field is set with ``--config.KEY=VALUE``: the loader of :mod:`svcjax.configlib`, the same
as ``svcjax eval``'s.
"""

from absl import app, flags

from svcjax import configlib
from svcjax.eval import config as eval_config

_CONFIG = configlib.define_config_flag(
    eval_config.PATH, "evaluation config file[:arg] (default: svcjax/eval/config.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where eval/ (metrics, TensorBoard) goes")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import os
    import sys

    from svcjax.eval import runner
    from svcjax.runtime import compilation_cache

    compilation_cache.enable()
    try:
        metrics = runner.run_evaluation(_CONFIG.value, _WORKDIR.value)
    except (FileNotFoundError, ValueError, KeyError) as e:
        if os.environ.get("SVCJAX_DEBUG"):
            raise
        print(f"eval.py: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        sys.exit(1)
    for k in sorted(metrics):
        if k.count("/") == 1:
            print(f"{k}\t{metrics[k]:.6g}" if metrics[k] is not None else f"{k}\tnan")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
