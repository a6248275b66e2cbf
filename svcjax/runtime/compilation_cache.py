"""JAX's persistent compilation cache, on for the command-line tools.

``svcjax convert`` and ``svcjax eval`` compile one program per length bucket and component;
with the cache a second run (another process) loads them from disk instead of compiling.
The directory is ``$SVCJAX_CACHE`` if set, else ``~/.cache/svcjax/jax``. Only programs
worth caching are stored: those whose compilation took at least :data:`MIN_COMPILE_SECONDS`
(conversion compiles one large program per length bucket and batch shape; the many tiny
helper programs compile faster than they load from disk).
"""

from __future__ import annotations

import os

import jax

__all__ = ["cache_dir", "enable", "MIN_COMPILE_SECONDS"]

# programs compiled faster than this are not stored (JAX's own default is 1 s)
MIN_COMPILE_SECONDS = 0.5


def cache_dir() -> str:
    env = os.environ.get("SVCJAX_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "svcjax", "jax")


def enable(path: str | os.PathLike | None = None, *,
           min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str:
    """Turn the persistent cache on at ``path`` (default :func:`cache_dir`) for programs
    that took at least ``min_compile_seconds`` to compile; returns the path."""
    path = os.path.abspath(os.fspath(path)) if path is not None else cache_dir()
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
