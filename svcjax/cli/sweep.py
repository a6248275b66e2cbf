"""``svcjax sweep``: run (or print) a config sweep and gather its metrics
(:mod:`svcjax.eval.sweep`)."""

from __future__ import annotations

import os
import shlex
import sys

from svcjax.eval import sweep as sweep_lib


def add_parser(subparsers):
    p = subparsers.add_parser(
        "sweep", help="run (or print) a config sweep and gather its metrics",
        description=sweep_lib.__doc__.split("\n\n")[0] + " See configs/sweeps/.")
    p.add_argument("sweep", help="sweep file (configs/sweeps/NAME.py[:arg])")
    p.add_argument("--workdir", required=True, help="one subfolder per run, sweep.csv here")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--print", action="store_true", help="print the commands, run nothing")
    mode.add_argument("--gather", action="store_true", help="only gather the runs' metrics")
    p.add_argument("--python", default=None, help="Python for the runs (default: this one)")
    p.add_argument("--cwd", default=None, help="folder the runs start in (default: here)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    sweep = sweep_lib.load_sweep(args.sweep)
    workdir = os.path.abspath(args.workdir)
    if args.print:
        for _, argv in sweep_lib.commands(sweep, workdir, args.python):
            print(shlex.join(argv))
        return 0
    status = None
    if not args.gather:
        os.makedirs(workdir, exist_ok=True)
        status = sweep_lib.run_sweep(sweep, workdir, cwd=args.cwd, python=args.python)
    rows = sweep_lib.gather(sweep, workdir, status)
    print(sweep_lib.format_table(rows))
    print(f"\n{sweep_lib.write_csv(rows, os.path.join(workdir, 'sweep.csv'))}", file=sys.stderr)
    return 0 if not status or not any(status.values()) else 1
