"""The NSF-HiFiGAN vocoder as users call it: log-mel + F0 -> 44.1 kHz waveform.

    voc = svcjax.load_vocoder("pretrain/nsf_hifigan/model")   # config.json beside it
    wav = voc(mel, f0, rng=None)        # mel (B, T, 128), f0 (B, T) Hz -> (B, 512 T)
    mel = voc.mel(audio)                # the mel it was trained on (nvSTFT, 128 bins)

The standalone vocoder of So-VITS-SVC's shallow diffusion (openvpi's 44.1 kHz release): the
NSF-HiFiGAN generator of :mod:`svcjax.models.nsf_hifigan` with a 128-bin mel input, no
speaker condition, and the frame-rate harmonic source whose phase is accumulated exactly
(:mod:`svcjax.models.phase`; the reference uses float64 for it).

Each call pads the frames to a length bucket (:mod:`svcjax.buckets`) with a frame mask (the
valid samples equal those of the unpadded clip), and runs one jitted function per bucket and
batch size; a batch of more than one clip is padded to a multiple of the local device count
and split over the devices. ``rng=None`` is the deterministic output (zero initial phases, no
source noise); with a key, harmonics >= 2 start at random phases and Gaussian source noise
is added as in the reference (its random initial phase is added to frame 0's per-sample
increment, a chirp over the first 11.6 ms; here it is a constant phase offset).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import jax
import numpy as np

from svcjax import buckets, checkpoint, sharding

__all__ = ["Vocoder", "load_vocoder", "vocode"]


def vocode(module, params, mel, f0, mask=None, rng=None):
    """Pure, jit-friendly vocoder call: ``(B, T, n_mels), (B, T) -> (B, T * hop)``."""
    rngs = {"noise": rng} if rng is not None else {}
    return module.apply({"params": params}, mel, f0, None, mask, rngs=rngs)


class Vocoder:
    """A loaded NSF-HiFiGAN vocoder: ``config`` (ConfigDict), ``params``, ``trace_count``."""

    def __init__(self, params: Any, config: Any, *, dtype: Any = None, devices=None):
        from svcjax.convert import nsf_hifigan as convert

        self.config = config
        self.sampling_rate = int(config.sampling_rate)
        self.hop_size = int(config.hop_size)
        self.num_mels = int(config.num_mels)
        self.module = convert.build_generator(config, dtype=dtype)
        self.mesh = sharding.make_mesh(devices=devices or jax.local_devices())
        self.n_devices = self.mesh.devices.size
        params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
        self.params = jax.device_put(params, sharding.replicated(self.mesh))
        self._params_one = jax.device_put(params, self.mesh.devices.flat[0])
        self.trace_count = 0
        self._lock = threading.Lock()
        self._jitted = jax.jit(self._fn)

    def _fn(self, params, mel, f0, mask, rng):
        self.trace_count += 1  # runs only while tracing
        return vocode(self.module, params, mel, f0, mask, rng)

    def mel(self, audio, keyshift: float = 0.0, lengths=None) -> jax.Array:
        """The vocoder's log-mel ``(B, L) -> (B, L // hop, num_mels)`` of audio at its rate."""
        from svcjax.audio import spectrogram

        c = self.config
        return spectrogram.vocoder_mel(
            audio, keyshift=keyshift, sampling_rate=self.sampling_rate, n_fft=int(c.n_fft),
            win_length=int(c.win_size), hop_length=self.hop_size, n_mels=self.num_mels,
            fmin=float(c.fmin), fmax=float(c.fmax), lengths=lengths)

    def __call__(self, mel, f0, rng: jax.Array | None = None, lengths=None) -> np.ndarray:
        """Waveform ``(B, T * hop)`` (NumPy, zero past each clip's length) of ``mel``
        ``(B, T, num_mels)`` and ``f0`` ``(B, T)`` Hz (0 = unvoiced); unbatched ``(T, C)`` /
        ``(T,)`` give ``(T * hop,)``. ``lengths`` ``(B,)`` valid frames per clip."""
        mel = np.asarray(mel, np.float32)
        unbatched = mel.ndim == 2
        if unbatched:
            mel = mel[None]
        if mel.ndim != 3 or mel.shape[-1] != self.num_mels or mel.shape[1] == 0:
            raise ValueError(f"mel must be (B, T, {self.num_mels}) with T > 0, got shape "
                             f"{np.shape(mel)}")
        b, t, _ = mel.shape
        f0 = np.asarray(f0, np.float32)
        if unbatched and f0.ndim == 1:
            f0 = f0[None]
        if f0.ndim == 3 and f0.shape[-1] == 1:
            f0 = f0[..., 0]
        if f0.shape != (b, t):
            raise ValueError(f"f0 must be (B, T) = ({b}, {t}) like the mel, got {np.shape(f0)}")
        if not (np.isfinite(mel).all() and np.isfinite(f0).all()):
            raise ValueError("mel and f0 must be finite")
        if lengths is None:
            lengths = np.full((b,), t, np.int64)
        else:
            lengths = np.asarray(lengths, np.int64).reshape(-1)
            if lengths.shape != (b,) or lengths.min() < 1 or lengths.max() > t:
                raise ValueError(f"lengths must be {b} values in 1..{t}, got {lengths.tolist()}")
        tb = buckets.bucket_length(t)
        mask = buckets.length_mask(lengths, tb)
        mel_p = buckets.pad_axis(mel, tb, axis=1)
        f0_p = buckets.pad_axis(f0, tb, axis=1) * mask
        inputs = [mel_p, f0_p, mask]
        if b > 1 and self.n_devices > 1:
            inputs, _ = sharding.pad_to_multiple(inputs, self.n_devices)
            inputs = [jax.device_put(x, sharding.batch_sharding(self.mesh, x.ndim))
                      for x in inputs]
            params = self.params
            key = None if rng is None else jax.device_put(rng, sharding.replicated(self.mesh))
        else:
            dev = self.mesh.devices.flat[0]
            inputs = [jax.device_put(x, dev) for x in inputs]
            params = self._params_one
            key = None if rng is None else jax.device_put(rng, dev)
        with self._lock:
            wav = self._jitted(params, *inputs, key)
        wav = np.asarray(wav)[:b, :t * self.hop_size]
        return wav[0] if unbatched else wav


def load_vocoder(path: str | os.PathLike, config: str | os.PathLike | None = None, *,
                 dtype: Any = None, devices=None) -> Vocoder:
    """Load the NSF-HiFiGAN vocoder.

    ``path``: the reference's ``model`` file (``{'generator': state_dict}``) with its
    ``config`` (default: ``config.json`` beside it), or an svcjax model directory written by
    ``svcjax import-vocoder``. ``dtype``: computation dtype (parameters stay float32).
    """
    from svcjax.convert import nsf_hifigan as convert

    path = os.fspath(path)
    if os.path.isdir(path):
        if config is not None:
            raise ValueError(f"{path} is a model directory; it carries its own config")
        params, cfg = checkpoint.load_model_dir(path)
        if cfg.get("kind") != convert.KIND:
            raise ValueError(f"{path} holds a {cfg.get('kind')!r} model, not an NSF-HiFiGAN "
                             "vocoder")
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(f"vocoder not found: {path!r} (expected the NSF-HiFiGAN "
                                    "'model' file with config.json beside it, or an svcjax "
                                    "model directory)")
        params, cfg = convert.load_vocoder_checkpoint(path, config)
    return Vocoder(params, cfg, dtype=dtype, devices=devices)
