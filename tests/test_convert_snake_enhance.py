"""`svcjax import-sovits` + `svcjax convert` with a ``vocoder_name: nsf-snake-hifigan`` model
and the NSF-HiFiGAN enhancer (``--enhance``, ``--enhancer-adaptive-key``).

The model is the reference-format snake fixture (tests/fixtures/sovits/snake: G_1.pth +
config.json, 20-dim units), the content encoder a tiny random vec768l12 model of that width,
the enhancer's vocoder the reference-format fixture tests/fixtures/vocoder/model.
"""

from pathlib import Path

import jax
import numpy as np
import pytest

from svcjax import cli

from svcjax.train import checkpoint

from svcjax.runtime import converter as pipeline
from svcjax.audio import io

FIX = Path(__file__).parent / "fixtures"
SNAKE = FIX / "sovits" / "snake"
VOCODER = FIX / "vocoder" / "model"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """The snake model imported by the CLI, a 20-wide encoder and a 1.2 s input."""
    from svcjax.models import content_encoder as ce

    d = tmp_path_factory.mktemp("snake")
    assert cli.main(["import-sovits", str(SNAKE / "G_1.pth"), str(SNAKE / "config.json"),
                     str(d / "model"), "--inference-only"]) == 0
    enc_cfg = ce.default_config("vec768l12", embed_dim=20, ffn_dim=32, num_heads=2,
                                conv_pos=16, conv_pos_groups=4,
                                conv_layers=[(16, k, s) for _, k, s in ce.BASE_CONV_LAYERS])
    enc = ce.build_model(enc_cfg, full=True)
    shapes = jax.eval_shape(enc.init, jax.random.PRNGKey(1), np.zeros((1, 16000), np.float32))
    rs = np.random.RandomState(0)
    params = jax.tree.map(lambda s: (0.1 * rs.randn(*s.shape)).astype(np.float32),
                          shapes["params"])
    checkpoint.save_model_dir(d / "encoder", params, enc_cfg)
    a, sr = io.load_audio(FIX / "voices" / "slt_16k.wav")
    io.save_audio(d / "in.wav", a[: int(1.2 * sr)], sr)
    return d


def _argv(d, out, *extra):
    return ["convert", str(d / "in.wav"), "-o", str(out), "--model", str(d / "model"),
            "--encoder", str(d / "encoder"), "--speaker", "tenor", "--f0-method", "dio",
            "--no-progress", "--cache-dir", str(d / "cache"), *extra]


@pytest.fixture
def restore_compilation_cache():
    """The CLI turns JAX's persistent cache on for the process; turn it off again after."""
    yield
    from jax._src import compilation_cache as cc

    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cc.reset_cache()


def test_enhancer_flags_fail_clearly_before_any_work(dirs, tmp_path, capsys,
                                                    restore_compilation_cache):
    _, cfg = checkpoint.load_model_dir(dirs / "model")
    assert cfg.model.vocoder_name == "nsf-snake-hifigan" and cfg.kind == "sovits"
    for extra, sentence in (
            (["--enhance"], "the enhancer needs the NSF-HiFiGAN vocoder: pass --vocoder"),
            (["--enhance", "--vocoder", "griffin-lim"],
             "the enhancer needs the NSF-HiFiGAN vocoder's weights"),
            (["--vocoder", str(VOCODER)], "--vocoder is only used with --diffusion"),
            (["--enhance", "--vocoder", str(VOCODER), "--enhancer-adaptive-key", "nan"],
             "enhancer_adaptive_key must be a number of semitones")):
        out = tmp_path / "x.wav"
        assert cli.main(_argv(dirs, out, *extra)) == 1, extra
        err = capsys.readouterr().err
        assert sentence in err and "Traceback" not in err, (extra, err)
        assert not out.exists() and not list(tmp_path.glob(".x.wav*"))


@pytest.mark.slow  # compiles the snake SoVITS model, the encoder and the enhancer (~2 min)
def test_snake_model_converts_with_the_enhancer(dirs, tmp_path, capsys,
                                               restore_compilation_cache):
    out = tmp_path / "enhanced.wav"
    argv = _argv(dirs, out, "--enhance", "--enhancer-adaptive-key", "2", "--vocoder",
                 str(VOCODER))
    assert cli.main(argv) == 0, capsys.readouterr().err
    y, sr = io.load_audio(out, allow_silent=True)
    x, _ = io.load_audio(dirs / "in.wav", sr=44100)
    assert sr == 44100 and len(y) == len(x) and np.isfinite(y).all()
    assert np.abs(y).max() > 1e-2
    # the same conversion without the enhancer differs; with it, the API gives the CLI's file
    conv = pipeline.Converter.from_paths(dirs / "model", encoder=dirs / "encoder",
                                         vocoder=VOCODER, enhance=True)
    opt = pipeline.ConvertOptions(speaker="tenor", f0_method="dio", enhance=True,
                                  enhancer_adaptive_key=2)
    enhanced = conv.convert([x], opt, progress=False)[0]
    assert "enhancer" in conv.timings
    plain = conv.convert([x], pipeline.ConvertOptions(speaker="tenor", f0_method="dio"),
                         progress=False)[0]
    assert len(enhanced) == len(plain) == len(x)
    np.testing.assert_allclose(enhanced, y, atol=2 / 32768)     # 16-bit file
    assert float(np.abs(enhanced - plain).max()) > 1e-2
