"""Write PyTorch checkpoint files (``torch.save``'s zip format) without importing PyTorch.

Used to export trained models to the reference's files (``G_{step}.pth`` / ``D_{step}.pth``
as So-VITS-SVC's ``train.py`` writes them), readable by ``torch.load`` (also with
``weights_only=True``) and by :func:`svcjax.interop.torch_pickle.load`.

The format: a zip archive (stored, not compressed) holding ``<name>/data.pkl`` (a protocol-2
pickle in which every tensor is ``torch._utils._rebuild_tensor_v2(storage, 0, shape, stride,
False, OrderedDict())`` and every storage a persistent id ``('storage', torch.<T>Storage, key,
'cpu', numel)``), one ``<name>/data/<key>`` file of raw little-endian bytes per storage
(64-byte aligned, as PyTorch aligns them for memory mapping), ``<name>/byteorder`` and
``<name>/version``.

    >>> save({"model": {"w": np.zeros((2, 3), np.float32)}, "iteration": 1}, "G_1.pth")
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from svcjax.files import atomic_write

__all__ = ["save"]

_STORAGE = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
_ALIGN = 64


class _Global:
    """A reference to ``module.name`` written as a pickle GLOBAL (nothing is imported)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable; never called
        raise TypeError(f"{self.module}.{self.name} is a reference for pickling only")


_REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")


class _Storage:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets us emit GLOBALs by hand
    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.dispatch = dict(pickle._Pickler.dispatch)
        self.dispatch[_Global] = _Pickler._save_ref
        self.dispatch[_Tensor] = _Pickler._save_tensor

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            a = obj.array
            return ("storage", _Global("torch", _STORAGE[a.dtype]), obj.key, "cpu", a.size)
        return None

    def _save_ref(self, obj: _Global):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))

    def _save_tensor(self, t: _Tensor):
        stride, acc = [], 1
        for n in reversed(t.shape):
            stride.append(acc)
            acc *= max(int(n), 1)
        args = (t.storage, 0, tuple(int(n) for n in t.shape), tuple(reversed(stride)), False,
                collections.OrderedDict())  # no backward hooks
        self.save_reduce(_REBUILD, args)


def _convert(obj: Any, storages: list[_Storage]) -> Any:
    """Replace arrays by tensor records (each with its own storage), recursively."""
    if isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and hasattr(obj, "dtype")
                                       and not isinstance(obj, (np.generic,))):
        a = np.array(obj, order="C", copy=True)  # (ascontiguousarray makes 0-d arrays 1-d)
        if a.dtype not in _STORAGE:
            raise TypeError(f"cannot write a {a.dtype} tensor to a PyTorch file")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        st = _Storage(str(len(storages)), a)
        storages.append(st)
        return _Tensor(st, a.shape)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _convert(v, storages)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _convert(v, storages) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v, storages) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert(v, storages) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _padded_info(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """A ZipInfo whose data will start on a 64-byte boundary (extra field 'FB' as padding)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = zf.fp.tell() + 30 + len(name.encode("utf-8"))
    pad = (-(start + 4)) % _ALIGN
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    return info


def save(obj: Any, path: str | os.PathLike, *, archive_name: str | None = None) -> str:
    """Write ``obj`` (dicts/lists/tuples of NumPy arrays and plain Python values) to ``path``
    in PyTorch's zip format, atomically (temporary name, then rename). The archive's folder is
    named after the file (``G_800.pth`` -> ``G_800/``), as ``torch.save`` names it."""
    path = os.fspath(path)
    name = archive_name or os.path.splitext(os.path.basename(path))[0] or "archive"
    storages: list[_Storage] = []
    converted = _convert(obj, storages)
    buf = io.BytesIO()
    _Pickler(buf).dump(converted)
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(_padded_info(zf, f"{name}/data.pkl"), buf.getvalue())
        zf.writestr(_padded_info(zf, f"{name}/byteorder"), b"little")
        for st in storages:
            zf.writestr(_padded_info(zf, f"{name}/data/{st.key}"), st.array.tobytes())
        zf.writestr(_padded_info(zf, f"{name}/version"), b"3\n")
    return path
