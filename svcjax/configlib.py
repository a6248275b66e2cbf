"""Config files and their command-line overrides: the one loader of svcjax.

A config file is a Python file whose ``get_config(arg=None)`` returns an
``ml_collections.ConfigDict`` (big_vision style). On a command line it is chosen with
``--config FILE[:ARG]`` (``ARG``, the text after the first ``:``, goes to ``get_config``,
e.g. ``configs/eval.py:variant=test``) and any leaf is overridden with ``--config.a.b=VALUE``
(or ``--config.a.b VALUE``), parsed as the type of the leaf it replaces: numbers, strings,
booleans (also ``--config.flag`` / ``--noconfig.flag``), tuples as ``'(1, 2)'``, ``'[1, 2]'``
or one value per repeated flag. The ConfigDict is locked, so a misspelt field is an error.

This is ml_collections' ``config_flags``, used two ways:

* :func:`define_config_flag` declares ``--config`` on absl's flags (``eval.py``,
  ``train.py``-style entry points run by ``absl.app``);
* :func:`load_config` parses ``--config`` and its overrides from a list of arguments
  (``svcjax eval``) and turns every problem into one sentence (``FileNotFoundError`` or
  ``ValueError``) instead of absl's usage errors.

The file is run with the current directory as given (a relative FILE is relative to it);
configs that ship with svcjax are named by their installed path (e.g.
:data:`svcjax.eval.config.PATH`), never looked up relative to the current directory.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import ml_collections

__all__ = ["parse_arg", "define_config_flag", "load_config"]


def parse_arg(arg: str | None, lazy: bool = False, **spec):
    """Parse ``'a=1,b=x,flag'`` against defaults in ``spec`` (types follow the defaults).

    A bare word sets a bool default to True. Unknown keys are an error unless ``lazy``.
    """
    out = ml_collections.ConfigDict(dict(spec))
    if not arg:
        return out
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in spec:
            if lazy:
                out[key] = value
                continue
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(spec))}")
        default = spec[key]
        if not _:
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes", "y")
        elif default is None:
            out[key] = value
        else:
            out[key] = type(default)(value)
    return out


def define_config_flag(default: str | None = None, help_string: str = "config file[:arg]", *,
                       name: str = "config", flag_values=None,
                       argv: Sequence[str] | None = None):
    """Declare ``--NAME FILE[:ARG]`` and its ``--NAME.a.b=VALUE`` overrides on absl flags
    (``flag_values``, default ``absl.flags.FLAGS``; the overrides are read from ``argv``,
    default ``sys.argv``). Returns the flag holder; its ``.value`` is the locked config."""
    from absl import flags
    from ml_collections import config_flags

    return config_flags.DEFINE_config_file(
        name, default, help_string, flag_values=flags.FLAGS if flag_values is None else
        flag_values, lock_config=True, sys_argv=None if argv is None else list(argv))


_OVERRIDE = re.compile(r"^--?(?:no)?config\.([A-Za-z0-9_.]+)")


def load_config(spec: str | os.PathLike, overrides: Sequence[str] = ()
                ) -> ml_collections.ConfigDict:
    """The config ``--config SPEC OVERRIDES...`` gives, as :func:`define_config_flag` parses it
    (``overrides``: ``["--config.model=G_800.pth", "--config.diffusion_k=(20,100)", ...]``).

    Raises ``FileNotFoundError`` when the file does not exist and ``ValueError`` (one line)
    for an override of a field the config does not have, a value of the wrong type, an
    argument that is not an override, or an error of the file's ``get_config``.
    """
    from absl import flags

    spec = os.fspath(spec)
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    argv = ["svcjax", f"--config={spec}", *overrides]
    values = flags.FlagValues()
    try:
        holder = define_config_flag(flag_values=values, argv=argv)
        rest = values(argv, known_only=False)
    except flags.IllegalFlagValueError as e:
        raise ValueError(_flag_error(str(e), spec)) from None
    except flags.Error as e:   # an unknown flag (not --config.*), a flag without its value
        raise ValueError(f"{e}; config overrides are written --config.KEY=VALUE") from None
    except (AttributeError, KeyError) as e:   # an override of a field the config lacks
        field = _missing_field(spec, overrides)
        raise ValueError(f"config {spec} has no field {field!r}" if field else
                         f"config override failed: {e}") from None
    if len(rest) > 1:
        raise ValueError(f"unexpected argument {rest[1]!r}: config overrides are written "
                         f"--config.KEY=VALUE")
    return holder.value


def _flag_error(text: str, spec: str) -> str:
    """absl's message for a bad value, as one line: for an error raised by the file's
    ``get_config`` (a traceback under "Error whilst parsing config file"), its last line."""
    if "Error whilst parsing config file" in text:
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
        return f"config {spec}: {re.sub(r'^[A-Za-z_.]*Error: ', '', last)}"
    return " ".join(text.split())


def _missing_field(spec: str, overrides: Sequence[str]) -> str | None:
    """The first override naming a field the config (loaded without overrides) lacks."""
    config = load_config(spec)
    for arg in overrides:
        m = _OVERRIDE.match(arg)
        if not m:
            continue
        node = config
        for part in m.group(1).split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                return m.group(1)
            node = node[part]
    return None
