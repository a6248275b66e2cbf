"""Read PyTorch checkpoint files (``.pth`` / ``.pt``) without importing PyTorch.

``torch.save`` writes either a zip archive (PyTorch >= 1.6: ``<name>/data.pkl`` plus one file
per storage under ``<name>/data/``) or the older "legacy" stream (magic number, protocol,
system info, the pickle, the list of storage keys, then each storage's raw bytes). Both are
pickles whose tensors are rebuilt by ``torch._utils`` functions from storages that the pickle
names by persistent id. This module supplies its own unpickler that turns every tensor into a
NumPy array, so that reading a checkpoint never executes code from it:

- every pickle in the file (the legacy stream's magic number, protocol, system info and key
  list included) is read by a restricted unpickler; nothing is imported;
- a global the pickle names resolves only through an allowlist: plain data types, the tensor
  rebuild functions of ``torch._utils`` (replaced by our own), NumPy arrays and scalars;
- the configuration classes that fairseq content-encoder checkpoints carry (omegaconf nodes,
  fairseq dataclasses and enums, ``typing`` annotations, classes of the script that saved the
  file) become inert :class:`Opaque` records that hold what the pickle said and can call
  nothing;
- any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused
  with :class:`TorchFileError` naming it, before anything else of the file is used.

    >>> ckpt = load("G_800.pth")
    >>> ckpt["model"]["emb_g.weight"].shape
    (200, 768)
"""

from __future__ import annotations

import _compat_pickle
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

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

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
    """Stand-in for an object of a class that is not imported: an inert record.

    Keeps what the pickle said about it: the class path, constructor arguments and state.
    Attribute access falls through to the state when it is a dict, so ``ckpt['args'].label_rate``
    works for fairseq's pickled ``Namespace``-like objects. Nothing on it calls anything: the
    constructor, ``__setstate__`` (pickle's BUILD), ``append``/``extend`` (APPENDS) and
    ``__setitem__`` (SETITEMS) only store what they are given.
    """

    _module = ""
    _name = ""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.state = None

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
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
        self.__dict__.setdefault("items", []).extend(list(items))

    def __setitem__(self, key, value):
        self.__dict__.setdefault("mapping", {})[key] = value


_OPAQUE_CLASSES: dict[tuple[str, str], type] = {}


def _opaque_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _OPAQUE_CLASSES:
        _OPAQUE_CLASSES[key] = type(str(name), (Opaque,), {"_module": module, "_name": name})
    return _OPAQUE_CLASSES[key]


# Globals that may become inert Opaque records (see the module docstring): the configuration
# objects of fairseq checkpoints (ContentVec / HuBERT: omegaconf DictConfig trees whose
# metadata names typing annotations, fairseq dataclasses and ChoiceEnum members, and
# fairseq.data.dictionary.Dictionary in task_state), torch.device, and classes defined by the
# script that saved the file (``__main__``: dataclass configs and enums). These are never
# imported; a record cannot run code whatever its name.
_OPAQUE_MODULE_ROOTS = ("omegaconf", "fairseq", "__main__")
_OPAQUE_GLOBALS = {("typing", n) for n in (
    "Any", "Tuple", "List", "Dict", "Optional", "Union", "Set", "Sequence", "Mapping",
    "Callable", "Type")} | {("torch", "device")}


def _opaque_allowed(module: str, name: str) -> bool:
    if (module, name) in _OPAQUE_GLOBALS:
        return True
    root = module.split(".", 1)[0]
    return root in _OPAQUE_MODULE_ROOTS and all(
        part.isidentifier() for part in module.split(".") + name.split("."))


def _subscript(origin, args):
    """``operator.getitem`` as pickled typing aliases use it (``typing.Tuple[float, ...]``):
    only on an Opaque ``typing`` class, giving an inert record of the alias."""
    if not (isinstance(origin, type) and issubclass(origin, Opaque)
            and origin._module == "typing"):
        raise TorchFileError(f"operator.getitem is allowed on typing annotations only, not on "
                             f"{type(origin).__name__}")
    alias = _opaque_class("typing", f"{origin._name}[...]")()
    alias.__dict__["args"] = (args,)
    return alias


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``: ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or str(encoding).replace("-", "").lower() != "latin1":
        raise TorchFileError("_codecs.encode is allowed for latin-1 bytes literals only")
    return text.encode("latin1")


def _bytes_from(*args):
    """``bytes`` / ``bytearray`` from data only (no size argument that allocates at will)."""
    if args and isinstance(args[0], int):
        raise TorchFileError("bytes from an integer size are not allowed")
    return args


def _safe_bytes(*args):
    return bytes(*_bytes_from(*args))


def _safe_bytearray(*args):
    return bytearray(*_bytes_from(*args))


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise TorchFileError("numpy _reconstruct is allowed for numpy.ndarray only")
    return _np_multiarray._reconstruct(subtype, shape, dtype)


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


class LazyTensor:
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
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *unused):
    return LazyTensor(storage, storage_offset, size, stride,
                       dtype.np if isinstance(dtype, _DType) else None)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type(func, new_type, args, state):
    if func not in (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter):
        raise TorchFileError("torch._tensor._rebuild_from_type applies tensor rebuild functions only")
    return func(*args)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "complex"): complex,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "bytes"): _safe_bytes,
    ("builtins", "bytearray"): _safe_bytearray,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("builtins", "Ellipsis"): Ellipsis,
    ("builtins", "NoneType"): type(None),
    ("_codecs", "encode"): _latin1_bytes,
    ("_operator", "getitem"): _subscript,
    ("operator", "getitem"): _subscript,
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
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
}


def _canonical(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (``__builtin__.unicode``, ``copy_reg``) as protocol-2 pickles write them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _refuse(path: str, module: str, name: str) -> TorchFileError:
    return TorchFileError(
        f"{path}: refuses to load global {module}.{name}; svcjax reads checkpoints of tensors "
        f"and plain data only, and importing {module}.{name} could run code from the file, so "
        "nothing in it is used")


class _DataUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, lists, dicts): the legacy header and key list."""

    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        raise _refuse(self._path, *_canonical(module, name))

    def persistent_load(self, pid):
        raise TorchFileError(f"{self._path}: unexpected persistent id in a header pickle")


class TorchUnpickler(pickle.Unpickler):
    def __init__(self, file, storage_loader, path: str = "checkpoint"):
        super().__init__(file, encoding="latin1")
        self._storage_loader = storage_loader
        self._path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        module, name = _canonical(module, name)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage") and name.isidentifier():
            return _StorageType(name)  # inert; an unsupported one is named when it is used
        if module == "torch" and name in _TORCH_DTYPES:
            return _DType(name)
        if _opaque_allowed(module, name):
            return _opaque_class(module, name)
        raise _refuse(self._path, module, name)

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # legacy: a pickled nn.Module class; keep only its name
            return str(pid[1])
        if kind != "storage" or len(pid) < 5:
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
    if isinstance(obj, LazyTensor):
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
        byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()

    def loader(key, storage):
        member = f"{prefix}data/{key}"
        if member not in names:
            raise TorchFileError(f"{path}: the pickle names storage {key!r}, which the archive "
                                 "does not hold")
        raw = zf.read(member)
        dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
        if len(raw) % dtype.itemsize:
            raise TorchFileError(f"{path}: storage {key!r} has {len(raw)} bytes, not a whole "
                                 f"number of {storage.dtype} elements")
        storage.data = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)

    unpickler = TorchUnpickler(io.BytesIO(zf.read(pkl[0])), loader, path)
    return _resolve(unpickler.load())


def _load_legacy(f, path: str):
    # The magic number first, read with an unpickler that resolves no global at all: anything
    # other than the plain integer means this is not a legacy torch.save stream.
    try:
        magic = _DataUnpickler(f, path).load()
    except TorchFileError:
        raise
    except Exception:  # noqa: BLE001 - any failure here means "not a torch file"
        magic = None
    if type(magic) is not int or magic != LEGACY_MAGIC:
        f.seek(0)
        head = f.read(4)
        if not head:
            raise TorchFileError(f"{path} is empty, not a PyTorch checkpoint")
        if head == b"PK\x03\x04":
            raise TorchFileError(f"{path}: a truncated or corrupt zip archive (its end, with the "
                                 "list of what it holds, is missing), not a readable checkpoint")
        raise TorchFileError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip "
                             "archive nor the legacy format's magic number)")
    protocol = _DataUnpickler(f, path).load()
    if type(protocol) is not int:
        raise TorchFileError(f"{path}: the legacy header's protocol is not a number")
    sys_info = _DataUnpickler(f, path).load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    unpickler = TorchUnpickler(f, lambda key, storage: None, path)
    result = unpickler.load()
    keys = _DataUnpickler(f, path).load()
    if not isinstance(keys, list):
        raise TorchFileError(f"{path}: the legacy storage key list is not a list")
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise TorchFileError(f"{path}: storage {key!r} is listed but not used by the pickle")
        (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
        nbytes = numel * storage.dtype.itemsize
        if numel < 0 or nbytes > 1 << 40:
            raise TorchFileError(f"{path}: storage {key!r} claims {numel} elements")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise TorchFileError(f"{path}: truncated (storage {key} has {len(raw)} of {nbytes} bytes)")
        dtype = storage.dtype.newbyteorder("<" if little else ">")
        storage.data = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)
    for storage in unpickler.storages.values():
        base = getattr(storage, "base", None)
        if base is not None:
            src, offset = base
            if src.data is None:
                raise TorchFileError(f"{path}: a storage view refers to a storage without bytes")
            storage.data = src.data[offset: offset + storage.numel]
    return _resolve(result)


def load(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` file; tensors become NumPy arrays (same dtype, shape, values).

    Raises :class:`TorchFileError` (a ``ValueError``) with one sentence naming the file for
    anything that is not a readable checkpoint: corrupt or truncated data, a global outside the
    allowlist (nothing of such a file is used, and nothing in it ever runs).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise TorchFileError(f"{path} is a directory, not a PyTorch checkpoint file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return _load_zip(zf, path)
        with open(path, "rb") as f:
            return _load_legacy(f, path)
    except TorchFileError as e:
        if str(e).startswith(path):
            raise
        raise TorchFileError(f"{path}: {e}") from None  # a check deep in the pickle
    except (OSError, MemoryError) as e:
        raise TorchFileError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - corrupt data surfaces as many exception types
        what = "a corrupt zip archive" if isinstance(e, zipfile.BadZipFile) else \
            "truncated or corrupt data"
        raise TorchFileError(f"{path}: not a readable PyTorch checkpoint, {what} "
                             f"({type(e).__name__}: {_short(e)})") from None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
