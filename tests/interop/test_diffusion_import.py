"""Importing reference diffusion checkpoints: model dirs, the CLI, and clear mismatch errors."""

import os
import pickle
import shutil

import numpy as np
import pytest
import yaml

from svcjax.train import checkpoint
from svcjax.cli import main as cli
from svcjax.interop.diffusion import config_from_yaml, import_checkpoint
from svcjax.interop.torch_params import CheckpointMismatchError
from svcjax.runtime.diffusion import load_diffusion

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "diffusion")
PT = os.path.join(FIX, "model_100.pt")
YAML = os.path.join(FIX, "config.yaml")


def _yaml(tmp_path, name="config.yaml", **model):
    cfg = yaml.safe_load(open(YAML))
    cfg["model"].update(model)
    path = tmp_path / name
    yaml.safe_dump(cfg, open(path, "w"))
    return str(path)


def test_import_config_and_params():
    params, config = import_checkpoint(PT)  # config.yaml beside it
    assert config.kind == "diffusion" and config.global_step == 100
    m = config.model
    assert (m.n_layers, m.n_chans, m.n_hidden, m.n_spk, m.timesteps, m.k_step_max) == (4, 64, 64, 3, 1000, 0)
    assert m.use_pitch_aug and m.max_beta == 0.02 and (m.spec_min, m.spec_max) == (-12.0, 2.0)
    assert config.data.encoder_out_channels == 768 and config.infer.method == "dpm-solver++"
    assert dict(config.spk) == {"alto": 0, "tenor": 1, "bass": 2}
    assert params["denoise_fn"]["residual_layers_3"]["dilated_conv"]["kernel"].shape == (3, 64, 128)
    assert params["spk_embed"]["embedding"].shape == (3, 64)
    assert params["aug_shift_embed"]["kernel"].shape == (1, 64) and "bias" not in params["aug_shift_embed"]


def test_model_dir_roundtrip_and_cli(tmp_path):
    out = tmp_path / "diff"
    assert cli(["import-diffusion", PT, YAML, str(out)]) == 0
    assert checkpoint.is_model_dir(out)
    a = load_diffusion(out)
    b = load_diffusion(PT, YAML)
    rs = np.random.RandomState(0)
    args = (rs.randn(1, 9, 768), 200 + rs.rand(1, 9) * 100, rs.rand(1, 9) * 0.1)
    kw = dict(speaker="tenor", start_mel=-5 + rs.randn(1, 9, 128), k_step=10, method="ddim", speedup=5)
    np.testing.assert_array_equal(a.sample(*args, **kw), b.sample(*args, **kw))
    # config beside the checkpoint, output exists -> clear error, --overwrite replaces
    assert cli(["import-diffusion", PT, str(out)]) == 1
    assert cli(["import-diffusion", PT, str(out), "--overwrite"]) == 0
    with pytest.raises(ValueError, match="drop the config argument"):
        load_diffusion(out, YAML)


@pytest.mark.parametrize("change,message", [
    (dict(n_hidden=128), r"n_hidden: config.yaml says 128, model_100.pt has 64 \(unit_embed.weight \(64, 768\)\)"),
    (dict(n_layers=6), r"n_layers: config.yaml says 6, model_100.pt has 4"),
    (dict(n_chans=512), r"n_chans: config.yaml says 512, model_100.pt has 64"),
    (dict(n_spk=1), r"n_spk: config.yaml says 1, model_100.pt has 3 \(spk_embed.weight \(3, 64\)\)"),
    (dict(use_pitch_aug=False), r"use_pitch_aug: config.yaml says False, model_100.pt has True"),
    (dict(timesteps=500), r"timesteps: config.yaml says 500, model_100.pt has 1000"),
])
def test_mismatch_names_what_differs(tmp_path, change, message):
    with pytest.raises(CheckpointMismatchError, match=message):
        import_checkpoint(PT, _yaml(tmp_path, **change))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="k_step_max=2000 must be in"):
        import_checkpoint(PT, _yaml(tmp_path, k_step_max=2000))
    cfg = yaml.safe_load(open(YAML))
    cfg["data"]["encoder_out_channels"] = 256
    yaml.safe_dump(cfg, open(tmp_path / "c256.yaml", "w"))
    with pytest.raises(CheckpointMismatchError, match="encoder_out_channels: c256.yaml says 256, model_100.pt has 768"):
        import_checkpoint(PT, tmp_path / "c256.yaml")
    with pytest.raises(ValueError, match="missing model.n_layers"):
        config_from_yaml({"data": {"encoder_out_channels": 768}, "model": {"n_chans": 1, "n_hidden": 1, "n_spk": 1}})
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(PT, lone / "model_100.pt")
    with pytest.raises(FileNotFoundError, match="no config.yaml beside"):
        import_checkpoint(lone / "model_100.pt")
    # a SoVITS generator checkpoint is recognised as the wrong kind of file
    import torch
    torch.save({"model": {"emb_g.weight": torch.zeros(2, 3)}, "iteration": 1}, tmp_path / "G_1.pth")
    with pytest.raises(CheckpointMismatchError, match=r"not a So-VITS-SVC diffusion \(Unit2Mel\) checkpoint \(a SoVITS G_\*.pth\?\)"):
        import_checkpoint(tmp_path / "G_1.pth", YAML)
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="junk.pt"):
        import_checkpoint(tmp_path / "junk.pt", YAML)
    assert cli(["import-diffusion", str(tmp_path / "missing.pt"), YAML, str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()


def test_export_state_dict_roundtrip():
    from svcjax.interop import torch_pickle
    from svcjax.interop.diffusion import to_state_dict
    params, config = import_checkpoint(PT)
    ref = torch_pickle.load(PT)["model"]
    sd = to_state_dict(params, config)
    assert sorted(sd) == sorted(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(sd[k], np.asarray(v), err_msg=k)


def test_speaker_names_with_dots_survive_a_model_dir(tmp_path):
    cfg = yaml.safe_load(open(YAML))
    cfg["spk"] = {"miku.v3": 0, "alto": 1, "ナナ": 2}
    yaml.safe_dump(cfg, open(tmp_path / "config.yaml", "w"), allow_unicode=True)
    out = tmp_path / "diff"
    assert cli(["import-diffusion", PT, str(tmp_path / "config.yaml"), str(out)]) == 0
    diff = load_diffusion(out)
    assert diff.speakers == {"miku.v3": 0, "alto": 1, "ナナ": 2}
    w = diff.speaker_weights({"miku.v3": 0.5, "ナナ": 0.5}, 1, 2)
    np.testing.assert_array_equal(w[0, 0], [0.5, 0.0, 0.5])
