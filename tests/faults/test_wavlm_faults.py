"""Fault injection, area "wavlm encoder": WavLM checkpoints that cannot make the network they
describe, and WavLM / HuBERT files given for the other family's kind, through ``svcjax
import-encoder``.

Two cases run by default, the others are ``slow`` (about 5 s each; the same messages are
checked in-process by tests/models/test_wavlm.py). Each case runs the real command and
checks: a non-zero status, one line on stderr naming the problem (no traceback), no output
written, and an existing output directory replaced only by a good import (``--overwrite``
with a bad file leaves it as it was).
"""

from __future__ import annotations

import os

import pytest

from svcjax.interop import torch_pickle, torch_save
from tests.faults import harness

AREA = "wavlm encoder"
FIX = harness.ROOT / "tests" / "fixtures"
WAVLM = str(FIX / "wavlm" / "wavlm_base_tiny.pt")
CONTENTVEC = str(FIX / "content_encoder" / "contentvec_tiny.pt")


def _check(res: harness.Result, *needles: str) -> str:
    harness.assert_clear_failure(res, *needles)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return res.last_line


def _edited(tmp_path, name, cfg=None, drop=()):
    obj = torch_pickle.load(WAVLM)
    obj["cfg"].update(cfg or {})
    for key in drop:
        del obj["model"][key]
    path = str(tmp_path / name)
    torch_save.save(obj, path)
    return path


@pytest.mark.parametrize("case, edit, needle", [
    pytest.param("cfg says 3 layers, file holds 2", dict(cfg={"encoder_layers": 3}),
                 "its tensors do not fit the WavLM its cfg describes (3 layers of width 64",
                 id="cfg-layers"),
    pytest.param("gate constant of a layer missing",
                 dict(drop=["encoder.layers.1.self_attn.grep_a"]),
                 "missing (1): encoder/layers_1/self_attn/grep_a", id="missing-tensor",
                 marks=pytest.mark.slow),
    pytest.param("unknown extractor_mode", dict(cfg={"extractor_mode": "conformer"}),
                 "extractor_mode 'conformer'; expected 'default' or 'layer_norm'",
                 id="extractor-mode", marks=pytest.mark.slow),
])
def test_wavlm_file_that_does_not_make_its_network(tmp_path, case, edit, needle):
    """A bad file with --overwrite over an existing import: refused, the old one kept."""
    path = _edited(tmp_path, "WavLM-Base+.pt", **edit)
    out = tmp_path / "enc"
    out.mkdir()
    (out / "config.json").write_text('{"kind": "wavlmbase+"}')
    before = harness.snapshot(out)
    res = harness.run(["import-encoder", path, str(out), "--kind", "wavlmbase+", "--overwrite"],
                      cwd=tmp_path)
    line = _check(res, needle)
    assert not harness.changed(before, harness.snapshot(out))
    assert sorted(os.listdir(out)) == ["config.json"] and not harness.leftovers(tmp_path)
    harness.record(AREA, case, "svcjax import-encoder --kind wavlmbase+ --overwrite",
                   "handled", line)


@pytest.mark.parametrize("case, src, kind, needle", [
    pytest.param("WavLM file for a HuBERT kind", WAVLM, "vec768l12",
                 "is a wavlm-family checkpoint: it gives wavlmbase+ units, not vec768l12",
                 id="wavlm-as-vec768l12"),
    pytest.param("ContentVec file for wavlmbase+", CONTENTVEC, "wavlmbase+",
                 "not wavlmbase+ (which needs Microsoft's WavLM-Base+.pt)",
                 id="contentvec-as-wavlmbase+", marks=pytest.mark.slow),
])
def test_file_of_the_other_family(tmp_path, case, src, kind, needle):
    out = tmp_path / "enc"
    res = harness.run(["import-encoder", src, str(out), "--kind", kind], cwd=tmp_path)
    line = _check(res, needle)
    assert not out.exists() and not harness.leftovers(tmp_path)
    harness.record(AREA, case, f"svcjax import-encoder --kind {kind}", "handled", line)
