"""The runtime layer shared by every model and by conversion: shapes, rows, placement,
compiled programs, counts.

What every device stage of svcjax has to decide, decided in one place. The public entry
points ``load_sovits().infer``, ``load_diffusion().sample``, ``load_vocoder()(...)`` and
``ContentEncoder.encode`` are thin views on it (validate, then pad, place and run through
:func:`shared`'s :class:`Runtime`), and :class:`svcjax.runtime.converter.Converter` runs a
whole conversion as one of its programs. Speakers are resolved by
:class:`svcjax.runtime.speakers.SpeakerTable`.

* **lengths**: frames are padded to a length bucket (:func:`frame_bucket`, the geometric
  buckets of :mod:`svcjax.runtime.buckets`) and audio to that many hops, so inputs of any length
  compile one program per bucket;
* **rows**: a batch of ``n`` rows runs as :func:`row_count` rows: one row alone on one
  device, otherwise the next power of two rounded up to a multiple of the local device
  count (padded once, not again by each stage);
* **placement**: :class:`Runtime` holds the mesh over the local devices, places row data
  with a ``NamedSharding`` over the batch axes and keeps one replicated copy of each
  parameter tree;
* **compiled programs**: :meth:`Runtime.program` keeps one ``jax.jit`` per (program name,
  static options); jit's own cache then holds one executable per (bucket, rows), so the key
  of a compiled program is (program, bucket, rows, static options);
* **counting**: :class:`CompileCounter` counts the backend compilations (and traces) that
  happen while it is active, through ``jax.monitoring``'s compile events: the number tests
  and benchmarks pin.
* **random draws**: :func:`piece_id` is a stable 32-bit id of a piece of audio (its samples
  and its place in its input), folded into the seed, so a piece draws the same noise
  whatever else is converted with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import weakref
from typing import Any, Callable, Hashable, Sequence

import jax
import numpy as np

from svcjax.models.layers import CPU_CONV_KERNELS, NATIVE_CONV_KERNELS
from svcjax.runtime import buckets, sharding

__all__ = ["Runtime", "CompileCounter", "row_count", "frame_bucket", "piece_id",
           "kernel_choices", "KERNELS", "BACKEND_COMPILE_EVENT", "TRACE_EVENT", "shared",
           "frame_lengths", "row_keys", "per_row", "map_rows", "RuntimeView"]

# Per-backend kernel choices. Each is a field of the model built with it
# (``synthesizer.from_config(..., unroll_layers=, conv_kernels=)``), so it is part of every
# compiled program's key: nothing reads it from ambient state while tracing.
# * ``unroll_layers`` (inference) / ``train_unroll_layers`` (the SoVITS training step): build
#   layer stacks (:func:`svcjax.models.scan.scan_layers`) fully unrolled. XLA-CPU runs the
#   reverse pass of a layer scan ~10x slower than the unrolled layers (the text encoder's
#   gradient: 1.0 s -> 0.1 s), so CPU training unrolls; inference keeps the scanned loops
#   everywhere (not measured to help), and GPU/TPU keep XLA's native scan (not measured
#   faster unrolled).
# * ``conv``: :class:`svcjax.models.layers.ConvKernels`, how transposed convolutions, the
#   kernel gradient of grouped convolutions and the period discriminators' (K, 1) convolutions
#   are built (by training and inference alike). CPU: the polyphase transposed conv, matmul
#   kernel gradients (XLA-CPU's backward-filter / batch-group convolutions run 10-300x slower
#   than the forward pass: the GAN step 10.2 s -> 3.4 s with the layer unrolling) and the
#   folded (K, 1) conv; GPU/TPU: XLA's native convolutions (not measured there).
# * ``rows``: how a conversion program runs its per-row body over a batch (:func:`map_rows`):
#   ``"vmap"``, one batched computation, or ``"map"``, the rows one after another inside the
#   program (``lax.map`` on each device, the rows padded only to fill the batch skipped).
#   On XLA-CPU the batched full-size models are memory-bound: 8 rows of 4 s ran at 1.64 s per
#   second of audio vmapped against 1.11 s one row at a time (2-core Xeon); GPU/TPU batch.
KERNELS: dict[str, dict[str, Any]] = {
    "cpu": dict(unroll_layers=False, train_unroll_layers=True, conv=CPU_CONV_KERNELS,
                rows="map"),
    "gpu": dict(unroll_layers=False, train_unroll_layers=False, conv=NATIVE_CONV_KERNELS,
                rows="vmap"),
    "tpu": dict(unroll_layers=False, train_unroll_layers=False, conv=NATIVE_CONV_KERNELS,
                rows="vmap"),
}


def kernel_choices(platform: str | None = None) -> dict[str, Any]:
    """The :data:`KERNELS` entry of ``platform`` (default: the first local device's)."""
    platform = platform or jax.local_devices()[0].platform
    return dict(KERNELS.get(platform, KERNELS["gpu"]))

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


def frame_bucket(frames: int) -> int:
    """The padded frame count of a piece of ``frames`` frames (one program per bucket)."""
    return buckets.bucket_length(int(frames))


def frame_lengths(lengths, batch: int, frames: int) -> np.ndarray:
    """``(B,)`` int64 valid frames per row (default: all ``frames``); one error naming the
    problem for anything else."""
    if lengths is None:
        return np.full((batch,), frames, np.int64)
    try:
        out = np.asarray(lengths, np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"lengths must be {batch} integers in 1..{frames}") from None
    if out.shape != (batch,) or (out < 1).any() or (out > frames).any():
        raise ValueError(f"lengths must be {batch} values in 1..{frames}, got {out.tolist()}")
    return out


def row_keys(rng: Any, batch: int) -> tuple[Any, bool]:
    """``(key, per_row)`` of a view's ``rng`` argument: ``None``; one PRNG key (the batch's
    draws depend on each row's place in it, as the reference's batched calls); or one key
    per clip, ``(B, 2)`` uint32 (``jax.random.split(key, B)``) or ``(B,)`` typed threefry
    keys: then each clip draws exactly what it draws alone with its key (:func:`per_row`),
    whatever else shares the batch."""
    if rng is None:
        return None, False
    typed = jax.dtypes.issubdtype(getattr(rng, "dtype", None), jax.dtypes.prng_key)
    if typed and np.ndim(rng) == 0 or not typed and np.ndim(rng) == 1:
        return rng, False
    if typed:
        if str(jax.random.key_impl(rng)) not in ("threefry2x32", "fry"):
            raise ValueError("per-clip keys must be threefry keys (jax.random.split of "
                             "jax.random.PRNGKey(seed)); got " + str(jax.random.key_impl(rng)))
        rng = jax.random.key_data(rng)
    keys = np.asarray(rng)
    if keys.shape != (batch, 2) or keys.dtype != np.uint32:
        raise ValueError(f"rng must be one PRNG key or one per clip ({batch}, 2) uint32, got "
                         f"shape {keys.shape} {keys.dtype}")
    return keys, True


def per_row(fn: Callable, n_rows: int) -> Callable:
    """``fn(params, *rows, *shared, key)`` (``rows``: ``n_rows`` arguments with a leading
    batch axis, ``None`` allowed) as a program taking one key per row: each row runs as a
    batch of one with its own key (``vmap`` over the rows), so its random draws are those of
    the row alone."""
    def run(params, *args):
        rows, shared, keys = args[:n_rows], args[n_rows:-1], args[-1]

        def one(*a):
            *row, key = a
            out = fn(params, *(jax.tree.map(lambda x: x[None], r) for r in row), *shared, key)
            return jax.tree.map(lambda y: y[0], out)

        return jax.vmap(one)(*rows, keys)

    return run


def map_rows(fn: Callable, in_axes: Sequence[int | None], how: str, shards: int = 1
             ) -> Callable:
    """``fn`` (one row's computation) over a batch's rows, the rows being the arguments
    whose ``in_axes`` entry is 0 (the others are shared; ``None`` values allowed), plus one
    last argument ``valid`` ``(R,)`` bool: whether each row is a real one (not padding).

    ``how="vmap"``: ``jax.vmap(fn)`` (``valid`` unused). ``how="map"``: the rows are split
    into ``shards`` groups (the devices they are placed on, a leading-axis split) that are
    vmapped, and within a group run one after another (``lax.map``); with one group a row
    that is only padding computes nothing (zeros, ``lax.cond``). Both give the same values.
    """
    in_axes = tuple(in_axes)
    if how == "vmap":
        vmapped = jax.vmap(fn, in_axes=in_axes)
        return lambda *args: vmapped(*args[:-1])
    if how != "map":
        raise ValueError(f"rows must be 'vmap' or 'map', got {how!r}")

    def run(*args):
        *args, valid = args
        idx = [i for i, a in enumerate(in_axes) if a == 0 and args[i] is not None]
        rows = valid.shape[0]
        groups = shards if rows % shards == 0 else 1

        def one(row_args, ok):
            full = list(args)
            for i, x in zip(idx, row_args):
                full[i] = x
            if groups > 1:          # vmapped over the groups: a cond would run both branches
                return fn(*full)
            shape = jax.eval_shape(lambda: fn(*full))
            return jax.lax.cond(ok, lambda: fn(*full),
                                lambda: jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype),
                                                     shape))

        def group(row_args, ok):
            return jax.lax.map(lambda a: one(a[:-1], a[-1]), (*row_args, ok))

        if groups == 1:             # not vmapped, so the cond skips the padding rows
            return group(tuple(args[i] for i in idx), valid)
        split = [jax.tree.map(lambda x: x.reshape((groups, rows // groups) + x.shape[1:]),
                              args[i]) for i in idx]
        out = jax.vmap(group)(tuple(split), valid.reshape(groups, rows // groups))
        return jax.tree.map(lambda y: y.reshape((rows,) + y.shape[2:]), out)

    return run


def row_count(n: int, n_devices: int) -> int:
    """Rows a batch of ``n`` runs as: 1 alone; else the next power of two, rounded up to a
    multiple of ``n_devices`` (so the rows split evenly over the devices)."""
    if n < 1:
        raise ValueError(f"a batch needs at least one row, got {n}")
    if n == 1:
        return 1
    rows = 1 << (n - 1).bit_length()
    return -(-rows // n_devices) * n_devices


def piece_id(audio: np.ndarray, *where: int) -> int:
    """A stable 31-bit id of a piece: a hash of its samples and of ``where`` (e.g. its start
    and length in its input). The same piece gets the same id in any batch, in any run."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(audio, np.float32).tobytes())
    h.update(np.asarray(where, np.int64).tobytes())
    return int.from_bytes(h.digest(), "little") & 0x7FFFFFFF


# ----------------------------------------------------------------------------- counting

_listeners_lock = threading.Lock()
_active: list["CompileCounter"] = []
_installed = False


def _on_event(event: str, duration: float, **_: Any) -> None:
    if event == BACKEND_COMPILE_EVENT:
        for c in list(_active):
            c.compiles += 1
            c.compile_seconds += duration
    elif event == TRACE_EVENT:
        for c in list(_active):
            c.traces += 1


def _install() -> None:
    global _installed
    with _listeners_lock:
        if not _installed:
            jax.monitoring.register_event_duration_secs_listener(_on_event)
            _installed = True


class CompileCounter(contextlib.AbstractContextManager):
    """Counts backend compilations (``compiles``, ``compile_seconds``) and jaxpr traces
    (``traces``) of every jitted program run while it is entered (all threads)::

        with CompileCounter() as cc:
            conv.convert(clips)
        print(cc.compiles)

    JAX reports a program loaded from the persistent compilation cache with the same event:
    ``compiles`` counts the executables obtained either way (without a persistent cache, as
    in tests, every one is a compilation).
    """

    def __init__(self):
        self.compiles = 0
        self.compile_seconds = 0.0
        self.traces = 0

    def __enter__(self):
        _install()
        with _listeners_lock:
            _active.append(self)
        return self

    def __exit__(self, *exc):
        with _listeners_lock:
            _active.remove(self)
        return False


# ----------------------------------------------------------------------------- placement


_shared: dict[tuple, "Runtime"] = {}
_shared_lock = threading.Lock()


def shared(devices: Sequence[jax.Device] | None = None) -> "Runtime":
    """The process's :class:`Runtime` over ``devices`` (default: the local devices), one
    per device set: the public model APIs (``load_sovits().infer``, ``load_diffusion().sample``,
    ``load_vocoder()(...)``, ``ContentEncoder.encode``) run through it, so models of the same
    architecture share compiled programs."""
    devices = list(devices or jax.local_devices())
    key = tuple((d.platform, d.id) for d in devices)
    with _shared_lock:
        rt = _shared.get(key)
        if rt is None:
            rt = _shared[key] = Runtime(devices)
    return rt


class Runtime:
    """Mesh, placement and compiled programs for one set of local devices."""

    def __init__(self, devices=None):
        self.devices = list(devices or jax.local_devices())
        self.mesh = sharding.make_mesh(devices=self.devices)
        self.n_devices = len(self.devices)
        self.platform = self.devices[0].platform
        self._params: dict[Hashable, Any] = {}
        # parameters placed for an owner (a model object): dropped with it
        self._owned: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
        self._programs: dict[Hashable, Callable] = {}
        self.traces: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    @property
    def kernels(self) -> dict[str, Any]:
        """This backend's :data:`KERNELS` choices."""
        return kernel_choices(self.platform)

    def rows(self, n: int) -> int:
        return row_count(n, self.n_devices)

    def _where(self, rows: int) -> str:
        return "one" if rows == 1 or self.n_devices == 1 else "mesh"

    def params(self, name: Hashable, tree: Any, rows: int, *, owner: Any = None) -> Any:
        """``tree`` placed for a batch of ``rows`` (replicated over the mesh, or on the first
        device for one row), placed once per (name, placement); with ``owner`` the placed
        copies live as long as the owner does."""
        where = self._where(rows)
        with self._lock:
            cache = self._params if owner is None else self._owned.setdefault(owner, {})
            key = (name, where)
            if key not in cache:
                target = (self.devices[0] if where == "one"
                          else sharding.replicated(self.mesh))
                cache[key] = jax.device_put(tree, target)
            return cache[key]

    @staticmethod
    def pad_rows(x: Any, rows: int) -> Any:
        """Row data (NumPy, leading axis ``n <= rows``) padded to ``rows`` rows by repeating
        the last row (a valid input, so padding rows compute nothing out of range);
        ``None`` leaves stay ``None``."""
        def pad(a):
            a = np.asarray(a)
            n = a.shape[0]
            if n == rows:
                return a
            return np.concatenate([a, np.repeat(a[-1:], rows - n, axis=0)])

        return jax.tree.map(pad, x)

    def put_rows(self, x: Any, rows: int) -> Any:
        """Row data (leading axis ``rows``) split over the mesh (one row: on one device);
        ``None`` leaves stay ``None``."""
        if self._where(rows) == "one":
            dev = self.devices[0]
            return jax.tree.map(lambda a: jax.device_put(a, dev), x)
        return jax.tree.map(
            lambda a: jax.device_put(a, sharding.batch_sharding(self.mesh, np.ndim(a))), x)

    def put_replicated(self, x: Any, rows: int) -> Any:
        if x is None:
            return None
        if self._where(rows) == "one":
            return jax.device_put(x, self.devices[0])
        return jax.device_put(x, sharding.replicated(self.mesh))

    def program(self, name: str, static: Hashable, build: Callable[[], Callable]) -> Callable:
        """The jitted program ``name`` for ``static`` options (built by ``build()`` on first
        use); jit compiles it once per input shape, i.e. per (bucket, rows). ``static`` must
        hold everything the program closes over that changes what it computes (the Flax
        modules, whose fields carry the kernel choices such as ``unroll_layers``, options):
        two calls with equal keys share one compiled program."""
        key = (name, static)
        with self._lock:
            fn = self._programs.get(key)
            if fn is None:
                body = build()

                def counted(*args):
                    self.traces[key] = self.traces.get(key, 0) + 1   # runs while tracing
                    return body(*args)

                fn = self._programs[key] = jax.jit(counted)
        return fn

    def trace_counts(self, name: str, match: Callable[[Hashable], bool] = lambda s: True
                     ) -> dict[Hashable, int]:
        """Traces of program ``name`` per static key, for the keys ``match`` accepts."""
        return {k[1]: v for k, v in list(self.traces.items())
                if k[0] == name and match(k[1])}

    @property
    def trace_count(self) -> int:
        return sum(self.traces.values())


class RuntimeView:
    """What a model entry point built on a :class:`Runtime` (its ``runtime`` attribute)
    exposes of it: the mesh and the number of devices its batches are split over."""

    @property
    def mesh(self):
        return self.runtime.mesh

    @property
    def n_devices(self) -> int:
        return self.runtime.n_devices
