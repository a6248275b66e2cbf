"""The ``svcjax`` command: one entry point, subcommands registered by module.

Each subcommand lives beside the code it drives and exposes ``add_parser(subparsers)``
returning the parser, whose ``func`` default receives the parsed args. Modules are imported
only when their subcommand runs, so ``svcjax --help`` is fast and an optional dependency
missing for one command does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Each module defines add_parser(subparsers).
COMMANDS: dict[str, tuple[str, str]] = {
    "build-corpus": ("svcjax.corpus", "build the training corpus (TFDS ArrayRecord) from "
                                      "ROOT/<speaker>/*"),
    "convert": ("svcjax.pipeline", "convert audio files to a target speaker"),
    "eval": ("svcjax.evaluate", "evaluate a model on a set of clips (metrics, TensorBoard)"),
    "import-vocoder": ("svcjax.convert.nsf_hifigan",
                       "import the NSF-HiFiGAN vocoder ('model' + config.json)"),
    "import-diffusion": ("svcjax.convert.diffusion",
                         "import a So-VITS-SVC diffusion model_*.pt (+ config.yaml)"),
    "import-encoder": ("svcjax.convert.content_encoder",
                       "import a ContentVec / HuBERT / HuBERT-Soft checkpoint"),
    "f0": ("svcjax.audio.f0", "F0 and voicing of audio files (crepe, crepe-tiny, dio, harvest, pm)"),
    "import-sovits": ("svcjax.convert.sovits",
                      "convert a So-VITS-SVC 4.1 G_*.pth + config.json to a model directory"),
    "export-pth": ("svcjax.trainer", "write a training run's checkpoint as the reference's .pth"),
    "sweep": ("svcjax.sweep", "run (or print) a config sweep and gather its metrics"),
    "train-cluster": ("svcjax.kmeans", "per-speaker k-means cluster model of a corpus's units"),
    "train-index": ("svcjax.retrieval", "per-speaker feature-retrieval index of a corpus's units"),
    "import-index": ("svcjax.timbre", "reference kmeans_*.pt / feature_and_index.pkl to .npz"),
    "merge-models": ("svcjax.merge", "merge models: convex or linear mix of their weights"),
    "compress": ("svcjax.compress", "release copy of a G_*.pth: no optimizer state or enc_q"),
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, args = _build(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        # Users get one clear sentence, not a traceback (set SVCJAX_DEBUG=1 for one).
        import os
        if os.environ.get("SVCJAX_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"svcjax {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
