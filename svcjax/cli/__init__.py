"""The ``svcjax`` command: one entry point, one module per subcommand.

Each subcommand is a module of this package (``svcjax/cli/convert.py`` for ``svcjax
convert``, ...) holding only the command's glue: ``add_parser(subparsers)`` declares its
arguments and returns the parser, whose ``func`` default (the module's ``run(args)``) checks
them, refuses outputs that must not be written, and calls the library functions that do the
work (:mod:`svcjax.runtime.converter`, :mod:`svcjax.data.corpus`, ...). A module is imported
only when its subcommand runs, so ``svcjax --help`` is fast and an optional dependency
missing for one command does not break the others. Every failure ends in one line (``main``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys


# name -> (module, one-line help). Each module defines add_parser(subparsers).
COMMANDS: dict[str, tuple[str, str]] = {
    "build-corpus": ("svcjax.cli.build_corpus", "build the training corpus (TFDS ArrayRecord) "
                                                "from ROOT/<speaker>/*"),
    "convert": ("svcjax.cli.convert", "convert audio files to a target speaker"),
    "eval": ("svcjax.cli.evaluate", "evaluate a model on a set of clips (metrics, TensorBoard)"),
    "import-vocoder": ("svcjax.cli.import_vocoder",
                       "import the NSF-HiFiGAN vocoder ('model' + config.json)"),
    "import-diffusion": ("svcjax.cli.import_diffusion",
                         "import a So-VITS-SVC diffusion model_*.pt (+ config.yaml)"),
    "import-encoder": ("svcjax.cli.import_encoder",
                       "import a ContentVec / HuBERT / HuBERT-Soft checkpoint"),
    "f0": ("svcjax.cli.f0", "F0 and voicing of audio files (the trackers of --method)"),
    "import-sovits": ("svcjax.cli.import_sovits",
                      "convert a So-VITS-SVC 4.1 G_*.pth + config.json to a model directory"),
    "export-pth": ("svcjax.cli.export_pth",
                   "write a training run's checkpoint as the reference's .pth"),
    "sweep": ("svcjax.cli.sweep", "run (or print) a config sweep and gather its metrics"),
    "train-cluster": ("svcjax.cli.train_cluster",
                      "per-speaker k-means cluster model of a corpus's units"),
    "train-index": ("svcjax.cli.train_index",
                    "per-speaker feature-retrieval index of a corpus's units"),
    "import-index": ("svcjax.cli.import_index",
                     "reference kmeans_*.pt / feature_and_index.pkl to .npz"),
    "merge-models": ("svcjax.cli.merge_models",
                     "merge models: convex or linear mix of their weights"),
    "compress": ("svcjax.cli.compress", "release copy of a G_*.pth: no optimizer state or enc_q"),
}


def _build(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="svcjax", description="So-VITS-SVC 4.1 singing-voice conversion in JAX")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser, parser.parse_args(argv)


# Errors that are the user's to fix (bad input, missing file, ...): their message is the
# sentence. Anything else is reported as unexpected, still in one line.
_EXPECTED = (OSError, ValueError, KeyError, ImportError, FloatingPointError)


def error_message(e: BaseException) -> str:
    """One line for an exception: its own message for expected errors (``[Errno N]``
    prefixes dropped), its type and first line for anything else."""
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.strerror:
        text = e.strerror[0].lower() + e.strerror[1:]
        if e.filename is not None:
            text = f"{os.fsdecode(e.filename)!r}: {text}"
            if e.filename2 is not None:
                text += f" ({os.fsdecode(e.filename2)!r})"
    elif isinstance(e, MemoryError):
        text = "out of memory" + (f" ({e})" if str(e) else "")
    else:
        text = str(e)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    if len(lines) > 1 and isinstance(e, _EXPECTED):
        # a message with a list under its first line ("... does not match ...:" then one
        # line per tensor): the list joined onto the one line, so the user sees what is wrong
        text = text.rstrip(":") + ": " + "; ".join(ln.lstrip("-* ") for ln in lines[1:])
    if len(text) > 400:
        text = text[:397] + "..."
    if not isinstance(e, _EXPECTED + (MemoryError,)):
        text = (f"unexpected {type(e).__name__}: {text} (set SVCJAX_DEBUG=1 for the "
                f"traceback)")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure ends in one line ``svcjax COMMAND: error: ...`` on
    stderr and a non-zero status (130 when interrupted); ``SVCJAX_DEBUG=1`` re-raises
    instead, for the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, args = _build(argv)
    except ImportError as e:      # a command's module (or its dependency) cannot load
        if os.environ.get("SVCJAX_DEBUG"):
            raise
        print(f"svcjax {argv[0]}: error: {error_message(e)}", file=sys.stderr)
        return 1
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if os.environ.get("SVCJAX_DEBUG"):
            raise
        print(f"svcjax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (users get one clear sentence, not a traceback)
        if os.environ.get("SVCJAX_DEBUG"):
            raise
        print(f"svcjax {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
