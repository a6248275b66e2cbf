"""Inputs shared by the audio tests and tests/fixtures/make_audio.py, and the reference loader.

The reference (So-VITS-SVC 4.1-Stable) is imported by path from ``$SVCJAX_REF`` or, by
default, ``.ref/so-vits-svc`` in the checkout, with stub modules for imports its audio code does
not use (faiss, sklearn, torchaudio, rich). It is never copied into this repository.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOICES = os.path.join(ROOT, "tests", "fixtures", "voices")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "audio", "reference.npz")
DEFAULT_REF = os.environ.get("SVCJAX_REF") or os.path.join(ROOT, ".ref", "so-vits-svc")

# vocoder-mel cases of the fixture: (keyshift, speed, clip length or None for the whole clip)
VOCODER_CASES = [(0.0, 1.0, None), (2.7, 1.0, None), (-4.3, 1.0, None), (0.0, 1.25, None),
                 (0.0, 1.0, 300), (3.0, 1.0, 700)]
ALIGN_CASES = [(50, 86, "left"), (50, 86, "nearest"), (113, 195, "left"), (113, 195, "nearest"),
               (20, 13, "left"), (20, 13, "nearest"), (7, 20, "linear")]
# (threshold_db, min_length_ms, min_interval_ms, hop_ms, max_silence_kept_ms)
SLICER_PARAMS = [(-40.0, 5000, 300, 20, 5000), (-30.0, 5000, 300, 20, 5000),
                 (-40.0, 1000, 100, 20, 300), (-40.0, 300, 50, 10, 60)]


def reference_path() -> str | None:
    path = os.environ.get("SVCJAX_REF", DEFAULT_REF)
    return path if os.path.isfile(os.path.join(path, "modules", "mel_processing.py")) else None


def load_reference(relpath: str, ref: str | None = None):
    """Import one reference file as a module (its directory on sys.path, stubs for extras)."""
    ref = ref or reference_path()
    if ref is None:
        raise FileNotFoundError("So-VITS-SVC reference checkout not found")
    if ref not in sys.path:
        sys.path.insert(0, ref)
    name = "svcjax_ref_" + relpath.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    stubs = []
    for extra in ("faiss", "torchaudio", "sklearn", "sklearn.cluster", "rich", "rich.progress"):
        if extra in sys.modules:
            continue
        try:
            __import__(extra)
        except Exception:
            stub = types.ModuleType(extra)
            stub.MiniBatchKMeans = object
            stub.track = lambda it, **kw: it
            sys.modules[extra] = stub
            stubs.append(extra)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ref, relpath))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        # The stubs serve this import only: left in sys.modules they break packages that
        # probe for the real ones later (transformers' find_spec("torchaudio") raises).
        for extra in stubs:
            sys.modules.pop(extra, None)
    sys.modules[name] = mod
    return mod


def voice(name: str) -> tuple[np.ndarray, int]:
    """A committed clip as float32 mono (channels averaged), at its own rate."""
    data, sr = sf.read(os.path.join(VOICES, name), dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32), sr


def voice_names() -> list[str]:
    return sorted(f for f in os.listdir(VOICES) if f.endswith(".wav"))


def mel_clip() -> np.ndarray:
    """0.25 s of the 44.1 kHz voice (voiced part), the fixture's spectrogram input."""
    y, sr = voice("slt_up5_44k.wav")
    assert sr == 44100
    return y[20000:20000 + 11025].copy()


def slicer_signal(name: str) -> tuple[np.ndarray, int]:
    """A clip repeated with leading silence and low-noise gaps of 0.1 s to 12 s."""
    y, sr = voice(name)
    rs = np.random.RandomState(0)
    parts = [np.zeros(int(sr * 0.7), np.float32)]
    for gap in (0.1, 0.35, 1.2, 3.0, 6.0, 12.0, 0.5):
        parts += [y, (rs.randn(int(sr * gap)) * 1e-4).astype(np.float32)]
    return np.concatenate(parts), sr


def rms_mix_inputs() -> tuple[np.ndarray, np.ndarray, int]:
    """Source and 'converted' signals at 1 kHz (half-second hop = 500 samples)."""
    rs = np.random.RandomState(1)
    t = np.arange(3300)
    src = (rs.randn(3300) * (0.05 + 0.3 * np.sin(t / 400.0) ** 2)).astype(np.float32)
    conv = (rs.randn(3072) * (0.2 + 0.1 * np.cos(t[:3072] / 250.0))).astype(np.float32)
    return src, conv, 1000


def align_input(src: int) -> np.ndarray:
    return np.random.RandomState(src).randn(4, src).astype(np.float32)   # (C, T) as torch
