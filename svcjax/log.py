"""svcjax's progress and diagnostic messages: the standard :mod:`logging` module.

Library code logs to ``logging.getLogger(__name__)`` (children of the ``"svcjax"`` logger):
INFO for progress (``resumed from ...``, ``generator initialised from ...``), WARNING for
what a user should look at (a record skipped, a clip scaled down). Output that *is* a
command's result (tables, file lists, ``svcjax f0``'s lines) is printed by the command.

A program that imports svcjax decides what it sees, as with any library: unconfigured,
Python shows WARNING and above on stderr and drops INFO. The command-line entry points call
:func:`configure` once, so users see every message as one line ``PREFIX: message`` on stderr
(e.g. ``svcjax train: resumed from .../checkpoints/400``).
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure"]

ROOT = "svcjax"


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted (so
    redirected or captured stderr gets the lines too), flushing after each."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(prefix: str, level: int = logging.INFO) -> logging.Logger:
    """Show svcjax's messages of ``level`` and above on stderr as ``PREFIX: message``.

    Idempotent (a second call replaces the first's handler). The ``"svcjax"`` logger stops
    propagating to the root logger, so a root handler installed by ``absl.app`` (or by the
    calling program) does not print each line a second time in its own format.
    """
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if isinstance(h, _StderrHandler):
            logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
