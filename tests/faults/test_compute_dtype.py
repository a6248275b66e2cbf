"""Fault injection for ``svcjax convert --compute-dtype``: a dtype it does not know, and
bfloat16 where the compiled conversion program does not run (the enhancer). Both must be
refused before any work with one clear sentence, leaving no output behind."""

from __future__ import annotations

import pytest
import soundfile as sf

from tests import tiny_models
from tests.faults import harness
from tests.faults.test_convert_faults import VOICES, _convert

AREA = "convert"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def song(tmp_path):
    y, sr = sf.read(VOICES / "slt_16k.wav", dtype="float32")
    src = tmp_path / "song.wav"
    sf.write(src, y[: int(0.5 * sr)], sr)
    return src


def test_unknown_compute_dtype_is_refused(tmp_path, models, song):
    out = tmp_path / "out"
    out.mkdir()
    res = _convert([song], out / "o.wav", models, tmp_path / "cache", "--compute-dtype",
                   "float16")
    harness.assert_clear_failure(res, "--compute-dtype", "invalid choice")
    assert list(out.iterdir()) == [] and harness.leftovers(tmp_path) == []
    harness.record(AREA, "--compute-dtype float16 (unknown)", "svcjax convert ... "
                   "--compute-dtype float16", "handled", res.last_line)


def test_bf16_with_the_enhancer_is_refused_before_any_work(tmp_path, models, song):
    out = tmp_path / "out"
    out.mkdir()
    res = _convert([song], out / "o.wav", models, tmp_path / "cache", "--compute-dtype",
                   "bfloat16", "--enhance", "--vocoder", str(tiny_models.VOCODER))
    harness.assert_clear_failure(res, "compute_dtype bfloat16 runs in the compiled")
    assert list(out.iterdir()) == [] and harness.leftovers(tmp_path) == []
    harness.record(AREA, "--compute-dtype bfloat16 with --enhance", "svcjax convert ... "
                   "--compute-dtype bfloat16 -eh --vocoder V", "refused", res.last_line)
