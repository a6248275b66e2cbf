"""Pieces shared by the config files (big_vision style).

Config files define ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``;
``arg`` is the text after ``:`` in ``--config configs/x.py:variant=tiny,fsdp=2``.
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, lazy: bool = False, **spec):
    """Parse ``'a=1,b=x,flag'`` against defaults in ``spec`` (types follow the defaults).

    A bare word sets a bool default to True. Unknown keys are an error unless ``lazy``.
    """
    out = ml_collections.ConfigDict(dict(spec))
    if not arg:
        return out
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in spec:
            if lazy:
                out[key] = value
                continue
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(spec))}")
        default = spec[key]
        if not _:
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes", "y")
        elif default is None:
            out[key] = value
        else:
            out[key] = type(default)(value)
    return out


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
