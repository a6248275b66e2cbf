"""cnhubertlarge: HuBERT-large (layer-norm conv extractor, pre-LN layers, final LayerNorm).

The committed fixture (tests/fixtures/hubert_large/, made by make_hubert_large.py) is a
HuBERT-large-structured model at shrunk widths (conv 16, width 32, 6 layers) in fairseq's
checkpoint layout; its units are transformers' HubertModel's ``last_hidden_state``, which the
script cross-checks against the reference's torchaudio port of fairseq's network.
Matmuls run at "highest" precision (tests/conftest.py).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import svcjax
from svcjax.cli import main as cli_main
from svcjax.interop import content_encoder as cc
from svcjax.models import content_encoder as ce
from tests.models.test_content_encoder import SMALL_CONV, clips, float32_drift, random_params

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hubert_large")
CKPT = os.path.join(FIX, "cnhubert_tiny.pt")
CONTENTVEC = os.path.join(os.path.dirname(__file__), "..", "fixtures", "content_encoder",
                          "contentvec_tiny.pt")
# Units are LayerNorm outputs (RMS ~1, scaled by the perturbed gains in [0.5, 1.5]); the
# reference's float32 sums and ours differ in order, and 6 layers of sums of <= 256 terms
# give errors of a few 1e-6 (float32_drift below); 1e-4 is the bound, with margin.
TOL = 1e-4


def reference():
    ref = np.load(os.path.join(FIX, "reference.npz"))
    clips_ = np.split(ref["wav"], np.cumsum(ref["wav_lengths"])[:-1])
    return clips_, np.split(ref["units"], np.cumsum(ref["frames"])[:-1])


def test_fixture_parity_through_the_public_api():
    """The fairseq file is recognised as HuBERT-large; a padded batch matches each clip alone."""
    clips_, units = reference()
    enc = svcjax.load_content_encoder(CKPT)  # kind from the file's structure
    assert enc.kind.name == "cnhubertlarge" and enc.family == "hubert" and enc.dim == 32
    cfg = enc.config
    assert (cfg.extractor_mode, cfg.conv_bias, cfg.layer_norm_first) == ("layer_norm", True, True)
    assert cfg.num_layers == 6 and cfg.num_heads == 4 and cfg.final_dim == 0  # untied final_proj
    batch, frames = enc.encode(clips_)
    for j, want in enumerate(units):
        assert frames[j] == len(want)
        np.testing.assert_allclose(batch[j, : len(want)], want, atol=TOL, rtol=0)
        assert not batch[j, len(want):].any()


def test_cli_import_and_kind_checks(tmp_path, capsys):
    out = tmp_path / "cnhubert"
    assert cli_main(["import-encoder", CKPT, "--kind", "cnhubertlarge", str(out)]) == 0
    assert "6 layers of width 32" in capsys.readouterr().out
    enc = svcjax.load_content_encoder(out)  # the parameters of the parity test above
    assert enc.kind.name == "cnhubertlarge" and enc.pretrained
    want, _ = cc.import_encoder(CKPT)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(enc.params)):
        np.testing.assert_array_equal(np.asarray(b), a)
    # a layer of a pre-LN model is not a ContentVec layer
    with pytest.raises(ValueError, match="vec768l12 takes a layer of the HuBERT-base structure; "
                       "this model has conv_bias=True, extractor_mode='layer_norm', "
                       "layer_norm_first=True"):
        svcjax.load_content_encoder(out, kind="vec768l12")
    for kind, why in (("vec768l12", "vec768l12 expects the HuBERT-base layout"),
                      ("dphubert", "hubert-family checkpoint: it gives")):
        assert cli_main(["import-encoder", CKPT, "--kind", kind, str(tmp_path / kind)]) == 1
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / kind).exists()


def test_contentvec_computes_cnhubertlarge_as_the_reference_would():
    """The reference's CNHubertLarge takes any fairseq HuBERT's last layer; so does the kind."""
    _, config = cc.import_encoder(CONTENTVEC, "cnhubertlarge")
    assert config.kind == "cnhubertlarge" and not config.layer_norm_first
    net = ce.build_model(config)
    assert net.num_layers == 12 and net.final_dim == 0 and not net.final_norm


def small_large(**kw):
    args = dict(conv_layers=SMALL_CONV, embed_dim=32, ffn_dim=64, num_heads=4, num_layers=2,
                extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True,
                final_norm=True)
    args.update(kw)
    return ce.Hubert(**args)


def test_padding_content_never_reaches_a_valid_frame():
    """Loud garbage or zeros past each length: every layer's valid frames are the same.

    (With zeros, a padded batch equals each clip alone: the fixture parity test above.) The
    masks make the garbage's weight exactly zero; the sums then differ only in order, within
    float32 rounding of the path's sums (tests/models/test_content_encoder.float32_drift).
    """
    net = small_large()
    params = random_params(net)
    xs = clips()
    run = jax.jit(lambda p, w, n: net.apply(p, w, n, hidden_states=True))
    lengths = np.array([len(x) for x in xs])
    outs = []
    for fill in (0.0, 0.7):
        batch = np.full((3, 20000), fill, np.float32)
        for j, x in enumerate(xs):
            batch[j, : len(x)] = x
        outs.append(run(params, batch, lengths))
    (clean, frames), (dirty, frames2) = outs
    np.testing.assert_array_equal(frames, frames2)
    for layer, (a, b) in enumerate(zip(clean, dirty)):
        for j, n in enumerate(np.asarray(frames)):
            want = np.asarray(a)[j, :n]
            # sums on the way: conv taps (10, 3 or 2 x 16 channels), 7 conv layer norms (16),
            # projection (16), position conv (128 x 2), per layer two norms (32), q/k/v (32),
            # attention over the frames, out projection (32), FFN (32, 64)
            sums = ([10] + [3 * 16] * 4 + [2 * 16] * 2 + [16] * 7 + [16, 256]
                    + layer * [32, 32, int(n), 32, 32, 32, 64])
            np.testing.assert_allclose(np.asarray(b)[j, :n], want,
                                       atol=float32_drift(want, sums), rtol=0,
                                       err_msg=f"clip {j} state {layer}")
            assert not np.asarray(b)[j, n:].any()


def test_final_norm_is_pre_ln_only_and_init_works():
    with pytest.raises(ValueError, match="final_norm applies to pre-LN"):
        jax.eval_shape(small_large(layer_norm_first=False).init, jax.random.key(0),
                       jnp.zeros((1, 4000)))
    cfg = ce.default_config("cnhubertlarge", conv_layers=SMALL_CONV, embed_dim=32, ffn_dim=64,
                            num_heads=4, num_layers=1)
    enc = svcjax.init_content_encoder("cnhubertlarge", config=cfg)
    assert not enc.pretrained and enc.dim == 32
    assert enc(np.zeros(4000, np.float32)).shape == (1, 12, 32)
    full = ce.default_config("cnhubertlarge")
    assert (full.embed_dim, full.num_layers, full.num_heads, full.ffn_dim) == (1024, 24, 16, 4096)


def test_live_hf_large_parity_every_layer(tmp_path):
    """A transformers HubertModel of HuBERT-large's structure (no conv bias), save_pretrained:
    every hidden state within 1e-4; the last is ``last_hidden_state``, after the final LayerNorm
    (transformers 4 put that one last in ``hidden_states``, 5 the last layer's output before it)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(11)
    model = transformers.HubertModel(transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
        conv_dim=(12,) * 7, do_stable_layer_norm=True, feat_extract_norm="layer",
        conv_bias=False)).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
    model.save_pretrained(tmp_path / "large")
    clip = reference()[0][1]
    with torch.no_grad():
        out = model(torch.from_numpy(clip)[None], output_hidden_states=True)
    want = [h[0].numpy() for h in out.hidden_states[:-1]] + [out.last_hidden_state[0].numpy()]
    params, config = cc.import_encoder(tmp_path / "large")
    assert config.kind == "cnhubertlarge" and config.num_heads == 2 and not config.conv_bias
    net = ce.build_model(config)
    got, _ = jax.jit(lambda p, x: net.apply({"params": p}, x, hidden_states=True))(
        params, clip[None])
    assert len(got) == len(want) == 3
    for layer, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g)[0], w, atol=TOL, rtol=0,
                                   err_msg=f"hidden state {layer}")
