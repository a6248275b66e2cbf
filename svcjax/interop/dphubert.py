"""Import DPHuBERT (``DPHuBERT-sp0.75.pth``) for :mod:`svcjax.models.dphubert`.

The file is what DPHuBERT's ``prune.py`` / ``save_final_ckpt.py`` write and the reference's
``vencoder/DPHubert.py`` reads: ``{'state_dict': torchaudio-named tensors, 'config': the keyword
arguments of wav2vec2_model, 'distill_linear_projs': ...}``. Every size comes from ``config``
as the reference builds its network from it (``wav2vec2_model(**ckpt['config'])``): the conv
layers' channels, and per transformer layer whether attention / feed-forward survive pruning,
the head count and the FFN width. The tensors are then checked against that structure (the
reference loads with ``strict=False``, which would leave a missing tensor random; here a
missing, extra or mis-shaped tensor is an error naming it).

Refused with one sentence: a pruned WavLM (``encoder_remaining_heads``: relative position bias,
not this family), a checkpoint still carrying pruning switches (a training checkpoint, before
``prune.py``), an unknown extractor mode.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.interop.torch_params import CheckpointMismatchError, state_dict_to_params
from svcjax.models import dphubert as dp

__all__ = ["DPHubertFileError", "EXPECTED", "sniff", "import_checkpoint"]

EXPECTED = "DPHuBERT's pruned HuBERT (DPHuBERT-sp0.75.pth)"

_PRUNE_SWITCHES = ("extractor_prune_conv_channels", "encoder_prune_attention_heads",
                   "encoder_prune_attention_layer", "encoder_prune_feed_forward_intermediate",
                   "encoder_prune_feed_forward_layer")


class DPHubertFileError(ValueError):
    """A DPHuBERT-like file this family cannot (or should not) load."""


def sniff(obj: Any) -> bool:
    """True for ``{'state_dict': ..., 'config': {... wav2vec2_model's arguments ...}}``."""
    if not isinstance(obj, Mapping):
        return False
    cfg, sd = obj.get("config"), obj.get("state_dict")
    return (isinstance(cfg, Mapping) and isinstance(sd, Mapping)
            and "encoder_num_layers" in cfg and "extractor_mode" in cfg
            and any(str(k).startswith("encoder.transformer.") for k in sd))


def _int_list(cfg: Mapping, key: str, n: int, path: str) -> list[int]:
    values = cfg.get(key)
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values] * n  # torchaudio's unpruned factories give one size for all layers
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise DPHubertFileError(f"{path}: config {key} should list one value for each of the "
                                f"{n} layers, found {values!r}")
    return [int(v) for v in values]


def _architecture(cfg: Mapping, path: str) -> ml_collections.ConfigDict:
    if "encoder_remaining_heads" in cfg:
        raise DPHubertFileError(
            f"{path} is a pruned WavLM (DPWavLM: encoder_remaining_heads); the dphubert kind "
            "reads pruned HuBERT checkpoints such as DPHuBERT-sp0.75.pth")
    on = [k for k in _PRUNE_SWITCHES if cfg.get(k)]
    if on:
        raise DPHubertFileError(
            f"{path} still has pruning switched on ({', '.join(on)}): it is a training "
            "checkpoint; prune it with DPHuBERT's prune.py first")
    mode = cfg.get("extractor_mode")
    if mode not in ("group_norm", "layer_norm"):
        raise DPHubertFileError(f"{path}: extractor_mode {mode!r}; expected 'group_norm' or "
                                "'layer_norm'")
    conv = cfg.get("extractor_conv_layer_config")
    if conv is None:
        conv = dp.BASE_CONV_LAYERS
    try:
        conv = [[int(c), int(k), int(s)] for c, k, s in conv]
    except (TypeError, ValueError):
        raise DPHubertFileError(f"{path}: extractor_conv_layer_config {conv!r} is not a list of "
                                "(channels, kernel, stride)") from None
    try:
        n = int(cfg["encoder_num_layers"])
        config = dp.default_config(
            extractor_mode=mode,
            conv_layers=conv,
            conv_bias=bool(cfg.get("extractor_conv_bias", False)),
            embed_dim=int(cfg["encoder_embed_dim"]),
            conv_pos=int(cfg["encoder_pos_conv_kernel"]),
            conv_pos_groups=int(cfg["encoder_pos_conv_groups"]),
            num_layers=n,
            use_attention=[bool(v) for v in cfg.get("encoder_use_attention", [True] * n)],
            num_heads=_int_list(cfg, "encoder_num_heads", n, path),
            head_dim=int(cfg.get("encoder_head_dim", 64)),
            use_feed_forward=[bool(v) for v in cfg.get("encoder_use_feed_forward", [True] * n)],
            ffn_dims=_int_list(cfg, "encoder_ff_interm_features", n, path),
            layer_norm_first=bool(cfg["encoder_layer_norm_first"]),
            normalize_waveform=bool(cfg.get("normalize_waveform", False)),
            aux_dim=int(cfg.get("aux_num_out") or 0),
        )
    except KeyError as e:
        raise DPHubertFileError(f"{path}: the config lacks {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise DPHubertFileError(f"{path}: unreadable config value ({e})") from None
    for name in ("use_attention", "use_feed_forward"):
        if len(config[name]) != n:
            raise DPHubertFileError(f"{path}: config encoder_{name} lists {len(config[name])} "
                                    f"layers, encoder_num_layers is {n}")
    for i in range(n):
        if config.use_attention[i] and config.num_heads[i] < 1:
            raise DPHubertFileError(f"{path}: layer {i} keeps attention with "
                                    f"{config.num_heads[i]} heads")
        if config.use_feed_forward[i] and config.ffn_dims[i] < 1:
            raise DPHubertFileError(f"{path}: layer {i} keeps a feed-forward of width "
                                    f"{config.ffn_dims[i]}")
    return config


def import_checkpoint(obj: Any, path: str, kind: str | None = None
                      ) -> tuple[dict, ml_collections.ConfigDict]:
    """``(params, config)`` of a DPHuBERT checkpoint read by svcjax's restricted unpickler."""
    path = os.fspath(path)
    if kind not in (None, dp.KIND):
        raise DPHubertFileError(f"{path} is a DPHuBERT checkpoint; it gives dphubert units, "
                                f"not {kind} (use --kind dphubert)")
    if not sniff(obj):
        raise DPHubertFileError(f"{path} is not a DPHuBERT checkpoint ({{'state_dict', 'config'}} "
                                "with wav2vec2_model's arguments)")
    config = _architecture(obj["config"], path)
    sd = {str(k): v for k, v in obj["state_dict"].items() if isinstance(v, np.ndarray)}
    model = dp.build_model(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 16000), jnp.float32))["params"]
    try:
        params = state_dict_to_params(sd, shapes, what=f"{path} (DPHuBERT layout)")
    except CheckpointMismatchError as e:  # one line: the command line shows one
        detail = "; ".join(ln.strip() for ln in str(e).splitlines()[1:])
        raise CheckpointMismatchError(
            f"{path}: the tensors do not fit the network its config describes: {detail}") from None
    config.source = os.path.basename(path)
    return params, config
