"""The registry of speech content encoders: So-VITS-SVC's ``speech_encoder`` names and families.

A *kind* is what the reference's config calls ``speech_encoder`` (``vec768l12``,
``hubertsoft``, ...): which units to extract, of which dimension. A *family* is the network
that computes them, with its model module and its checkpoint importer:

* the model module (``svcjax.models.<family>``) has ``default_config(kind, **overrides)``,
  ``build_model(config, *, dtype, precision, attention_block, full)`` (a module applied as
  ``apply({"params": p}, wav (B, L) 16 kHz, lengths (B,))`` -> ``(units (B, T, C), frames
  (B,))``, a padded row giving the frames of the clip alone), ``num_frames(n_samples,
  config)``, ``min_samples(config)``, ``max_samples(config)`` (``None``: unbounded),
  ``unit_dim(config)`` and ``hop(config)`` (16 kHz samples per unit frame);
* the importer module (``svcjax.interop.<family>``) has ``sniff(obj)`` (is this object, read
  by the restricted unpickler, one of the family's checkpoints?),
  ``import_checkpoint(obj, path, kind)`` -> ``(params, config)`` and optionally ``EXPECTED``,
  a few words on the files it reads.

:class:`svcjax.runtime.units.ContentEncoder` runs any family; ``svcjax import-encoder`` and
:func:`svcjax.load_content_encoder` find the family of a file by asking each importer.
Modules are imported when first needed.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

__all__ = ["Kind", "KINDS", "FAMILIES", "get_kind", "model_module", "importer_module",
           "family_of"]


@dataclasses.dataclass(frozen=True)
class Kind:
    """One So-VITS ``speech_encoder`` name."""

    name: str
    family: str      # key of FAMILIES
    dim: int         # unit dimension of the full-size model (the SoVITS config's ssl_dim)
    source: str      # the checkpoint the reference loads for it


KINDS: dict[str, Kind] = {
    "vec768l12": Kind("vec768l12", "hubert", 768, "ContentVec checkpoint_best_legacy_500.pt"),
    "vec256l9": Kind("vec256l9", "hubert", 256, "ContentVec checkpoint_best_legacy_500.pt"),
    "hubertsoft": Kind("hubertsoft", "hubert", 256, "HuBERT-Soft hubert-soft-0d54a1f4.pt"),
    "wavlmbase+": Kind("wavlmbase+", "wavlm", 768, "Microsoft's WavLM-Base+.pt"),
    "cnhubertlarge": Kind("cnhubertlarge", "hubert", 1024,
                          "Chinese HuBERT-large chinese-hubert-large-fairseq-ckpt.pt"),
    "dphubert": Kind("dphubert", "dphubert", 768, "DPHuBERT DPHuBERT-sp0.75.pth"),
    "whisper-ppg": Kind("whisper-ppg", "whisper", 1024, "OpenAI Whisper medium.pt"),
    "whisper-ppg-large": Kind("whisper-ppg-large", "whisper", 1280, "OpenAI Whisper large-v2.pt"),
}

# family -> (model module, importer module)
FAMILIES: dict[str, tuple[str, str]] = {
    "hubert": ("svcjax.models.content_encoder", "svcjax.interop.content_encoder"),
    "wavlm": ("svcjax.models.wavlm", "svcjax.interop.wavlm"),
    "dphubert": ("svcjax.models.dphubert", "svcjax.interop.dphubert"),
    "whisper": ("svcjax.models.whisper", "svcjax.interop.whisper"),
}


def get_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown content encoder kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


def _family(family: str) -> tuple[str, str]:
    if family not in FAMILIES:
        raise ValueError(f"unknown content encoder family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def model_module(family: str) -> ModuleType:
    """The model module of ``family``."""
    return importlib.import_module(_family(family)[0])


def importer_module(family: str) -> ModuleType:
    """The checkpoint importer of ``family``."""
    return importlib.import_module(_family(family)[1])


def family_of(config: Any) -> str:
    """The family of an encoder config (configs written before families existed are HuBERT)."""
    family = config.get("family") if hasattr(config, "get") else None
    return str(family or get_kind(str(config.kind)).family)
