"""The toy task's config (tests only): python -m tests.toy_train --config tests/toy_config.py --workdir DIR"""


def get_config(arg=None):
    from tests.standins import toy_config

    return toy_config(num_steps=4, checkpoint_every=4)
