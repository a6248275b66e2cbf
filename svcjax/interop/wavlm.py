"""Import WavLM checkpoints (``WavLM-Base+.pt``, So-VITS-SVC's ``wavlmbase+`` encoder).

    svcjax import-encoder WavLM-Base+.pt --kind wavlmbase+ models/wavlmbase+

Microsoft's WavLM files are ``torch.save({'cfg': dict, 'model': state_dict})``: the config a
plain dict of ``WavLMConfig`` fields (``encoder_embed_dim``, ``conv_feature_layers``,
``extractor_mode``, ``layer_norm_first``, ``relative_position_embedding``, ``num_buckets``,
``max_distance``, ``gru_rel_pos``, ``normalize``, ...), the state_dict named after the
reference's ``WavLM`` module. The file is read by svcjax's restricted unpickler (nothing in it
runs). As the reference does, the config starts from ``WavLMConfig``'s defaults and takes the
file's values; the network is built from it and every tensor must fit (the reference loads
the state_dict strictly): the only tensor dropped is the training-time ``mask_emb``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.interop.content_encoder import (ContentEncoderFileError, parse_conv_layers,
                                            plain_value)
from svcjax.interop.torch_params import CheckpointMismatchError, state_dict_to_params
from svcjax.models import wavlm as W

__all__ = ["EXPECTED", "WavLMFileError", "sniff", "import_checkpoint", "read_config"]

EXPECTED = "a WavLM checkpoint (WavLM-Base+.pt: {'cfg': dict, 'model': state_dict})"

# training-only tensors, never needed to compute units
_TRAINING_ONLY = [r"^mask_emb$"]

# WavLMConfig's defaults for the fields that shape the network (the reference's
# vencoder/wavlm/WavLM.py); a checkpoint's cfg overrides them
_DEFAULTS: dict[str, Any] = dict(
    extractor_mode="default",
    encoder_layers=12,
    encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12,
    activation_fn="gelu",
    layer_norm_first=False,
    conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    conv_bias=False,
    normalize=False,
    conv_pos=128,
    conv_pos_groups=16,
    relative_position_embedding=False,
    num_buckets=320,
    max_distance=1280,
    gru_rel_pos=False,
)

# checkpoint cfg field -> svcjax config field
_FIELDS = dict(
    extractor_mode="extractor_mode",
    conv_bias="conv_bias",
    encoder_embed_dim="embed_dim",
    encoder_ffn_embed_dim="ffn_dim",
    encoder_attention_heads="num_heads",
    encoder_layers="num_layers",
    activation_fn="activation_fn",
    layer_norm_first="layer_norm_first",
    normalize="normalize",
    conv_pos="conv_pos",
    conv_pos_groups="conv_pos_groups",
    relative_position_embedding="relative_position_embedding",
    num_buckets="num_buckets",
    max_distance="max_distance",
    gru_rel_pos="gru_rel_pos",
)


class WavLMFileError(ContentEncoderFileError):
    """A WavLM checkpoint whose config or tensors cannot make the network."""


def _config_dict(obj: Any) -> dict | None:
    if not isinstance(obj, Mapping):
        return None
    cfg = plain_value(obj.get("cfg"))
    return cfg if isinstance(cfg, dict) else None


def sniff(obj: Any) -> bool:
    """True for a WavLM checkpoint: ``{'cfg': flat WavLMConfig dict, 'model': state_dict}``.

    fairseq's HuBERT/ContentVec checkpoints also hold ``cfg`` and ``model``, but their config
    is sectioned (``cfg['model']``); WavLM's fields sit at its top level.
    """
    cfg = _config_dict(obj)
    model = obj.get("model") if isinstance(obj, Mapping) else None
    if cfg is None or not isinstance(model, Mapping):
        return False
    keys = [str(k) for k in model]
    looks_like = (any(k.startswith("feature_extractor.conv_layers.") for k in keys)
                  and any(k.startswith("encoder.layers.") for k in keys))
    wavlm_cfg = "encoder_embed_dim" in cfg or "conv_feature_layers" in cfg
    wavlm_tensors = any(".relative_attention_bias." in k or ".grep_linear." in k for k in keys)
    return looks_like and (wavlm_cfg or wavlm_tensors)


def _bool(value: Any, field: str, path: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise WavLMFileError(f"{path}: cfg field {field} is {value!r}; expected true or false")


def _int(value: Any, field: str, path: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or int(value) < minimum:
        raise WavLMFileError(f"{path}: cfg field {field} is {value!r}; expected an integer "
                             f">= {minimum}")
    return int(value)


def read_config(cfg: Mapping[str, Any], path: str, kind: str = "wavlmbase+"
                ) -> ml_collections.ConfigDict:
    """The svcjax config of a checkpoint ``cfg`` (WavLMConfig's defaults, then the file's)."""
    full = dict(_DEFAULTS)
    full.update({k: v for k, v in cfg.items() if k in _DEFAULTS})
    conv = parse_conv_layers(full["conv_feature_layers"])
    if not conv or any(len(c) != 3 or min(c) < 1 for c in conv):
        raise WavLMFileError(f"{path}: conv_feature_layers {full['conv_feature_layers']!r} "
                             "does not list (dim, kernel, stride) layers")
    out = W.default_config(kind)
    out.conv_layers = [list(c) for c in conv]
    for src, dst in _FIELDS.items():
        value = full[src]
        if dst in ("conv_bias", "layer_norm_first", "normalize", "relative_position_embedding",
                   "gru_rel_pos"):
            value = _bool(value, src, path)
        elif dst in ("extractor_mode", "activation_fn"):
            value = str(value)
        else:
            value = _int(value, src, path, minimum=0 if dst == "num_layers" else 1)
        out[dst] = value
    if out.extractor_mode not in ("default", "layer_norm"):
        raise WavLMFileError(f"{path}: extractor_mode {out.extractor_mode!r}; expected "
                             "'default' or 'layer_norm'")
    if out.activation_fn not in W.ACTIVATIONS:
        raise WavLMFileError(f"{path}: activation_fn {out.activation_fn!r} is not one WavLM "
                             f"supports ({', '.join(W.ACTIVATIONS)})")
    if out.embed_dim % out.num_heads:
        raise WavLMFileError(f"{path}: encoder_embed_dim {out.embed_dim} is not divisible by "
                             f"{out.num_heads} attention heads")
    if out.embed_dim % out.conv_pos_groups:
        raise WavLMFileError(f"{path}: encoder_embed_dim {out.embed_dim} is not divisible by "
                             f"conv_pos_groups {out.conv_pos_groups}")
    if out.relative_position_embedding and (
            out.num_buckets < 4 or out.max_distance <= out.num_buckets // 4):
        raise WavLMFileError(
            f"{path}: relative positions with num_buckets {out.num_buckets} and max_distance "
            f"{out.max_distance} have no logarithmic range (need num_buckets >= 4 and "
            "max_distance > num_buckets / 4)")
    return out


def import_checkpoint(obj: Any, path: str, kind: str | None = None
                      ) -> tuple[dict, ml_collections.ConfigDict]:
    """``(params, config)`` of a WavLM checkpoint object (as read by the restricted unpickler)."""
    path = os.fspath(path)
    kind = kind or "wavlmbase+"
    if kind not in W.kinds():
        raise WavLMFileError(f"{path} is a WavLM checkpoint; it gives {', '.join(W.kinds())} "
                             f"units, not {kind}")
    cfg = _config_dict(obj)
    sd = obj.get("model") if isinstance(obj, Mapping) else None
    if cfg is None or not isinstance(sd, Mapping):
        raise WavLMFileError(f"{path} is not a WavLM checkpoint ({{'cfg': dict, 'model': "
                             "state_dict}} as WavLM-Base+.pt)")
    config = read_config(cfg, path, kind)
    model = W.build_model(config, full=True)
    try:
        shapes = jax.eval_shape(model.init, jax.random.key(0),
                                jax.ShapeDtypeStruct((1, W.min_samples(config)),
                                                     jnp.float32))["params"]
    except (ValueError, TypeError) as e:
        raise WavLMFileError(f"{path}: its cfg does not make a WavLM network ({e})") from None
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, np.ndarray)}
    try:
        params = state_dict_to_params(tensors, shapes, ignore=_TRAINING_ONLY,
                                      what=f"{path} (WavLM)")
    except CheckpointMismatchError as e:
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:3])
        raise WavLMFileError(
            f"{path}: its tensors do not fit the WavLM its cfg describes "
            f"({config.num_layers} layers of width {config.embed_dim}, "
            f"extractor_mode {config.extractor_mode}): {detail}") from None
    return params, config
