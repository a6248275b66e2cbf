"""train.py for the toy task (tests only): same flags, the stand-in task instead of make_task."""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "workdir")


def main(argv):
    from svcjax import log
    from svcjax.train.loop import train
    from tests.standins import make_toy_task

    log.configure("svcjax train")   # as train.py does
    res = train(_CONFIG.value, _WORKDIR.value, task=make_toy_task(_CONFIG.value))
    print(f"RESULT step={res.step}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
