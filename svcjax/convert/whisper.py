"""Import OpenAI Whisper checkpoints (``medium.pt``, ``large-v2.pt``) as content encoders.

    svcjax import-encoder medium.pt --kind whisper-ppg models/whisper-ppg
    svcjax import-encoder large-v2.pt --kind whisper-ppg-large models/whisper-ppg-large

OpenAI's files are ``torch.save({'dims': {...}, 'model_state_dict': {...}})``: ``dims`` a plain
dict of ``ModelDimensions`` (``n_mels``, ``n_audio_ctx``, ``n_audio_state``, ``n_audio_head``,
``n_audio_layer`` and the text decoder's), the state_dict float16 tensors named
``encoder.conv1.weight``, ``encoder.positional_embedding``, ``encoder.blocks.N.attn.query``,
``encoder.blocks.N.mlp.0``, ``encoder.ln_post``, ``decoder....``. They are read by svcjax's
restricted unpickler (:mod:`svcjax.convert.torch_pickle`: plain data and tensors only,
nothing in the file runs). The encoder's dimensions come from ``dims`` as the reference reads
them, so any Whisper size loads; the text decoder is dropped (So-VITS-SVC uses the encoder
only); weights become float32, as the reference's ``load_state_dict`` into its float32 model
makes them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.convert.torch_params import CheckpointMismatchError, state_dict_to_params
from svcjax.models import whisper as wm

__all__ = ["WhisperFileError", "sniff", "import_checkpoint", "import_file"]

_ENCODER_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
_IGNORE = [r"^decoder\."]


class WhisperFileError(ValueError):
    """A file that is not (or not a usable) OpenAI Whisper checkpoint."""


def sniff(obj: Any) -> bool:
    """True for an OpenAI Whisper checkpoint: ``{'dims': {...}, 'model_state_dict': {...}}``
    whose state_dict holds the audio encoder."""
    if not isinstance(obj, Mapping):
        return False
    dims, sd = obj.get("dims"), obj.get("model_state_dict")
    return (isinstance(dims, Mapping) and isinstance(sd, Mapping)
            and "encoder.conv1.weight" in sd and "n_audio_state" in dims)


def _dims(obj: Mapping, path: str) -> dict[str, int]:
    dims = obj["dims"]
    out = {}
    for key in _ENCODER_DIMS:
        value = dims.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise WhisperFileError(
                f"{path}: the Whisper dims give {key}={value!r}; expected a positive integer")
        out[key] = int(value)
    if out["n_audio_state"] % out["n_audio_head"]:
        raise WhisperFileError(
            f"{path}: the Whisper dims give width {out['n_audio_state']}, not divisible by "
            f"{out['n_audio_head']} attention heads")
    if out["n_audio_ctx"] < wm.WINDOW_FRAMES:
        raise WhisperFileError(
            f"{path}: the Whisper dims give n_audio_ctx={out['n_audio_ctx']}; the reference pads "
            f"every clip to 30 s, which needs {wm.WINDOW_FRAMES} audio positions")
    return out


def _default_kind(width: int) -> str:
    return "whisper-ppg-large" if width == wm.KIND_DIMS["whisper-ppg-large"]["n_audio_state"] \
        else "whisper-ppg"


def import_checkpoint(obj: Any, path: str, kind: str | None = None
                      ) -> tuple[dict, ml_collections.ConfigDict]:
    """``(params, config)`` of the Whisper audio encoder in ``obj`` (read from ``path``).

    ``kind`` (``whisper-ppg`` or ``whisper-ppg-large``) only names the units; it defaults to
    ``whisper-ppg-large`` for a 1280-wide encoder (large-v2) and ``whisper-ppg`` otherwise.
    """
    path = os.fspath(path)
    if not sniff(obj):
        raise WhisperFileError(
            f"{path} is not an OpenAI Whisper checkpoint; expected torch.save's "
            "{'dims': ..., 'model_state_dict': ...} with the audio encoder (medium.pt, large-v2.pt)")
    dims = _dims(obj, path)
    kind = _default_kind(dims["n_audio_state"]) if kind is None else kind
    if kind not in wm.KIND_DIMS:
        raise WhisperFileError(f"{path} is a Whisper checkpoint; it gives the units of "
                               f"{' or '.join(wm.KIND_DIMS)}, not {kind}")
    config = wm.default_config(kind, **dims)
    sd = {}
    for key, value in obj["model_state_dict"].items():
        if not isinstance(value, np.ndarray):
            raise WhisperFileError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
        sd[key] = value
    sd = {(k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in sd.items()}
    model = wm.build_model(config, full=True)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, wm.HOP), jnp.float32))["params"]["encoder"]
    try:
        params = state_dict_to_params(sd, shapes, ignore=_IGNORE,
                                      what=f"{path} (Whisper, {_describe(dims)})")
    except CheckpointMismatchError as e:
        raise WhisperFileError(str(e)) from None
    return {"encoder": params}, config


def _describe(dims: Mapping[str, int]) -> str:
    return (f"{dims['n_audio_layer']} layers of width {dims['n_audio_state']}, "
            f"{dims['n_audio_head']} heads, {dims['n_mels']} mels")


def import_file(path: str | os.PathLike, kind: str | None = None
                ) -> tuple[dict, ml_collections.ConfigDict]:
    """Read ``path`` with the restricted unpickler and import it (see :func:`import_checkpoint`)."""
    from svcjax.convert import torch_pickle

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Whisper checkpoint not found: {path}")
    try:
        obj = torch_pickle.load(path)
    except torch_pickle.TorchFileError as e:
        raise WhisperFileError(f"cannot read the Whisper checkpoint: {e}") from None
    return import_checkpoint(obj, path, kind)


def state_dict_keys(params: Mapping) -> list[str]:
    """OpenAI's names of an imported parameter tree (for messages and round trips)."""
    from flax import traverse_util
    out = []
    for p in traverse_util.flatten_dict(dict(params)):
        out.append(re.sub(r"_(\d+)(?=\.|$)", r".\1", ".".join(p)))
    return out
