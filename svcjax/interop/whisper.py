"""Import OpenAI Whisper checkpoints (``medium.pt``, ``large-v2.pt``) as content encoders.

    svcjax import-encoder medium.pt --kind whisper-ppg models/whisper-ppg
    svcjax import-encoder large-v2.pt --kind whisper-ppg-large models/whisper-ppg-large

OpenAI's files are ``torch.save({'dims': {...}, 'model_state_dict': {...}})``: ``dims`` a plain
dict of ``ModelDimensions`` (``n_mels``, ``n_audio_ctx``, ``n_audio_state``, ``n_audio_head``,
``n_audio_layer`` and the text decoder's), the state_dict float16 tensors named
``encoder.conv1.weight``, ``encoder.positional_embedding``, ``encoder.blocks.N.attn.query``,
``encoder.blocks.N.mlp.0``, ``encoder.ln_post``, ``decoder....``. They are read by svcjax's
restricted unpickler (:mod:`svcjax.interop.torch_pickle`: plain data and tensors only,
nothing in the file runs). The encoder's dimensions come from ``dims`` as the reference reads
them, so any Whisper size loads; the text decoder is dropped (So-VITS-SVC uses the encoder
only); weights become float32, as the reference's ``load_state_dict`` into its float32 model
makes them.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.interop.torch_params import CheckpointMismatchError, state_dict_to_params
from svcjax.models import whisper as wm

__all__ = ["EXPECTED", "WhisperFileError", "sniff", "import_checkpoint", "import_file",
           "read_ctranslate2", "ctranslate2_to_openai"]

EXPECTED = "an OpenAI Whisper checkpoint (medium.pt, large-v2.pt)"

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
            "{'dims': ..., 'model_state_dict': ...} with the audio encoder "
            "(medium.pt, large-v2.pt)")
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
    model = wm.build_model(config, full=True)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, wm.HOP), jnp.float32))["params"]["encoder"]
    try:
        params = state_dict_to_params(sd, shapes, rename=_strip_encoder, ignore=_IGNORE,
                                      what=f"{path} (Whisper, {_describe(dims)})")
    except CheckpointMismatchError as e:  # one sentence: the heading and each list, joined
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise WhisperFileError(" ".join(lines[:1]) + " " + "; ".join(lines[1:])) from None
    return {"encoder": params}, config


def _strip_encoder(key: str) -> str:
    return key[len("encoder."):] if key.startswith("encoder.") else key


def _describe(dims: Mapping[str, int]) -> str:
    return (f"{dims['n_audio_layer']} layers of width {dims['n_audio_state']}, "
            f"{dims['n_audio_head']} heads, {dims['n_mels']} mels")


def import_file(path: str | os.PathLike, kind: str | None = None
                ) -> tuple[dict, ml_collections.ConfigDict]:
    """Read ``path`` with the restricted unpickler and import it (see :func:`import_checkpoint`)."""
    from svcjax.interop import torch_pickle

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Whisper checkpoint not found: {path}")
    try:
        obj = torch_pickle.load(path)
    except torch_pickle.TorchFileError as e:
        raise WhisperFileError(f"cannot read the Whisper checkpoint: {e}") from None
    return import_checkpoint(obj, path, kind)


# --------------------------------------------------------------------------------------------
# CTranslate2 (faster-whisper) model.bin


_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")


def read_ctranslate2(path: str | os.PathLike | list) -> dict[str, np.ndarray]:
    """The named variables of a CTranslate2 ``model.bin`` (binary version 6), as NumPy arrays.

    ``path`` may be a list of files that together are the model (a model split in parts, read
    as their concatenation). The format: uint32 version, the spec name and revision, a uint32
    count, then per variable a name (uint16 length including a NUL, UTF-8), uint8 rank, uint32
    dims, uint8 type id (float32, int8, int16, int32, float16, bfloat16) and a uint32 byte
    count followed by the bytes; then aliases (name -> variable). Nothing is executed.
    """
    import ml_dtypes

    paths = [os.fspath(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    data = b"".join(open(p, "rb").read() for p in paths)
    where = " + ".join(paths)
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(data):
            raise WhisperFileError(f"{where}: truncated CTranslate2 model (at byte {pos})")
        out = data[pos:pos + n]
        pos += n
        return out

    def num(fmt):
        return int(np.frombuffer(take(np.dtype(fmt).itemsize), fmt)[0])

    def string():
        raw = take(num("<u2"))
        return raw[:-1].decode("utf-8", errors="replace")

    version = num("<u4")
    if version != 6:
        raise WhisperFileError(f"{where}: CTranslate2 binary version {version}; version 6 is read")
    spec = string()
    num("<u4")  # revision
    out: dict[str, np.ndarray] = {"__spec__": np.array(spec)}
    for _ in range(num("<u4")):
        name = string()
        shape = tuple(num("<u4") for _ in range(num("<u1")))
        type_id = num("<u1")
        if type_id >= len(_CT2_DTYPES):
            raise WhisperFileError(f"{where}: variable {name} has unknown type id {type_id}")
        dtype = np.dtype(ml_dtypes.bfloat16 if _CT2_DTYPES[type_id] == "bfloat16"
                         else _CT2_DTYPES[type_id]).newbyteorder("<")
        raw = take(num("<u4"))
        if len(raw) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise WhisperFileError(f"{where}: variable {name} has {len(raw)} bytes for shape "
                                   f"{shape} of {dtype.name}")
        out[name] = np.frombuffer(raw, dtype).reshape(shape)
    for _ in range(num("<u4")):
        alias, target = string(), string()
        if target in out:
            out[alias] = out[target]
    return out


def ctranslate2_to_openai(variables: Mapping[str, np.ndarray], path: str = "model.bin") -> dict:
    """A CTranslate2 ``WhisperSpec``'s encoder as OpenAI's ``{'dims', 'model_state_dict'}``.

    The fused query/key/value projection is split in three (its key bias, zero by
    construction, is dropped: Whisper's key has none and a key bias cannot change attention).
    """
    if str(variables.get("__spec__")) != "WhisperSpec":
        raise WhisperFileError(f"{path} is a CTranslate2 {variables.get('__spec__')} model, "
                               "not WhisperSpec")
    sd: dict[str, np.ndarray] = {}
    rename = {"conv1": "conv1", "conv2": "conv2", "layer_norm": "ln_post"}
    leaf = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}
    layers = 0
    for name, value in variables.items():
        parts = name.split("/")
        if parts[0] != "encoder" or len(parts) < 3:
            continue
        if parts[1] in rename:
            sd[f"encoder.{rename[parts[1]]}.{leaf[parts[-1]]}"] = value
        elif parts[1:] == ["position_encodings", "encodings"]:
            sd["encoder.positional_embedding"] = value
        elif parts[1].startswith("layer_"):
            i = int(parts[1][len("layer_"):])
            layers = max(layers, i + 1)
            block, sub = f"encoder.blocks.{i}", "/".join(parts[2:-1])
            lf = leaf[parts[-1]]
            if sub == "self_attention/linear_0":
                q, k, v = np.split(value, 3, axis=0)
                sd[f"{block}.attn.query.{lf}"] = q
                sd[f"{block}.attn.value.{lf}"] = v
                if lf == "weight":
                    sd[f"{block}.attn.key.weight"] = k
            else:
                target = {"self_attention/linear_1": "attn.out", "self_attention/layer_norm":
                          "attn_ln", "ffn/layer_norm": "mlp_ln", "ffn/linear_0": "mlp.0",
                          "ffn/linear_1": "mlp.2"}.get(sub)
                if target is None:
                    raise WhisperFileError(f"{path}: unexpected encoder variable {name}")
                sd[f"{block}.{target}.{lf}"] = value
    try:
        width = int(sd["encoder.conv1.weight"].shape[0])
        dims = dict(n_mels=int(sd["encoder.conv1.weight"].shape[1]),
                    n_audio_ctx=int(sd["encoder.positional_embedding"].shape[0]),
                    n_audio_state=width, n_audio_head=int(variables["encoder/num_heads"]),
                    n_audio_layer=layers)
    except KeyError as e:
        raise WhisperFileError(f"{path}: the CTranslate2 Whisper model lacks {e}") from None
    return {"dims": dims, "model_state_dict": sd}
