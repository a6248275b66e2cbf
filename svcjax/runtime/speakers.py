"""One speaker resolver for SoVITS, shallow diffusion and conversion.

A model's speakers are a table of names (``config.spk``) over ``n`` embedding rows. Users name
the target speaker as

* a name (``"alto"``) or an id (``0``): every clip that speaker;
* a list of names / ids, or a 1-D integer array: one speaker per clip;
* a ``{name or id: weight}`` dict: a fixed mix of the embeddings;
* per-frame mixing weights ``(T, n)`` (every clip) or ``(B, T, n)``.

:meth:`SpeakerTable.rows` turns any of these into what the networks take: ``(B,)`` int32 ids
or ``(B, T, n)`` float32 weights; :meth:`SpeakerTable.weights` always gives weights (the
diffusion model's form). Every bad speaker is one ``ValueError`` sentence naming it and the
known speakers.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["SpeakerTable"]


def _is_id(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class SpeakerTable:
    """Speaker names (``names``: name -> row) over ``n`` embedding rows."""

    def __init__(self, names: Mapping[Any, int] | None, n: int):
        self.names: dict[str, int] = {str(k): int(v) for k, v in dict(names or {}).items()}
        self.n = max(int(n), 1)

    def __repr__(self) -> str:
        return f"SpeakerTable({self.known}; {self.n} rows)"

    @property
    def known(self) -> str:
        return ", ".join(sorted(self.names, key=self.names.get)) or "(none named)"

    def index(self, speaker: Any) -> int:
        """The row of one speaker given by name or id."""
        if isinstance(speaker, str):
            if speaker not in self.names:
                raise ValueError(f"speaker {speaker!r} not in model; known: {self.known}")
            return self.names[speaker]
        if _is_id(speaker):
            if not 0 <= int(speaker) < self.n:
                raise ValueError(f"speaker id {int(speaker)} out of range: the model has "
                                 f"{self.n} speaker(s) (ids 0..{self.n - 1})")
            return int(speaker)
        raise ValueError(f"speaker must be a name, an id, a list of either per clip, a "
                         f"{{name: weight}} dict or (B, T, {self.n}) mixing weights; got "
                         f"{type(speaker).__name__}")

    def check(self, speaker: Any) -> None:
        """Raise the resolver's error for a speaker (or mix) naming an unknown speaker;
        shapes are checked when a batch is resolved."""
        if isinstance(speaker, Mapping):
            for k in speaker:
                self.index(k)
        elif isinstance(speaker, (list, tuple)):
            for k in speaker:
                self.index(k)
        elif not isinstance(speaker, np.ndarray) and not hasattr(speaker, "shape"):
            self.index(speaker)

    def mix(self, speaker: Mapping[Any, float]) -> np.ndarray:
        """``(n,)`` weights of a ``{speaker: weight}`` mix."""
        w = np.zeros(self.n, np.float32)
        for k, v in speaker.items():
            w[self.index(k)] += float(v)
        return w

    def rows(self, speaker: Any, batch: int, frames: int) -> np.ndarray:
        """``(B,)`` int32 ids or ``(B, T, n)`` float32 weights for a batch of ``batch`` clips
        of ``frames`` frames."""
        b, t, n = int(batch), int(frames), self.n
        if isinstance(speaker, Mapping):
            return np.broadcast_to(self.mix(speaker), (b, t, n)).copy()
        if isinstance(speaker, (list, tuple)) and speaker and \
                all(isinstance(s, str) or _is_id(s) for s in speaker):
            if len(speaker) != b:
                raise ValueError(f"{len(speaker)} speakers given for a batch of {b}")
            return np.asarray([self.index(s) for s in speaker], np.int32)
        if isinstance(speaker, (list, tuple)) or hasattr(speaker, "shape"):
            try:
                arr = np.asarray(speaker)
            except (TypeError, ValueError):
                arr = np.asarray(None)
            if arr.ndim == 0:
                return self.rows(arr.item(), b, t) if arr.dtype.kind in "iuU" else \
                    self.index(speaker)
            if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
                return self.rows([int(s) for s in arr], b, t)
            if arr.dtype.kind not in "fiub":
                self.index(speaker)
            arr = arr.astype(np.float32)
            if arr.ndim == 2:
                arr = np.broadcast_to(arr, (b,) + arr.shape)
            if arr.shape != (b, t, n):
                raise ValueError(f"speaker mixing weights must be (B, T, n_speakers) = "
                                 f"({b}, {t}, {n}) or (T, n_speakers); got shape "
                                 f"{np.shape(speaker)}")
            if not np.isfinite(arr).all():
                raise ValueError("speaker mixing weights contain NaN or inf")
            return np.array(arr)
        return np.full((b,), self.index(speaker), np.int32)

    def weights(self, speaker: Any, batch: int, frames: int) -> np.ndarray:
        """``(B, T, n)`` float32 weights (ids one-hot) for any speaker form."""
        r = self.rows(speaker, batch, frames)
        if r.ndim == 3:
            return r
        return np.broadcast_to(np.eye(self.n, dtype=np.float32)[r][:, None],
                               (int(batch), int(frames), self.n)).copy()
