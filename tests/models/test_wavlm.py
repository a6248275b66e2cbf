"""WavLM (``wavlmbase+``): parity with the reference's WavLMBasePlus encoder on committed
fixtures (tests/fixtures/make_wavlm.py), padded batches = clips alone, the bucket map, the
importer's checks."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from svcjax.interop import torch_pickle
from svcjax.interop import wavlm as CW
from svcjax.interop.content_encoder import ContentEncoderFileError
from svcjax.models import wavlm as W

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "wavlm")
CE_FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "content_encoder")
MODELS = ("wavlm_base_tiny", "wavlm_large_tiny")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "reference.npz")))


@pytest.fixture(scope="module")
def imported():
    out = {}
    for name in MODELS:
        obj = torch_pickle.load(os.path.join(FIX, name + ".pt"))
        out[name] = CW.import_checkpoint(obj, name + ".pt")
    return out


def clips(ref):
    return np.split(ref["wav"], np.cumsum(ref["wav_lengths"])[:-1])


def reduction_lengths(cfg, samples: int, frames: int) -> list[int]:
    """Lengths of the sums on the path from the waveform to the output of ``cfg``'s model.

    The waveform normalisation (whole clip), each convolution (kernel x input channels) and
    its norm (GroupNorm: the first conv's frames; LayerNorm: channels), the LayerNorm and
    projection of the extractor's channels, the position conv (taps x channels a group), and
    per transformer layer: q/k/v, the gate (head width), scores (head width), softmax and
    the weighted sum over the frames, the output projection, two LayerNorms, the FFN.
    """
    conv = [tuple(c) for c in cfg.conv_layers]
    out = [samples, samples] if cfg.normalize else []
    cin, n = 1, samples
    for i, (dim, k, s) in enumerate(conv):
        out.append(k * cin)
        n = (n - k) // s + 1
        if cfg.extractor_mode == "layer_norm":
            out.append(dim)
        elif i == 0:
            out.append(n)
        cin = dim
    c, h = int(cfg.embed_dim), int(cfg.num_heads)
    d, f = c // h, int(cfg.ffn_dim)
    out += [cin, cin, cfg.conv_pos * (c // cfg.conv_pos_groups), c]
    out += cfg.num_layers * [c, d, d, frames, frames, c, c, c, c, f, c]
    return out


def float32_drift(want: np.ndarray, lengths: list[int], tail: float = 6.0) -> float:
    """Tolerance for two float32 evaluations of one network that sum in different orders.

    A sum of K float32 terms carries a rounding error of about eps * sqrt(K) times the size
    of its terms (a random walk of K roundings); normalisation keeps every stage near the
    output's RMS and the errors of successive sums add, so an element's expected error is
    eps * sqrt(sum K) * rms; ``tail`` covers the largest of a few thousand such errors.
    """
    rms = float(np.sqrt(np.mean(np.square(want, dtype=np.float64))))
    return tail * float(np.finfo(np.float32).eps) * float(np.sqrt(sum(lengths))) * rms


@pytest.mark.parametrize("name", MODELS)
def test_units_match_the_reference_encoder_alone_and_in_a_padded_batch(name, ref, imported):
    """svcjax's units == the reference's WavLMBasePlus.encoder() on three real voices.

    The shortest clip runs alone (Base+'s options; the other model only batched, to save a
    compile); all three run as one padded batch with loud garbage past
    each length and attention in query blocks of 16 frames (blocks straddle clip ends), and
    every row must still give the reference's units for that clip alone, with zeros after
    (and a fourth row of length 0 stays finite and zero).
    Highest matmul precision (float32 products), so the float32 drift model holds; the
    tolerance is also held to the issue's 1e-4. A wrong gate or bucket map moves the units
    by 5e-2 and more (checked when the fixture was made), far above it.
    """
    params, cfg = imported[name]
    xs = clips(ref)
    wants = np.split(ref[name], np.cumsum(ref[name + "_frames"])[:-1])
    lengths = np.array([len(x) for x in xs])

    def check(got, j, how):
        want = wants[j]
        atol = min(float32_drift(want, reduction_lengths(cfg, len(xs[j]), len(want))), 1e-4)
        np.testing.assert_allclose(got[: len(want)], want, atol=atol, rtol=0,
                                   err_msg=f"{name} clip {j} {how}")
        assert not got[len(want):].any()

    with jax.default_matmul_precision("highest"):
        if name == "wavlm_base_tiny":
            j = int(np.argmin(lengths))
            got, frames = jax.jit(W.build_model(cfg).apply)({"params": params}, xs[j][None])
            assert int(frames[0]) == len(wants[j]) == W.num_frames(len(xs[j]), cfg)
            check(np.asarray(got)[0], j, "alone")

        batch = np.full((len(xs) + 1, int(lengths.max()) + 3000), 0.7, np.float32)
        for j, x in enumerate(xs):
            batch[j, : len(x)] = x
        model = W.build_model(cfg, attention_block=16)
        got, frames = jax.jit(model.apply)({"params": params}, batch, np.append(lengths, 0))
    got = np.asarray(got)
    np.testing.assert_array_equal(frames, [len(w) for w in wants] + [0])
    for j in range(len(xs)):
        check(got[j], j, "in a padded batch")
    assert np.isfinite(got).all() and not got[-1].any()


def test_bucket_map_is_the_references_for_base_plus(ref):
    lo, hi = (int(v) for v in ref["bucket_offsets"])
    got = W.relative_position_buckets(np.arange(lo, hi + 1), 320, 800)
    np.testing.assert_array_equal(got, ref["base_plus_buckets"])


def test_default_config_is_base_plus_and_shapes_follow_it():
    cfg = W.default_config("wavlmbase+")
    assert (cfg.kind, cfg.family) == ("wavlmbase+", "wavlm")
    assert W.unit_dim(cfg) == 768 and W.hop(cfg) == 320 and W.min_samples(cfg) == 400
    assert W.max_samples(cfg) is None
    assert W.num_frames(16000, cfg) == 49 and W.num_frames(399, cfg) == 0
    np.testing.assert_array_equal(W.num_frames(np.array([399, 400, 16000]), cfg), [0, 1, 49])
    shapes = jax.eval_shape(W.build_model(cfg).init, jax.random.key(0),
                            jnp.zeros((1, 400)))["params"]
    flat = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(shapes).items()}
    assert flat["encoder/layers_0/self_attn/relative_attention_bias/embedding"] == (320, 12)
    assert "relative_attention_bias" not in str([k for k in flat if "layers_1/" in k])
    assert flat["encoder/layers_11/self_attn/grep_linear/kernel"] == (64, 8)
    assert flat["encoder/layers_11/self_attn/grep_a"] == (1, 12, 1, 1)
    assert flat["encoder/pos_conv_0/kernel_v"] == (128, 48, 768)
    n = sum(int(np.prod(s)) for s in flat.values())
    # the reference's WavLM(WavLMConfig(Base+'s cfg)) counted in torch, without mask_emb
    assert n == 94_381_168, n


def test_sniff_tells_wavlm_from_other_checkpoints():
    for name in MODELS:
        assert CW.sniff(torch_pickle.load(os.path.join(FIX, name + ".pt")))
    assert not CW.sniff(torch_pickle.load(os.path.join(CE_FIX, "contentvec_tiny.pt")))
    assert not CW.sniff(torch_pickle.load(os.path.join(CE_FIX, "hubert_soft_tiny.pt")))
    assert not CW.sniff({"cfg": {"encoder_embed_dim": 64}, "model": {"enc_p.x": np.zeros(1)}})
    assert not CW.sniff([1, 2])


def _base_obj():
    return torch_pickle.load(os.path.join(FIX, "wavlm_base_tiny.pt"))


@pytest.mark.parametrize("change, message", [
    ({"extractor_mode": "group"}, "extractor_mode 'group'; expected 'default' or 'layer_norm'"),
    ({"activation_fn": "swish"}, "activation_fn 'swish' is not one WavLM supports"),
    ({"encoder_attention_heads": 5}, "encoder_embed_dim 64 is not divisible by 5 attention"),
    ({"encoder_layers": "two"}, "cfg field encoder_layers is 'two'; expected an integer"),
    ({"conv_feature_layers": "__import__('os')"}, "cannot read conv_feature_layers"),
    ({"encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64},
     "its tensors do not fit the WavLM its cfg describes (2 layers of width 32"),
    ({"num_buckets": 16}, "its tensors do not fit"),
    ({"max_distance": 8}, "have no logarithmic range"),
])
def test_bad_configs_get_one_sentence(change, message):
    obj = _base_obj()
    obj["cfg"].update(change)
    with pytest.raises(ContentEncoderFileError) as e:
        CW.import_checkpoint(obj, "x.pt")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_and_unexpected_tensors_are_refused():
    obj = _base_obj()
    del obj["model"]["encoder.layers.1.self_attn.grep_a"]
    with pytest.raises(CW.WavLMFileError, match="missing .*layers_1/self_attn/grep_a"):
        CW.import_checkpoint(obj, "x.pt")
    obj = _base_obj()
    obj["model"]["final_proj.weight"] = np.zeros((4, 64), np.float32)
    with pytest.raises(CW.WavLMFileError, match="unexpected .*final_proj.weight"):
        CW.import_checkpoint(obj, "x.pt")
    with pytest.raises(CW.WavLMFileError, match="gives wavlmbase\\+ units, not vec768l12"):
        CW.import_checkpoint(_base_obj(), "x.pt", "vec768l12")


def test_public_api_imports_loads_and_initialises_wavlm(ref, tmp_path, capsys):
    """``svcjax import-encoder --kind wavlmbase+``, ``svcjax.load_content_encoder`` (file and
    imported directory) and ``svcjax.init_content_encoder('wavlmbase+')``."""
    import svcjax
    from svcjax.cli import main

    src = os.path.join(FIX, "wavlm_base_tiny.pt")
    out = str(tmp_path / "wavlm")
    assert main(["import-encoder", src, out, "--kind", "wavlmbase+"]) == 0
    assert "kind wavlmbase+" in capsys.readouterr().out
    from_file = svcjax.load_content_encoder(src, kind="wavlmbase+")
    enc = svcjax.load_content_encoder(out)
    assert (enc.kind.name, enc.family, enc.dim, enc.hop) == ("wavlmbase+", "wavlm", 64, 320)
    assert enc.config.to_dict() == {**from_file.config.to_dict(), "source": "wavlm_base_tiny.pt"}
    jax.tree.map(np.testing.assert_array_equal, enc.params, from_file.params)
    with jax.default_matmul_precision("highest"):
        units, frames = enc.encode(clips(ref))   # a padded batch of three clips
    want = np.split(ref["wavlm_base_tiny"], np.cumsum(ref["wavlm_base_tiny_frames"])[:-1])
    np.testing.assert_array_equal(frames, [len(w) for w in want])
    for j, w in enumerate(want):
        np.testing.assert_allclose(units[j, : len(w)], w, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="wavlm-family checkpoint: it gives wavlmbase\\+ units, "
                                         "not vec768l12"):
        svcjax.load_content_encoder(src, kind="vec768l12")
    with pytest.raises(ValueError, match="hubert-family checkpoint: .* not wavlmbase\\+ "
                                         "\\(which needs Microsoft's WavLM-Base\\+.pt\\)"):
        svcjax.load_content_encoder(os.path.join(CE_FIX, "contentvec_tiny.pt"), kind="wavlmbase+")

    cfg = W.default_config("wavlmbase+", **{k: v for k, v in from_file.config.items()
                                            if k not in ("kind", "family", "source")})
    rand = svcjax.init_content_encoder("wavlmbase+", config=cfg)
    assert not rand.pretrained and "RANDOM" in repr(rand) and rand.dim == 64
    shapes = lambda p: jax.tree.map(np.shape, p)  # noqa: E731
    assert shapes(rand.params) == shapes(enc.params)


def test_without_relative_positions_it_is_hubert():
    """WavLMConfig's own defaults (no relative positions, no gate; default extractor, post-LN,
    GELU) make fairseq's HuBERT network: on the same parameters, svcjax's WavLM and its HuBERT
    port give the same units (the only WavLM branch the reference fixtures do not reach)."""
    from svcjax.models import content_encoder as ce

    conv = [[8, 10, 5]] + [[8, 3, 2]] * 4 + [[8, 2, 2]] * 2
    cfg = W.default_config("wavlmbase+", conv_layers=conv, embed_dim=16, ffn_dim=32,
                           num_heads=2, num_layers=1, conv_pos=8, conv_pos_groups=4,
                           relative_position_embedding=False, gru_rel_pos=False)
    wavlm = W.build_model(cfg)
    hubert = ce.Hubert(conv_layers=tuple(map(tuple, conv)), embed_dim=16, ffn_dim=32,
                       num_heads=2, num_layers=1, conv_pos=8, conv_pos_groups=4)
    shapes = jax.eval_shape(wavlm.init, jax.random.key(0), jnp.zeros((1, 400)))["params"]
    assert shapes == jax.eval_shape(hubert.init, jax.random.key(0), jnp.zeros((1, 400)))["params"]
    rng = np.random.default_rng(1)   # N(0, 0.3) weights, norm scales and gains near 1
    params = jax.tree_util.tree_map_with_path(
        lambda path, s: rng.standard_normal(s.shape).astype(np.float32) * 0.3
        + (path[-1].key in ("scale", "kernel_g")), shapes)
    wav = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    lengths = np.array([4000, 2500])
    with jax.default_matmul_precision("highest"):
        a, fa = jax.jit(wavlm.apply)({"params": params}, wav, lengths)
        b, fb = jax.jit(hubert.apply)({"params": params}, wav, lengths)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
