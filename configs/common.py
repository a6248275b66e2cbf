"""Pieces shared by the config files (big_vision style).

Config files define ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``;
``arg`` is the text after ``:`` in ``--config configs/x.py:variant=tiny,fsdp=2``.
"""

from __future__ import annotations

import ml_collections

from svcjax.configlib import parse_arg  # the package's configs use it too

__all__ = ["parse_arg", "audio"]


def audio() -> ml_collections.ConfigDict:
    """The one frame rate: 44.1 kHz, hop 512 (86.13 frames/s) for every signal."""
    return ml_collections.ConfigDict(dict(
        sampling_rate=44100,
        hop_length=512,
        filter_length=2048,
        win_length=2048,
        n_mel_channels=80,
        mel_fmin=0.0,
        mel_fmax=22050.0,
        max_wav_value=32768.0,
        unit_interpolate_mode="nearest",
    ))
