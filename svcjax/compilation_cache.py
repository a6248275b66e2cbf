"""JAX's persistent compilation cache, on for the command-line tools.

``svcjax convert`` and ``svcjax eval`` compile one program per length bucket and component;
with the cache a second run (another process) loads them from disk instead of compiling.
The directory is ``$SVCJAX_CACHE`` if set, else ``~/.cache/svcjax/jax``. Every program is
cached, however quick its compilation (JAX's default skips those under a second).
"""

from __future__ import annotations

import os

import jax

__all__ = ["cache_dir", "enable"]


def cache_dir() -> str:
    env = os.environ.get("SVCJAX_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "svcjax", "jax")


def enable(path: str | os.PathLike | None = None) -> str:
    """Turn the persistent cache on at ``path`` (default :func:`cache_dir`); returns it."""
    path = os.path.abspath(os.fspath(path)) if path is not None else cache_dir()
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
