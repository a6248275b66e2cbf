"""Writing files and folders so that no reader ever sees half of one.

Every file svcjax writes (models, configs, metrics, caches, audio, indexes) goes through
:func:`atomic_write` (or its one-call forms :func:`write_bytes` / :func:`write_text`): the data
goes to a hidden temporary file beside the target, ``.NAME.<hex>.tmp``, which is flushed and
``fsync``-ed and then renamed over the target with ``os.replace`` (atomic on POSIX within one
file system). If the block raises, or the process is interrupted, the temporary file is
removed and an existing target is left exactly as it was. While it is written the temporary
file holds an exclusive ``flock``, so :func:`svcjax.audio.io.remove_stale_temps` can tell a
live writer's file from one a killed process left behind.

:func:`atomic_directory` does the same for a folder (a model directory, a corpus version):
it is built under a hidden temporary name beside the target and renamed into place whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "write_bytes", "write_text", "atomic_directory", "temp_path",
           "refuse_existing"]


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name beside ``path``: ``.NAME.<hex>.tmp``."""
    path = Path(os.fspath(path))
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def lock(fd: int) -> None:
    """Hold an exclusive lock on an open temporary file while it is written (released when
    the file is closed), so that a stale-file sweep leaves a live writer's file alone."""
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                 newline: str | None = None, make_dirs: bool = False) -> Iterator[IO]:
    """``with atomic_write(path, "w") as f: f.write(...)``: the file ``path`` appears whole
    when the block ends without an error, or not at all (an existing ``path`` is untouched).

    ``mode`` is ``"wb"`` (bytes) or ``"w"`` (text; ``encoding`` defaults to UTF-8 and
    ``newline`` is passed to :func:`open`, e.g. ``""`` for :mod:`csv`). ``make_dirs`` creates
    the parent folder first. Writers that take a file object (``np.savez``, ``zipfile``,
    ``json.dump``, ``yaml.safe_dump``, ``soundfile``) write into ``f`` directly.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(os.fspath(path))
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        if mode == "w":
            f = open(tmp, "x", encoding=encoding or "utf-8", newline=newline)
        else:
            f = open(tmp, "xb")
    except OSError as e:   # name the file the caller asked for, not the temporary
        raise type(e)(e.errno, e.strerror, os.fspath(path)) from None
    try:
        lock(f.fileno())
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, make_dirs: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    with atomic_write(path, "wb", make_dirs=make_dirs) as f:
        f.write(data)
    return Path(os.fspath(path))


def write_text(path: str | os.PathLike, text: str, *, make_dirs: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`); returns it."""
    with atomic_write(path, "w", make_dirs=make_dirs) as f:
        f.write(text)
    return Path(os.fspath(path))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """``with atomic_directory(out) as tmp: <write files under tmp>``: ``tmp`` is a fresh
    hidden folder beside ``out`` (``.NAME.<random>.tmp``) that becomes ``out`` when the block
    ends without an error, and is removed when it raises.

    An existing ``out`` is replaced only with ``replace=True`` (``FileExistsError``
    otherwise, checked before the block runs): it is renamed aside, the new folder renamed
    into place, then the old one removed, so ``out`` is always one whole version (if the
    second rename fails the old folder is put back).
    """
    path = Path(os.path.abspath(os.fspath(path)))
    if path.exists() and not replace:
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not replace:
                raise FileExistsError(f"{path} exists")
            old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """The rule of every command that writes one named output: an existing file or folder is
    replaced only with ``--overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{os.fspath(path)} exists; pass --overwrite to replace it")
