"""`svcjax convert` end to end with tiny random-weight models saved in the real formats.

SoVITS (configs/sovits_44k.py:variant=test, model dir), a tiny vec768l12 content encoder
(model dir), a tiny shallow-diffusion model (model dir), the NSF-HiFiGAN vocoder fixture
(the reference's 'model' + config.json) and DIO F0, on the shared real-voice clips.
"""

import os
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf

from svcjax import cli
from svcjax.cli import convert as convert_cmd

from svcjax.runtime import converter as pipeline
from svcjax.audio import io
from tests import tiny_models

ROOT = Path(__file__).parent.parent
FIX = Path(__file__).parent / "fixtures"
VOICES = FIX / "voices"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    a, sr_a = io.load_audio(VOICES / "slt_16k.wav")
    io.save_audio(d / "slt.wav", a[: int(1.5 * sr_a)], sr_a)
    b, sr_b = io.load_audio(VOICES / "rms_22k_stereo.wav", mono=False)
    sf.write(d / "rms.flac", b[:, : int(1.45 * sr_b)].T, sr_b)  # stereo 22.05 kHz, same bucket
    return [d / "slt.wav", d / "rms.flac"]


def _len44(path):
    info = sf.info(path)
    return int(np.ceil(info.frames * 44100 / info.samplerate))


@pytest.fixture(scope="module")
def conv(model_dirs):
    return pipeline.Converter.from_paths(
        model_dirs / "sovits", encoder=model_dirs / "encoder",
        diffusion=model_dirs / "diffusion", vocoder=FIX / "vocoder" / "model")


def _options(**kw):
    return pipeline.ConvertOptions(**{**dict(
        speaker=pipeline.parse_speaker("alto:0.3,tenor:0.7"), f0_method="dio", transpose=3,
        loudness_mix=0.5, k_step=4, method="ddim", speedup=2), **kw})


def test_convert_files_with_shallow_diffusion_compiles_once_per_bucket(tmp_path, conv, inputs):
    from svcjax.runtime import runner as runtime

    opt = _options()
    outs = [str(tmp_path / "out" / f"{p.stem}.flac") for p in inputs]
    with runtime.CompileCounter() as cold:
        written, failed = pipeline.convert_files(conv, [str(p) for p in inputs], outs, opt,
                                                 progress=False)
    assert written == outs and not failed
    for src, out in zip(inputs, outs):
        y, sr = io.load_audio(out, allow_silent=True)
        assert sr == 44100 and len(y) == _len44(src)
        assert np.isfinite(y).all() and np.abs(y).max() > 1e-3
    # both inputs share a length bucket: one batch of 2, one conversion program (SoVITS,
    # diffusion, vocoder and the rest) traced and compiled once
    assert conv._fusable(opt) and cold.compiles >= 1
    traces = dict(conv.runtime.traces)
    assert list(traces.values()) == [1]
    clips = [io.load_audio(p, sr=44100)[0] for p in inputs]
    with runtime.CompileCounter() as warm:
        again = conv.convert([c[: len(c) - 1000] for c in clips], opt, progress=False)
    assert warm.compiles == 0 and conv.runtime.traces == traces  # same bucket: no retrace
    assert [len(x) for x in again] == [len(c) - 1000 for c in clips]
    first = conv.convert(clips, opt, progress=False)
    np.testing.assert_array_equal(first[1], conv.convert(clips, opt, progress=False)[1])


@pytest.fixture
def restore_compilation_cache():
    """The CLI turns JAX's persistent cache on for the process; turn it off again after."""
    yield
    from jax._src import compilation_cache as cc

    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cc.reset_cache()


def test_cli_convert_one_file(tmp_path, model_dirs, inputs, capsys, restore_compilation_cache):
    out = tmp_path / "one.wav"
    argv = ["convert", str(inputs[0]), "-o", str(out), "--model", str(model_dirs / "sovits"),
            "--encoder", str(model_dirs / "encoder"), "--speaker", "tenor", "--auto-f0",
            "--f0-method", "dio", "--clip", "0.7", "--crossfade", "0.1", "--pad-seconds", "0.2",
            "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    y, sr = io.load_audio(out, allow_silent=True)
    assert sr == 44100 and len(y) == _len44(inputs[0]) and np.isfinite(y).all()
    assert any((tmp_path / "cache").iterdir())          # the persistent compilation cache
    assert str(out) in capsys.readouterr().out


def test_cli_errors_are_one_clear_sentence(tmp_path, model_dirs, inputs, capsys,
                                          restore_compilation_cache):
    base = ["--model", str(model_dirs / "sovits"), "--encoder", str(model_dirs / "encoder"),
            "--f0-method", "dio", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(["convert", str(inputs[0]), "-o", str(tmp_path / "a.wav"), "--speaker",
                     "bob", *base]) == 1
    err = capsys.readouterr().err
    assert "'bob' not in model; known: alto, tenor" in err and "Traceback" not in err
    assert cli.main(["convert", str(inputs[0]), "-o", str(tmp_path / "a.wav"), "--speaker",
                     "alto", "--model", str(tmp_path / "G_9.pth"), "--encoder", "x"]) == 1
    assert "G_9.pth" in capsys.readouterr().err
    assert cli.main(["convert", str(inputs[0]), "-o", str(tmp_path / "a.wav"), "--speaker",
                     "alto", "--diffusion", str(model_dirs / "diffusion"), *base]) == 1
    assert "--vocoder" in capsys.readouterr().err
    assert cli.main(["convert", str(inputs[0]), "-o", str(tmp_path / "a.wav"),
                     "--model", str(model_dirs / "sovits"), "--speaker", "alto"]) == 1
    assert "--encoder" in capsys.readouterr().err


def test_silent_and_corrupt_inputs_are_skipped(tmp_path, conv, inputs):
    silent = tmp_path / "silent.wav"
    io.save_audio(silent, np.zeros(20000, np.float32), 44100)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC not really")
    msgs = []
    names = ("slt.wav", "silent.wav", "rms.wav", "bad.wav")
    outs = [str(tmp_path / "o" / n) for n in names]
    written, failed = pipeline.convert_files(
        conv, [str(inputs[0]), str(silent), str(inputs[1]), str(bad)], outs, _options(),
        progress=False, log=msgs.append)
    assert written == [outs[0], outs[2]] and len(failed) == 2 and len(msgs) == 2
    assert "silent" in failed[0] and "bad.flac" in failed[1]
    assert sorted(os.listdir(tmp_path / "o")) == ["rms.wav", "slt.wav"]


def test_only_diffusion_and_second_encoding(conv, inputs):
    clips = [io.load_audio(p, sr=44100)[0] for p in inputs]
    only = pipeline.Converter(None, conv.encoder, conv.diffusion, conv.vocoder)
    assert only.speakers == {"spk0": 0, "spk1": 1}
    out = only.convert(clips, _options(speaker=1, only_diffusion=True, method="dpm-solver++",
                                       speedup=250, loudness_mix=1.0), progress=False)
    assert [len(x) for x in out] == [len(c) for c in clips]
    assert all(np.isfinite(x).all() and np.abs(x).max() > 1e-4 for x in out)
    with pytest.raises(ValueError, match="no SoVITS model"):
        only.convert(clips, _options(speaker=1))
    # second encoding: the diffusion model is conditioned on the units of the SoVITS output
    # (the content encoder runs twice in that program, on the input and on the output)
    seen = []
    model = conv.encoder.model

    class Spy:
        def apply(self, variables, wav16, lens16):
            seen.append(wav16)
            return model.apply(variables, wav16, lens16)

    before = dict(conv.runtime.traces)
    conv.encoder.model = Spy()
    try:
        second = conv.convert(clips, _options(second_encoding=True), progress=False)
        assert len(seen) == 2 and seen[0] is not seen[1]
        conv.convert(clips, _options(second_encoding=True), progress=False)
        assert len(seen) == 2                     # compiled once: not traced again
        plain = conv.convert(clips, _options(), progress=False)
        assert len(seen) <= 3                     # once, if the plain program is traced
    finally:
        conv.encoder.model = model
    grown = {k: v for k, v in conv.runtime.traces.items() if v != before.get(k, 0)}
    assert all(v == 1 for v in grown.values())
    assert sum(k[1][2] for k in grown) == 1                  # one second-encoding program
    for x, y in zip(second, plain):
        assert len(x) == len(y) and np.isfinite(x).all()


def test_main_ends_every_failure_with_one_sentence(monkeypatch, capsys):
    from svcjax.interop.torch_pickle import TorchFileError

    def raising(exc):
        def run(args):
            raise exc
        return run

    argv = ["convert", "x.wav", "-o", "out/"]
    for exc, line in [
            (PermissionError(13, "Permission denied", "/data/x.wav"),
             "svcjax convert: error: '/data/x.wav': permission denied"),
            (OSError(28, "No space left on device"), "svcjax convert: error: no space left on device"),
            (NotADirectoryError(20, "Not a directory", "afile/sub"),
             "svcjax convert: error: 'afile/sub': not a directory"),
            (TorchFileError("G_1.pth is not a PyTorch checkpoint"),
             "svcjax convert: error: G_1.pth is not a PyTorch checkpoint"),
            (KeyError("speaker"), "svcjax convert: error: speaker"),
            (RuntimeError("XLA failed\nwith details"),
             "svcjax convert: error: unexpected RuntimeError: XLA failed (set SVCJAX_DEBUG=1 "
             "for the traceback)")]:
        monkeypatch.setattr(convert_cmd, "run", raising(exc))
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.strip() == line and "Traceback" not in err
    monkeypatch.setattr(convert_cmd, "run", raising(KeyboardInterrupt()))
    assert cli.main(argv) == 130
    assert capsys.readouterr().err.strip() == "svcjax convert: interrupted"
    monkeypatch.setenv("SVCJAX_DEBUG", "1")
    monkeypatch.setattr(convert_cmd, "run", raising(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(argv)


def test_cli_refuses_before_loading_models(tmp_path, inputs, capsys):
    """Output problems and ignored options are found before any model is read (the model
    paths here do not even exist)."""
    base = ["--model", str(tmp_path / "no_model"), "--encoder", str(tmp_path / "no_enc"),
            "--speaker", "alto", "--no-progress"]
    src = str(inputs[0])
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    existing = tmp_path / "done.wav"
    existing.write_bytes(b"earlier")
    for out, extra, needle in [
            (str(afile), [], "is a file, not a directory"),
            (f"{afile}/sub/", [], "is a file, not a directory"),
            (src, [], "is one of the inputs; pass --overwrite"),
            (str(existing), [], "already exists; pass --overwrite"),
            (str(tmp_path / "o.wav"), ["--vocoder", "v"], "--vocoder is only used with"),
    ]:
        assert cli.main(["convert", src, "-o", out, *base, *extra]) == 1
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert existing.read_bytes() == b"earlier" and afile.read_bytes() == b"x"
