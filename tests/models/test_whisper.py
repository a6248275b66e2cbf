"""Whisper-PPG units: parity with the reference's WhisperPPG on an OpenAI-format checkpoint.

The fixture (tests/fixtures/make_whisper.py) is the reference's own ``Whisper`` at shrunk dims
(width 64, 2 layers, the full 1500-frame context), saved as OpenAI's ``.pt`` with float16
tensors, and the units the reference's ``WhisperPPG.encoder`` gives for real voices.

Tolerances (matmul precision "highest", set by tests/conftest.py): float32 rounding of the
log-mel (an FFT, a 201-term mel sum, log10) is ~1e-6 relative, larger only in bins at the
-8 floor of the log spectrum, where both sides clamp; through the conv stem (240-term sums)
and two blocks (attention over 1500 frames, LayerNorms) that grows to a few 1e-6 on units of
size ~4 (measured 3e-6). 1e-4 (the issue's bound) leaves a margin of ~30x.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.interop import torch_save
from svcjax.interop import whisper as cw
from svcjax.models import whisper as wm

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "whisper")
CKPT = os.path.join(FIXTURES, "whisper_tiny.pt")
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIXTURES, "reference.npz")))


@pytest.fixture(scope="module")
def imported():
    return cw.import_file(CKPT)


@pytest.fixture(scope="module")
def apply(imported):
    params, config = imported
    model = wm.build_model(config)
    fn = jax.jit(lambda wav, lengths: model.apply({"params": params}, wav, lengths))
    return fn


def test_config_and_frames_come_from_the_checkpoint(imported):
    params, config = imported
    assert (config.kind, config.family) == ("whisper-ppg", "whisper")
    assert (config.n_mels, config.n_audio_ctx, config.n_audio_state, config.n_audio_head,
            config.n_audio_layer) == (80, 1500, 64, 4, 2)
    enc = params["encoder"]
    assert sorted(k for k in enc if k.startswith("blocks_")) == ["blocks_0", "blocks_1"]
    assert "bias" not in enc["blocks_0"]["attn"]["key"]          # Whisper's key has no bias
    assert enc["conv1"]["kernel"].shape == (3, 80, 64)
    # the table the reference loads from the file: the float16-rounded sinusoids
    np.testing.assert_allclose(enc["positional_embedding"], wm.sinusoids(1500, 64), atol=1e-3)
    assert wm.num_frames(16000) == 50 and wm.num_frames(319) == 0 and wm.min_samples() == 320
    np.testing.assert_array_equal(wm.num_frames(np.array([319, 320, 960001])), [0, 1, 3000])
    assert wm.hop(config) == 320 and wm.unit_dim(config) == 64 and wm.max_samples(config) is None
    assert wm.window_samples(config) == 480000
    full = wm.default_config("whisper-ppg-large")
    assert wm.unit_dim(full) == 1280 and full.n_audio_layer == 32


def test_log_mel_matches_the_reference(ref):
    clip = ref["clip_0"]
    wav = np.zeros((1, wm.WINDOW_SAMPLES), np.float32)
    wav[0, : len(clip)] = clip
    mel = np.asarray(jax.jit(wm.log_mel)(jnp.asarray(wav)))[0]
    assert mel.shape == (3000, 80)
    np.testing.assert_allclose(mel.max(), ref["mel_0_max"], atol=1e-5)
    # log10 power / 4: ~1e-6 where there is signal; bins at the floor agree exactly
    np.testing.assert_allclose(mel[:160], ref["mel_0"], atol=1e-4)


def test_units_match_the_reference_in_a_padded_batch(ref, apply):
    clips = [ref[f"clip_{i}"] for i in range(3)]
    lengths = np.array([len(c) for c in clips])
    batch = np.full((3, lengths.max() + 777), 0.5, np.float32)   # junk past each clip's end
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    units, frames = apply(batch, lengths)
    units, frames = np.asarray(units), np.asarray(frames)
    np.testing.assert_array_equal(frames, lengths // 320)
    alone, _ = apply(clips[1][None], lengths[1:2])
    for i in range(3):
        want = ref[f"units_{i}"]
        assert want.shape == (frames[i], 64)
        np.testing.assert_allclose(units[i, : frames[i]], want, atol=TOL, rtol=0)
        assert not units[i, frames[i]:].any()
    # a padded row computes the same program as the clip alone: equal up to float32 reassociation
    np.testing.assert_allclose(units[1, : frames[1]], np.asarray(alone)[0, : frames[1]], atol=1e-5)


def test_clips_over_30_s_are_encoded_in_30_s_windows(ref, apply):
    wav = ref["long_pcm16"].astype(np.float32) / np.float32(32767)
    units, frames = apply(wav[None], np.array([len(wav)]))
    want = ref["long_units"]
    assert int(frames[0]) == len(wav) // 320 == want.shape[0] > wm.WINDOW_FRAMES
    np.testing.assert_allclose(np.asarray(units)[0, : frames[0]], want, atol=TOL, rtol=0)


def _variant(tmp_path, name, *, dims=None, drop=(), sd_extra=None, top=None):
    from svcjax.interop import torch_pickle
    obj = torch_pickle.load(CKPT)
    if top is not None:
        obj = top
    else:
        obj["dims"] = {**obj["dims"], **(dims or {})}
        sd = {k: v for k, v in obj["model_state_dict"].items() if k not in drop}
        obj["model_state_dict"] = {**sd, **(sd_extra or {})}
    return torch_save.save(obj, str(tmp_path / name))


def test_wrong_and_broken_files_are_refused_in_one_sentence(tmp_path, imported):
    cases = [
        (_variant(tmp_path, "ctx.pt", dims={"n_audio_ctx": 448}), "n_audio_ctx=448"),
        (_variant(tmp_path, "heads.pt", dims={"n_audio_head": 5}), "not divisible by 5"),
        (_variant(tmp_path, "str.pt", dims={"n_audio_layer": "2"}), "n_audio_layer='2'"),
        (_variant(tmp_path, "missing.pt", drop=("encoder.blocks.1.mlp.2.bias",)),
         "missing (1): blocks_1/mlp_2/bias"),
        (_variant(tmp_path, "layers.pt", dims={"n_audio_layer": 3}), "missing"),
        (_variant(tmp_path, "g.pt", top={"model": {"enc_p.x.weight": np.zeros(2, np.float32)}}),
         "not an OpenAI Whisper checkpoint"),
    ]
    for path, words in cases:
        with pytest.raises(cw.WhisperFileError) as e:
            cw.import_file(path)
        assert words in str(e.value), (path, str(e.value))
        assert str(e.value).startswith(path) or "does not match" in str(e.value)
    with pytest.raises(cw.WhisperFileError, match="not vec768l12"):
        cw.import_file(CKPT, "vec768l12")
    # a 1280-wide encoder defaults to whisper-ppg-large, the rest to whisper-ppg
    assert cw._default_kind(1280) == "whisper-ppg-large" and cw._default_kind(64) == "whisper-ppg"
    params, config = cw.import_file(CKPT, "whisper-ppg-large")
    assert config.kind == "whisper-ppg-large" and config.n_audio_state == 64


def test_public_api_load_import_encoder_and_init(ref, tmp_path, capsys):
    import svcjax
    from svcjax.cli import main as cli_main
    from svcjax.interop.content_encoder import ContentEncoderFileError

    clips = [ref[f"clip_{i}"] for i in range(3)]
    enc = svcjax.load_content_encoder(CKPT, kind="whisper-ppg")
    assert enc.family == "whisper" and enc.dim == 64 and enc.hop == 320 and enc.pretrained
    assert enc.min_samples == 320 and enc.max_samples is None
    units, frames = enc.encode(clips)          # a list of clips: padded, bucketed, sharded
    for i in range(3):
        np.testing.assert_allclose(units[i, : frames[i]], ref[f"units_{i}"], atol=TOL, rtol=0)

    out = tmp_path / "wl"
    assert cli_main(["import-encoder", CKPT, "--kind", "whisper-ppg-large", str(out)]) == 0
    assert "kind whisper-ppg-large" in capsys.readouterr().out
    large = svcjax.load_content_encoder(str(out))   # the kind recorded at import
    assert large.kind.name == "whisper-ppg-large"
    np.testing.assert_allclose(large(clips[2])[0], ref["units_2"], atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="cannot compute vec768l12"):
        svcjax.load_content_encoder(str(out), kind="vec768l12")
    with pytest.raises(ContentEncoderFileError, match="whisper-family checkpoint"):
        svcjax.load_content_encoder(CKPT, kind="hubertsoft")
    assert cli_main(["import-encoder", CKPT, "--kind", "vec256l9", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "whisper-ppg" in err and len(err.splitlines()) == 1 and not (tmp_path / "x").exists()

    cfg = wm.default_config("whisper-ppg", n_audio_state=32, n_audio_head=2, n_audio_layer=1)
    rand = svcjax.init_content_encoder("whisper-ppg", rng=1, config=cfg)
    assert not rand.pretrained and "RANDOM weights" in repr(rand)
    u = rand(np.zeros(16000, np.float32))
    assert u.shape == (1, 50, 32) and np.isfinite(u).all()
