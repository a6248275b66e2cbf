"""Fault injection for RMVPE's weights file through every front door that takes it.

``svcjax f0 --method rmvpe``, ``svcjax convert --f0-method rmvpe``, ``svcjax build-corpus
--f0 rmvpe`` and ``eval.py`` with ``f0_method=rmvpe``, each given no weights, a hostile, a
truncated or a wrong-kind ``rmvpe.pt``: one clear sentence naming the problem, a non-zero
status, nothing written and nothing already there changed. The weights are checked before any
model loads or output is created, so every case fails fast (no compilation).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import tiny_models
from tests.interop import malicious
from tests.faults import harness

AREA = "rmvpe weights"
ROOT = Path(__file__).resolve().parents[2]
VOICES = ROOT / "tests" / "fixtures" / "voices"
GOOD = ROOT / "tests" / "fixtures" / "rmvpe" / "rmvpe.pt"
CLIP = VOICES / "slt_16k.wav"
NO_ENV = {"SVCJAX_RMVPE": ""}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))


def _truncated(path: Path) -> Path:
    data = GOOD.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_f0_without_weights_or_env(tmp_path):
    out = tmp_path / "f0"
    res = harness.run(["f0", str(CLIP), "--method", "rmvpe", "--out", str(out)], env=NO_ENV)
    harness.assert_clear_failure(res, "needs RMVPE's weights file", "SVCJAX_RMVPE")
    assert not out.exists()
    harness.record(AREA, "no weights given, SVCJAX_RMVPE unset",
                   "svcjax f0 --method rmvpe", "handled", res.last_line)


def test_f0_hostile_weights_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = Path(malicious.write_malicious(tmp_path / "rmvpe.pt", "os.system/REDUCE", "zip",
                                          marker))
    out = tmp_path / "f0"
    res = harness.run(["f0", str(CLIP), "--method", "rmvpe", "--out", str(out)],
                      env={"SVCJAX_RMVPE": str(evil)})
    harness.assert_clear_failure(res, "cannot read RMVPE weights", "os.system")
    assert not marker.exists() and not out.exists()
    harness.record(AREA, "rmvpe.pt with an os.system payload (via SVCJAX_RMVPE)",
                   "svcjax f0 --method rmvpe", "refused", res.last_line)


def test_convert_truncated_weights_writes_nothing(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "slt_16k.wav"
    shutil.copy(CLIP, keep)
    before = harness.snapshot(out)
    bad = _truncated(tmp_path / "rmvpe.pt")
    other = tmp_path / "kal_16k.wav"
    shutil.copy(VOICES / "kal_16k.wav", other)
    res = harness.run(["convert", str(other), "-o", str(out), "-m", str(models / "sovits"),
                       "-e", str(models / "encoder"), "-s", "alto", "--no-progress",
                       "--f0-method", "rmvpe", "--f0-weights", str(bad)], env=NO_ENV)
    harness.assert_clear_failure(res, "cannot read RMVPE weights", str(bad))
    assert harness.snapshot(out) == before and not harness.leftovers(out)
    harness.record(AREA, "truncated rmvpe.pt", "svcjax convert --f0-method rmvpe --f0-weights",
                   "handled", res.last_line)


def test_build_corpus_wrong_kind_of_weights(tmp_path):
    root = tmp_path / "root"
    (root / "alto").mkdir(parents=True)
    shutil.copy(CLIP, root / "alto" / "a.wav")
    wrong = ROOT / "tests" / "fixtures" / "vocoder" / "model"  # an NSF-HiFiGAN generator
    out = tmp_path / "data"
    res = harness.run(["build-corpus", str(root), "--out", str(out), "--features", "f0",
                       "--f0", "rmvpe", "--f0-weights", str(wrong)], env=NO_ENV)
    harness.assert_clear_failure(res, "is not RMVPE's rmvpe.pt")
    assert not out.exists()
    harness.record(AREA, "another network's checkpoint as rmvpe.pt",
                   "svcjax build-corpus --f0 rmvpe --f0-weights", "handled", res.last_line)


def test_eval_missing_weights_file(tmp_path):
    work = tmp_path / "work"
    res = harness.run(["--config", f"{ROOT / 'configs' / 'eval.py'}:variant=test",
                       "--workdir", str(work), "--config.f0_method=rmvpe",
                       f"--config.f0_weights={tmp_path / 'missing.pt'}"],
                      script="eval.py", env=NO_ENV)
    harness.assert_clear_failure(res, "missing.pt", "not found")
    assert not work.exists()
    harness.record(AREA, "rmvpe.pt that does not exist", "eval.py --config.f0_method=rmvpe",
                   "handled", res.last_line)
