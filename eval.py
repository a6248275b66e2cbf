"""Evaluate a conversion model: ``python eval.py --config configs/eval.py --workdir DIR``.

Thin entry point: the work is :func:`svcjax.eval.metrics.run_evaluation` (see configs/eval.py).
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "evaluation config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where eval/ (metrics, TensorBoard) goes")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import os
    import sys

    from svcjax.runtime import compilation_cache

    from svcjax.eval import metrics as evaluate

    compilation_cache.enable()
    try:
        metrics = evaluate.run_evaluation(_CONFIG.value, _WORKDIR.value)
    except (FileNotFoundError, ValueError, KeyError) as e:
        if os.environ.get("SVCJAX_DEBUG"):
            raise
        print(f"eval.py: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        sys.exit(1)
    for k in sorted(metrics):
        if k.count("/") == 1:
            print(f"{k}\t{metrics[k]:.6g}" if metrics[k] is not None else f"{k}\tnan")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
