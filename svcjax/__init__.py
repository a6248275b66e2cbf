"""svcjax: So-VITS-SVC 4.1 singing-voice conversion with shallow diffusion, in JAX/Flax.

The public API is imported lazily (``import svcjax`` stays cheap); see README.md.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    "build_corpus": "svcjax.data.corpus",
    "Featurizer": "svcjax.data.featurizer",
    "load_audio": "svcjax.audio.io",
    "save_audio": "svcjax.audio.io",
    "resample": "svcjax.audio.resample",
    "linear_spectrogram": "svcjax.audio.spectrogram",
    "mel_spectrogram": "svcjax.audio.spectrogram",
    "vocoder_mel": "svcjax.audio.spectrogram",
    "volume": "svcjax.audio.features",
    "slice_on_silence": "svcjax.audio.slicer",
    "load_vocoder": "svcjax.runtime.vocoder",
    "Converter": "svcjax.runtime.converter",
    "ConvertOptions": "svcjax.runtime.converter",
    "Vocoder": "svcjax.runtime.vocoder",
    "load_diffusion": "svcjax.runtime.diffusion",
    "Diffusion": "svcjax.runtime.diffusion",
    "load_content_encoder": "svcjax.runtime.units",
    "init_content_encoder": "svcjax.runtime.units",
    "interpolate_units": "svcjax.runtime.units",
    "ContentEncoder": "svcjax.runtime.units",
    "extract_f0": "svcjax.audio.f0",
    "transpose_f0": "svcjax.audio.f0",
    "interpolate_f0": "svcjax.audio.f0",
    "load_sovits": "svcjax.runtime.sovits",
    "SovitsModel": "svcjax.runtime.sovits",
    "load_timbre_index": "svcjax.timbre.index",
    "TimbreIndex": "svcjax.timbre.index",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'svcjax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
