"""NSF-HiFiGAN vocoder: parity with the reference, padding, tracing, import, errors."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from svcjax import cli

from svcjax.runtime import vocoder
from svcjax.interop import nsf_hifigan
from svcjax.interop.torch_params import CheckpointMismatchError

FIX = Path(__file__).parent / "fixtures" / "vocoder"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "vocoder.npz"))


@pytest.fixture(scope="module")
def voc():
    return vocoder.load_vocoder(FIX / "model")


def test_matches_the_reference_vocoder(voc, ref):
    wav = voc(ref["mel"], ref["f0"])                 # B=2: sharded over the 8 devices
    assert wav.shape == ref["wav"].shape == (2, 512 * ref["mel"].shape[1])
    np.testing.assert_allclose(wav, ref["wav"], atol=1e-4)
    one = voc(ref["mel"][1], ref["f0"][1])           # unbatched, one device
    np.testing.assert_allclose(one, ref["wav"][1], atol=1e-4)


def test_padded_equals_unpadded_and_one_trace_per_bucket(voc, ref):
    mel, f0 = ref["mel"], ref["f0"]
    n = 25
    before = voc.trace_count
    alone = voc(mel[:1, :n], f0[:1, :n])
    batch = voc(mel, f0, lengths=[n, mel.shape[1]])
    np.testing.assert_allclose(batch[0, :512 * n], alone[0], atol=1e-5)
    assert np.all(batch[0, 512 * n:] == 0)
    np.testing.assert_allclose(batch[1], ref["wav"][1], atol=1e-4)
    voc(mel[:1, :n + 3], f0[:1, :n + 3])             # same bucket, same batch: no new trace
    voc(mel[:, :n + 3], f0[:, :n + 3])
    assert voc.trace_count - before <= 2             # (B=1 on one device, B=2 sharded) x 1


def test_random_draws_follow_the_key(voc, ref):
    mel, f0 = ref["mel"][:1], ref["f0"][:1]
    a = voc(mel, f0, rng=jax.random.PRNGKey(1))
    b = voc(mel, f0, rng=jax.random.PRNGKey(1))
    c = voc(mel, f0, rng=jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert np.abs(a - ref["wav"][:1]).max() > 1e-3


def test_import_command_writes_a_model_dir_that_loads_the_same(tmp_path, voc, ref):
    out = tmp_path / "voc"
    assert cli.main(["import-vocoder", str(FIX / "model"), str(out)]) == 0
    loaded = vocoder.load_vocoder(out)
    assert loaded.config.kind == nsf_hifigan.KIND and loaded.num_mels == 128
    np.testing.assert_allclose(loaded(ref["mel"][:1], ref["f0"][:1]), ref["wav"][:1], atol=1e-4)
    assert cli.main(["import-vocoder", str(FIX / "model"), str(out)]) == 1   # exists
    mel = loaded.mel(np.zeros((1, 4096), np.float32) + 0.01 * np.sin(np.arange(4096) / 5.0))
    assert mel.shape == (1, 8, 128)


def test_clear_errors(tmp_path, voc, ref, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(FIX / "model", lone / "model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        vocoder.load_vocoder(lone / "model")
    with pytest.raises(FileNotFoundError, match="vocoder not found"):
        vocoder.load_vocoder(tmp_path / "nope")
    cfg = json.loads((FIX / "config.json").read_text())
    cfg["upsample_initial_channel"] = 32
    (lone / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        vocoder.load_vocoder(lone / "model")
    del cfg["num_mels"]
    (lone / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_mels"):
        vocoder.load_vocoder(lone / "model")
    (lone / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        vocoder.load_vocoder(lone / "junk", FIX / "config.json")
    with pytest.raises(ValueError, match=r"\(B, T, 128\)"):
        voc(ref["mel"][..., :80], ref["f0"])
    with pytest.raises(ValueError, match="f0 must be"):
        voc(ref["mel"], ref["f0"][:, :10])
    assert cli.main(["import-vocoder", str(tmp_path / "nope"), str(tmp_path / "o")]) == 1
    assert "not found" in capsys.readouterr().err


def test_griffin_lim_fallback_inverts_the_vocoder_mel_in_place():
    """No weights: the mel of its output is close to the input mel, and a tone burst comes
    back where it was (the half-frame offset of the uncentred analysis is compensated)."""
    gl = vocoder.load_vocoder("griffin-lim")
    assert isinstance(gl, vocoder.GriffinLimVocoder) and not gl.pretrained
    sr = 44100
    x = np.zeros(2 * sr, np.float32)
    n = np.arange(20000)
    x[20000:40000] = 0.5 * np.sin(2 * np.pi * 440 * n / sr)
    mel = np.asarray(gl.mel(x[None]))
    y = gl(mel, np.zeros(mel.shape[:2]))
    assert y.shape == (1, 512 * mel.shape[1])
    env = np.convolve(np.abs(y[0]), np.ones(64) / 64, "same")
    on = np.argmax(env > 0.1 * env.max())
    off = len(env) - np.argmax(env[::-1] > 0.1 * env.max())
    assert abs((on + off) / 2 - 30000) < 64, (on, off)
    back = np.asarray(gl.mel(y))
    loud = mel > -6
    assert np.abs(back - mel)[loud].mean() < 0.3
    with pytest.raises(ValueError, match="mel must be"):
        gl(np.zeros((1, 10, 80)), np.zeros((1, 10)))


def test_griffin_lim_fallback_never_clips(caplog):
    """A mel louder than full scale (an undertrained score network's) is scaled, not clipped:
    peak 0.99, the waveform's shape kept, a warning with the gain."""
    gl = vocoder.load_vocoder("griffin-lim")
    sr = 44100
    n = np.arange(sr)
    quiet = 0.3 * np.sin(2 * np.pi * 220 * n / sr).astype(np.float32)
    mel = np.array(gl.mel(np.stack([quiet, quiet])))
    mel[1] += np.log(20.0)                        # the second clip 20x louder: ~6x full scale
    with caplog.at_level("WARNING"):
        y = gl(mel)
    assert np.abs(y[0]).max() < 0.99              # the quiet clip is untouched
    assert np.abs(y[1]).max() == pytest.approx(0.99, rel=1e-6)
    assert (np.abs(y[1]) >= 0.99 - 1e-6).mean() < 1e-3   # no run of clipped samples
    corr = np.corrcoef(y[0], y[1])[0, 1]          # same waveform, only scaled
    assert corr > 0.99, corr
    assert "clip 1 peaked at" in caplog.text and "instead of clipping" in caplog.text
