"""Crafted hostile and broken checkpoint files for the loader tests (written into tmp dirs).

Every payload, when unpickled by plain ``pickle``, creates a marker file; a safe loader must
refuse the file and the marker must never appear. :func:`run_unsafely` is the control that
shows each payload does work against an unrestricted unpickler.

Files are laid out as ``torch.save`` writes them: the zip format (``archive/data.pkl``,
``archive/data/<key>``, ``archive/byteorder``, ``archive/version``) and the legacy stream
(magic number, protocol, system info, the pickle, the storage keys, then each storage's
element count and bytes), with the payload inside an otherwise real generator checkpoint.
"""

from __future__ import annotations

import os
import pickle
import struct
import time
import zipfile

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# name -> how the payload is built (see payload()).
PAYLOADS = (
    "os.system/REDUCE", "posix.system/REDUCE", "builtins.eval/REDUCE", "builtins.exec/REDUCE",
    "builtins.getattr/REDUCE", "subprocess.Popen/REDUCE", "os.system/STACK_GLOBAL",
    "os.system/INST", "os.system/OBJ", "subprocess.Popen/NEWOBJ", "os.system/BUILD",
)


def _u(text: str) -> bytes:  # BINUNICODE
    b = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _g(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def payload(kind: str, marker: str | os.PathLike) -> bytes:
    """Opcodes that push one value whose unpickling creates ``marker`` (no PROTO, no STOP)."""
    marker = os.fspath(marker)
    shell = f"touch '{marker}'"
    code = f"open({marker!r}, 'w').close()"
    target, op = kind.split("/")
    module, name = target.rsplit(".", 1)
    if target in ("os.system", "posix.system"):
        arg = _u(shell)
    elif target in ("builtins.eval", "builtins.exec"):
        arg = _u(code)
    elif target == "subprocess.Popen":
        arg = b"](" + _u("touch") + _u(marker) + b"e"      # ['touch', marker]
    elif target == "builtins.getattr":  # getattr(__import__('os'), 'system')(shell)
        return (_g("builtins", "getattr") + b"(" + _g("builtins", "__import__") + b"(" + _u("os")
                + b"tR" + _u("system") + b"tR(" + _u(shell) + b"tR")
    else:
        raise ValueError(kind)
    if op == "REDUCE":
        return _g(module, name) + b"(" + arg + b"tR"
    if op == "STACK_GLOBAL":
        return _u(module) + _u(name) + b"\x93(" + arg + b"tR"
    if op == "INST":
        return b"(" + arg + b"i" + module.encode() + b"\n" + name.encode() + b"\n"
    if op == "OBJ":
        return b"(" + _g(module, name) + arg + b"o"
    if op == "NEWOBJ":  # Popen.__new__ alone runs nothing; the REDUCE after it would
        return _g(module, name) + b"(" + arg + b"t\x81"
    if op == "BUILD":
        # An argparse.Namespace gets an instance attribute __setstate__ = os.system through
        # BUILD's slot state; the second BUILD then calls it with the command.
        return (_g("argparse", "Namespace") + b")R" + b"N}" + _u("__setstate__")
                + _g(module, name) + b"s\x86b" + arg + b"b")
    raise ValueError(kind)


def _tensor(key: str, numel: int) -> bytes:
    """``torch._utils._rebuild_tensor_v2`` of a float32 storage ``key`` (shape (numel,))."""
    return (_g("torch._utils", "_rebuild_tensor_v2") + b"((" + _u("storage")
            + _g("torch", "FloatStorage") + _u(key) + _u("cpu") + b"K" + bytes([numel])
            + b"tQK\x00K" + bytes([numel]) + b"\x85K\x01\x85\x89"
            + _g("collections", "OrderedDict") + b")RtR")


def checkpoint_pickle(evil: bytes | None, numel: int = 4) -> bytes:
    """``{'model': OrderedDict(w=tensor), 'iteration': 1, 'evil': <payload>}`` (protocol 2)."""
    body = (b"\x80\x02}(" + _u("model") + _g("collections", "OrderedDict") + b")R("
            + _u("emb_g.weight") + _tensor("0", numel) + b"u" + _u("iteration") + b"K\x01")
    if evil is not None:
        body += _u("evil") + evil
    return body + b"u."


STORAGE = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


def write_zip(path, pkl: bytes, storage: bytes = STORAGE) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/data/0", storage)
        zf.writestr("archive/version", b"3\n")
        zf.writestr("archive/.data/serialization_id", b"1234567890")
    return os.fspath(path)


def _p(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def write_legacy(path, *, magic: bytes | None = None, protocol: bytes | None = None,
                 sys_info: bytes | None = None, main: bytes | None = None,
                 keys: bytes | None = None, storage: bytes = STORAGE) -> str:
    """The legacy stream; any part may be replaced by crafted bytes."""
    parts = [
        _p(LEGACY_MAGIC) if magic is None else magic,
        _p(1001) if protocol is None else protocol,
        _p({"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}) if sys_info is None else sys_info,
        checkpoint_pickle(None) if main is None else main,
        _p(["0"]) if keys is None else keys,
        struct.pack("<q", len(storage) // 4) + storage,
    ]
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    return os.fspath(path)


def bare(evil: bytes) -> bytes:
    """A pickle that is only the payload (what ``pickle.dump(obj)`` of a hostile obj writes)."""
    return b"\x80\x02" + evil + b"."


# Where the payload sits in the file.
LAYOUTS = ("zip", "legacy-main", "legacy-header", "legacy-keys", "bare-pickle")


def write_malicious(path, kind: str, layout: str, marker) -> str:
    evil = payload(kind, marker)
    if layout == "zip":
        return write_zip(path, checkpoint_pickle(evil))
    if layout == "legacy-main":
        return write_legacy(path, main=checkpoint_pickle(evil))
    if layout == "legacy-header":        # the magic number, then a hostile "protocol"
        return write_legacy(path, protocol=bare(evil))
    if layout == "legacy-keys":          # a hostile storage-key list after a real pickle
        return write_legacy(path, keys=bare(evil))
    if layout == "bare-pickle":          # no magic, no zip: the hostile pickle alone
        with open(path, "wb") as f:
            f.write(bare(evil))
        return os.fspath(path)
    raise ValueError(layout)


def run_unsafely(kind: str, marker) -> bool:
    """The control: plain ``pickle.loads`` of the payload creates the marker (for NEWOBJ,
    which only allocates, it imports subprocess and builds a Popen object)."""
    try:
        obj = pickle.loads(bare(payload(kind, marker)))
    except Exception:  # noqa: BLE001 - the command ran; the result may not be a value
        obj = None
    if "NEWOBJ" in kind:
        return type(obj).__name__ == "Popen"
    for _ in range(100):  # subprocess.Popen / os.system finish asynchronously or not at all
        if os.path.exists(marker):
            return True
        time.sleep(0.05)
    return False


def write_broken(path, case: str, good: str | None = None) -> str:
    """Damaged files: empty, random bytes, a truncated zip / legacy checkpoint."""
    if case == "empty":
        data = b""
    elif case == "random":
        data = bytes((i * 131 + 7) % 251 for i in range(4096))
    elif case == "truncated-zip":
        data = open(good, "rb").read()
        data = data[: len(data) // 2]
    elif case == "truncated-legacy":
        tmp = os.fspath(path) + ".full"
        write_legacy(tmp)
        data = open(tmp, "rb").read()[:-7]
        os.remove(tmp)
    else:
        raise ValueError(case)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)
