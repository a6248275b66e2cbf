"""Fault cases for FCPE weights given to ``svcjax f0 --method fcpe --weights FILE``: each drives
the real command in a subprocess on a voice, with an earlier result already in the output
directory that must survive. One case runs by default, the rest are ``slow`` (~5 s each)."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.faults import harness

FIX = Path(__file__).resolve().parents[1] / "fixtures"
AREA = "f0 (fcpe)"
VOICE = FIX / "voices" / "kal_16k.wav"
SOVITS_PT = FIX / "fcpe" / "fcpe_sovits.pt"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _make(case: str, tmp: Path) -> tuple[Path, str]:
    """The bad weights file of ``case`` and a phrase the message must contain."""
    if case == "missing":
        return tmp / "nowhere" / "fcpe.pt", "not found"
    if case == "not an FCPE checkpoint":
        from svcjax.interop import torch_save
        p = tmp / "crepe.pt"
        torch_save.save({"conv1.weight": np.zeros((4, 1, 3), np.float32)}, str(p))
        return p, "is not an FCPE checkpoint"
    if case == "truncated":
        p = tmp / "fcpe.pt"
        data = SOVITS_PT.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return p, "cannot read FCPE weights"
    if case == "hostile pickle":
        p = tmp / "fcpe.pt"
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("fcpe/data.pkl", pickle.dumps(
                {"model": {}, "config": _Evil(tmp / "ran")}, protocol=2))
            zf.writestr("fcpe/version", "3\n")
        return p, "refuses to load global posix.system"
    raise ValueError(case)


CASES = ["not an FCPE checkpoint", "missing", "truncated", "hostile pickle"]


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if i == 0 else pytest.mark.slow)
                                  for i, c in enumerate(CASES)])
def test_bad_fcpe_weights(tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "kal_16k.f0.npy"
    np.save(earlier, np.ones((2, 3), np.float32))
    before = harness.snapshot(out)
    weights, needle = _make(case, tmp_path)
    res = harness.run(["f0", str(VOICE), "--out", str(out), "--method", "fcpe",
                       "--weights", str(weights)], timeout=300)
    harness.assert_clear_failure(res, needle)
    assert not harness.changed(before, harness.snapshot(out))
    assert not harness.leftovers(out) and not (tmp_path / "ran").exists()
    harness.record(AREA, f"{case} weights file", "svcjax f0 --method fcpe --weights FILE",
                   "refused" if case == "hostile pickle" else "handled", res.last_line)
