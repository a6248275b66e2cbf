"""Read PyTorch checkpoint files (``.pth`` / ``.pt``) without importing PyTorch.

``torch.save`` writes either a zip archive (PyTorch >= 1.6: ``<name>/data.pkl`` plus one file
per storage under ``<name>/data/``) or the older "legacy" stream (magic number, protocol,
system info, the pickle, the list of storage keys, then each storage's raw bytes). Both are
pickles whose tensors are rebuilt by ``torch._utils`` functions from storages that the pickle
names by persistent id. This module supplies its own unpickler that turns every tensor into a
NumPy array and every unknown class (fairseq configs, omegaconf objects, ...) into an inert
:class:`Opaque` record, so that reading a checkpoint never executes code from it.

    >>> ckpt = load("G_800.pth")
    >>> ckpt["model"]["emb_g.weight"].shape
    (200, 768)
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

try:  # NumPy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _np_multiarray

__all__ = ["load", "Opaque", "TorchFileError"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

_TORCH_DTYPES = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16, "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_, "complex64": np.complex64, "complex128": np.complex128,
}


class TorchFileError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


class Opaque:
    """Stand-in for an object of a class that is not safe or not needed to import.

    Keeps what the pickle said about it: the class path, constructor arguments and state.
    Attribute access falls through to the state when it is a dict, so ``ckpt['args'].label_rate``
    works for fairseq's pickled ``Namespace``-like objects.
    """

    _module = ""
    _name = ""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __getattr__(self, item):
        state = self.__dict__.get("state")
        if isinstance(state, dict) and item in state:
            return state[item]
        if isinstance(state, tuple) and state and isinstance(state[-1], dict) and item in state[-1]:
            return state[-1][item]
        raise AttributeError(item)

    def __repr__(self):
        return f"Opaque({self._module}.{self._name})"

    # Some pickles use list/dict protocol on reconstructed objects.
    def append(self, item):
        self.__dict__.setdefault("items", []).append(item)

    def extend(self, items):
        self.__dict__.setdefault("items", []).extend(items)

    def __setitem__(self, key, value):
        self.__dict__.setdefault("mapping", {})[key] = value


def _opaque_class(module: str, name: str):
    return type(name, (Opaque,), {"_module": module, "_name": name})


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES.get(name)


class _DType:
    def __init__(self, name):
        self.name = name
        self.np = np.dtype(_TORCH_DTYPES[name]) if name in _TORCH_DTYPES else None


class _Storage:
    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        self.dtype = dtype

    def resolve(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchFileError("a tensor refers to a storage whose bytes are missing")
        if self.dtype is not None and data.dtype != self.dtype:
            data = data.view(self.dtype)
        if not self.size:
            return np.array(data[self.offset])
        item = data.dtype.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and needed > data.size:
            raise TorchFileError(
                f"a tensor of shape {self.size} reaches element {needed} of a storage of {data.size}")
        base = data[self.offset:]
        out = np.lib.stride_tricks.as_strided(
            base, shape=self.size, strides=tuple(s * item for s in self.stride))
        return np.array(out)  # own the memory, contiguous


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *unused):
    return _LazyTensor(storage, storage_offset, size, stride,
                       dtype.np if isinstance(dtype, _DType) else None)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type(func, new_type, args, state):
    return func(*args)


def _identity_dtype(name):
    return _DType(name)


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (NumPy arrays' data)."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise TorchFileError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "set"): set,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch._tensor", "_rebuild_from_type"): _rebuild_from_type,
    ("torch", "Size"): tuple,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("_codecs", "encode"): _latin1_encode,  # bytes in protocol-2 pickles of NumPy arrays
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage_loader):
        super().__init__(file, encoding="latin1")
        self._storage_loader = storage_loader
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _DType(name)
        if module == "builtins" and name in ("dict", "list", "tuple", "int", "float", "str",
                                             "bool", "bytes", "object"):
            return getattr(__import__("builtins"), name)
        return _opaque_class(module, name)

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # legacy: a pickled nn.Module class; keep only its name
            return pid[1]
        if kind != "storage":
            raise TorchFileError(f"unexpected persistent id kind {kind!r}")
        storage_type, key, _location, numel = pid[1:5]
        key = str(key)
        if key in self.storages:
            return self.storages[key]
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else None
        if isinstance(storage_type, _DType):
            dtype = storage_type.np
        if dtype is None:
            raise TorchFileError(f"unsupported storage type {getattr(storage_type, 'name', storage_type)!r}")
        storage = _Storage(dtype, int(numel))
        self.storages[key] = storage
        self._storage_loader(key, storage)
        if len(pid) > 5 and pid[5] is not None:  # legacy view: (view_key, offset, view_size)
            view_key, offset, view_size = pid[5]
            view = _Storage(dtype, int(view_size))
            view.base = (storage, int(offset))  # resolved after the data is read
            self.storages[str(view_key)] = view
            return view
        return storage


def _resolve(obj, memo=None):
    """Replace every lazy tensor in ``obj`` by its array, in place where ``obj`` is mutable.

    Object graphs may be cyclic (omegaconf's DictConfig nodes point back at their parents), so
    a mutable container is entered in ``memo`` before its members are visited.
    """
    memo = {} if memo is None else memo
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if isinstance(obj, _LazyTensor):
        out = memo[oid] = obj.resolve()
    elif isinstance(obj, collections.OrderedDict):
        out = memo[oid] = collections.OrderedDict()
        for k, v in list(obj.items()):
            out[k] = _resolve(v, memo)
    elif isinstance(obj, dict):
        out = memo[oid] = type(obj)() if type(obj) is dict else obj
        for k, v in list(obj.items()):
            out[k] = _resolve(v, memo)
    elif isinstance(obj, list):
        out = memo[oid] = []
        out.extend(_resolve(v, memo) for v in obj)
    elif isinstance(obj, tuple):
        out = memo[oid] = tuple(_resolve(v, memo) for v in obj)
    elif isinstance(obj, argparse.Namespace):
        out = memo[oid] = obj
        for k, v in list(vars(obj).items()):
            setattr(obj, k, _resolve(v, memo))
    elif isinstance(obj, Opaque):
        out = memo[oid] = obj
        obj.__dict__["state"] = _resolve(obj.__dict__.get("state"), memo)
        obj.__dict__["args"] = _resolve(obj.__dict__.get("args"), memo)
    else:
        out = memo[oid] = obj
    return out


def _load_zip(zf: zipfile.ZipFile, path: str):
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if not pkl:
        raise TorchFileError(f"{path}: zip archive without data.pkl; not a torch.save file")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = zf.read(prefix + "byteorder").decode().strip()

    def loader(key, storage):
        raw = zf.read(f"{prefix}data/{key}")
        dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
        storage.data = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)

    unpickler = _Unpickler(io.BytesIO(zf.read(pkl[0])), loader)
    return _resolve(unpickler.load())


def _load_legacy(f, path: str):
    try:
        magic = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any failure here means "not a torch file"
        raise TorchFileError(f"{path}: not a PyTorch checkpoint ({e})") from None
    if magic != _LEGACY_MAGIC:
        raise TorchFileError(f"{path}: not a PyTorch checkpoint (no zip archive, no legacy magic)")
    pickle.load(f, encoding="latin1")  # protocol version
    sys_info = pickle.load(f, encoding="latin1")
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    unpickler = _Unpickler(f, lambda key, storage: None)
    result = unpickler.load()
    keys = pickle.load(f, encoding="latin1")
    for key in keys:
        storage = unpickler.storages[str(key)]
        (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise TorchFileError(f"{path}: truncated (storage {key} has {len(raw)} of {nbytes} bytes)")
        dtype = storage.dtype.newbyteorder("<" if little else ">")
        storage.data = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)
    for storage in unpickler.storages.values():
        base = getattr(storage, "base", None)
        if base is not None:
            src, offset = base
            storage.data = src.data[offset: offset + storage.numel]
    return _resolve(result)


def load(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` file; tensors become NumPy arrays (same dtype, shape, values)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return _load_zip(zf, path)
        except zipfile.BadZipFile as e:
            raise TorchFileError(f"{path}: corrupt zip archive ({e})") from None
    with open(path, "rb") as f:
        try:
            return _load_legacy(f, path)
        except (pickle.UnpicklingError, EOFError, struct.error) as e:
            raise TorchFileError(f"{path}: corrupt or truncated PyTorch checkpoint ({e})") from None
