"""Train the So-VITS-SVC generator (GAN) or the shallow-diffusion score network.

    python train.py --config configs/sovits_44k.py:variant=tiny --workdir /tmp/svc \
        --config.data.data_dir=DATA_DIR --config.train.batch_size=4
    python train.py --config configs/diffusion_44k.py --workdir /tmp/diff \
        --config.data.data_dir=DATA_DIR

Rerunning the same command in the same workdir resumes from its newest checkpoint. The
corpus's speakers must have the ids of the config's ``spk`` map (checked before step 1; the
error prints the ``--config.spk='{...}'`` to use). Fine-tune
from a reference base model with ``--config.init_from=G_0.pth`` (``D_0.pth`` beside it is
picked up; or ``--config.init_discriminator_from=...``). Multi-host: on TPU pods and SLURM
the processes find each other; elsewhere add ``--coordinator HOST:PORT --num_processes N
--process_id I`` on every host. See README.md "Training".
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/sovits_44k.py, configs/diffusion_44k.py), "
    "optionally with ':variant=...'.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and TensorBoard "
                               "events go; an existing run there is resumed.")
_COORD = flags.DEFINE_string("coordinator", None, "Multi-host: process 0's host:port.")
_NPROC = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from svcjax.runtime import distributed

    distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
    import jax

    from svcjax import log
    from svcjax.train import loop as trainer

    # progress from process 0; warnings (a record skipped, a save cleaned up) from every one
    log.configure("svcjax train", logging.INFO if jax.process_index() == 0 else logging.WARNING)

    try:
        result = trainer.train(_CONFIG.value, _WORKDIR.value)
    except trainer.NonFiniteError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    state = "stopped early (preemption); rerun to resume" if result.preempted else "done"
    print(f"train.py: {state} at step {result.step}; workdir {result.workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
