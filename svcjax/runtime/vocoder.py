"""The NSF-HiFiGAN vocoder as users call it: log-mel + F0 -> 44.1 kHz waveform.

    voc = svcjax.load_vocoder("pretrain/nsf_hifigan/model")   # config.json beside it
    wav = voc(mel, f0, rng=None)        # mel (B, T, 128), f0 (B, T) Hz -> (B, 512 T)
    mel = voc.mel(audio)                # the mel it was trained on (nvSTFT, 128 bins)

The standalone vocoder of So-VITS-SVC's shallow diffusion (openvpi's 44.1 kHz release): the
NSF-HiFiGAN generator of :mod:`svcjax.models.nsf_hifigan` with a 128-bin mel input, no
speaker condition, and the frame-rate harmonic source whose phase is accumulated exactly
(:mod:`svcjax.models.phase`; the reference uses float64 for it).

A call is a view on the shared runtime layer (:mod:`svcjax.runtime.runner`): the frames are
padded to the frame bucket with a frame mask (the valid samples equal those of the unpadded
clip), a batch of more than one clip runs as ``row_count`` rows split over the local devices,
and one jitted program runs per (bucket, rows), shared by vocoders of the same architecture.
``rng=None`` is the deterministic output (zero initial phases, no source noise); with a key,
harmonics >= 2 start at random phases and Gaussian source noise is added as in the reference
(its random initial phase is added to frame 0's per-sample increment, a chirp over the first
11.6 ms; here it is a constant phase offset). One key per clip (``jax.random.split(key, B)``)
makes each clip draw what it draws alone with its key.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import jax
import numpy as np

from svcjax.audio.constants import HOP, SAMPLING_RATE
from svcjax.runtime import buckets, runner

from svcjax.train import checkpoint

logger = logging.getLogger(__name__)

__all__ = ["Vocoder", "GriffinLimVocoder", "load_vocoder", "vocode", "GRIFFIN_LIM"]

GRIFFIN_LIM = "griffin-lim"


def vocode(module, params, mel, f0, mask=None, rng=None):
    """Pure, jit-friendly vocoder call: ``(B, T, n_mels), (B, T) -> (B, T * hop)``."""
    rngs = {"noise": rng} if rng is not None else {}
    return module.apply({"params": params}, mel, f0, None, mask, rngs=rngs)


def _batched_mel(mel, num_mels: int) -> tuple[np.ndarray, bool]:
    """``(B, T, num_mels)`` float32 of a batched or unbatched ``(T, num_mels)`` mel, and
    whether it was unbatched; one error for any other shape."""
    mel = np.asarray(mel, np.float32)
    unbatched = mel.ndim == 2
    if unbatched:
        mel = mel[None]
    if mel.ndim != 3 or mel.shape[-1] != num_mels or mel.shape[1] == 0:
        raise ValueError(f"mel must be (B, T, {num_mels}) with T > 0, got shape "
                         f"{np.shape(mel)}")
    return mel, unbatched


class Vocoder(runner.RuntimeView):
    """A loaded NSF-HiFiGAN vocoder: ``config`` (ConfigDict), ``params``, ``trace_count``."""

    def __init__(self, params: Any, config: Any, *, dtype: Any = None, devices=None,
                 runtime=None):
        from svcjax.interop import nsf_hifigan as convert

        self.config = config
        self.sampling_rate = int(config.sampling_rate)
        self.hop_size = int(config.hop_size)
        self.num_mels = int(config.num_mels)
        self.runtime = runtime or runner.shared(devices)
        self.module = convert.build_generator(config, dtype=dtype,
                                              conv_kernels=self.runtime.kernels["conv"])
        self.params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)

    @property
    def trace_count(self) -> int:
        """Traces of the vocoder program for this architecture (all vocoders sharing it),
        from the runtime's count."""
        return sum(self.runtime.trace_counts("vocoder", lambda k: k[0] == self.module).values())

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
        ``(T,)`` give ``(T * hop,)``. ``lengths`` ``(B,)`` valid frames per clip. ``rng``:
        ``None``, one key, or one key per clip (module docstring)."""
        mel, unbatched = _batched_mel(mel, self.num_mels)
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
        lengths = runner.frame_lengths(lengths, b, t)
        rt = self.runtime
        tb = runner.frame_bucket(t)
        rows = rt.rows(b)
        mask = buckets.length_mask(lengths, tb)
        inputs = [buckets.pad_axis(mel, tb, axis=1), buckets.pad_axis(f0, tb, axis=1) * mask, mask]
        inputs = rt.put_rows(rt.pad_rows(inputs, rows), rows)
        params = rt.params("vocoder", self.params, rows, owner=self)
        module = self.module
        key, per_row = runner.row_keys(rng, b)
        key = rt.put_rows(rt.pad_rows(key, rows), rows) if per_row else \
            rt.put_replicated(key, rows)
        fn = rt.program("vocoder", (module, per_row), lambda: (
            runner.per_row(functools.partial(vocode, module), 3) if per_row
            else functools.partial(vocode, module)))
        wav = fn(params, *inputs, key)
        wav = np.asarray(wav)[:b, :t * self.hop_size]
        return wav[0] if unbatched else wav


class GriffinLimVocoder:
    """A vocoder without weights, for when no NSF-HiFiGAN file is at hand (``make demo``).

    Inverts the same 128-bin log-mel as :class:`Vocoder` (``mel()`` is the identical
    analysis): the mel filterbank is inverted by non-negative least squares, then
    ``n_iter`` Griffin-Lim iterations (librosa, on the CPU) estimate a phase. It ignores
    ``f0`` and ``rng``; the sound is phasey and buzzy next to NSF-HiFiGAN, but it is a faithful
    rendering of the mel, so shallow diffusion can be heard and measured without a
    pretrained vocoder. ``load_vocoder("griffin-lim")`` returns one.

    It never clips: a clip whose waveform would peak above ``peak_limit`` (0.99 of full
    scale) is scaled down as a whole to that peak, with a logged warning giving the gain.
    """

    pretrained = False
    peak_limit = 0.99

    def __init__(self, *, sampling_rate: int = SAMPLING_RATE, hop_size: int = HOP,
                 n_fft: int = 2048, num_mels: int = 128, fmin: float = 40.0,
                 fmax: float = 16000.0, n_iter: int = 32):
        import ml_collections

        self.sampling_rate, self.hop_size, self.num_mels = sampling_rate, hop_size, num_mels
        self.n_iter = int(n_iter)
        self.config = ml_collections.ConfigDict(dict(
            sampling_rate=sampling_rate, hop_size=hop_size, n_fft=n_fft, win_size=n_fft,
            num_mels=num_mels, fmin=fmin, fmax=fmax, kind=GRIFFIN_LIM))
        self.trace_count = 0

    def __repr__(self) -> str:
        return f"GriffinLimVocoder(n_iter={self.n_iter}, no weights)"

    mel = Vocoder.mel

    def __call__(self, mel, f0=None, rng: jax.Array | None = None, lengths=None) -> np.ndarray:
        """Waveform ``(B, T * hop)`` of ``mel`` ``(B, T, num_mels)`` (``(T, C)`` -> ``(T * hop,)``);
        ``f0`` and ``rng`` are accepted for the :class:`Vocoder` signature and unused."""
        import librosa

        mel, unbatched = _batched_mel(mel, self.num_mels)
        if not np.isfinite(mel).all():
            raise ValueError("mel must be finite")
        b, t, _ = mel.shape
        lengths = np.full((b,), t) if lengths is None else np.asarray(lengths).reshape(-1)
        c, hop = self.config, self.hop_size
        # The analysis frame t is centred on sample t * hop + (n_fft / 2 - (n_fft - hop) / 2)
        # (reflect padding of (win - hop) / 2, no centring); librosa centres frame t on t * hop.
        delay = c.n_fft // 2 - (c.n_fft - hop + 1) // 2
        out = np.zeros((b, t * hop), np.float32)
        for i in range(b):
            n = int(lengths[i])
            magnitude = librosa.feature.inverse.mel_to_stft(
                np.exp(mel[i, :n].T.astype(np.float64)), sr=self.sampling_rate,
                n_fft=c.n_fft, power=1.0, fmin=c.fmin, fmax=c.fmax)
            wav = librosa.griffinlim(magnitude, n_iter=self.n_iter, hop_length=hop,
                                     win_length=c.n_fft, n_fft=c.n_fft, center=True,
                                     random_state=0)     # (n - 1) * hop samples
            m = min(len(wav), n * hop - delay)
            out[i, delay:delay + m] = wav[:m]
            peak = float(np.abs(out[i]).max())
            if peak > self.peak_limit:   # a mel louder than full scale: scale, never clip
                out[i] *= self.peak_limit / peak
                logger.warning("griffin-lim: clip %d peaked at %.2f of full scale; scaled by "
                                "%.1f dB to %.2f instead of clipping", i, peak,
                                20 * np.log10(self.peak_limit / peak), self.peak_limit)
        return out[0] if unbatched else out


def load_vocoder(path: str | os.PathLike, config: str | os.PathLike | None = None, *,
                 dtype: Any = None, devices=None, runtime=None) -> Vocoder | GriffinLimVocoder:
    """Load the NSF-HiFiGAN vocoder (``"griffin-lim"``: the weightless
    :class:`GriffinLimVocoder` instead).

    ``path``: the reference's ``model`` file (``{'generator': state_dict}``) with its
    ``config`` (default: ``config.json`` beside it), or an svcjax model directory written by
    ``svcjax import-vocoder``. ``dtype``: computation dtype (parameters stay float32).
    """
    from svcjax.interop import nsf_hifigan as convert

    path = os.fspath(path)
    if path == GRIFFIN_LIM:
        return GriffinLimVocoder()
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
    return Vocoder(params, cfg, dtype=dtype, devices=devices, runtime=runtime)
