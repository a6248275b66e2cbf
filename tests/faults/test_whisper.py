"""Fault injection, area "whisper encoder": damaged or mismatched OpenAI Whisper checkpoints
given to ``svcjax import-encoder``.

Each case runs the real command and checks: a non-zero status, one line on stderr naming the
problem (no traceback), no output written, and, where an earlier import already wrote the
output directory (``--overwrite``), that directory unchanged. The damaged files are made in the
test from the committed tiny checkpoint (tests/fixtures/whisper/whisper_tiny.pt).
"""

from __future__ import annotations

import os

import pytest

from svcjax.interop import torch_pickle, torch_save
from svcjax.interop.content_encoder import import_encoder_dir
from tests.faults import harness

AREA = "whisper encoder"
CKPT = str(harness.ROOT / "tests" / "fixtures" / "whisper" / "whisper_tiny.pt")


def _damaged(path, case: str) -> str:
    obj = torch_pickle.load(CKPT)
    sd = obj["model_state_dict"]
    if case == "short context":
        obj["dims"]["n_audio_ctx"] = 448
        sd["encoder.positional_embedding"] = sd["encoder.positional_embedding"][:448]
    elif case == "missing tensor":
        del sd["encoder.blocks.1.mlp.2.bias"]
    elif case == "wrong heads":
        obj["dims"]["n_audio_head"] = 5
    elif case == "wrong shape":
        sd["encoder.conv2.weight"] = sd["encoder.conv2.weight"][:, :, :2]
    else:
        raise ValueError(case)
    return torch_save.save(obj, str(path))


def _one_line(res) -> str:
    harness.assert_clear_failure(res)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return res.last_line


CASES = [
    ("short context", "n_audio_ctx=448"),
    ("missing tensor", "missing (1): blocks_1/mlp_2/bias"),
    ("wrong heads", "not divisible by 5 attention heads"),
    ("wrong shape", "wrong shape (1): encoder.conv2.weight"),
]


@pytest.mark.parametrize("case, needle", [
    pytest.param(*c, marks=() if i == 0 else pytest.mark.slow, id=c[0])
    for i, c in enumerate(CASES)])
def test_damaged_checkpoint_keeps_the_existing_import(tmp_path, case, needle):
    out = tmp_path / "whisper"
    import_encoder_dir(CKPT, out, "whisper-ppg")  # the earlier import (in-process: faster)
    before = harness.snapshot(out)
    bad = _damaged(tmp_path / "bad.pt", case)
    res = harness.run(["import-encoder", bad, "--kind", "whisper-ppg", str(out), "--overwrite"])
    line = _one_line(res)
    assert needle in line and "bad.pt" in line, line
    assert not harness.changed(before, harness.snapshot(out))
    assert not harness.leftovers(tmp_path)
    harness.record(AREA, f"Whisper .pt with a {case}, --overwrite of an earlier import",
                   "svcjax import-encoder --kind whisper-ppg --overwrite", "handled", line)


@pytest.mark.slow
def test_whisper_file_for_another_kind_and_another_file_for_whisper(tmp_path):
    other = str(harness.ROOT / "tests" / "fixtures" / "content_encoder" / "contentvec_tiny.pt")
    for path, kind, needle in ((CKPT, "vec768l12", "gives whisper-ppg, whisper-ppg-large units"),
                               (other, "whisper-ppg", "not whisper-ppg")):
        out = tmp_path / kind
        res = harness.run(["import-encoder", path, "--kind", kind, str(out)])
        line = _one_line(res)
        assert needle in line, line
        assert not out.exists() and not harness.leftovers(tmp_path)
        harness.record(AREA, f"{os.path.basename(path)} imported as {kind}",
                       f"svcjax import-encoder --kind {kind}", "handled", line)
