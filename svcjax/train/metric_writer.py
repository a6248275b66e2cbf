"""Watching a training run: one writer for TensorBoard and JSON lines, a progress bar, and a
clear stop when a loss or norm stops being finite.

``WORKDIR/`` receives::

    config.json        the run's config (written once, atomically)
    metrics.jsonl      one JSON object per logged step: {"step": N, "loss/g/total": ..., ...}
    tensorboard/       event files: scalars every step, audio and mel images every N steps

Only process 0 writes (every process may call the methods).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

import numpy as np

from svcjax.files import atomic_write, write_text

__all__ = ["MetricWriter", "ProgressBar", "NonFiniteError", "check_finite", "mel_image",
           "METRICS_FILE", "TENSORBOARD_DIR"]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or parameter norm became NaN or infinite."""


def check_finite(step: int, scalars: Mapping[str, float], hint: str = "") -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite quantity and its step."""
    order = ("loss", "grad_norm", "param_norm")

    def rank(name):
        return next((i for i, p in enumerate(order) if name.startswith(p)), len(order))

    for name, value in sorted(scalars.items(), key=lambda kv: rank(kv[0])):
        if not math.isfinite(float(value)):
            raise NonFiniteError(
                f"training stopped: {name} became {float(value)} at step {step}" +
                (f"; {hint}" if hint else ""))


def mel_image(mel: np.ndarray) -> np.ndarray:
    """``(T, n_mels)`` log-mel -> ``(n_mels, T, 3)`` uint8 image, low frequencies at the
    bottom, min..max mapped through matplotlib's viridis colour map."""
    from matplotlib import colormaps

    m = np.asarray(mel, np.float32)
    if m.ndim != 2:
        raise ValueError(f"mel_image expects a (frames, mels) array, got shape {m.shape}")
    lo, hi = np.nanmin(m), np.nanmax(m)
    x = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return colormaps["viridis"](np.nan_to_num(x.T[::-1]), bytes=True)[..., :3]


def _import_summary_writer():
    """tensorboardX's SummaryWriter, without letting it import PyTorch (2 s, unused here)."""
    import sys

    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # makes its optional `import torch` fail fast
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """TensorBoard event files + ``metrics.jsonl`` in ``workdir`` (process 0 only)."""

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
                 purge_from: int | None = None):
        """``purge_from``: a resumed run's first new step; records of that step and later
        (logged after the checkpoint the run resumes from) are dropped, in ``metrics.jsonl``
        and (via a purge marker) in TensorBoard, so every step appears once."""
        self.workdir = workdir
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, METRICS_FILE)
        if purge_from is not None and os.path.exists(path):
            keep = [r for r in read_metrics(workdir) if int(r.get("step", 0)) < purge_from]
            with atomic_write(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in keep)
        self._jsonl = open(path, "a", buffering=1)
        if tensorboard:
            SummaryWriter = _import_summary_writer()
            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), flush_secs=30,
                                     purge_step=purge_from)

    def write_config(self, config: Any) -> None:
        if self.enabled:
            from svcjax.train.checkpoint import config_to_json

            write_text(os.path.join(self.workdir, "config.json"),
                       json.dumps(json.loads(config_to_json(config)), indent=2, sort_keys=True))

    def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, int(step))

    def audio(self, step: int, name: str, wav: np.ndarray, sample_rate: int) -> None:
        if self.enabled and self._tb is not None:
            wav = np.clip(np.asarray(wav, np.float32).reshape(-1), -1.0, 1.0)
            self._tb.add_audio(name, wav, int(step), sample_rate=int(sample_rate))

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """``image``: ``(H, W, 3)`` uint8, or a ``(frames, mels)`` mel shown with :func:`mel_image`."""
        if self.enabled and self._tb is not None:
            image = np.asarray(image)
            if image.ndim == 2:
                image = mel_image(image)
            # tensorboardX encodes the PNG with Pillow
            self._tb.add_image(name, np.asarray(image, np.uint8), int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def read_metrics(workdir: str) -> list[dict]:
    """Every record of ``WORKDIR/metrics.jsonl`` (a resumed run appends to the same file)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    pass
    return out


class ProgressBar:
    """Terminal progress: step, steps/s, audio-seconds/s and the main losses (process 0)."""

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True,
                 keys: tuple[str, ...] = ()):
        self.enabled = enabled
        self.keys = keys
        self._bar = None
        self._t = time.perf_counter()
        self._last_step = initial
        self._updates = 0
        self.steps_per_s = float("nan")
        self.audio_s_per_s = float("nan")
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                             file=sys.stderr, mininterval=1.0, smoothing=0.1)

    def update(self, step: int, audio_seconds: float, scalars: Mapping[str, float]) -> None:
        """``step`` = steps done so far; ``audio_seconds`` processed since the last update."""
        now = time.perf_counter()
        dt, dn = now - self._t, step - self._last_step
        if dt > 0 and dn > 0:
            rate, audio = dn / dt, audio_seconds / dt
            if math.isnan(self.steps_per_s) or self._updates < 2:  # the first holds compiling
                self.steps_per_s, self.audio_s_per_s = rate, audio
            else:  # exponential moving average over ~10 updates
                self.steps_per_s += 0.1 * (rate - self.steps_per_s)
                self.audio_s_per_s += 0.1 * (audio - self.audio_s_per_s)
            self._updates += 1
        self._t, self._last_step = now, step
        if self._bar is not None:
            post = {"steps/s": f"{self.steps_per_s:.2f}", "audio s/s": f"{self.audio_s_per_s:.1f}"}
            post.update({k.split("/")[-2] if k.endswith("total") else k.split("/")[-1]:
                         f"{scalars[k]:.3f}" for k in self.keys if k in scalars})
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(dn)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg, file=sys.stderr)
        elif self.enabled:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
