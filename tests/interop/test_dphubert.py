"""dphubert: the pruned HuBERT (per-layer sizes from the checkpoint's config) against the
reference's own DPHubert class.

The committed fixtures (tests/fixtures/dphubert/, made by make_dphubert.py with the reference's
vencoder/dphubert code) are two shrunk checkpoints in DPHuBERT's file format: one pruned by the
reference's own ``prune()`` from HuBERT-base's structure (heads, FFN units and conv channels
per layer; one attention and one feed-forward removed whole), and one of the other structure
the code supports (layer-norm extractor with conv bias, pre-LN, waveform normalisation, an
``aux`` head). Matmuls run at "highest" precision (tests/conftest.py).
"""

import copy
import os

import jax
import numpy as np
import pytest

import svcjax
from svcjax.cli import main as cli_main
from svcjax.interop import dphubert as cd
from svcjax.interop import torch_pickle
from svcjax.interop.torch_params import CheckpointMismatchError
from svcjax.models import dphubert as dp
from tests.models.test_content_encoder import clips, float32_drift

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "dphubert")
PRUNED = os.path.join(FIX, "dphubert_tiny.pth")
LN = os.path.join(FIX, "dphubert_ln_tiny.pth")
CONTENTVEC = os.path.join(os.path.dirname(__file__), "..", "fixtures", "content_encoder",
                          "contentvec_tiny.pt")
# Units are LayerNorm outputs (RMS ~1; the aux head's a few); float32 sums in another order
# differ by ~1e-6 over these 3-6 layers (float32_drift below); 1e-4 is the bound.
TOL = 1e-4


def reference():
    ref = np.load(os.path.join(FIX, "reference.npz"))
    split = lambda a: np.split(a, np.cumsum(ref["frames"])[:-1])  # noqa: E731
    clips_ = np.split(ref["wav"], np.cumsum(ref["wav_lengths"])[:-1])
    return clips_, {"dphubert_tiny": split(ref["dphubert_tiny_units"]),
                    "dphubert_ln_tiny": split(ref["dphubert_ln_tiny_units"])}


@pytest.mark.parametrize("path", [PRUNED, LN],
                         ids=["pruned-group-norm-post-ln", "layer-norm-pre-ln"])
def test_fixture_parity_through_the_public_api(path):
    """Each file's family is recognised; a padded batch matches each clip alone within 1e-4."""
    clips_, outs = reference()
    want = outs[os.path.basename(path)[:-4]]
    enc = svcjax.load_content_encoder(path)
    assert enc.kind.name == "dphubert" and enc.family == "dphubert"
    assert enc.dim == want[0].shape[1] and enc.hop == 320
    batch, frames = enc.encode(clips_)
    for j, w in enumerate(want):
        assert frames[j] == len(w)
        np.testing.assert_allclose(batch[j, : len(w)], w, atol=TOL, rtol=0)
        assert not batch[j, len(w):].any()


def test_sizes_come_from_the_config():
    params, config = cd.import_checkpoint(torch_pickle.load(PRUNED), PRUNED)
    cfg = torch_pickle.load(PRUNED)["config"]
    assert config.conv_layers == [list(c) for c in cfg["extractor_conv_layer_config"]]
    assert config.use_attention[2] is False and config.use_feed_forward[4] is False
    layers = params["encoder"]["transformer"]
    assert "attention" not in layers["layers_2"] and "feed_forward" not in layers["layers_4"]
    for i, (h, f) in enumerate(zip(config.num_heads, config.ffn_dims)):
        if config.use_attention[i]:
            assert layers[f"layers_{i}"]["attention"]["q_proj"]["kernel"].shape == (32, 8 * h)
        if config.use_feed_forward[i]:
            assert layers[f"layers_{i}"]["feed_forward"]["intermediate_dense"]["kernel"].shape \
                == (32, f)
    assert params["feature_extractor"]["dummy_weight"].shape == (config.conv_layers[-1][0],)
    _, ln = cd.import_checkpoint(torch_pickle.load(LN), LN)
    assert (ln.extractor_mode, ln.conv_bias, ln.layer_norm_first, ln.normalize_waveform,
            ln.aux_dim) == ("layer_norm", True, True, True, 12)


@pytest.mark.parametrize("path", [PRUNED, LN], ids=["pruned", "layer-norm"])
def test_padding_content_never_reaches_a_valid_frame(path):
    """Loud garbage or zeros past each length: every layer's valid frames are the same (with
    zeros a padded batch equals each clip alone: the parity test). The GroupNorm and waveform
    normalisation take valid samples only and masked keys get exactly zero weight; the sums
    then differ only in order, within float32 rounding of the path's sums."""
    params, config = cd.import_checkpoint(torch_pickle.load(path), path)
    net = dp.build_model(config)
    run = jax.jit(lambda p, w, n: net.apply({"params": p}, w, n, hidden_states=True))
    xs = clips()
    lengths = np.array([len(x) for x in xs])
    outs = []
    for fill in (0.0, 0.7):
        batch = np.full((3, 20000), fill, np.float32)
        for j, x in enumerate(xs):
            batch[j, : len(x)] = x
        outs.append(run(params, batch, lengths))
    (clean, frames), (dirty, frames2) = outs
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(frames, dp.num_frames(lengths, config))
    convs = [prev[0] * cur[1]  # input channels x taps
             for prev, cur in zip([[1]] + config.conv_layers[:-1], config.conv_layers)]
    for layer, (a, b) in enumerate(zip(clean, dirty)):
        for j, n in enumerate(np.asarray(frames)):
            want = np.asarray(a)[j, :n]
            # sums: waveform statistics, the conv taps, the GroupNorm over time, projection,
            # position conv (128 taps x 2 channels), per layer norms, q/k/v, attention, FFN
            sums = ([int(lengths[j]), int(lengths[j]) // 5] + convs + [24, 256]
                    + layer * [32, 32, 32, int(n), 32, 32, 64])
            np.testing.assert_allclose(np.asarray(b)[j, :n], want,
                                       atol=float32_drift(want, sums), rtol=0,
                                       err_msg=f"clip {j} state {layer}")
            assert not np.asarray(b)[j, n:].any()


def test_cli_import_and_kind_checks(tmp_path, capsys):
    out = tmp_path / "dp"
    assert cli_main(["import-encoder", PRUNED, "--kind", "dphubert", str(out)]) == 0
    assert "dphubert" in capsys.readouterr().out
    enc = svcjax.load_content_encoder(out)
    assert enc.kind.name == "dphubert" and enc.pretrained and enc.dim == 32
    want, _ = cd.import_checkpoint(torch_pickle.load(PRUNED), PRUNED)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(enc.params)):
        np.testing.assert_array_equal(np.asarray(b), a)
    with pytest.raises(ValueError, match="imported as dphubert .dphubert family.; it cannot "
                       "compute vec768l12 units"):
        svcjax.load_content_encoder(out, kind="vec768l12")
    for path, kind, why in ((PRUNED, "vec768l12", "dphubert-family checkpoint: it gives dphubert"),
                            (CONTENTVEC, "dphubert", "hubert-family checkpoint")):
        assert cli_main(["import-encoder", path, "--kind", kind, str(tmp_path / kind)]) == 1
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / kind).exists()


def _variant(**config):
    obj = torch_pickle.load(PRUNED)
    obj = {"state_dict": dict(obj["state_dict"]), "config": copy.deepcopy(obj["config"])}
    obj["config"].update(config)
    return obj


@pytest.mark.parametrize("change,message", [
    ({"encoder_remaining_heads": [[0, 1]] * 6}, "is a pruned WavLM .DPWavLM"),
    ({"encoder_prune_attention_heads": True},
     r"still has pruning switched on \(encoder_prune_attention_heads\): it is a training"),
    ({"extractor_mode": "batch_norm"}, "extractor_mode 'batch_norm'; expected 'group_norm'"),
    ({"encoder_num_heads": [4, 3]}, "encoder_num_heads should list one value for each of the 6"),
    ({"encoder_use_attention": [True] * 5}, "encoder_use_attention lists 5 layers"),
    ({"encoder_head_dim": 16}, r"wrong shape .*layers\.0\.attention\.q_proj\.weight"),
    ({"encoder_embed_dim": None}, "unreadable config value"),
])
def test_bad_configs_are_one_sentence(change, message):
    with pytest.raises((cd.DPHubertFileError, CheckpointMismatchError), match=message):
        cd.import_checkpoint(_variant(**change), "DPHuBERT-x.pth")


def test_missing_tensor_is_named_not_left_random():
    obj = _variant()
    del obj["state_dict"]["encoder.transformer.layers.3.final_layer_norm.bias"]
    with pytest.raises(CheckpointMismatchError, match="missing .*layers_3/final_layer_norm/bias"):
        cd.import_checkpoint(obj, "DPHuBERT-x.pth")
    assert not cd.sniff(torch_pickle.load(CONTENTVEC)) and not cd.sniff({"config": {}})


def test_init_content_encoder_and_full_size_config():
    cfg = dp.default_config(conv_layers=[[16, 10, 5]] + [[12, 3, 2]] * 4 + [[8, 2, 2]] * 2,
                            embed_dim=32, num_layers=2, use_attention=[True, False],
                            num_heads=[2, 0], head_dim=8, use_feed_forward=[False, True],
                            ffn_dims=[0, 24])
    enc = svcjax.init_content_encoder("dphubert", config=cfg)
    assert not enc.pretrained and enc.dim == 32 and enc.min_samples == 400
    assert enc(np.zeros(4000, np.float32)).shape == (1, 12, 32)
    full = dp.default_config()
    assert dp.unit_dim(full) == 768 and dp.num_frames(16000, full) == 49
    assert dp.max_samples(full) is None
