"""Reference config.json -> ConfigDict, and checkpoint/config mismatches in plain words."""

import json
import os

import numpy as np
import pytest

from configs import sovits_44k
from svcjax.interop import sovits as conv
from svcjax.interop import torch_pickle

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                   "sovits")
REF = os.environ.get("SVCJAX_REF") or os.path.join(os.path.dirname(os.path.dirname(FIX)), "..",
                                                  ".ref", "so-vits-svc")


def _load(case):
    with open(os.path.join(FIX, case, "config.json")) as f:
        cfg_json = json.load(f)
    sd = conv.read_state_dict(os.path.join(FIX, case, "G_1.pth"))
    return cfg_json, sd


def _reference_part(section, reference):
    """The fields of a config section that the reference's own section has."""
    d = section.copy_and_resolve_references().to_dict()
    return {k: d[k] for k in reference.keys() if k in d}


def test_config_file_matches_reference_loader():
    # The fixtures' configs are the reference template with a shrunk model section.
    cfg = conv.config_from_reference(os.path.join(FIX, "template", "config.json"))
    mine = sovits_44k.get_config()
    assert cfg.train.segment_size == 8 * 512  # the fixtures decode 8-frame segments
    cfg.train.segment_size = mine.train.segment_size
    # configs/sovits_44k.py adds svcjax's trainer fields to the reference's sections
    assert cfg.train.to_dict() == _reference_part(mine.train, cfg.train)
    assert cfg.data.to_dict() == _reference_part(mine.data, cfg.data)
    assert set(cfg.model.keys()) == set(mine.model.keys())
    assert sovits_44k.get_config("variant=test").model.keys() == mine.model.keys()


@pytest.mark.skipif(not os.path.isdir(os.path.join(REF, "configs_template")),
                    reason="reference checkout not found (set SVCJAX_REF)")
@pytest.mark.parametrize("variant,name", [("full", "config_template.json"),
                                          ("tiny", "config_tiny_template.json")])
def test_config_variants_reproduce_reference_templates(variant, name):
    ref = conv.config_from_reference(os.path.join(REF, "configs_template", name))
    mine = sovits_44k.get_config(f"variant={variant}")
    for section in ("train", "data", "model", "spk"):  # plus svcjax's trainer fields
        assert _reference_part(mine[section], ref[section]) == ref[section].to_dict(), section


def test_mismatch_messages_say_what_differs():
    cfg_json, sd = _load("template")

    def err(**model):
        cj = json.loads(json.dumps(cfg_json))
        cj["model"].update(model)
        with pytest.raises(conv.CheckpointMismatchError) as e:
            conv.sovits_params(conv.config_from_reference(cj), sd, what="G_1.pth")
        return str(e.value)

    msg = err(vol_embedding=True, n_speakers=200, filter_channels=768)
    for sentence in ("config vol_embedding=true but checkpoint has no emb_vol.*",
                     "n_speakers 200 in config, emb_g has 3 rows",
                     "filter_channels: config 768, checkpoint 24",
                     "missing (2): emb_vol/bias, emb_vol/kernel",
                     "wrong shape"):
        assert sentence in msg
    msg = err(use_automatic_f0_prediction=False, n_heads=4, upsample_initial_channel=512)
    for sentence in ("checkpoint has f0_decoder.* but config use_automatic_f0_prediction=false",
                     "n_heads: config 4, checkpoint 2",
                     "upsample_initial_channel: config 512, checkpoint 32",
                     "unexpected"):
        assert sentence in msg

    tiny_json, tiny_sd = _load("tiny")
    with pytest.raises(conv.CheckpointMismatchError) as e:
        conv.sovits_params(conv.config_from_reference(cfg_json), tiny_sd)
    msg = str(e.value)
    for s in ("checkpoint has emb_vol.* but config vol_embedding=false",
              "checkpoint has flow.wn.* but config flow_share_parameter=false",
              "checkpoint has depthwise-separable WaveNet convs",
              "n_layers: config 6, checkpoint 3"):
        assert s in msg
    cj = json.loads(json.dumps(tiny_json))
    cj["spk"]["soprano"] = 7
    with pytest.raises(conv.CheckpointMismatchError, match=r"spk ids \{'soprano': 7\} are "
                                                            r"outside the checkpoint's 3 speakers"):
        conv.sovits_params(conv.config_from_reference(cj), tiny_sd)


def test_shared_flow_copies_are_checked():
    cfg_json, sd = _load("tiny")
    assert any(k.startswith("flow.flows.2.enc.") for k in sd)  # the reference repeats them
    params = conv.sovits_params(conv.config_from_reference(cfg_json), sd)
    assert "wn" in params["flow"] and "enc" not in params["flow"]["flows_2"]
    sd = dict(sd)
    k = "flow.flows.4.enc.res_skip_layers.0.bias"
    sd[k] = sd[k] + 1
    with pytest.raises(conv.CheckpointMismatchError, match="differ from flow.wn"):
        conv.sovits_params(conv.config_from_reference(cfg_json), sd)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint .*nope.pth does not exist"):
        conv.read_state_dict(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the generator checkpoint: .*junk.pth: not a PyTorch checkpoint"):
        conv.read_state_dict(junk)
    cfg = tmp_path / "config.json"
    cfg.write_text('{"train": {}, "data": {}}')
    with pytest.raises(ValueError, match=r"config.json lacks section\(s\) model"):
        conv.config_from_reference(cfg)
    cfg.write_text("{oops")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        conv.config_from_reference(cfg)


def test_fp16_checkpoint_reads_as_float32():
    raw = torch_pickle.load(os.path.join(FIX, "tiny", "G_1_release_half.pth"))["model"]
    assert raw["emb_g.weight"].dtype == np.float16 and not any(k.startswith("enc_q") for k in raw)
    sd = conv.read_state_dict(os.path.join(FIX, "tiny", "G_1_release_half.pth"))
    assert sd["emb_g.weight"].dtype == np.float32
    np.testing.assert_array_equal(sd["emb_g.weight"], raw["emb_g.weight"].astype(np.float32))
