"""Ablation sweeps: runs declared as config overrides, launched in turn, metrics in one table.

A sweep file (``configs/sweeps/*.py``) defines ``get_sweep(arg=None)`` returning::

    {"base": "configs/diffusion_44k.py:variant=test",     # the config every run starts from
     "common": {"train.num_steps": 20000},                # overrides for every run (optional)
     "runs": [{"name": "k100", "overrides": {"model.k_step_max": 100}}, ...],
     "program": ["{python}", "train.py"]}                 # optional; {python} = this Python

Each run trains in ``WORKDIR/<name>`` with
``python train.py --config BASE --workdir WORKDIR/<name> --config.a.b=v ...``.

``svcjax sweep FILE --workdir DIR`` runs them one after another (a finished run is resumed,
which returns at once); ``--print`` only prints the commands (one per line, for a cluster
scheduler); ``--gather`` only collects. Gathering reads, per run:

* ``WORKDIR/<name>/metrics.jsonl`` (the trainer's): the last training losses and every
  ``val/*`` scalar, with the step they were logged at;
* ``WORKDIR/<name>/eval/metrics.json``: the contract for evaluation results (written by
  ``eval.py``): one JSON object of ``{"metric name": number}``; every key becomes a column
  ``eval/<name>``;

and writes ``WORKDIR/sweep.csv`` (and prints the table).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import shlex
import subprocess
import sys
from typing import Any, Mapping, Sequence

from svcjax.files import atomic_write

__all__ = ["load_sweep", "commands", "run_sweep", "gather", "format_table", "EVAL_METRICS"]

EVAL_METRICS = os.path.join("eval", "metrics.json")
_TRAIN_KEYS = ("loss/g/total", "loss/d/total", "loss/g/mel", "loss/g/kl", "loss/total")


def load_sweep(path: str, arg: str | None = None) -> dict:
    """Import a sweep file and return its validated ``get_sweep(arg)``."""
    path = os.fspath(path)
    if ":" in path and not os.path.exists(path):
        path, arg = path.split(":", 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {path} does not exist")
    spec = importlib.util.spec_from_file_location("_svcjax_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    sys.path.insert(0, root)  # sweep files may import configs.*
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(root)
    if not hasattr(mod, "get_sweep"):
        raise ValueError(f"{path} defines no get_sweep(arg=None)")
    sweep = dict(mod.get_sweep(arg))
    if not sweep.get("base"):
        raise ValueError(f"{path}: get_sweep() must give a 'base' config")
    runs = list(sweep.get("runs") or [])
    if not runs:
        raise ValueError(f"{path}: get_sweep() gives no runs")
    names = [r.get("name") for r in runs]
    bad = [n for n in names if not n or os.sep in str(n) or n.startswith(".")]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique plain folder names, got {names}")
    sweep["runs"] = [{"name": str(r["name"]), "overrides": dict(r.get("overrides") or {})}
                     for r in runs]
    sweep["common"] = dict(sweep.get("common") or {})
    sweep.setdefault("program", ["{python}", "train.py"])
    return sweep


def _flag_value(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (list, tuple, dict)):
        return repr(v)
    return str(v)


def commands(sweep: Mapping, workdir: str, python: str | None = None) -> list[tuple[str, list[str]]]:
    """``[(run name, argv)]`` for every run of ``sweep``."""
    python = python or sys.executable
    out = []
    for run in sweep["runs"]:
        argv = [a.format(python=python) for a in sweep["program"]]
        argv += [f"--config={sweep['base']}", f"--workdir={os.path.join(workdir, run['name'])}"]
        for k, v in {**sweep["common"], **run["overrides"]}.items():
            argv.append(f"--config.{k}={_flag_value(v)}")
        out.append((run["name"], argv))
    return out


def run_sweep(sweep: Mapping, workdir: str, *, cwd: str | None = None, python: str | None = None,
              env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Run every run in turn; returns each run's exit status (a failed run does not stop the
    others). Output goes to ``WORKDIR/<name>/train.log``."""
    status = {}
    for name, argv in commands(sweep, workdir, python):
        os.makedirs(os.path.join(workdir, name), exist_ok=True)
        log = os.path.join(workdir, name, "train.log")
        print(f"svcjax sweep: {name}: {shlex.join(argv)}", file=sys.stderr, flush=True)
        with open(log, "a") as f:
            proc = subprocess.run(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  env=dict(env) if env is not None else None)
        status[name] = proc.returncode
        if proc.returncode:
            print(f"svcjax sweep: {name} failed (exit {proc.returncode}); see {log}",
                  file=sys.stderr, flush=True)
    return status


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a kill
    return out


def gather(sweep: Mapping, workdir: str, status: Mapping[str, int] | None = None) -> list[dict]:
    """One row per run: overrides, status, last step, last training losses, last ``val/*``
    scalars and the ``eval/metrics.json`` numbers."""
    rows = []
    for run in sweep["runs"]:
        d = os.path.join(workdir, run["name"])
        row: dict[str, Any] = {"run": run["name"]}
        for k, v in run["overrides"].items():
            row[k] = _flag_value(v)
        recs = _read_jsonl(os.path.join(d, "metrics.jsonl"))
        train = [r for r in recs if any(k in r for k in _TRAIN_KEYS)]
        if status is not None and run["name"] in status:
            row["status"] = "ok" if status[run["name"]] == 0 else f"exit {status[run['name']]}"
        else:
            row["status"] = "ok" if train else "no metrics"
        row["step"] = train[-1]["step"] if train else ""
        if train:
            for k in _TRAIN_KEYS:
                if k in train[-1]:
                    row[k] = train[-1][k]
        for r in recs:
            for k, v in r.items():
                if k.startswith("val/"):
                    row[k] = v
        path = os.path.join(d, EVAL_METRICS)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    ev = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{path} is not a JSON object of metrics ({e})") from None
            if not isinstance(ev, Mapping):
                raise ValueError(f"{path} must hold one JSON object {{metric: number}}")
            for k, v in ev.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    row[f"eval/{k}"] = v
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def format_table(rows: Sequence[Mapping]) -> str:
    cols = _columns(rows)
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping], path: str) -> str:
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    with atomic_write(path, "w", newline="") as f:
        f.write(buf.getvalue())
    return path
