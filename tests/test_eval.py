"""eval.py / svcjax.evaluate.run_evaluation: the metric table in one compiled pass per bucket.

Real shallow-diffusion model and NSF-HiFiGAN vocoder (the tiny random-weight fixtures in the
reference formats); the SoVITS generator, content encoder and F0 tracker are small stand-ins
with the same interfaces (`conv_parts`) unless the real ones are installed.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svcjax import evaluate, pipeline
from svcjax.audio import io

ROOT = Path(__file__).parent.parent
FIX = Path(__file__).parent / "fixtures"
SR = 44100


class SineSovits:
    """Stand-in generator: a harmonic tone at the given F0 (jit-free, deterministic)."""

    sampling_rate, hop = SR, 512

    def __init__(self):
        self.speakers = {"alto": 0, "tenor": 1, "bass": 2}
        self.n_speakers = 3
        self.config = type("C", (), {"data": {"unit_interpolate_mode": "nearest"},
                                     "model": {"speech_encoder": "vec768l12"}})()
        self.module = type("M", (), {"vol_embedding": False,
                                     "use_automatic_f0_prediction": False})()
        self.calls = 0

    def speaker_index(self, s):
        if isinstance(s, str):
            if s not in self.speakers:
                raise ValueError(f"speaker {s!r} not in model; known: alto, tenor, bass")
            return self.speakers[s]
        return int(s)

    def infer(self, units, f0, uv, speaker=0, vol=None, noise_scale=0.4, predict_f0=False,
              rng=None, lengths=None):
        self.calls += 1
        b, t = f0.shape
        f = np.repeat(f0, 512, axis=1)
        ph = np.cumsum(f / SR, axis=1)
        wav = 0.2 * np.sin(2 * np.pi * ph) * np.repeat(uv, 512, axis=1)
        for i, n in enumerate(lengths):
            wav[i, n * 512:] = 0
        return wav.astype(np.float32), f0


class ZeroEncoder:
    def frames(self, wav16, n_frames, lengths=None, mode="nearest"):
        return np.zeros((wav16.shape[0], max(n_frames), 768), np.float32)


def dio_f0(audio, sr, method, lengths):
    import pyworld

    out_f0 = np.zeros((audio.shape[0], audio.shape[1] // 512), np.float32)
    out_uv = np.zeros_like(out_f0)
    for i, n in enumerate(lengths):
        x = audio[i, :n].astype(np.float64)
        f0, t = pyworld.dio(x, sr, f0_floor=50, f0_ceil=1100, frame_period=512 / sr * 1000)
        f0 = pyworld.stonemask(x, f0, t, sr)[: n // 512]
        uv = f0 > 0
        if uv.any():
            idx = np.arange(len(f0))
            f0 = np.interp(idx, idx[uv], f0[uv])
        out_f0[i, :len(f0)] = f0
        out_uv[i, :len(f0)] = uv
    return out_f0, out_uv


@pytest.fixture(scope="module")
def converter():
    from svcjax import diffusion, vocoder

    diff = diffusion.load_diffusion(FIX / "diffusion" / "model_100.pt")
    voc = vocoder.load_vocoder(FIX / "vocoder" / "model")
    return pipeline.Converter(SineSovits(), ZeroEncoder(), diff, voc, f0_fn=dio_f0)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalset")
    for spk, name in (("alto", "slt_16k.wav"), ("tenor", "kal_16k.wav"), ("alto", "rms_16k.wav")):
        wav, sr = io.load_audio(FIX / "voices" / name)
        (d / spk).mkdir(exist_ok=True)
        io.save_audio(d / spk / name, wav[: int(1.2 * sr)], sr)
    return d


def _config(clips_dir, **over):
    sys.path.insert(0, str(ROOT))
    from configs import eval as eval_config

    c = eval_config.get_config("variant=test")
    c.data.path = str(clips_dir)
    c.speakers = ("tenor",)
    for k, v in over.items():
        setattr(c, k, v)
    return c


def test_metric_table_in_one_compiled_pass_per_bucket(tmp_path, converter, clips_dir):
    config = _config(clips_dir)
    clips = evaluate.load_eval_set(config.data)
    assert [c.speaker for c in clips] == ["alto", "alto"]   # max_clips=2, sorted by path
    metrics = evaluate.run_evaluation(config, tmp_path, converter=converter, clips=clips,
                                      log=lambda m: None)
    settings = ["sovits", "diff_k4_ddim_x2", "diff_k4_dpm-solver++_x2"]
    for s in settings:
        for m in ("mel_l1", "mel_l2", "mcd", "f0_rmse_cents", "gpe", "vuv_error", "rtf"):
            assert np.isfinite(metrics[f"{s}/{m}"]), (s, m)
            assert f"{s}/tenor/{m}" in metrics
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk.keys() == metrics.keys()
    assert all(isinstance(v, (int, float)) or v is None for v in on_disk.values())
    rows = list(csv.DictReader(open(tmp_path / "eval" / "clips.csv")))
    assert len(rows) == 2 * len(settings)
    table = list(csv.DictReader(open(tmp_path / "eval" / "metrics.csv")))
    assert [r["setting"] for r in table] == settings
    events = list((tmp_path / "eval" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 10000    # scalars, audio and mel images
    # the SoVITS stand-in's tone is what F0 tracking sees in its own output
    print({k: v for k, v in metrics.items() if k.startswith("sovits/")})
    assert metrics["sovits/gpe"] < 0.25

    # compiled once per (bucket, batch): a second evaluation traces nothing new
    diff, voc = converter.diffusion, converter.vocoder
    traces = (dict(diff.traces), voc.trace_count)
    assert sum(traces[0].values()) == 2 and traces[1] == 1   # both clips share one bucket
    evaluate.run_evaluation(config, tmp_path / "again", converter=converter, clips=clips,
                            log=lambda m: None)
    assert (dict(diff.traces), voc.trace_count) == traces


def test_ablation_is_a_config_override_and_errors_are_clear(tmp_path, converter, clips_dir):
    config = _config(clips_dir, sovits_only=False, diffusion_k=(2, 4), samplers=("ddpm",),
                     metrics=("mel",))
    metrics = evaluate.run_evaluation(config, tmp_path, converter=converter,
                                      log=lambda m: None)
    assert sorted(k for k in metrics if k.count("/") == 1) == \
        ["diff_k2_ddpm/mel_l1", "diff_k2_ddpm/mel_l2", "diff_k4_ddpm/mel_l1",
         "diff_k4_ddpm/mel_l2"]
    config = evaluate.apply_overrides(_config(clips_dir), ["diffusion_k=[8]",
                                                           "data.max_clips=1", "speedup=4"])
    assert config.diffusion_k == (8,) and config.data.max_clips == 1 and config.speedup == 4
    with pytest.raises(ValueError, match="no field"):
        evaluate.apply_overrides(config, ["nope=1"])
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate.run_evaluation(_config(clips_dir, metrics=("pesq",)), tmp_path,
                                converter=converter)
    with pytest.raises(FileNotFoundError, match="evaluation folder"):
        evaluate.load_eval_set(type("D", (), {"get": lambda s, k, d=None: {
            "kind": "folder", "path": str(tmp_path / "none")}.get(k, d)})())
    with pytest.raises(ValueError, match="speaker 'bob'"):
        evaluate.run_evaluation(_config(clips_dir, speakers=("bob",)), tmp_path,
                                converter=converter)


def test_eval_py_entry_point_reports_a_missing_model_clearly(tmp_path, clips_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SVCJAX_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--config",
                        str(ROOT / "configs" / "eval.py") + ":variant=test", "--workdir",
                        str(tmp_path), f"--config.data.path={clips_dir}",
                        f"--config.model={tmp_path / 'G_missing.pth'}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert "G_missing.pth" in r.stderr and "does not exist" in r.stderr
