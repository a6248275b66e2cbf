"""Faults: DPHuBERT / HuBERT-large encoder files the real ``svcjax import-encoder`` must refuse.

Each case writes a file users could plausibly hold (a pruned WavLM saved by DPHuBERT's code, a
DPHuBERT checkpoint from before pruning, one with a tensor missing, HuBERT-large asked for
ContentVec units) and checks: one sentence naming the file and the problem, non-zero status,
no output directory and nothing left behind.
"""

from __future__ import annotations

import os

import pytest

from svcjax.interop import torch_pickle, torch_save
from tests.faults import harness

AREA = "content encoder files"
FIX = harness.ROOT / "tests" / "fixtures"
DPHUBERT = str(FIX / "dphubert" / "dphubert_tiny.pth")
CNHUBERT = str(FIX / "hubert_large" / "cnhubert_tiny.pt")


def _dphubert_variant(path, config=None, drop=()):
    obj = torch_pickle.load(DPHUBERT)
    sd = {k: v for k, v in obj["state_dict"].items() if k not in drop}
    torch_save.save({"state_dict": sd, "config": {**obj["config"], **(config or {})}}, path)
    return str(path)


CASES = {
    "pruned WavLM (DPWavLM)": (
        dict(config={"encoder_remaining_heads": [[0, 1]] * 6}), "dphubert",
        "is a pruned WavLM (DPWavLM", "refused"),
    "DPHuBERT before pruning": (
        dict(config={"encoder_prune_feed_forward_intermediate": True}), "dphubert",
        "still has pruning switched on", "refused"),
    "DPHuBERT with a tensor missing": (
        dict(drop=("encoder.transformer.layers.1.attention.k_proj.weight",)), None,
        "missing (1): encoder/transformer/layers_1/attention/k_proj/kernel", "handled"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dphubert_file(tmp_path, case):
    variant, kind, needle, outcome = CASES[case]
    path = _dphubert_variant(tmp_path / "DPHuBERT-sp0.75.pth", **variant)
    out = tmp_path / "out"
    argv = ["import-encoder", path, str(out)] + (["--kind", kind] if kind else [])
    res = harness.run(argv, cwd=tmp_path)
    harness.assert_clear_failure(res, "DPHuBERT-sp0.75.pth", needle)
    assert not out.exists() and not harness.leftovers(tmp_path)
    harness.record(AREA, case, "svcjax import-encoder", outcome, res.last_line)


def test_hubert_large_for_contentvec_units(tmp_path):
    out = tmp_path / "out"
    res = harness.run(["import-encoder", CNHUBERT, str(out), "--kind", "vec768l12"], cwd=tmp_path)
    harness.assert_clear_failure(res, "cnhubert_tiny.pt", "pre-LN layers",
                                 "vec768l12 expects the HuBERT-base layout")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert not out.exists() and not os.listdir(tmp_path)
    harness.record(AREA, "HuBERT-large file for vec768l12 units", "svcjax import-encoder",
                   "refused", res.last_line)
