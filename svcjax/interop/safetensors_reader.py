"""Read ``.safetensors`` files (Hugging Face's weight format) into NumPy, without extra packages.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows;
``"__metadata__"`` holds free-form strings), then the raw little-endian bytes. bfloat16
tensors come back as ``ml_dtypes.bfloat16`` arrays.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

__all__ = ["load", "is_safetensors", "SafetensorsError"]

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}

_MAX_HEADER = 100 * 2 ** 20


class SafetensorsError(ValueError):
    """The file is not a readable safetensors file."""


def _header(f, path: str) -> tuple[dict, int]:
    raw = f.read(8)
    if len(raw) != 8:
        raise SafetensorsError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", raw)
    if n == 0 or n > _MAX_HEADER:
        raise SafetensorsError(f"{path}: not a safetensors file (header length {n})")
    text = f.read(n)
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, 8 + n


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (cheap: reads the header only)."""
    try:
        with open(path, "rb") as f:
            _header(f, os.fspath(path))
        return True
    except (SafetensorsError, OSError):
        return False


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file, by name, as NumPy arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        header, _ = _header(f, path)
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            if any(s < 0 for s in shape):
                raise ValueError("negative dimension")
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has an unsupported or malformed "
                                   f"entry {info!r}") from None
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * dtype.itemsize or end > len(data) or begin < 0:
            raise SafetensorsError(f"{path}: tensor {name!r} ({info['dtype']} {list(shape)}) does "
                                   f"not fit its bytes [{begin}, {end}) of {len(data)}")
        arr = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count, offset=begin)
        out[name] = arr.astype(dtype, copy=True).reshape(shape)
    return out
