"""eval.py / svcjax eval / svcjax.eval.runner.run_evaluation: the metric table in one compiled
pass per bucket, and the config loader both entry points share.

Tiny random-weight SoVITS, content encoder, shallow-diffusion model (tests/tiny_models.py)
and the NSF-HiFiGAN vocoder fixture; DIO F0.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svcjax import cli, configlib
from svcjax.eval import config as eval_config
from svcjax.eval import runner as evaluate

from svcjax.audio import io
from tests import tiny_models

ROOT = Path(__file__).parent.parent
FIX = Path(__file__).parent / "fixtures"
SR = 44100


@pytest.fixture(scope="module")
def converter(tmp_path_factory):
    d = tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))
    return tiny_models.converter(d)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalset")
    for spk, name, sec in (("alto", "slt_16k.wav", 1.5), ("alto", "rms_16k.wav", 1.45),
                           ("tenor", "kal_16k.wav", 1.2)):
        wav, sr = io.load_audio(FIX / "voices" / name)
        (d / spk).mkdir(exist_ok=True)
        io.save_audio(d / spk / name, wav[: int(sec * sr)], sr)
    return d


TEST_CONFIG = eval_config.PATH + ":variant=test"


def _config(clips_dir, **over):
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
    settings = ["sovits", "diff_k4_ddim_x2", "diff_k4_dpm-solverpp_x2"]
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

    # compiled once per (bucket, batch): both clips share one bucket, and the three settings
    # run from one SoVITS pass in one program; a second evaluation traces nothing new
    traces = dict(converter.runtime.traces)
    assert list(traces.values()) == [1] and len(next(iter(traces))[1][-1]) == 3
    evaluate.run_evaluation(config, tmp_path / "again", converter=converter, clips=clips,
                            log=lambda m: None)
    assert converter.runtime.traces == traces


def test_ablation_is_a_config_override_and_errors_are_clear(tmp_path, converter, clips_dir):
    config = _config(clips_dir, sovits_only=False, samplers=("ddim",), metrics=("mel",))
    metrics = evaluate.run_evaluation(config, tmp_path, converter=converter,
                                      log=lambda m: None)
    assert sorted(k for k in metrics if k.count("/") == 1) == \
        ["diff_k4_ddim_x2/mel_l1", "diff_k4_ddim_x2/mel_l2"]
    config = configlib.load_config(TEST_CONFIG, ["--noconfig.sovits_only",
                                                 "--config.diffusion_k=(2,4)",
                                                 "--config.samplers=('ddpm',)"])
    assert [s for s, _ in evaluate.settings_from_config(config, True)] == \
        ["diff_k2_ddpm", "diff_k4_ddpm"]
    config = configlib.load_config(TEST_CONFIG, ["--config.diffusion_k=[8]",
                                                 "--config.data.max_clips", "1",
                                                 "--config.speedup=4", "--config.transpose=2"])
    assert config.diffusion_k == (8,) and config.data.max_clips == 1 and config.speedup == 4
    assert config.transpose == 2.0 and isinstance(config.transpose, float)
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate.run_evaluation(_config(clips_dir, metrics=("pesq",)), tmp_path,
                                converter=converter)
    with pytest.raises(FileNotFoundError, match="evaluation folder"):
        evaluate.load_eval_set(type("D", (), {"get": lambda s, k, d=None: {
            "kind": "folder", "path": str(tmp_path / "none")}.get(k, d)})())
    with pytest.raises(ValueError, match="speaker 'bob'"):
        evaluate.run_evaluation(_config(clips_dir, speakers=("bob",)), tmp_path,
                                converter=converter)


def test_config_loader_errors_are_one_sentence(tmp_path):
    """svcjax eval's loader (eval.py's config_flags) refuses bad overrides in one line."""
    for overrides, error, needle in [
            (["--config.nope=1"], ValueError, "has no field 'nope'"),
            (["--config.data.nope=1"], ValueError, "has no field 'data.nope'"),
            (["--config.speedup=x"], ValueError, "--config.speedup=x: invalid literal for int()"),
            (["model=G.pth"], ValueError, "unexpected argument 'model=G.pth': config overrides "
                                          "are written --config.KEY=VALUE"),
            (["--model=G.pth"], ValueError, "config overrides are written --config.KEY=VALUE")]:
        with pytest.raises(error) as e:
            configlib.load_config(TEST_CONFIG, overrides)
        assert needle in str(e.value) and "\n" not in str(e.value), (overrides, str(e.value))
    with pytest.raises(ValueError, match=r"eval/config.py:variant=nope: unknown variant "
                                         r"'nope'; expected full or test$"):
        configlib.load_config(eval_config.PATH + ":variant=nope")
    with pytest.raises(FileNotFoundError, match="config file not found: .*missing.py"):
        configlib.load_config(tmp_path / "missing.py")
    # the checkout's configs/eval.py is the packaged config
    assert configlib.load_config(str(ROOT / "configs" / "eval.py") + ":variant=test") == \
        configlib.load_config(TEST_CONFIG)


def test_svcjax_eval_takes_eval_py_flags(tmp_path, clips_dir, capsys):
    """svcjax eval: the packaged config by default, --config.KEY=VALUE overrides (either
    form), failures in one line."""
    argv = ["eval", "--workdir", str(tmp_path), f"--config.data.path={clips_dir}",
            "--config.model", str(tmp_path / "G_missing.pth")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("svcjax eval: error: ")
    assert "G_missing.pth" in err and "does not exist" in err
    assert cli.main(["eval", "--workdir", str(tmp_path), "model=G.pth"]) == 1
    assert capsys.readouterr().err == ("svcjax eval: error: unexpected argument 'model=G.pth': "
                                       "config overrides are written --config.KEY=VALUE\n")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_py_entry_point_reports_a_missing_model_clearly(tmp_path, clips_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SVCJAX_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--config",
                        str(ROOT / "configs" / "eval.py") + ":variant=test", "--workdir",
                        str(tmp_path), f"--config.data.path={clips_dir}",
                        f"--config.model={tmp_path / 'G_missing.pth'}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert "G_missing.pth" in r.stderr and "does not exist" in r.stderr


def test_eval_set_from_a_tfds_corpus_split(tmp_path):
    from svcjax.data import corpus
    from tests.data import conftest as data_conftest, fakes

    raw = data_conftest.make_raw_corpus(str(tmp_path / "raw"))
    data_dir = str(tmp_path / "built")
    corpus.build_corpus(raw, data_dir, fakes.svcjax_featurizer(), data_conftest.BUILD,
                        log=lambda m: None)
    data = type("D", (), {"get": lambda s, k, d=None: {
        "kind": "tfds", "path": data_dir, "split": "validation", "max_clips": 0}.get(k, d)})()
    clips = evaluate.load_eval_set(data)
    assert len(clips) >= 2 and {c.speaker for c in clips} == {"alto", "tenor"}
    for c in clips:
        assert c.audio.dtype == np.float32 and 0.05 < np.abs(c.audio).max() <= 1.0
        assert c.seconds > 0.3 and "/" in c.name
