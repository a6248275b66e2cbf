"""Fault-injection harness: drive the real commands on generated faults, record each case.

Every test in ``tests/faults`` runs a real command (``svcjax ...``, ``train.py``) as a
subprocess on a generated fault and records one row with :func:`record`: the case, the command
and the outcome. At the end of the run ``conftest.py`` prints the table and the counts.

Outcomes:
- ``handled``: one clear sentence and a non-zero status (or a warning and the good work done),
  other inputs still processed, nothing partial left, nothing already written changed;
- ``refused``: the command declines the input by design, and says so (documented in README's
  "When something goes wrong");
- ``data lost``: something already written was changed or a partial file was left. The goal
  is zero; a test that observes it fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = ("handled", "refused", "data lost")


@dataclasses.dataclass
class Row:
    area: str
    case: str
    command: str
    outcome: str
    detail: str = ""


ROWS: list[Row] = []


def record(area: str, case: str, command: str, outcome: str, detail: str = "") -> None:
    """Add one row to the printed table (call it once the case's checks have passed)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    ROWS.append(Row(area, case, command, outcome, " ".join(detail.split())[:100]))


@dataclasses.dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def run(args: list[str], *, cwd: str | os.PathLike | None = None, timeout: float = 600,
        env: dict | None = None, script: str | None = None) -> Result:
    """Run ``python -m svcjax ARGS`` (or ``python SCRIPT ARGS``) in a subprocess.

    The child gets the repository on ``PYTHONPATH``, CPU JAX and a single fake device unless
    ``env`` says otherwise.
    """
    full_env = dict(os.environ)
    full_env.pop("SVCJAX_DEBUG", None)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    full_env.setdefault("JAX_PLATFORMS", "cpu")
    full_env["XLA_FLAGS"] = ""
    full_env.update(env or {})
    cmd = [sys.executable] + ([str(ROOT / script)] if script else ["-m", "svcjax"]) + list(args)
    p = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr)


def assert_clear_failure(res: Result, *needles: str) -> None:
    """Non-zero status, no traceback, and a last line that names the problem."""
    assert res.rc != 0, f"expected a failure, got rc=0\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    line = res.last_line
    assert line, "no message on stderr"
    for n in needles:
        assert n.lower() in (res.stderr + res.stdout).lower(), (n, res.stderr)


def snapshot(*dirs: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under ``dirs`` (what must not change)."""
    out = {}
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files of ``before`` that are gone or different in ``after``."""
    return [p for p, h in before.items() if after.get(p) != h]


def leftovers(d: str | os.PathLike) -> list[str]:
    """Temporary or partial files left in ``d`` (names with .tmp / .partial)."""
    return [str(p) for p in Path(d).rglob("*") if p.is_file()
            and (p.name.endswith(".tmp") or ".tmp" in p.suffixes or p.name.endswith(".partial"))]


def table() -> str:
    """The rows as a fixed-width table, then the counts."""
    if not ROWS:
        return ""
    heads = ("area", "case", "command", "outcome")
    cols = [[getattr(r, h) for r in ROWS] for h in heads]
    widths = [min(60, max(len(h), *(len(c) for c in col))) for h, col in zip(heads, cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*heads), fmt.format(*("-" * w for w in widths))]
    for r in ROWS:
        lines.append(fmt.format(*(str(getattr(r, h))[:w] for h, w in zip(heads, widths))))
    counts = {o: sum(r.outcome == o for r in ROWS) for o in OUTCOMES}
    lines.append(f"fault cases: {len(ROWS)} tried, {counts['handled']} handled, "
                 f"{counts['refused']} refused, {counts['data lost']} data lost")
    return "\n".join(lines)
