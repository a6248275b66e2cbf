"""bench/learning_curve.py's measurement helpers: what dio hears in a converted clip (the
86.13 Hz frame-rate comb against a real pitch), the always-voiced comb baseline, config
overrides, and the --report merge of a GAN and a diffusion run."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SR, HOP = 44100, 512
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_curve",
                                                  ROOT / "bench" / "learning_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _clip(f0_hz, seconds=1.0, kind="sine"):
    t = np.arange(int(SR * seconds)) / SR
    if kind == "sine":
        return (0.5 * np.sin(2 * np.pi * f0_hz * t)).astype(np.float32)
    x = np.zeros(t.shape, np.float32)  # a click every hop: the frame-rate comb
    x[::HOP] = 0.9
    return x


def test_output_f0_tells_the_comb_from_a_pitch(lc):
    n = int(SR * 1.0) // HOP
    sine = lc.output_f0(_clip(220.0), n, SR, HOP)
    assert sine["out_voiced"] > 0.8
    assert abs(1200 * np.log2(sine["out_f0_median"] / 220.0)) < 20
    assert sine["comb_share"] < 0.05
    comb = lc.output_f0(_clip(None, kind="comb"), n, SR, HOP)
    assert comb["out_voiced"] > 0.8
    assert abs(comb["out_f0_median"] - SR / HOP) < 2.0
    assert comb["comb_share"] > 0.9


def test_comb_baseline_is_the_constant_always_voiced_score(lc):
    # two clips: one voiced at 172.27 Hz on half its frames (one octave above sr/hop)
    n = 40
    f0 = np.zeros((2, 50), np.float32)
    uv = np.zeros((2, 50), np.float32)
    f0[0, :n] = 2 * SR / HOP
    uv[0, :n // 2] = 1
    f0[1, :n] = SR / HOP
    uv[1, :n] = 1
    b = lc.comb_baseline({"f0": f0, "uv": uv, "length": np.array([n, n])}, SR, HOP)
    assert b["f0_rmse_cents"] == pytest.approx((1200.0 + 0.0) / 2, abs=1e-6)
    assert b["vuv_error"] == pytest.approx((0.5 + 0.0) / 2)


def test_apply_overrides(lc):
    import ml_collections

    cfg = ml_collections.ConfigDict({"train": {"learning_rate": 1e-4}, "data": {"crop": 64}})
    lc.apply_overrides(cfg, ["train.learning_rate=4e-4", "data.crop = 128"])
    assert cfg.train.learning_rate == 4e-4 and cfg.data.crop == 128
    with pytest.raises(SystemExit, match="no field"):
        lc.apply_overrides(cfg, ["train.lr=1"])
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        lc.apply_overrides(cfg, ["train.learning_rate"])


def test_report_merges_a_gan_and_a_diffusion_run(lc, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pt = dict(mel_l1=1.5, f0_rmse_cents=800.0, vuv_error=0.5, gpe=0.9, voiced_frames=10,
              out_rms=0.1)
    gan = {"steps": 2, "gan": {"curves": {"svcjax": [dict(pt, step=0)],
                                          "reference": [dict(pt, step=0, mel_l1=1.6)]},
                               "losses": {"svcjax": [{"loss/g/mel": 50.0}],
                                          "reference": [{"loss/g/mel": 51.0}]}}}
    diff = {"steps": 2, "diffusion": {
        "curves": {s: [{"step": 0, "val_eps_mse": 1.0}] for s in ("svcjax", "reference")},
        "losses": {s: [{"loss": 1.0}] for s in ("svcjax", "reference")}}}
    (tmp_path / "g").mkdir()
    (tmp_path / "d").mkdir()
    (tmp_path / "g" / "learning_curve.json").write_text(json.dumps(gan))
    (tmp_path / "d" / "learning_curve.json").write_text(json.dumps(diff))
    out = tmp_path / "merged"
    assert lc.report([tmp_path / "g" / "learning_curve.json",
                      tmp_path / "d" / "learning_curve.json"], out) == 0
    merged = json.loads((out / "learning_curve.json").read_text())
    assert set(merged) >= {"gan", "diffusion"} and (out / "learning_curve.png").stat().st_size
    table = capsys.readouterr().out
    assert "| 0 | 1.500 | 1.600 | 800 | 800 | 50% | 50% | - | - |" in table
    assert "| 0 | 1.0000 | 1.0000 |" in table
    with pytest.raises(SystemExit, match="more than one file holds a gan curve"):
        lc.report([tmp_path / "g" / "learning_curve.json"] * 2, tmp_path / "again")
