"""Read RMVPE's ``rmvpe.pt`` into :class:`svcjax.models.rmvpe.Rmvpe` parameters.

The file So-VITS-SVC 4.1 loads from ``pretrain/rmvpe.pt`` is ``{'model': state_dict}`` of an
``E2E0``; RVC's file of the same name is the bare state_dict. Both are read, always through
svcjax's restricted unpickler (:mod:`svcjax.interop.torch_pickle`: nothing in the file is
executed). Every dimension is read from the tensors (:func:`config_from_state_dict`): base
channels from the first conv, block and level counts from the key indices, the GRU's size
and depth from its weights; only the pooling factor (2 x 2, which So-VITS hard-codes and no
tensor records) is assumed. The ``unet.tf.*`` tensors (a timbre filter ``E2E0`` builds but
never uses) are ignored.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping

import numpy as np

from svcjax.models.rmvpe import FRAME_MULTIPLE, N_MELS, PITCH_BINS, Rmvpe, RmvpeConfig

__all__ = ["RmvpeWeightsError", "config_from_state_dict", "params_from_state_dict",
           "load_rmvpe"]


class RmvpeWeightsError(ValueError):
    """RMVPE weights could not be found, read, or do not fit the network."""


_PREFIXES = (("unet.encoder.", "unet_encoder_"), ("unet.intermediate.", "unet_intermediate_"),
             ("unet.decoder.", "unet_decoder_"), ("fc.0.gru.", "fc_0_gru."), ("fc.1.", "fc_1."))


def _rename(key: str) -> str | None:
    if key.startswith("unet.tf."):
        return None
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def config_from_state_dict(sd: Mapping[str, Any], what: str = "RMVPE weights") -> RmvpeConfig:
    """The :class:`RmvpeConfig` of an ``E2E0`` state_dict (every size from the tensors)."""
    first = sd.get("unet.encoder.layers.0.conv.0.conv.0.weight")
    if first is None or np.ndim(first) != 4:
        raise RmvpeWeightsError(f"{what} is not RMVPE's rmvpe.pt (an E2E0 state_dict): it has "
                                f"no unet.encoder.layers.0.conv.0.conv.0.weight")
    if "fc.0.gru.weight_hh_l0" not in sd:
        raise RmvpeWeightsError(f"{what} has no BiGRU (fc.0.gru.*): only RMVPE's E2E0 with a "
                                f"GRU, as rmvpe.pt ships, is supported")
    cfg = RmvpeConfig(
        n_encoders=_count(sd, r"unet\.encoder\.layers\.(\d+)\."),
        n_inters=_count(sd, r"unet\.intermediate\.layers\.(\d+)\."),
        n_blocks=_count(sd, r"unet\.encoder\.layers\.0\.conv\.(\d+)\."),
        en_out_channels=int(np.shape(first)[0]),
        in_channels=int(np.shape(first)[1]),
        gru_hidden=int(np.shape(sd["fc.0.gru.weight_hh_l0"])[1]),
        gru_layers=_count(sd, r"fc\.0\.gru\.weight_ih_l(\d+)$"),
    )
    if cfg.in_channels != 1:
        raise RmvpeWeightsError(f"{what}: the U-Net takes {cfg.in_channels} input channels; "
                                f"RMVPE's mel input has 1")
    if N_MELS % cfg.pool[1] ** cfg.n_encoders or FRAME_MULTIPLE % cfg.frame_multiple:
        raise RmvpeWeightsError(f"{what}: {cfg.n_encoders} pooling levels do not divide the "
                                f"{N_MELS} mel bins and the {FRAME_MULTIPLE}-frame padding "
                                f"(RMVPE has 5)")
    return cfg


@functools.lru_cache(maxsize=8)
def _target_shapes(cfg: RmvpeConfig) -> Any:
    import jax
    import jax.numpy as jnp

    model = Rmvpe(cfg)
    t = cfg.frame_multiple
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, t, N_MELS)))["params"])


def params_from_state_dict(sd: Mapping[str, Any], what: str = "RMVPE weights"
                           ) -> tuple[RmvpeConfig, dict]:
    """``(config, params)`` from an ``E2E0`` state_dict; every mismatch named at once."""
    from svcjax.interop.torch_params import CheckpointMismatchError, state_dict_to_params

    cfg = config_from_state_dict(sd, what)
    w = sd.get("fc.1.weight")
    if w is not None and np.shape(w)[0] != PITCH_BINS:
        raise RmvpeWeightsError(f"{what}: the output layer has {np.shape(w)[0]} bins, "
                                f"RMVPE's decoding needs {PITCH_BINS}")
    try:
        params = state_dict_to_params(sd, _target_shapes(cfg), rename=_rename,
                                      ignore=[r"num_batches_tracked$"], what=what)
    except CheckpointMismatchError as e:
        raise RmvpeWeightsError(str(e)) from None
    return cfg, params


def load_rmvpe(path: str | os.PathLike) -> tuple[Rmvpe, dict]:
    """``(model, params)`` from ``rmvpe.pt`` (So-VITS' ``{'model': ...}`` or a bare
    state_dict). Raises :class:`RmvpeWeightsError` with one sentence naming the file."""
    from svcjax.interop import torch_pickle

    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory, not" if os.path.isdir(path) else "not found; expected"
        raise RmvpeWeightsError(f"RMVPE weights {path!r} {what} a rmvpe.pt file")
    try:
        ckpt = torch_pickle.load(path)
    except (torch_pickle.TorchFileError, OSError) as e:
        raise RmvpeWeightsError(f"cannot read RMVPE weights: {e}") from None
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise RmvpeWeightsError(f"{path!r} is not an RMVPE checkpoint (expected a state_dict "
                                f"or {{'model': state_dict}}, found {type(ckpt).__name__})")
    cfg, params = params_from_state_dict(sd, what=f"RMVPE weights {path!r}")
    import jax
    import jax.numpy as jnp

    return Rmvpe(cfg), jax.tree.map(jnp.asarray, params)
