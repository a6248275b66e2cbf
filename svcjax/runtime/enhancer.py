"""The NSF-HiFiGAN enhancer: re-vocode converted audio with its F0 (So-VITS-SVC's ``-eh``).

    enh = Enhancer(svcjax.load_vocoder("pretrain/nsf_hifigan/model"))
    out, sr = enh.enhance(audio, 44100, f0, 512, adaptive_key=2)     # the reference's API
    out = enh(audio, f0, lengths=lengths, adaptive_key=2)            # same length as audio

So-VITS-SVC 4.1's ``modules/enhancer.py``: the output of the SoVITS generator is analysed into
the vocoder's log-mel and rendered again by the NSF-HiFiGAN vocoder from that mel and the F0
the generator used. It can clean up models trained on little data and is off by default
(``svcjax convert --enhance``); like the reference, it is not applied after shallow diffusion
(whose output already comes from the same vocoder).

Adaptive key (``adaptive_key`` semitones, ``--enhancer-adaptive-key``): the vocoder is shown
the audio as if it were ``k`` semitones lower, so high voices fall in the range it was trained
on. The audio is resampled from ``sr`` to ``r_a = 100 round(r_v 2^(k/12) / 100)`` Hz (``r_v``
the vocoder's rate) and analysed as if it were at ``r_v``; the F0 is scaled by ``r_v / r_a``
and linearly interpolated onto the vocoder's frames (held at the ends); the vocoder's output
is resampled from ``r_a`` back to ``r_v``, which raises it to the original key. Both
resamplings use torchaudio's Hann-windowed sinc with 128 zero crossings, as the reference
(:mod:`svcjax.audio.resample` preset ``torchaudio_hann128``; none when the rates are equal).

Lengths: the vocoder renders ``L_a // hop`` whole frames of the ``L_a`` resampled samples, so
:meth:`Enhancer.enhance` returns ``ceil(hop (L_a // hop) r_v / r_a)`` samples per clip, as the
reference does (a hop or so short of the input with a key shift); :meth:`Enhancer.__call__`
cuts or zero-pads each clip at its end to its input length (the start stays aligned). Batches
of clips run together: each clip is resampled, analysed and vocoded to its own length (a
padded clip gives the samples of the clip alone).
"""

from __future__ import annotations

import numpy as np

from svcjax.audio import resample as resample_lib
from svcjax.audio.constants import HOP

__all__ = ["Enhancer", "adaptive_sample_rate"]

RESAMPLER = "torchaudio_hann128"


def adaptive_sample_rate(vocoder_rate: int, adaptive_key: float) -> int:
    """The rate the audio is resampled to for a shift of ``adaptive_key`` semitones."""
    factor = 2.0 ** (-float(adaptive_key) / 12.0)
    return 100 * int(np.round(vocoder_rate / factor / 100))


class Enhancer:
    """NSF-HiFiGAN re-vocoding of audio with its F0 (:class:`svcjax.runtime.vocoder.Vocoder`)."""

    def __init__(self, vocoder):
        from svcjax.runtime.vocoder import Vocoder

        if not isinstance(vocoder, Vocoder):
            raise ValueError(f"the enhancer needs the NSF-HiFiGAN vocoder's weights, got "
                             f"{vocoder!r} (pass --vocoder pretrain/nsf_hifigan/model)")
        self.vocoder = vocoder
        self.sampling_rate = int(vocoder.sampling_rate)
        self.hop_size = int(vocoder.hop_size)

    def enhance(self, audio, sample_rate: int, f0, hop_size: int, adaptive_key: float = 0.0,
                lengths=None, rng=None) -> tuple[list[np.ndarray], int]:
        """The reference's ``Enhancer.enhance`` (``silence_front`` 0) for a batch.

        ``audio`` ``(B, L)`` at ``sample_rate``, ``f0`` ``(B, T)`` Hz at ``hop_size`` (the
        F0 the audio was made with), ``lengths`` ``(B,)`` valid samples per clip (default all)
        -> ``(clips, vocoder rate)``, one array per clip (module docstring: lengths).
        ``rng``: the vocoder's random draws (None: deterministic, as the reference's
        inference with every draw zero).
        """
        audio = np.asarray(audio, np.float32)
        f0 = np.asarray(f0, np.float32)
        if audio.ndim != 2 or f0.ndim != 2 or f0.shape[0] != audio.shape[0]:
            raise ValueError(f"the enhancer needs audio (B, L) and f0 (B, T), got shapes "
                             f"{audio.shape} and {f0.shape}")
        b, width = audio.shape
        lengths = (np.full((b,), width, np.int64) if lengths is None
                   else np.asarray(lengths, np.int64).reshape(-1))
        if lengths.shape != (b,) or lengths.min() < 1 or lengths.max() > width:
            raise ValueError(f"lengths must be {b} values in 1..{width}, got {lengths.tolist()}")
        if not np.isfinite(adaptive_key):
            raise ValueError(f"adaptive_key must be a finite number, got {adaptive_key}")
        r_v, hop = self.sampling_rate, self.hop_size
        r_a = adaptive_sample_rate(r_v, adaptive_key)
        real_factor = r_v / r_a
        if int(sample_rate) != r_a:
            audio = np.asarray(resample_lib.resample(audio, int(sample_rate), r_a,
                                                     quality=RESAMPLER))
        n_res = np.array([resample_lib.resampled_length(n, int(sample_rate), r_a)
                          for n in lengths])
        frames = n_res // hop
        if frames.min() < 1:
            raise ValueError(f"a clip of {int(lengths.min())} samples is shorter than one "
                             f"vocoder frame ({hop} samples at {r_a} Hz)")
        t = int(frames.max())
        mel = np.asarray(self.vocoder.mel(audio, lengths=n_res))[:, :t]
        f0_res = np.zeros((b, t), np.float32)
        t_frames = int(f0.shape[1])
        for i in range(b):
            # the F0 frames the clip has (the reference's f0 spans exactly its audio)
            n_f0 = min(t_frames, int(-(-int(lengths[i]) // int(hop_size))))
            # scaled in float32 as the reference (in place on its float32 array)
            src = (f0[i, :n_f0] * np.float32(real_factor)).astype(np.float64)
            t_src = (hop_size / sample_rate) * np.arange(n_f0) / real_factor
            t_dst = (hop / r_v) * np.arange(int(frames[i]) + 1)
            f0_res[i, :frames[i]] = np.interp(t_dst, t_src, src, left=src[0],
                                              right=src[-1])[:frames[i]]
        wav = self.vocoder(mel, f0_res, rng=rng, lengths=frames)
        n_out = [resample_lib.resampled_length(int(n) * hop, r_a, r_v) for n in frames]
        if r_a != r_v:
            wav = np.asarray(resample_lib.resample(wav, r_a, r_v, quality=RESAMPLER))
        return [np.asarray(wav[i, :n_out[i]], np.float32) for i in range(b)], r_v

    def __call__(self, audio, f0, *, sample_rate: int | None = None, hop_size: int = HOP,
                 adaptive_key: float = 0.0, lengths=None, rng=None) -> np.ndarray:
        """Enhanced ``(B, L)`` audio at the vocoder's rate, each clip cut or zero-padded at
        its end to its input length (``sample_rate`` must be the vocoder's, the default)."""
        sr = self.sampling_rate if sample_rate is None else int(sample_rate)
        if sr != self.sampling_rate:
            raise ValueError(f"the enhancer's vocoder runs at {self.sampling_rate} Hz, the "
                             f"audio is at {sr} Hz")
        audio = np.asarray(audio, np.float32)
        clips, _ = self.enhance(audio, sr, f0, hop_size, adaptive_key, lengths, rng)
        out = np.zeros_like(audio)
        lengths = [audio.shape[1]] * len(clips) if lengths is None else list(lengths)
        for i, (c, n) in enumerate(zip(clips, lengths)):
            m = min(len(c), int(n))
            out[i, :m] = c[:m]
        return out
