"""data/demo_corpus.py: real Debian voices, deterministic, laid out per speaker."""

import importlib.util
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = all(shutil.which(t) for t in ("flite", "text2wave", "sox"))


def _module():
    spec = importlib.util.spec_from_file_location(
        "demo_corpus", os.path.join(ROOT, "data", "demo_corpus.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not TOOLS, reason="needs flite, festival and sox (make demo-tools)")
def test_demo_corpus_is_deterministic_multi_speaker(tmp_path):
    demo = _module()
    a = demo.build_demo_corpus(str(tmp_path / "a"), ["kal", "slt"], per_speaker=4, seed=0)
    b = demo.build_demo_corpus(str(tmp_path / "b"), ["kal", "slt"], per_speaker=4, seed=0)
    assert [os.path.relpath(p, tmp_path / "a") for p in a] == \
        [os.path.relpath(p, tmp_path / "b") for p in b]
    assert demo.corpus_digest(a) == demo.corpus_digest(b)
    assert sorted(os.listdir(tmp_path / "a")) == ["kal", "slt"]
    rates = set()
    for path in a:
        x, sr = sf.read(path)
        rates.add(sr)
        assert 0.5 < len(x) / sr < 10 and np.abs(x).max() > 0.05
    assert len(rates) > 1  # mixed rates on purpose
    # a re-run over an existing corpus keeps the files
    before = os.path.getmtime(a[0])
    demo.build_demo_corpus(str(tmp_path / "a"), ["kal", "slt"], per_speaker=4, seed=0)
    assert os.path.getmtime(a[0]) == before


def test_demo_corpus_errors_are_clear(monkeypatch, tmp_path):
    demo = _module()
    with pytest.raises(ValueError, match="unknown demo speaker"):
        demo.build_demo_corpus(str(tmp_path), ["bob"])
    monkeypatch.setattr(demo.shutil, "which", lambda tool: None)
    with pytest.raises(RuntimeError, match="apt-get install -y flite"):
        demo.build_demo_corpus(str(tmp_path), ["awb"])
