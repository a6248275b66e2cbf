"""Content-encoder import: fairseq / Hugging Face / HuBERT-Soft files -> Flax, against PyTorch.

The committed fixtures (tests/fixtures/content_encoder/, made by make_content_encoder.py) are
HuBERT-base-structured models with shrunk widths: the same random weights as a transformers
HubertModel and in fairseq's ContentVec layout, and the reference's own HuBERT-Soft.
"""

import argparse
import collections
import os

import numpy as np
import pytest

from svcjax.cli import main as cli_main
from svcjax.interop import content_encoder as cc
from svcjax.interop import torch_pickle
from svcjax.models import content_encoder as ce
from svcjax.runtime.units import ContentEncoder, load_content_encoder

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "content_encoder")
FAIRSEQ = os.path.join(FIX, "contentvec_tiny.pt")
HF_DIR = os.path.join(FIX, "hf_tiny")
SOFT = os.path.join(FIX, "hubert_soft_tiny.pt")
TOL = 1e-4


def reference():
    ref = np.load(os.path.join(FIX, "reference.npz"))
    clips = np.split(ref["wav"], np.cumsum(ref["wav_lengths"])[:-1])
    split = lambda key, frames: np.split(ref[key], np.cumsum(ref[frames])[:-1])  # noqa: E731
    return clips, {"h9": split("h9", "frames"), "h12": split("h12", "frames"),
                   "vec256l9": split("vec256l9", "frames"), "soft": split("soft", "soft_frames")}


CASES = [  # file, kind, reference output
    (FAIRSEQ, "vec768l12", "h12"),
    (FAIRSEQ, "vec256l9", "vec256l9"),
    (os.path.join(HF_DIR, "model.safetensors"), "vec768l12", "h12"),
    (SOFT, "hubertsoft", "soft"),
]


@pytest.mark.parametrize("path,kind,key", CASES, ids=["fairseq-vec768l12", "fairseq-vec256l9",
                                                      "hf-vec768l12", "soft-hubertsoft"])
def test_fixture_parity(path, kind, key):
    """The three real clips as one padded batch match PyTorch (each clip alone) within 1e-4."""
    clips, outs = reference()
    params, config = cc.import_encoder(path, kind, num_heads=4)
    enc = ContentEncoder(params, config)
    assert enc.dim == outs[key][0].shape[1]
    batch, frames = enc.encode(clips)
    for j, want in enumerate(outs[key]):
        assert frames[j] == len(want)
        np.testing.assert_allclose(batch[j, : len(want)], want, atol=TOL, rtol=0)
        assert not batch[j, len(want):].any()


def test_fairseq_config_is_read_from_the_pickled_dictconfig():
    layout, sd, meta = cc.read_encoder_file(FAIRSEQ)
    assert layout == "fairseq" and isinstance(torch_pickle.load(FAIRSEQ)["cfg"], torch_pickle.Opaque)
    assert meta["encoder_attention_heads"] == 4 and meta["extractor_mode"] == "default"
    assert meta["conv_feature_layers"].startswith("[(16,10,5)]")
    assert meta["layer_norm_first"] is False and meta["final_dim"] == 16
    _, config = cc.import_encoder(FAIRSEQ, "vec256l9")
    assert config.num_heads == 4 and config.num_layers == 12 and config.final_dim == 16
    assert config.conv_layers == [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2


def test_conv_layers_parser_is_safe():
    assert cc.parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        list(ce.BASE_CONV_LAYERS)
    with pytest.raises(cc.ContentEncoderFileError, match="conv_feature_layers"):
        cc.parse_conv_layers("__import__('os').system('true')")


def test_plain_configs():
    ns = argparse.Namespace(encoder_layers=12, nested=argparse.Namespace(a=[1, 2]))
    assert cc.plain_value(ns) == {"encoder_layers": 12, "nested": {"a": [1, 2]}}
    assert cc.plain_value({"model": {"x": (1, 2)}}) == {"model": {"x": [1, 2]}}


def test_cli_import_and_model_dir(tmp_path, capsys):
    out = tmp_path / "vec"
    assert cli_main(["import-encoder", FAIRSEQ, "--kind", "vec256l9", str(out)]) == 0
    assert "12 layers of width 32" in capsys.readouterr().out
    clips, outs = reference()
    enc = load_content_encoder(out)  # the kind recorded at import
    assert enc.kind.name == "vec256l9" and enc.pretrained
    np.testing.assert_allclose(enc(clips[0])[0], outs["vec256l9"][0], atol=TOL, rtol=0)
    enc12 = load_content_encoder(out, kind="vec768l12")  # one import serves both ContentVec kinds
    np.testing.assert_allclose(enc12(clips[0])[0], outs["h12"][0], atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="cannot compute hubertsoft"):
        load_content_encoder(out, kind="hubertsoft")
    # an existing directory is kept unless --overwrite
    assert cli_main(["import-encoder", FAIRSEQ, str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert os.path.isdir(out / "params")


def test_cli_refuses_other_files_in_one_line(tmp_path, capsys):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(b"\x00" * 64)
    assert cli_main(["import-encoder", str(bad), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "noise.pt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --- files of other kinds: one clear sentence ------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _save(path, obj):
    import torch
    torch.save(obj, path)
    return str(path)


def test_wrong_files(tmp_path, torch):
    g = _save(tmp_path / "G_800.pth", {"model": {"enc_p.pre.weight": torch.zeros(2, 2),
                                                 "emb_g.weight": torch.zeros(3, 4)},
                                       "iteration": 1, "optimizer": {}, "learning_rate": 1e-4})
    with pytest.raises(cc.ContentEncoderFileError, match=r"G_800.pth is a So-VITS-SVC generator.*"
                       r"expected a ContentVec/HuBERT fairseq checkpoint"):
        cc.import_encoder(g)
    crepe = _save(tmp_path / "full.pth", collections.OrderedDict(
        [("conv1.weight", torch.zeros(4, 1, 8, 1)), ("conv1_BN.weight", torch.zeros(4)),
         ("classifier.weight", torch.zeros(360, 8))]))
    with pytest.raises(cc.ContentEncoderFileError, match="CREPE pitch-tracker"):
        cc.import_encoder(crepe)
    with pytest.raises(cc.ContentEncoderFileError, match="HuBERT-Soft checkpoint.*--kind hubertsoft"):
        cc.import_encoder(SOFT, "vec768l12", num_heads=4)
    with pytest.raises(cc.ContentEncoderFileError, match="hubertsoft needs bshall"):
        cc.import_encoder(FAIRSEQ, "hubertsoft")
    with pytest.raises(cc.ContentEncoderFileError, match="final_proj, and a Hugging Face"):
        cc.import_encoder(HF_DIR, "vec256l9")
    with pytest.raises(FileNotFoundError):
        cc.import_encoder(tmp_path / "missing.pt")


def _fairseq_variant(tmp_path, name, *, model_cfg=None, drop=(), extra=None, args=None, cfg="dict"):
    import torch
    obj = torch_pickle.load(FAIRSEQ)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in obj["model"].items() if k not in drop}
    sd.update(extra or {})
    meta = cc._fairseq_meta(obj)
    meta.update(model_cfg or {})
    out = {"model": sd, "optimizer_history": []}
    if cfg == "dict":
        out.update(cfg={"model": meta, "task": {"sample_rate": 16000}}, args=None)
    else:  # legacy fairseq: everything in one argparse Namespace
        out.update(cfg=None, args=argparse.Namespace(**meta, **(args or {})))
    return _save(tmp_path / name, out)


def test_fairseq_config_variants(tmp_path, torch):
    """cfg as a plain dict (recent fairseq) and args as a Namespace (legacy) import alike."""
    want, _ = cc.import_encoder(FAIRSEQ, "vec256l9")
    for variant in ("dict", "namespace"):
        params, config = cc.import_encoder(_fairseq_variant(tmp_path, f"{variant}.pt", cfg=variant),
                                           "vec256l9")
        assert config.num_heads == 4
        np.testing.assert_array_equal(params["final_proj"]["kernel"], want["final_proj"]["kernel"])


def test_large_layout_is_refused(tmp_path, torch):
    """HuBERT-large's structure (pre-LN, layer-norm conv extractor) is named, not mis-loaded."""
    extra = {f"feature_extractor.conv_layers.{i}.2.1.weight": torch.ones(16) for i in range(7)}
    path = _fairseq_variant(tmp_path, "large.pt", extra=extra, drop=(
        "feature_extractor.conv_layers.0.2.weight", "feature_extractor.conv_layers.0.2.bias"),
        model_cfg={"layer_norm_first": True, "extractor_mode": "layer_norm"})
    with pytest.raises(cc.ContentEncoderFileError,
                       match=r"large.pt: found a model with 12 layers, width 32, layer-norm conv "
                             r"feature extractor, pre-LN layers.*vec768l12 expects the HuBERT-base"):
        cc.import_encoder(path, "vec768l12")


def test_too_few_layers_and_mismatched_tensors(tmp_path, torch):
    drop = [k for k in torch_pickle.load(FAIRSEQ)["model"] if k.startswith(
        ("encoder.layers.9.", "encoder.layers.10.", "encoder.layers.11."))]
    path = _fairseq_variant(tmp_path, "l9.pt", drop=drop, model_cfg={"encoder_layers": 9})
    with pytest.raises(cc.ContentEncoderFileError, match="found 9 transformer layers; vec768l12 uses"):
        cc.import_encoder(path, "vec768l12")
    params, config = cc.import_encoder(path, "vec256l9")  # 9 layers are enough for vec256l9
    assert config.num_layers == 9
    path = _fairseq_variant(tmp_path, "bad.pt", extra={
        "encoder.layers.0.fc2.weight": torch.zeros(32, 65)})
    with pytest.raises(ValueError, match=r"wrong shape \(1\): encoder.layers.0.fc2.weight"):
        cc.import_encoder(path, "vec768l12")


def test_soft_without_prefix_and_under_hubert_key(tmp_path, torch):
    sd = torch_pickle.load(SOFT)
    plain = {k[len("module."):]: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    want, _ = cc.import_encoder(SOFT, num_heads=4)
    for name, obj in (("plain.pt", plain), ("wrapped.pt", {"hubert": plain, "step": 3})):
        params, config = cc.import_encoder(_save(tmp_path / name, obj), num_heads=4)
        assert config.kind == "hubertsoft" and config.layout == "hubert_soft"
        np.testing.assert_array_equal(params["encoder"]["layers_3"]["self_attn"]["k_proj"]["kernel"],
                                      want["encoder"]["layers_3"]["self_attn"]["k_proj"]["kernel"])


# --- live parity against transformers (when installed) --------------------------------------

def _hf_hidden_states(model, clips):
    import torch
    with torch.no_grad():
        return [[h[0].numpy() for h in model(torch.from_numpy(c)[None],
                                             output_hidden_states=True).hidden_states]
                for c in clips]


def _hf_model(**kw):
    import torch
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(7)
    model = transformers.HubertModel(transformers.HubertConfig(**kw)).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # make every norm and bias matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
    return model


def _legacy_hf_names(sd):
    """Older transformers (and the hub's pytorch_model.bin files) name weight norm weight_g/_v."""
    return collections.OrderedDict(
        (k.replace("parametrizations.weight.original0", "weight_g")
          .replace("parametrizations.weight.original1", "weight_v"), v) for k, v in sd.items())


def test_live_hf_parity_every_layer(tmp_path, torch):
    """A transformers HubertModel saved as pytorch_model.bin: all 13 hidden states within 1e-4."""
    import jax

    model = _hf_model(hidden_size=48, num_hidden_layers=12, num_attention_heads=3,
                      intermediate_size=80, conv_dim=(24,) * 7)
    path = _save(tmp_path / "pytorch_model.bin", _legacy_hf_names(model.state_dict()))
    clip = reference()[0][2]
    params, config = cc.import_encoder(path, "vec768l12", num_heads=3)
    net = ce.build_model(config)
    got, _ = jax.jit(lambda p, x: net.apply({"params": p}, x, hidden_states=True))(
        params, clip[None])
    want = _hf_hidden_states(model, [clip])[0]
    assert len(got) == len(want) == 13
    for layer, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g)[0], w, atol=TOL, rtol=0,
                                   err_msg=f"hidden state {layer}")


def test_live_hf_large_layout_is_refused(tmp_path, torch):
    model = _hf_model(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, conv_dim=(16,) * 7, do_stable_layer_norm=True,
                      feat_extract_norm="layer", conv_bias=True)
    model.save_pretrained(tmp_path / "large")
    with pytest.raises(cc.ContentEncoderFileError, match="layer-norm conv feature extractor, conv "
                       "bias, pre-LN layers"):
        cc.import_encoder(tmp_path / "large", "vec768l12")


@pytest.mark.slow
def test_live_hf_full_size_parity(tmp_path, torch):
    """Full-size HuBERT-base (95 M parameters, random weights): layers 9 and 12 within 1e-4."""
    model = _hf_model()
    model.save_pretrained(tmp_path / "base")
    clips, _ = reference()
    want = _hf_hidden_states(model, clips[:1])[0]
    params, config = cc.import_encoder(tmp_path / "base", "vec768l12")
    assert config.num_heads == 12 and config.embed_dim == 768
    enc = ContentEncoder(params, config)
    np.testing.assert_allclose(enc(clips[0])[0], want[12], atol=TOL, rtol=0)
