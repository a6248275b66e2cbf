"""Import So-VITS-SVC 4.1 generator checkpoints (``G_*.pth`` + ``config.json``).

    svcjax import-sovits G_800.pth config.json models/alto     # -> an svcjax model directory

Reads full training checkpoints (with the posterior encoder ``enc_q``), the reference's
compressed release files (``compress_model.py``: no ``enc_q``, optionally fp16) and fp16 /
bf16 weights (converted to float32), without PyTorch. The config builds the same ConfigDict
as ``configs/sovits_44k.py`` (sections ``train``, ``data``, ``model``, ``spk``); missing model
fields of older configs take ``SynthesizerTrn``'s defaults.

When a checkpoint does not fit its config, the error says what differs in the config's terms
("checkpoint has emb_vol.* but config vol_embedding=false", "n_speakers 200 in config, emb_g has
5 rows", "filter_channels: config 768, checkpoint 512") and then lists every missing,
unexpected and mis-shaped tensor.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Mapping

import ml_collections
import numpy as np

from svcjax.interop import torch_params, torch_pickle
from svcjax.interop.torch_params import CheckpointMismatchError

__all__ = ["config_from_reference", "read_state_dict", "config_differences", "sovits_params",
           "decoder_buffers", "shared_flow_rename",
           "load_sovits_checkpoint", "import_sovits", "model_dir_config",
           "CheckpointMismatchError", "KIND"]

KIND = "sovits"
SECTIONS = ("train", "data", "model", "spk")
_REQUIRED_MODEL = ("inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers",
                   "kernel_size", "p_dropout", "resblock", "resblock_kernel_sizes",
                   "resblock_dilation_sizes", "upsample_rates", "upsample_initial_channel",
                   "upsample_kernel_sizes", "gin_channels", "ssl_dim", "n_speakers")
_REQUIRED_DATA = ("sampling_rate", "filter_length", "hop_length")


# --------------------------------------------------------------------------------------------
# config

def config_from_reference(src: str | os.PathLike | Mapping) -> ml_collections.ConfigDict:
    """A reference ``config.json`` (path or parsed dict) -> ConfigDict(train, data, model, spk)."""
    from svcjax.models.synthesizer import MODEL_DEFAULTS

    where = "config"
    if not isinstance(src, Mapping):
        where = os.fspath(src)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"config {where} does not exist")
        try:
            with open(where) as f:
                src = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"config {where} is not valid JSON: {e}") from None
    src = copy.deepcopy(dict(src))
    missing = [s for s in ("train", "data", "model") if s not in src]
    if missing:
        raise ValueError(f"{where} lacks section(s) {', '.join(missing)}; expected a "
                         "So-VITS-SVC config.json with train, data, model and spk")
    lack = [f"model.{k}" for k in _REQUIRED_MODEL if k not in src["model"]]
    lack += [f"data.{k}" for k in _REQUIRED_DATA if k not in src["data"]]
    lack += ["train.segment_size"] if "segment_size" not in src["train"] else []
    if lack:
        raise ValueError(f"{where} lacks {', '.join(lack)}")
    model = dict(src["model"])
    for k, v in MODEL_DEFAULTS.items():
        model.setdefault(k, v)
    model["resblock"] = str(model["resblock"])
    spk = {str(k): int(v) for k, v in (src.get("spk") or {}).items()}
    # Speaker names are dataset folder names and may contain dots.
    return ml_collections.ConfigDict(dict(train=dict(src["train"]), data=dict(src["data"]),
                                          model=model, spk=spk), allow_dotted_keys=True)


def model_dir_config(config: Any, has_enc_q: bool) -> ml_collections.ConfigDict:
    """The config an svcjax model directory stores: the four sections plus ``kind`` and
    whether the parameters include the posterior encoder (training) ``has_enc_q``."""
    cfg = ml_collections.ConfigDict({s: (config[s].to_dict() if hasattr(config[s], "to_dict")
                                         else dict(config[s])) for s in SECTIONS if s in config},
                                    allow_dotted_keys=True)
    cfg.kind = KIND
    cfg.has_enc_q = bool(has_enc_q)
    return cfg


# --------------------------------------------------------------------------------------------
# checkpoint

def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The generator's tensors of a ``G_*.pth`` (``{'model': ...}``, or a bare state_dict), as
    float32 NumPy arrays. ``module.`` prefixes (DataParallel) are dropped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch_pickle.load(path)
    except torch_pickle.TorchFileError as e:  # names the file and what is wrong with it
        raise torch_pickle.TorchFileError(f"cannot read the generator checkpoint: {e}") from None
    sd = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping) or not any(isinstance(v, np.ndarray) for v in sd.values()):
        from svcjax.interop.content_encoder import describe_object

        raise ValueError(f"{path} is {describe_object(obj)}, not a So-VITS-SVC generator "
                         "checkpoint "
                         "(expected a dict with 'model' mapping tensor names to tensors, as "
                         "train.py saves G_*.pth)")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, np.ndarray):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        out[k] = v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) or \
            v.dtype.name == "bfloat16" else v
    if "emb_g.weight" not in out or "pre.weight" not in out:
        from svcjax.interop.content_encoder import describe_object

        raise ValueError(f"{path} is {describe_object(obj)}, not a So-VITS-SVC generator "
                         "checkpoint "
                         "(no emb_g.weight / pre.weight)")
    return out


def _count(sd, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _has(sd, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


def checkpoint_hparams(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Model hyper-parameters readable from tensor names and shapes."""
    hp: dict[str, Any] = {}
    shape = lambda k: sd[k].shape if k in sd else None  # noqa: E731
    if shape("pre.weight"):
        hp["hidden_channels"], hp["ssl_dim"] = shape("pre.weight")[:2]
    if shape("enc_p.proj.weight"):
        hp["inter_channels"] = shape("enc_p.proj.weight")[0] // 2
    if shape("enc_p.enc_.ffn_layers.0.conv_1.weight"):
        hp["filter_channels"], _, hp["kernel_size"] = shape("enc_p.enc_.ffn_layers.0.conv_1.weight")
    hp["n_layers"] = _count(sd, r"enc_p\.enc_\.attn_layers\.(\d+)\.")
    if shape("enc_p.enc_.attn_layers.0.emb_rel_k") and "hidden_channels" in hp:
        hp["n_heads"] = hp["hidden_channels"] // shape("enc_p.enc_.attn_layers.0.emb_rel_k")[-1]
    if shape("emb_g.weight"):
        hp["n_speakers"], hp["gin_channels"] = shape("emb_g.weight")
    hp["vol_embedding"] = _has(sd, "emb_vol.")
    hp["use_automatic_f0_prediction"] = _has(sd, "f0_decoder.")
    hp["flow_share_parameter"] = _has(sd, "flow.wn.")
    hp["use_transformer_flow"] = any(re.match(r"flow\.(wn|flows\.\d+\.enc)\.self_attn_layers", k)
                                     for k in sd)
    hp["use_depthwise_conv"] = any(re.match(r"(flow|enc_q)\..*in_layers\.\d+\.depth_conv", k)
                                   for k in sd)
    net = "flow.wn" if hp["flow_share_parameter"] else "flow.flows.0.enc"
    if hp["use_transformer_flow"]:
        hp["n_flow_layer"] = _count(sd, r"flow\.flows\.(\d+)\.")
        hp["n_layers_trans_flow"] = _count(sd, re.escape(net) + r"\.self_attn_layers\.(\d+)\.")
    else:
        hp["n_flow_layer"] = _count(sd, re.escape(net) + r"\.in_layers\.(\d+)\.")
    if shape("dec.conv_pre.weight_v"):
        hp["upsample_initial_channel"] = shape("dec.conv_pre.weight_v")[0]
    n_ups = _count(sd, r"dec\.ups\.(\d+)\.")
    hp["upsample_kernel_sizes"] = [shape(f"dec.ups.{i}.weight_v")[2] for i in range(n_ups)
                                   if shape(f"dec.ups.{i}.weight_v")]
    hp["resblock"] = "1" if _has(sd, "dec.resblocks.0.convs1.") else "2"
    n_res = _count(sd, r"dec\.resblocks\.(\d+)\.")
    if n_ups:
        conv = "convs1" if hp["resblock"] == "1" else "convs"
        hp["resblock_kernel_sizes"] = [shape(f"dec.resblocks.{j}.{conv}.0.weight_v")[2]
                                       for j in range(n_res // n_ups)
                                       if shape(f"dec.resblocks.{j}.{conv}.0.weight_v")]
    if shape("enc_q.pre.weight"):
        hp["spec_channels"] = shape("enc_q.pre.weight")[1]
    if _has(sd, "dec."):
        hp["vocoder_name"] = "nsf-snake-hifigan" if _has(sd, "dec.snakes.") else "nsf-hifigan"
    return hp


def _j(x) -> str:
    return json.dumps(x)


def config_differences(config: Any, sd: Mapping[str, np.ndarray]) -> list[str]:
    """What in ``config`` disagrees with the checkpoint ``sd``, one sentence per difference."""
    model = config["model"]
    hp = checkpoint_hparams(sd)
    out = []
    flags = {"vol_embedding": "emb_vol.*", "use_automatic_f0_prediction": "f0_decoder.*",
             "flow_share_parameter": "flow.wn.*",
             "use_depthwise_conv": "depthwise-separable WaveNet convs (in_layers.N.depth_conv)",
             "use_transformer_flow": "a transformer flow (flow ... self_attn_layers)"}
    for name, what in flags.items():
        want, have = bool(model.get(name, False)), hp[name]
        if have and not want:
            out.append(f"checkpoint has {what} but config {name}={_j(want)}")
        elif want and not have:
            out.append(f"config {name}={_j(want)} but checkpoint has no {what}")
    if "vocoder_name" in hp and model.get("vocoder_name", "nsf-hifigan") != hp["vocoder_name"]:
        what = ("snake activations (dec.snakes.*): vocoder_name \"nsf-snake-hifigan\""
                if hp["vocoder_name"] == "nsf-snake-hifigan" else
                "the plain NSF-HiFiGAN decoder (no dec.snakes.*)")
        out.append(f"checkpoint has {what} but config vocoder_name="
                   f"{_j(model.get('vocoder_name'))}")
    if "n_speakers" in hp and int(model["n_speakers"]) != hp["n_speakers"]:
        out.append(f"n_speakers {model['n_speakers']} in config, emb_g has {hp['n_speakers']} rows")
    for name in ("hidden_channels", "ssl_dim", "inter_channels", "filter_channels", "kernel_size",
                 "n_layers", "n_heads", "gin_channels", "upsample_initial_channel", "resblock",
                 "n_flow_layer", "n_layers_trans_flow"):
        if name not in hp or name not in model:
            continue
        if name == "n_layers_trans_flow" and not hp["use_transformer_flow"]:
            continue
        want = model[name] if name == "resblock" else int(model[name])
        want = str(want) if name == "resblock" else want
        if want != hp[name]:
            out.append(f"{name}: config {_j(want)}, checkpoint {_j(hp[name])}")
    for name in ("upsample_kernel_sizes", "resblock_kernel_sizes"):
        want = [int(v) for v in model[name]]
        if hp.get(name) and want != hp[name]:
            out.append(f"{name}: config {want}, checkpoint {hp[name]}")
    if "spec_channels" in hp:
        want = int(config["data"]["filter_length"]) // 2 + 1
        if want != hp["spec_channels"]:
            out.append(f"data.filter_length {config['data']['filter_length']} gives {want} "
                       f"spectrogram bins, enc_q expects {hp['spec_channels']}")
    n = hp.get("n_speakers")
    spk = config.get("spk") if hasattr(config, "get") else None
    if n is not None and spk:
        bad = {k: v for k, v in dict(spk).items() if not 0 <= int(v) < n}
        if bad:
            out.append(f"spk ids {bad} are outside the checkpoint's {n} speakers")
    return out


def shared_flow_rename(sd: Mapping[str, np.ndarray], shared: bool):
    """With ``flow_share_parameter`` the reference's state_dict repeats the shared network under
    every ``flow.flows.N.enc.*``; those copies must equal ``flow.wn.*`` and are dropped."""
    if not shared:
        return None
    rx = re.compile(r"^flow\.flows\.\d+\.enc\.(.*)$")
    bad = []
    for k, v in sd.items():
        m = rx.match(k)
        if m and f"flow.wn.{m.group(1)}" in sd and not np.array_equal(v, sd[f"flow.wn.{m.group(1)}"]):
            bad.append(k)
    if bad:
        raise CheckpointMismatchError(
            f"flow_share_parameter: {len(bad)} tensors under flow.flows.N.enc differ from "
            f"flow.wn (e.g. {bad[0]}); a shared flow network must be identical everywhere")
    return lambda k: None if rx.match(k) and f"flow.wn.{rx.match(k).group(1)}" in sd else k


_SNAKE_FILTER = re.compile(r"^dec\.(.*)\.(upsample\.filter|downsample\.lowpass\.filter)$")


def _snake_filter_check(sd: Mapping[str, np.ndarray]) -> list[str]:
    """The snake decoder's resampling filters are fixed buffers, not parameters: the keys
    ``dec.*.upsample.filter`` / ``dec.*.downsample.lowpass.filter`` the reference saves,
    checked against :data:`svcjax.models.snake.FILTER` (which the model uses) and dropped."""
    from svcjax.models import snake

    keys = [k for k in sd if _SNAKE_FILTER.match(k)]
    bad = [k for k in keys if np.shape(sd[k])[-1:] != snake.FILTER.shape or
           not np.allclose(np.asarray(sd[k], np.float64).reshape(-1), snake.FILTER, rtol=0,
                           atol=1e-6)]
    if bad:
        raise CheckpointMismatchError(
            f"{len(bad)} snake resampling filter(s) differ from the 12-tap Kaiser-sinc "
            f"low-pass of nsf-snake-hifigan (e.g. {bad[0]}); svcjax uses that fixed filter")
    return keys


def decoder_buffers(config: Any, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The non-trainable tensors the reference's state_dict holds beside ``params``' decoder:
    the snake decoder's resampling filters ``(1, 1, 12)`` (none for ``nsf-hifigan``)."""
    from svcjax.models import snake

    if config["model"].get("vocoder_name", "nsf-hifigan") != "nsf-snake-hifigan":
        return {}
    from flax import traverse_util

    out = {}
    for path in traverse_util.flatten_dict(dict(params.get("dec", {}))):
        if path[-2:] == ("act", "alpha"):
            key = "dec." + torch_params.path_to_torch_key(
                path[:-2], ("snakes", "activations", "resblocks"))
            for leaf in ("upsample.filter", "downsample.lowpass.filter"):
                out[f"{key}.{leaf}"] = np.array(snake.FILTER, np.float32).reshape(1, 1, -1)
    return out


def sovits_params(config: Any, sd: Mapping[str, np.ndarray], *,
                  with_posterior: bool | None = None, what: str = "checkpoint") -> dict:
    """Map a reference state_dict onto the Flax parameter tree of ``config``'s model.

    ``with_posterior``: include ``enc_q`` (default: whether the checkpoint has it). Raises
    :class:`CheckpointMismatchError` naming the config differences and every bad tensor.
    """
    from svcjax.models import synthesizer

    has_q = _has(sd, "enc_q.")
    if with_posterior is None:
        with_posterior = has_q
    if with_posterior and not has_q:
        raise CheckpointMismatchError(f"{what} has no enc_q (a compressed release checkpoint?); "
                                      "it can be used for inference only")
    diffs = config_differences(config, sd)
    bad_spk = [d for d in diffs if d.startswith("spk ids")]
    if bad_spk and len(diffs) == len(bad_spk):  # the tensors fit, the speaker map does not
        raise CheckpointMismatchError(f"{what}: {bad_spk[0]}")
    filters = set(_snake_filter_check(sd))
    try:
        model = synthesizer.from_config(config, with_posterior=with_posterior)
        shapes = synthesizer.init_params(model, shapes_only=True)
        flow = shared_flow_rename(sd, bool(config["model"].get("flow_share_parameter", False)))
        return torch_params.state_dict_to_params(
            sd, shapes, rename=lambda k: None if k in filters else (flow(k) if flow else k),
            ignore=() if with_posterior else (r"^enc_q\.",), what=what)
    except (CheckpointMismatchError, ValueError, TypeError) as e:
        if not diffs:
            raise
        head = f"{what} does not match its config:\n  - " + "\n  - ".join(diffs)
        lines = str(e).splitlines()
        detail = lines[1:] if lines and "does not match" in lines[0] else lines
        raise CheckpointMismatchError(head + "\n  tensors:\n" + "\n".join(
            "  " + line for line in detail)) from None


def load_sovits_checkpoint(ckpt: str | os.PathLike, config: str | os.PathLike | Mapping, *,
                           with_posterior: bool | None = None):
    """``(params, model-dir config)`` from a reference checkpoint and its config.json."""
    sd = read_state_dict(ckpt)
    cfg = config_from_reference(config)
    what = f"checkpoint {os.fspath(ckpt)}"
    if not isinstance(config, Mapping):
        what += f" (config {os.fspath(config)})"
    params = sovits_params(cfg, sd, with_posterior=with_posterior, what=what)
    return params, model_dir_config(cfg, has_enc_q="enc_q" in params)


def import_sovits(ckpt, config, outdir, *, overwrite: bool = False,
                  with_posterior: bool | None = None) -> str:
    """Write an svcjax model directory (config.json + Orbax params) for a reference checkpoint."""
    from svcjax.train import checkpoint

    outdir = os.fspath(outdir)
    from svcjax.files import refuse_existing

    refuse_existing(outdir, overwrite)
    params, cfg = load_sovits_checkpoint(ckpt, config, with_posterior=with_posterior)
    cfg.source = os.path.abspath(os.fspath(ckpt))
    return checkpoint.save_model_dir(outdir, params, cfg, overwrite=overwrite)
