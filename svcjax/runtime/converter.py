"""End-to-end conversion: sound files in, converted sound files out (``svcjax convert``).

    conv = svcjax.Converter.from_paths("G_800.pth", encoder="checkpoint_best_legacy_500.pt",
                                        diffusion="model_100000.pt", vocoder="pretrain/nsf_hifigan/model")
    outs = conv.convert([wav1, wav2], ConvertOptions(speaker="alto", transpose=2))   # 44.1 kHz

What happens to each input (So-VITS-SVC 4.1's ``inference_main.py`` / ``Svc.slice_inference``):

1. loaded at 44.1 kHz mono (any rate, channels, libsndfile/ffmpeg format);
2. cut at silences (``slice_db``, -40 dB): silent chunks come out as silence of the same
   length; voiced chunks are optionally cut into ``clip_seconds`` pieces that overlap by
   ``crossfade_seconds`` and are joined again with a linear crossfade over ``crossfade_keep``
   of the overlap;
3. every piece is padded with ``pad_seconds`` of silence each side (the reference's cure for
   clicks at the ends), then converted: F0 (``f0_method``; transposed by ``transpose``
   semitones, or predicted by the model with ``auto_f0``), content units (the model's speech
   encoder at 16 kHz, stretched to the frame rate), volume, the SoVITS generator
   (``noise_scale``), and optionally shallow diffusion (``k_step`` steps of ``method`` at
   ``speedup``, from the SoVITS output's mel; ``second_encoding`` re-encodes that output's
   units first) and the NSF-HiFiGAN vocoder; ``only_diffusion`` skips SoVITS and generates
   the mel from noise; ``loudness_mix`` < 1 moves the output's loudness envelope towards the
   input's;
4. the padding is cut off and the pieces are put back in place.

Pieces stream through the converter in windows of about :data:`WINDOW_SECONDS` of audio,
taken in file order (whole silence-delimited chunks, so a window may span several short files
or be part of a long one): a window's pieces are sorted by length, padded to length buckets
(:mod:`svcjax.runtime.buckets`; a new file rarely needs a new compilation), and run in batches of up to
``batch_size`` (rows padded once by repeating a row: :func:`svcjax.runtime.runner.row_count`, so
batch shapes are few too), split over the local devices. With svcjax's own models a batch is
one compiled program (:mod:`svcjax.runtime.runner`), audio in and audio out: 16 kHz resampling,
F0 for the JAX trackers (CREPE, RMVPE, FCPE), units, volume, SoVITS, the vocoder's mel,
shallow diffusion, the vocoder and the loudness mix; the host trackers (dio, harvest, pm) run
before it, a worker thread computing the next batch's F0 while the device runs this one;
one program per (bucket, rows, options, tracker). A cluster model / retrieval index, the
enhancer or stand-in components run component by component instead.
:meth:`Converter.convert_settings` converts under several
diffusion settings from one SoVITS pass (what ``svcjax eval`` uses). As soon as a window is done its chunks
are handed on in order; :func:`convert_files` appends them to the output file (written to a
temporary name and renamed into place when the file is complete) and forgets them.

Memory: no input is held whole. :func:`convert_files` reads a file longer than a window twice:
a first pass decodes it block by block (channels averaged, resampled to 44.1 kHz in segments)
and keeps only its length and the silence slicer's frame RMS (4 bytes per 20 ms, 0.7 MB an
hour), from which the chunks are cut; a second pass decodes and resamples it again the same
way, so bit for bit the same samples, and keeps only those from the start of the piece being
filled in, as each window is gathered. Shorter files (at most a window) are loaded whole,
and so is a file libsndfile cannot read (decoded by ffmpeg / GStreamer through audioread)
or any file when a ``soxr_*`` resampler is used. Beyond the models and compiled programs,
memory holds one window of pieces (their padded inputs and outputs: ``WINDOW_SECONDS`` plus
the longest silence-delimited chunk, about 3 x 176 kB per second of audio, 64 MB for
120 s), the batch being run, and a few decoding blocks; nothing grows with the length of a
file or the number of files. A voiced stretch with no pause of 0.3 s is one chunk unless
``clip_seconds`` (``--clip``) cuts it into pieces. A file changed between the two passes
is skipped with a message (no partial output).

Outputs: :func:`convert_files` (and ``svcjax convert``) refuses, before any work, an output
that is one of the inputs or (``--overwrite`` not given) any file that exists, and one whose
folder cannot be created or written; each output is streamed into a hidden, locked
temporary file ``.NAME.<hex>.tmp`` beside it and renamed into place when complete, so a
crash leaves no partial output, and a later run removes such files when their writer is
gone. A file whose write fails (disk full) is reported and the others are still written.

Timbre-leakage controls (``cluster_model`` + ``cluster_ratio``): a k-means cluster model or a
feature-retrieval index (:mod:`svcjax.timbre.index`) pulls the content units toward the target
speaker right after they are computed, in a jitted program, also with speaker mixes.

The NSF-HiFiGAN enhancer (``enhance``, ``-eh``; :mod:`svcjax.runtime.enhancer`) re-vocodes the SoVITS
output with its F0 (shifted by ``enhancer_adaptive_key`` semitones for the analysis); as in the
reference it is off when shallow diffusion runs (the vocoder already rendered that output).

Random draws (SoVITS prior noise, source noise and phases, diffusion noise) come from
``seed`` (a fixed default, so runs repeat) folded with a stable id of each piece (a hash of
its samples and its place in its input, :func:`svcjax.runtime.runner.piece_id`), so a file converts
the same alone or among others, in any order; ``seed=None`` makes every draw zero. (On the
component-by-component path the draws are keyed by batch and row instead.)
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from svcjax.runtime import buckets, runner
from svcjax.audio import features, slicer, spectrogram
from svcjax.audio import resample as resample_lib
from svcjax.audio.constants import HOP, SAMPLING_RATE
from svcjax.models.diffusion.gaussian import check_k_step

__all__ = ["ConvertOptions", "Converter", "SpeakerMix", "parse_speaker", "load_speaker_mix",
           "SAMPLING_RATE", "HOP"]

ENCODER_SR = 16000
# shortest piece converted (shorter voiced bits between silences come out silent)
MIN_PIECE = 4 * HOP
# audio (seconds, unpadded) gathered into one window of pieces before running its batches
WINDOW_SECONDS = 120.0
# silence is written in blocks of this many samples
_ZERO_BLOCK = 1 << 18


@dataclasses.dataclass
class ConvertOptions:
    """Everything ``svcjax convert`` can set (defaults: the reference's CLI defaults)."""

    speaker: Any = None            # name, id, {name: weight}, or a SpeakerMix
    transpose: float = 0.0         # semitones
    f0_method: str = "pm"
    f0_weights: str | None = None  # learned trackers' weights (rmvpe: default $SVCJAX_RMVPE)
    auto_f0: bool = False          # the model's F0 predictor instead of the input's F0
    noise_scale: float = 0.4
    k_step: int = 100              # shallow diffusion depth (with a diffusion model)
    method: str | None = None      # diffusion sampler; None: the diffusion config's
    speedup: int | None = None     # None: the diffusion config's
    shallow_diffusion: bool = True  # use the diffusion model when one is loaded
    only_diffusion: bool = False
    second_encoding: bool = False
    loudness_mix: float = 1.0      # 1 keeps the output's loudness envelope, 0 the input's
    slice_db: float = -40.0
    pad_seconds: float = 0.5
    clip_seconds: float = 0.0      # 0: no forced clipping
    crossfade_seconds: float = 0.0
    crossfade_keep: float = 0.75
    seed: int | None = 0
    batch_size: int = 8
    cluster_model: Any = None      # cluster model / retrieval index: path or TimbreIndex
    cluster_ratio: float = 0.0     # 0: units unchanged, 1: the speaker's centres / neighbours
    cluster_search: str | None = None  # "exact" or "ivf" (default: the index's own)
    enhance: bool = False          # NSF-HiFiGAN enhancer (needs the vocoder; off after
    enhancer_adaptive_key: float = 0.0  # shallow diffusion); key shift of its analysis
    compute_dtype: str = "float32"  # "bfloat16": the networks' matmuls/convs on bf16 operands
    #                                 (float32 accumulation, parameters stay float32)

    def check(self) -> None:
        if not 0 <= self.cluster_ratio <= 1:
            raise ValueError(f"cluster_ratio must be in [0, 1], got {self.cluster_ratio}")
        if self.cluster_ratio and self.cluster_model is None:
            raise ValueError("cluster_ratio needs a cluster model or retrieval index "
                             "(cluster_model / --cluster-model)")
        if self.pad_seconds < 0 or self.clip_seconds < 0 or self.crossfade_seconds < 0:
            raise ValueError("pad_seconds, clip_seconds and crossfade_seconds must be >= 0")
        if self.crossfade_seconds and not self.clip_seconds:
            raise ValueError("crossfade_seconds needs clip_seconds (pieces to crossfade)")
        if self.clip_seconds and self.crossfade_seconds >= self.clip_seconds:
            raise ValueError(f"crossfade_seconds ({self.crossfade_seconds}) must be shorter "
                             f"than clip_seconds ({self.clip_seconds})")
        if not 0 < self.crossfade_keep <= 1:
            raise ValueError(f"crossfade_keep must be in (0, 1], got {self.crossfade_keep}")
        if not 0 <= self.loudness_mix <= 1:
            raise ValueError(f"loudness_mix must be in [0, 1], got {self.loudness_mix}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_k_step(self.k_step)
        if not np.isfinite(self.enhancer_adaptive_key) or abs(self.enhancer_adaptive_key) > 36:
            raise ValueError(f"enhancer_adaptive_key must be a number of semitones in [-36, 36], "
                             f"got {self.enhancer_adaptive_key}")
        from svcjax.models.precision import check_compute_dtype
        self.compute_dtype = check_compute_dtype(self.compute_dtype)


# ----------------------------------------------------------------------------- speakers


@dataclasses.dataclass
class SpeakerMix:
    """Speaker weights that change over an input's duration (the reference's ``spkmix.py``).

    ``tracks``: ``{speaker: [(t0, t1, w0, w1), ...]}`` with times as fractions of the input's
    length: weight ``w0`` at ``t0`` moving linearly to ``w1`` at ``t1``; each speaker's
    segments are contiguous and cover ``[0, 1]``. Speakers not listed weigh 0. Weights are
    normalised per frame (all zero: equal weights).
    """

    tracks: dict[Any, list[tuple[float, float, float, float]]]

    def __post_init__(self):
        if not self.tracks:
            raise ValueError("a speaker mix needs at least one speaker")
        for spk, segs in self.tracks.items():
            segs = [tuple(float(v) for v in s) for s in segs]
            if not segs or any(len(s) != 4 for s in segs):
                raise ValueError(f"speaker mix track for {spk!r} must be a list of "
                                 f"[start, end, start_weight, end_weight]")
            if segs[0][0] != 0.0 or segs[-1][1] != 1.0:
                raise ValueError(f"speaker mix track for {spk!r} must start at 0 and end at 1")
            for a, b in zip(segs, segs[1:]):
                if a[1] != b[0]:
                    raise ValueError(f"speaker mix track for {spk!r}: segment ending at {a[1]} "
                                     f"is followed by one starting at {b[0]}")
            for s in segs:
                if s[1] <= s[0] or s[2] < 0 or s[3] < 0:
                    raise ValueError(f"speaker mix track for {spk!r}: bad segment {list(s)} "
                                     f"(need start < end and weights >= 0)")
            self.tracks[spk] = segs

    def weights_at(self, pos: np.ndarray, index: Callable[[Any], int], n_spk: int) -> np.ndarray:
        """``(len(pos), n_spk)`` normalised weights at relative positions ``pos`` in [0, 1]."""
        pos = np.clip(np.asarray(pos, np.float64), 0.0, 1.0)
        w = np.zeros((pos.shape[0], n_spk), np.float64)
        for spk, segs in self.tracks.items():
            starts = np.array([s[0] for s in segs])
            k = np.clip(np.searchsorted(starts, pos, side="right") - 1, 0, len(segs) - 1)
            s = np.asarray(segs)[k]
            frac = (pos - s[:, 0]) / (s[:, 1] - s[:, 0])
            w[:, index(spk)] += s[:, 2] + (s[:, 3] - s[:, 2]) * frac
        total = w.sum(axis=1, keepdims=True)
        w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / n_spk)
        return w.astype(np.float32)


def load_speaker_mix(path: str | os.PathLike) -> SpeakerMix:
    """A :class:`SpeakerMix` from a JSON file ``{speaker: [[t0, t1, w0, w1], ...]}`` or the
    reference's ``spkmix.py`` (its ``spk_mix_map = {...}`` literal, read without running it).
    Speakers are names or integer ids."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"speaker mix file not found: {path!r}")
    text = open(path, encoding="utf-8").read()
    try:
        if path.endswith(".py"):
            tree = ast.parse(text)
            value = None
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "spk_mix_map" for t in node.targets):
                    value = ast.literal_eval(node.value)
            if value is None:
                raise ValueError("no 'spk_mix_map = {...}' assignment")
        else:
            value = json.loads(text)
            value = {(int(k) if k.lstrip("-").isdigit() else k): v for k, v in value.items()}
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read the speaker mix {path!r}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"speaker mix {path!r} must map speakers to weight tracks")
    try:
        return SpeakerMix({k: list(v) for k, v in value.items()})
    except ValueError as e:
        raise ValueError(f"speaker mix {path!r}: {e}") from None


def parse_speaker(text: str | None) -> Any:
    """CLI speaker: ``NAME``, an id, ``NAME:w,NAME:w`` (a fixed mix) or a mix file path."""
    if text is None:
        return None
    if os.path.isfile(text) or text.endswith((".json", ".py")):
        return load_speaker_mix(text)
    if ":" in text:
        mix = {}
        for part in text.split(","):
            name, _, w = part.rpartition(":")
            try:
                mix[name.strip()] = float(w)
            except ValueError:
                raise ValueError(f"bad speaker mix {text!r}: expected NAME:weight,NAME:weight"
                                 ) from None
        if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"speaker mix weights must be >= 0 with a positive sum: {text!r}")
        total = sum(mix.values())
        return {k: v / total for k, v in mix.items()}
    return int(text) if text.isdigit() else text


# ----------------------------------------------------------------------------- pieces


@dataclasses.dataclass
class _Piece:
    item: Any                 # which input
    audio: np.ndarray | None  # padded piece at 44.1 kHz (None until its window is run)
    start: int                # where the unpadded piece starts in the input (samples)
    length: int               # unpadded length
    pad: int                  # padding samples each side
    out: np.ndarray | None = None
    total: int = 0            # length of the whole input (speaker-mix positions)

    @property
    def padded_length(self) -> int:
        n = self.length + 2 * self.pad
        return n + (-n % HOP)


@dataclasses.dataclass
class _Layout:
    """How an input was cut: chunks in order, each silent (length) or a list of pieces."""

    total: int
    chunks: list[tuple[bool, int, list[_Piece]]]


def _pad_piece(x: np.ndarray, pad: int) -> np.ndarray:
    """``pad`` zeros each side, and a few more on the right up to whole frames: the output
    (whole frames) then covers every input sample, aligned sample for sample. (The reference
    drops the last partial frame and centres the rest, shifting it by up to 256 samples.)"""
    n = len(x) + 2 * pad
    extra = -n % HOP
    return np.pad(np.asarray(x, np.float32), (pad, pad + extra))


def _cut(item, total: int, chunks: Sequence[slicer.Chunk], opt: ConvertOptions) -> _Layout:
    """How an input of ``total`` samples, cut at silences into ``chunks``, is cut into
    pieces; the pieces carry no audio yet (:func:`_materialize` fills it in when their
    window runs)."""
    sr = SAMPLING_RATE
    per = int(opt.clip_seconds * sr)
    overlap = int(opt.crossfade_seconds * sr)
    pad = int(sr * opt.pad_seconds)
    out = []
    for ch in chunks:
        n = ch.end - ch.start
        if ch.silent:
            out.append((True, n, []))
            continue
        if per:
            spans = [(s - overlap if s >= overlap else s, min(n, s + per))
                     for s in range(0, n, per)]
        else:
            spans = [(0, n)]
        pieces = [_Piece(item, None, ch.start + lo, hi - lo, pad, total=total)
                  for lo, hi in spans]
        out.append((False, n, pieces))
    return _Layout(total, out)


def _materialize(p: _Piece, audio) -> None:
    """Fill in a piece's padded audio from the whole input (an array) or from the reader
    of a file read a second time (:class:`svcjax.audio.io.StreamedAudio`)."""
    if isinstance(audio, np.ndarray):
        x = audio[p.start:p.start + p.length]
    else:
        x = audio.read(p.start, p.start + p.length)
    p.audio = _pad_piece(x, p.pad)


class _Streamed:
    """An input given by its length, its silence-delimited chunks and a forward reader of
    its samples (see :func:`convert_files`), instead of its whole audio."""

    def __init__(self, total: int, chunks: Sequence[slicer.Chunk], reader):
        self.total, self.chunks, self.reader = total, list(chunks), reader


def _chunk_output(pieces: Sequence[_Piece], n: int, opt: ConvertOptions) -> np.ndarray:
    """One voiced chunk's converted audio (``n`` samples) from its converted pieces."""
    overlap = int(opt.crossfade_seconds * SAMPLING_RATE)
    outs = [np.asarray(p.out[p.pad:p.pad + p.length], np.float32) for p in pieces]
    if len(outs) > 1 and overlap:
        joined = slicer.crossfade_join(outs, overlap, opt.crossfade_keep)
    else:
        joined = np.concatenate(outs)
    joined = joined[:n] if len(joined) >= n else np.pad(joined, (0, n - len(joined)))
    return joined.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- the converter


def _default_f0(audio, sr, method, lengths, weights=None):
    from svcjax.audio.f0 import extract_f0

    return extract_f0(audio, sr, method=method, lengths=lengths, weights=weights)


class Converter:
    """Converts audio with a loaded SoVITS generator (+ content encoder, diffusion, vocoder).

    ``sovits``: :class:`svcjax.runtime.sovits.SovitsModel` (None with only a diffusion model);
    ``encoder``: :class:`svcjax.runtime.units.ContentEncoder` of the model's ``speech_encoder``;
    ``diffusion``: :class:`svcjax.runtime.diffusion.Diffusion` and ``vocoder``:
    :class:`svcjax.runtime.vocoder.Vocoder` for shallow diffusion / only-diffusion; ``f0_fn``
    ``(audio (B, L), sr, method, lengths) -> (f0, uv)`` (default :func:`svcjax.extract_f0`;
    called with ``weights=`` too when :attr:`ConvertOptions.f0_weights` is set).
    """

    def __init__(self, sovits=None, encoder=None, diffusion=None, vocoder=None, *,
                 f0_fn: Callable | None = None):
        if sovits is None and diffusion is None:
            raise ValueError("a Converter needs a SoVITS model, a diffusion model, or both")
        if encoder is None:
            raise ValueError("a Converter needs the content encoder the model was trained with")
        if diffusion is not None and vocoder is None:
            raise ValueError("a diffusion model needs the NSF-HiFiGAN vocoder (vocoder=)")
        self.sovits, self.encoder, self.diffusion, self.vocoder = sovits, encoder, diffusion, vocoder
        self.f0_fn = f0_fn or _default_f0
        sr = int(sovits.sampling_rate if sovits is not None else diffusion.config.data.sampling_rate)
        hop = int(sovits.hop if sovits is not None else diffusion.config.data.block_size)
        if (sr, hop) != (SAMPLING_RATE, HOP):
            raise ValueError(f"svcjax converts at 44.1 kHz with hop 512; this model uses {sr} Hz, "
                             f"hop {hop}")
        if vocoder is not None and (vocoder.sampling_rate, vocoder.hop_size) != (sr, hop):
            raise ValueError(f"the vocoder runs at {vocoder.sampling_rate} Hz / hop "
                             f"{vocoder.hop_size}, the model at {sr} Hz / hop {hop}")
        cfg = sovits.config if sovits is not None else None
        mode = None
        if cfg is not None:
            mode = cfg.data.get("unit_interpolate_mode", None)
        elif diffusion is not None:
            mode = diffusion.config.data.get("unit_interpolate_mode", None)
        self.unit_mode = mode or "left"
        self.vol_embedding = bool(sovits is not None and sovits.module.vol_embedding)
        self.timings: dict[str, float] = {}

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_paths(cls, model=None, config=None, *, encoder=None, diffusion=None,
                   diffusion_config=None, vocoder=None, only_diffusion: bool = False,
                   enhance: bool = False):
        """Load every component from files or model directories (see ``svcjax convert``)."""
        sovits = diff = voc = None
        kind = None
        if not only_diffusion:
            if model is None:
                raise ValueError("--model is required (a G_*.pth or an imported model "
                                 "directory), unless --only-diffusion")
            from svcjax.runtime.sovits import load_sovits

            sovits = load_sovits(model, config)
            kind = sovits.config.model.get("speech_encoder", None) or "vec768l12"
        if diffusion is not None:
            from svcjax.runtime.diffusion import load_diffusion

            diff = load_diffusion(diffusion, diffusion_config)
            if kind is None:
                kind = diff.config.data.get("encoder", None) or "vec768l12"
            if vocoder is None:
                raise ValueError("shallow diffusion needs the NSF-HiFiGAN vocoder: pass "
                                 "--vocoder pretrain/nsf_hifigan/model (or its model directory)")
            from svcjax.runtime.vocoder import load_vocoder

            voc = load_vocoder(vocoder)
        elif only_diffusion:
            raise ValueError("--only-diffusion needs --diffusion MODEL")
        if enhance and voc is None:
            if vocoder is None:
                raise ValueError("the enhancer needs the NSF-HiFiGAN vocoder: pass --vocoder "
                                 "pretrain/nsf_hifigan/model (or its model directory)")
            from svcjax.runtime.vocoder import load_vocoder

            voc = load_vocoder(vocoder)
        if encoder is None:
            raise ValueError(f"the model's speech encoder is {kind}: pass its checkpoint with "
                             f"--encoder (e.g. checkpoint_best_legacy_500.pt for vec768l12)")
        from svcjax.runtime import units

        enc = units.load_content_encoder(encoder, kind=kind)
        return cls(sovits, enc, diff, voc)

    # -- speakers -----------------------------------------------------------------------------

    @property
    def speakers(self) -> dict[str, int]:
        src = self.sovits if self.sovits is not None else self.diffusion
        return dict(src.speakers)

    @property
    def n_speakers(self) -> int:
        return int(self.sovits.n_speakers if self.sovits is not None else
                   max(self.diffusion.n_spk, 1))

    @property
    def speaker_table(self):
        """The target model's :class:`svcjax.runtime.speakers.SpeakerTable` (SoVITS', or the
        diffusion model's for only-diffusion): the one resolver of names, ids and mixes."""
        from svcjax.runtime.speakers import SpeakerTable

        src = self.sovits if self.sovits is not None else self.diffusion
        table = getattr(src, "speaker_table", None)
        return table if table is not None else SpeakerTable(self.speakers, self.n_speakers)

    def speaker_index(self, spk) -> int:
        return self.speaker_table.index(spk)

    def _default_speaker(self, spk):
        if spk is not None:
            return spk
        if self.n_speakers == 1:
            return 0
        known = ", ".join(sorted(self.speakers, key=self.speakers.get))
        raise ValueError(f"this model has {self.n_speakers} speakers; choose one with "
                         f"--speaker (known: {known})")

    def _validate_speaker(self, spk) -> None:
        self.speaker_table.check(list(spk.tracks) if isinstance(spk, SpeakerMix) else spk)

    def _speaker_rows(self, spk, pieces: Sequence[_Piece], totals, t: int):
        """Per-row speaker argument for SoVITS and the diffusion model."""
        table = self.speaker_table
        if isinstance(spk, SpeakerMix):
            rows = []
            for p in pieces:
                total = p.total if totals is None else totals[p.item]
                pos = (p.start - p.pad + (np.arange(t) + 0.5) * HOP) / max(total, 1)
                rows.append(spk.weights_at(pos, table.index, table.n))
            return np.stack(rows)
        rows = table.rows(spk, len(pieces), t)
        return rows if rows.ndim == 3 else [int(i) for i in rows]

    def _diffusion_speaker(self, rows):
        d = self.diffusion
        if d.n_spk <= 1:
            return None
        if isinstance(rows, np.ndarray) and rows.shape[-1] != d.n_spk:
            raise ValueError(f"the SoVITS model has {rows.shape[-1]} speakers, the diffusion "
                             f"model {d.n_spk}: a speaker mix cannot be shared")
        if not isinstance(rows, np.ndarray) and max(rows) >= d.n_spk:
            raise ValueError(f"speaker id {max(rows)} is not in the diffusion model "
                             f"({d.n_spk} speakers)")
        return rows

    # -- converting ---------------------------------------------------------------------------

    def convert(self, audios: Sequence[np.ndarray], options: ConvertOptions | None = None,
                *, progress: bool | None = None) -> list[np.ndarray]:
        """Convert 44.1 kHz mono clips; returns one 44.1 kHz clip per input, same lengths."""
        opt = options or ConvertOptions()
        self.check_options(opt)
        audios = [np.asarray(a, np.float32) for a in audios]
        for i, a in enumerate(audios):
            if a.ndim != 1 or not np.isfinite(a).all():
                raise ValueError(f"input {i} must be finite 1-D 44.1 kHz audio, got shape "
                                 f"{a.shape}")
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(a) for a in audios) / SAMPLING_RATE, desc="converting",
                   disable=None if progress is None else not progress,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of audio "
                              "[{elapsed}<{remaining}]")
        self.timings = {}
        outs: list[list[np.ndarray]] = [[] for _ in audios]
        try:
            for kind, key, block in self.stream(enumerate(audios), opt, bar=bar):
                if kind == "data":
                    outs[key].append(block)
        finally:
            bar.close()
        return [np.concatenate(o) if o else np.zeros(0, np.float32) for o in outs]

    def check_options(self, opt: ConvertOptions) -> None:
        """Raise ``ValueError`` for options this converter cannot honour (before any work)."""
        opt.check()
        if opt.only_diffusion and self.diffusion is None:
            raise ValueError("only_diffusion needs a diffusion model")
        if self.sovits is None and not opt.only_diffusion:
            raise ValueError("this converter has no SoVITS model: use only_diffusion")
        if opt.enhance:
            self._enhancer()      # a converter without the NSF-HiFiGAN weights fails here
        if opt.auto_f0 and self.sovits is not None and \
                not self.sovits.module.use_automatic_f0_prediction:
            raise ValueError("auto_f0 needs a model trained with use_automatic_f0_prediction")
        spk = self._default_speaker(opt.speaker)
        self._validate_speaker(spk)
        if opt.cluster_ratio:  # a bad index or speaker fails here, before any work
            self._check_timbre(spk, opt)
        if opt.compute_dtype != "float32" and not self._fusable(opt):
            raise ValueError(f"compute_dtype {opt.compute_dtype} runs in the compiled "
                             "conversion program only, which a cluster model / retrieval "
                             "index, the enhancer or stand-in components do not use: convert "
                             "with compute_dtype float32 (--compute-dtype float32)")

    def stream(self, items, options: ConvertOptions, *, cancelled=frozenset(), bar=None):
        """Convert ``(key, audio)`` pairs (44.1 kHz mono; an iterator, read as needed) and
        yield the output as it is done: ``("data", key, block)`` in order for each input,
        then ``("done", key, None)``. Inputs finish in the order they come; an input's audio
        is held only until its last window has run, a window's pieces only until they are
        yielded. Keys put in ``cancelled`` (a set the caller may add to) get no more work.
        An input may also be a ``_Streamed`` (length, chunks and a forward reader: nothing
        of it is held but the current pieces); when its reader fails (the file changed),
        ``("error", key, exception)`` is yielded and the input gets no more work.
        """
        opt = options
        spk = self._default_speaker(opt.speaker)
        base = None if opt.seed is None else jax.random.PRNGKey(int(opt.seed))
        window_samples = int(WINDOW_SECONDS * SAMPLING_RATE)
        jobs: list[dict] = []           # inputs in order: key, audio, chunks, next, emitted
        source = iter(items)
        exhausted = False
        while True:
            window: list[_Piece] = []
            size = 0
            while size < window_samples:
                job = next((j for j in jobs if j["next"] < len(j["chunks"])
                            and j["key"] not in cancelled), None)
                if job is None:
                    if exhausted:
                        break
                    try:
                        key, audio = next(source)
                    except StopIteration:
                        exhausted = True
                        continue
                    if isinstance(audio, _Streamed):
                        lay = _cut(key, audio.total, audio.chunks, opt)
                        audio = audio.reader
                    else:
                        audio = np.asarray(audio, np.float32)
                        chunks = slicer.slice_on_silence(audio, SAMPLING_RATE,
                                                         threshold_db=opt.slice_db)
                        lay = _cut(key, len(audio), chunks, opt)
                    jobs.append(dict(key=key, audio=audio, chunks=lay.chunks, next=0,
                                     emitted=0))
                    continue
                silent, n, pieces = job["chunks"][job["next"]]
                try:
                    for p in pieces:
                        if p.padded_length < MIN_PIECE:
                            p.out = np.zeros(p.padded_length, np.float32)
                        else:
                            _materialize(p, job["audio"])
                            window.append(p)
                except (OSError, ValueError) as e:   # a file read back failed (changed)
                    window = [p for p in window if p.item != job["key"]]
                    jobs.remove(job)
                    yield "error", job["key"], e
                    continue
                size += n
                job["next"] += 1
                if job["next"] == len(job["chunks"]):
                    if hasattr(job["audio"], "close"):
                        job["audio"].close()
                    job["audio"] = None      # every piece has its audio now
            batches = self._batches(window, opt)
            fused = self._fusable(opt)
            ahead = self._inputs_ahead(batches, opt) if fused else None
            try:
                for batch in batches:
                    if fused:
                        outs = self._run_fused(batch, spk, opt, base, inputs=next(ahead))
                    else:
                        outs = self._run_batch(batch, spk, None, opt, base)
                    for p, o in zip(batch, outs):
                        p.out, p.audio = o, None
            finally:
                if ahead is not None:
                    ahead.close()       # (an error: the worker's F0 finishes, then stops)
            for job in list(jobs):
                if job["key"] in cancelled:
                    if hasattr(job["audio"], "close"):
                        job["audio"].close()
                    jobs.remove(job)
                    continue
                while job["emitted"] < job["next"]:
                    silent, n, pieces = job["chunks"][job["emitted"]]
                    if silent:
                        for a in range(0, n, _ZERO_BLOCK):
                            yield "data", job["key"], np.zeros(min(_ZERO_BLOCK, n - a),
                                                               np.float32)
                    else:
                        yield "data", job["key"], _chunk_output(pieces, n, opt)
                    job["chunks"][job["emitted"]] = (silent, n, [])   # forget the pieces
                    job["emitted"] += 1
                    if bar is not None:
                        bar.update(n / SAMPLING_RATE)
                if job["emitted"] == len(job["chunks"]):
                    jobs.remove(job)
                    yield "done", job["key"], None
                else:
                    break        # later inputs wait: output is handed on in order
            if exhausted and not jobs:
                return

    @staticmethod
    def _batches(pieces: Sequence[_Piece], opt: ConvertOptions) -> list[list[_Piece]]:
        todo = sorted(pieces, key=lambda p: len(p.audio))
        batches = []
        for bucket in sorted({buckets.bucket_length(len(p.audio) // HOP) for p in todo}):
            group = [p for p in todo if buckets.bucket_length(len(p.audio) // HOP) == bucket]
            for i in range(0, len(group), opt.batch_size):
                batches.append(group[i:i + opt.batch_size])
        return batches

    def _time(self, name, t0):
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        return time.perf_counter()

    def _run_batch(self, batch: Sequence[_Piece], spk, totals, opt: ConvertOptions, base):
        """One batch component by component through the public views (each a view on the
        runtime layer). Rows and the audio width follow the runtime's policy (``row_count``
        rows, the frame bucket's samples), so the host-side audio programs (resampling,
        volume, the vocoder's mel, the loudness mix) compile once per bucket, as the views do.
        Each row draws from ``fold_in(base, piece id)`` (one key per row to every view), so a
        piece converts the same in any batch, as in the fused program."""
        from svcjax.runtime import runner as runtime_lib

        n = len(batch)
        model = self.sovits if self.sovits is not None else self.diffusion
        rows = runtime_lib.row_count(n, getattr(getattr(model, "runtime", None), "n_devices", 1))
        padded = list(batch) + [batch[-1]] * (rows - n)
        lens = np.array([len(p.audio) for p in padded], np.int64)
        frames = lens // HOP
        t = int(frames.max())
        width = runtime_lib.frame_bucket(t) * HOP
        fit = lambda x: buckets.pad_axis(np.asarray(x, np.float32)[:, :width], width)  # noqa: E731
        audio = np.zeros((rows, width), np.float32)
        for i, p in enumerate(padded):
            audio[i, :frames[i] * HOP] = p.audio[:frames[i] * HOP]
        lens = frames * HOP                          # whole frames only
        keys = (None,) * 3
        if base is not None:
            pids = [runtime_lib.piece_id(p.audio, p.start, p.length) for p in batch]
            per_piece = np.stack([np.asarray(jax.random.split(jax.random.fold_in(base, pid), 3))
                                  for pid in pids])         # (n, 3, 2)
            per_piece = np.concatenate(                           # padded rows
                [per_piece, np.repeat(per_piece[-1:], rows - n, axis=0)])
            keys = tuple(per_piece[:, j] for j in range(3))
        t0 = time.perf_counter()

        kw = {} if opt.f0_weights is None else {"weights": opt.f0_weights}
        f0, uv = self.f0_fn(audio, SAMPLING_RATE, opt.f0_method, lens, **kw)
        f0 = np.asarray(f0, np.float32)[:, :t] * np.float32(2.0 ** (opt.transpose / 12.0))
        uv = np.asarray(uv, np.float32)[:, :t]
        t0 = self._time("f0", t0)
        units = self._units(audio, lens, frames, t)
        t0 = self._time("units", t0)
        spk_rows = self._speaker_rows(spk, padded, totals, t)
        if opt.cluster_ratio:
            units = self._mix_timbre(units, spk_rows, opt)
            t0 = self._time("timbre", t0)
        vol = np.asarray(features.volume(audio))[:, :t] if (self.vol_embedding or
                                                           opt.only_diffusion) else None
        if not opt.only_diffusion:
            wav, f0 = self.sovits.infer(units, f0, uv, speaker=spk_rows, vol=vol,
                                        noise_scale=opt.noise_scale, predict_f0=opt.auto_f0,
                                        rng=keys[0], lengths=frames)
            wav = fit(wav)
            f0 = np.asarray(f0, np.float32)
            t0 = self._time("sovits", t0)
        use_diffusion = self.diffusion is not None and (opt.only_diffusion or opt.shallow_diffusion)
        if use_diffusion:
            dspk = self._diffusion_speaker(spk_rows)
            if opt.only_diffusion:
                mel = self.diffusion.sample(units, f0, vol, speaker=dspk, start_mel=None,
                                            method=opt.method, speedup=opt.speedup,
                                            rng=keys[1], lengths=frames)
            else:
                start = np.asarray(self.vocoder.mel(wav, lengths=lens))[:, :t]
                if vol is None:
                    vol = np.asarray(features.volume(wav))[:, :t]
                if opt.second_encoding:
                    units = self._units(wav, lens, frames, t)
                mel = self.diffusion.sample(units, f0, vol, speaker=dspk, start_mel=start,
                                            k_step=opt.k_step, method=opt.method,
                                            speedup=opt.speedup, rng=keys[1], lengths=frames)
            t0 = self._time("diffusion", t0)
            # the reference vocodes with the interpolated F0 (voiced everywhere), as here
            wav = fit(self.vocoder(mel, f0, lengths=frames))
            t0 = self._time("vocoder", t0)
        if opt.enhance and not (use_diffusion and not opt.only_diffusion):
            wav = fit(self._enhancer()(wav, f0, adaptive_key=opt.enhancer_adaptive_key,
                                       lengths=lens, rng=keys[2]))
            t0 = self._time("enhancer", t0)
        if opt.loudness_mix != 1.0:
            wav = np.asarray(features.mix_loudness_envelope(
                audio, SAMPLING_RATE, wav, SAMPLING_RATE, opt.loudness_mix,
                source_lengths=lens, converted_lengths=lens))
            t0 = self._time("loudness", t0)
        return [wav[i, :frames[i] * HOP] for i in range(n)]

    # -- the fused path: a batch as one compiled program ---------------------------------------

    def _fusable(self, opt: ConvertOptions) -> bool:
        """Whether a batch runs as one compiled program (:meth:`_run_fused`): real svcjax
        models (not stand-ins), the NSF-HiFiGAN vocoder, no cluster model / retrieval index,
        no enhancer (those run component by component, :meth:`_run_batch`)."""
        from svcjax.runtime.diffusion import Diffusion
        from svcjax.runtime.sovits import SovitsModel
        from svcjax.runtime.units import ContentEncoder
        from svcjax.runtime.vocoder import Vocoder

        use_diffusion = self.diffusion is not None and (opt.only_diffusion or
                                                        opt.shallow_diffusion)
        enhanced = opt.enhance and not (use_diffusion and not opt.only_diffusion)
        return (not opt.cluster_ratio and not enhanced
                and "_units" not in self.__dict__
                and isinstance(self.encoder, ContentEncoder)
                and "frames" not in self.encoder.__dict__
                and (opt.only_diffusion or isinstance(self.sovits, SovitsModel))
                and (not use_diffusion or (isinstance(self.diffusion, Diffusion)
                                           and isinstance(self.vocoder, Vocoder))))

    @property
    def runtime(self):
        """The :class:`svcjax.runtime.runner.Runtime` of the conversion programs: over the
        content encoder's devices (those of every model view), with its own compiled
        programs (they close over this converter's models); the models' parameters are
        placed by their own views (:meth:`_placed`), once for both uses."""
        rt = self.__dict__.get("_runtime")
        if rt is None:
            from svcjax.runtime.runner import Runtime
            view = getattr(self.encoder, "runtime", None)
            rt = self._runtime = Runtime(None if view is None else view.devices)
        return rt

    def _placed(self, name: str, model, rows: int):
        """``model.params`` placed for ``rows`` rows by the model's own runtime view (the copy
        its public API uses, dropped with the model), or by this converter's runtime when the
        view runs on other devices."""
        view = getattr(model, "runtime", None)
        if view is not None and view.devices == self.runtime.devices:
            return view.params(name, model.params, rows, owner=model)
        return self.runtime.params(name, model.params, rows, owner=model)

    def _setting(self, opt: ConvertOptions) -> tuple:
        """What one output of a conversion program depends on beyond its inputs:
        ``(use_diffusion, k, method, speedup)``."""
        use_diffusion = self.diffusion is not None and (opt.only_diffusion or
                                                        opt.shallow_diffusion)
        if not use_diffusion:
            return (False, None, None, None)
        from svcjax.models.diffusion import sampling

        d = self.diffusion
        k = d._resolve_k(None if opt.only_diffusion else True,
                         None if opt.only_diffusion else opt.k_step)
        method = d.config.infer.method if opt.method is None else opt.method
        speedup = int(d.config.infer.speedup if opt.speedup is None else opt.speedup)
        method = sampling.check(method, k, speedup, d.timesteps)
        return (True, k, method, 1 if method == "ddpm" else speedup)

    def _static(self, opts: Sequence[ConvertOptions], spk_weights: bool,
                stochastic: bool) -> tuple:
        """The options a compiled conversion program is specialised on: the shared front
        (F0 prediction, volume, speakers, randomness) and one diffusion setting per output."""
        opt = opts[0]
        settings = tuple(self._setting(o) for o in opts)
        diffused = any(s[0] for s in settings)
        return (bool(opt.auto_f0), bool(opt.only_diffusion),
                bool(opt.second_encoding) and diffused and not opt.only_diffusion,
                opt.loudness_mix != 1.0, self.vol_embedding or bool(opt.only_diffusion),
                spk_weights, diffused and self.diffusion.n_spk > 1, stochastic,
                opt.compute_dtype, settings)

    def _build_program(self, static: tuple, f0spec: tuple | None = None) -> Callable:
        """The conversion of one row (audio in, audio out), mapped over the rows of a batch
        (batched on GPU/TPU, one row after another on CPU: :func:`svcjax.runtime.runner.map_rows`
        with the backend's ``KERNELS["rows"]``; the rows that only pad the batch compute
        nothing on one CPU device):
        16 kHz resampling, content units, volume, SoVITS, the vocoder's mel, shallow diffusion
        and the vocoder, and the loudness mix, in one jitted program. The front (up to the
        SoVITS output and its mel) runs once; each diffusion setting of ``static`` gives one
        output (rows x settings x samples). Each row draws its random numbers from
        ``fold_in(seed key, piece id)``, the same for every setting. With ``compute_dtype``
        bfloat16 the networks (content encoder, SoVITS, the diffusion denoiser, the vocoder)
        run their matmuls and convolutions on bfloat16 operands with float32 accumulation
        (:func:`svcjax.models.precision.matmuls_in`); the signal processing around them
        (resampling, mels, volume, loudness) and the samplers' arithmetic stay float32. With
        ``f0spec`` (a device tracker, :meth:`_device_f0`) the F0 stage runs in the program
        too (in float32: its voicing and pitch-bin decisions are discrete), on the whole
        batch before the rows are mapped: the program then takes ``f0``/``uv`` as ``None``
        and one more scalar last, the transposition factor."""
        import jax.numpy as jnp

        from svcjax.models.precision import matmuls_in
        from svcjax.runtime.diffusion import sample_mel
        from svcjax.runtime.vocoder import vocode

        (predict_f0, only_diffusion, second_encoding, loudness, need_vol, spk_weights,
         diff_spk, stochastic, compute_dtype, settings) = static
        enc, sov, dif, voc = self.encoder, self.sovits, self.diffusion, self.vocoder
        enc_pad = int(enc.hop)
        enc_max = getattr(enc, "max_samples", None)
        sov_vol = sov is not None and bool(sov.module.vol_embedding)
        shallow = any(s[0] for s in settings) and not only_diffusion
        # the networks' matmuls/convs in compute_dtype (float32: the functions themselves)
        enc_apply = matmuls_in(compute_dtype, enc.model.apply)
        sov_apply = matmuls_in(compute_dtype, sov.module.apply) if sov is not None else None
        sample_mel = matmuls_in(compute_dtype, sample_mel)
        vocode = matmuls_in(compute_dtype, vocode)

        def encode(p_enc, wav16, lens16, i0, i1, w1, mask):
            wav16 = jnp.pad(wav16, ((0, 0), (0, -wav16.shape[1] % enc_pad)))
            if enc_max is not None:          # a network with a longest input (checked)
                wav16 = wav16[:, :enc_max]
            u, _ = enc_apply({"params": p_enc}, wav16, lens16)
            u = u[0].astype(jnp.float32)
            a, b = jnp.take(u, i0[0], axis=0), jnp.take(u, i1[0], axis=0)
            w = w1[0][:, None]
            return (((1.0 - w) * a + w * b) * mask[0][:, None])[None]

        def row(params, audio, wav16, lens, frames, lens16, f0, uv, i0, i1, w1, g, dspk, pid,
                base, noise_scale, rate):
            audio, wav16, lens = audio[None], wav16[None], lens[None]
            frames, lens16 = frames[None], lens16[None]
            f0, uv, i0, i1, w1, g = f0[None], uv[None], i0[None], i1[None], w1[None], g[None]
            dspk = None if dspk is None else dspk[None]
            tb = f0.shape[1]
            mask = (jnp.arange(tb)[None, :] < frames[:, None]).astype(jnp.float32)
            smask = (jnp.arange(audio.shape[1])[None, :] < lens[:, None]).astype(jnp.float32)
            k_sov = k_dif = None
            if stochastic:
                k_sov, k_dif = jax.random.split(jax.random.fold_in(base, pid))
            f0, uv = f0 * mask, uv * mask
            units = encode(params["encoder"], wav16, lens16, i0, i1, w1, mask)
            vol = features.volume(audio)[:, :tb] * mask if need_vol else None
            if spk_weights:
                g = g * mask[..., None]
            wav = None
            if not only_diffusion:
                rngs = {"noise": k_sov} if stochastic else {}
                wav, f0 = sov_apply(
                    {"params": params["sovits"]}, units, f0, uv, g, mask,
                    vol if sov_vol else None, noise_scale=noise_scale, predict_f0=predict_f0,
                    method="infer", rngs=rngs)
                wav = wav[:, :audio.shape[1]] * smask
                f0 = f0 * mask
            start, dvol = None, vol
            if shallow:
                c = voc.config
                start = spectrogram.vocoder_mel(
                    wav, sampling_rate=voc.sampling_rate, n_fft=int(c.n_fft),
                    win_length=int(c.win_size), hop_length=voc.hop_size,
                    n_mels=voc.num_mels, fmin=float(c.fmin), fmax=float(c.fmax),
                    lengths=lens)[:, :tb] * mask[..., None]
                if dvol is None:
                    dvol = features.volume(wav)[:, :tb] * mask
                if second_encoding:
                    units = encode(params["encoder"],
                                   resample_lib.resample(wav, SAMPLING_RATE, ENCODER_SR),
                                   lens16, i0, i1, w1, mask)
            spk = None if dspk is None else dspk * mask[..., None]
            outs = []
            for use_diffusion, k, method, speedup in settings:
                out = wav
                if use_diffusion:
                    mel = sample_mel(dif.model, dif.schedule, params["diffusion"], units, f0,
                                     dvol, spk, None, start, mask, k_dif, k=k, method=method,
                                     speedup=speedup)
                    mel = mel * mask[..., None]
                    out = vocode(voc.module, params["vocoder"], mel, f0, mask, None)
                    out = out[:, :audio.shape[1]] * smask
                if loudness:
                    out = features.mix_loudness_envelope(
                        audio, SAMPLING_RATE, out, SAMPLING_RATE, rate, source_lengths=lens,
                        converted_lengths=lens)
                outs.append(out[0])
            return jnp.stack(outs)

        axes = (None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 if diff_spk else None, 0, None, None,
                None)
        # the rows batched (vmap) or one after another (CPU), runner.KERNELS["rows"]
        rt = self.runtime
        mapped = runner.map_rows(row, axes, rt.kernels["rows"], rt.n_devices)
        track = None if f0spec is None else self._f0_stage(f0spec)

        def program(params, audio, lens, frames, lens16, f0, uv, i0, i1, w1, g, dspk, pid,
                     valid, base, noise_scale, rate, f0_scale=None):
            # the 16 kHz input of the content encoder, computed once for the batch and
            # shared with a CREPE stage (the same Kaiser filter; RMVPE and FCPE resample with
            # their own, torchaudio's, as the reference's trackers do)
            wav16 = resample_lib.resample(audio, SAMPLING_RATE, ENCODER_SR)
            if track is not None:
                f0, uv = track(params["f0"], audio, lens, wav16)
                f0 = f0 * f0_scale
            return mapped(params, audio, wav16, lens, frames, lens16, f0, uv, i0, i1, w1, g,
                          dspk, pid, base, noise_scale, rate, valid)

        return program

    # F0 trackers that run inside the conversion program (JAX networks)
    DEVICE_F0 = ("crepe", "crepe-tiny", "rmvpe", "fcpe")

    def _device_f0(self, opt: ConvertOptions) -> tuple | None:
        """The static spec of the F0 tracker when it runs inside the conversion program
        (CREPE, RMVPE or FCPE, with the default ``f0_fn``): ``(method, weights, stamp, decoder,
        threshold, fmin, fmax)``, the weights file resolved as
        :func:`svcjax.audio.f0.prepare_f0` does (which loads its network, once, or raises
        the clear error of a missing or bad file) and ``stamp`` its (mtime, size), so a
        rewritten file is a new program and parameters; None when F0 comes from the host
        (dio, harvest, pm, or a custom ``f0_fn``)."""
        if self.f0_fn is not _default_f0 or opt.f0_method not in self.DEVICE_F0:
            return None
        from svcjax.audio import f0 as f0_lib

        weights = f0_lib.prepare_f0(opt.f0_method, opt.f0_weights)
        stamp = None
        if weights is not None and os.path.isfile(weights):
            st = os.stat(weights)
            stamp = (st.st_mtime_ns, st.st_size)
        if opt.f0_method == "rmvpe":
            return ("rmvpe", weights, stamp, "local_average", 0.05, None, None)
        if opt.f0_method == "fcpe":      # its weights' own threshold, as extract_f0's default
            conf = f0_lib.fcpe_runner(weights).conf
            return ("fcpe", weights, stamp, "local_argmax", float(conf.threshold), None, None)
        return (opt.f0_method, weights, stamp, "viterbi", 0.05, f0_lib.F0_MIN, f0_lib.F0_MAX)

    def _f0_network(self, f0spec: tuple):
        """``(model, params)`` of a device tracker's spec (the cached loaded network; for
        FCPE its config, and its parameters with its cents table)."""
        from svcjax.audio import f0 as f0_lib

        return f0_lib.tracker_network(*f0spec[:2])

    def _f0_stage(self, f0spec: tuple) -> Callable:
        """``(params, audio (R, W), lens (R,), wav16 (R, W16)) -> (f0, uv) (R, W // 512)``:
        the program's F0 stage (:func:`svcjax.audio.f0.crepe_in_program`, given the batch's
        16 kHz resampling ``wav16``, / ``rmvpe_in_program`` / ``fcpe_in_program``, what
        ``extract_f0`` computes)."""
        from svcjax.audio import f0 as f0_lib

        model, _ = self._f0_network(f0spec)
        method, _, _, decoder, threshold, fmin, fmax = f0spec
        if method == "rmvpe":
            return lambda p, audio, lens, wav16: f0_lib.rmvpe_in_program(
                model, p, audio, lens, threshold=threshold)
        if method == "fcpe":
            return lambda p, audio, lens, wav16: f0_lib.fcpe_in_program(
                model, p["net"], p["table"], audio, lens, threshold=threshold)
        return lambda p, audio, lens, wav16: f0_lib.crepe_in_program(
            model, p, audio, lens, threshold=threshold, decoder=decoder, fmin=fmin, fmax=fmax,
            audio16=wav16)

    def _fused_inputs(self, batch: Sequence[_Piece], opt: ConvertOptions) -> dict:
        """A batch's padded host arrays for :meth:`_run_fused`, and its F0 when the tracker
        runs on the host (``f0``/``uv`` ``(rows, bucket)``, transposed; None with a device
        tracker, which runs inside the program). Safe to run in a worker thread
        (:meth:`_inputs_ahead`)."""
        from svcjax.runtime import runner as runtime_lib

        rows = self.runtime.rows(len(batch))
        padded = list(batch) + [batch[-1]] * (rows - len(batch))
        frames = np.array([len(p.audio) // HOP for p in padded], np.int32)
        t = int(frames.max())
        tb = runtime_lib.frame_bucket(t)
        width = tb * HOP
        audio = np.zeros((rows, width), np.float32)
        for i, p in enumerate(padded):
            audio[i, :frames[i] * HOP] = p.audio[:frames[i] * HOP]
        lens = (frames * HOP).astype(np.int32)
        f0spec = self._device_f0(opt)
        f0 = uv = None
        if f0spec is None:
            t0 = time.perf_counter()
            kw = {} if opt.f0_weights is None else {"weights": opt.f0_weights}
            f0, uv = self.f0_fn(audio, SAMPLING_RATE, opt.f0_method, lens, **kw)
            f0 = buckets.pad_axis(np.asarray(f0, np.float32)[:, :tb], tb, axis=1)
            f0 = f0 * np.float32(2.0 ** (opt.transpose / 12.0))
            uv = buckets.pad_axis(np.asarray(uv, np.float32)[:, :tb], tb, axis=1)
            self._time("f0", t0)
        return dict(rows=rows, padded=padded, frames=frames, tb=tb, audio=audio, lens=lens,
                    f0spec=f0spec, f0=f0, uv=uv)

    def _inputs_ahead(self, batches: Sequence[Sequence[_Piece]], opt: ConvertOptions):
        """Yield :meth:`_fused_inputs` of each batch in order. With a host F0 tracker a worker
        thread computes batch ``i + 1``'s while the caller runs batch ``i`` on the device;
        an error in it is raised when its batch's turn comes, as without the worker."""
        if len(batches) < 2 or self._device_f0(opt) is not None:
            for batch in batches:
                yield self._fused_inputs(batch, opt)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svcjax-f0")
        try:
            nxt = pool.submit(self._fused_inputs, batches[0], opt)
            for i in range(len(batches)):
                inputs = nxt.result()          # (its error, if any, raised here, in turn)
                if i + 1 < len(batches):
                    nxt = pool.submit(self._fused_inputs, batches[i + 1], opt)
                yield inputs
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_fused(self, batch: Sequence[_Piece], spk, opt: ConvertOptions | Sequence,
                   base, *, inputs: dict | None = None):
        """One batch through one compiled program (:meth:`_build_program`): audio in, audio
        out, F0 computed in the program for a device tracker (:data:`DEVICE_F0`), else on
        the host first
        (``inputs``: the batch's :meth:`_fused_inputs`, computed ahead; default: now).
        Lengths are padded to the batch's frame bucket and rows once to
        :func:`svcjax.runtime.runner.row_count`. ``opt`` may be a list of options that
        differ only in their diffusion setting: then one output list per option."""
        from svcjax.runtime import runner as runtime_lib
        from svcjax.audio.features import align_table

        opts = list(opt) if isinstance(opt, (list, tuple)) else [opt]
        opt = opts[0]
        rt = self.runtime
        n = len(batch)
        inp = self._fused_inputs(batch, opt) if inputs is None else inputs
        rows, padded, frames, tb = inp["rows"], inp["padded"], inp["frames"], inp["tb"]
        audio, lens, f0, uv, f0spec = inp["audio"], inp["lens"], inp["f0"], inp["uv"], \
            inp["f0spec"]
        t0 = time.perf_counter()

        lens16 = np.array([resample_lib.resampled_length(int(x), SAMPLING_RATE, ENCODER_SR)
                           for x in lens], np.int32)
        longest = getattr(self.encoder, "max_samples", None)
        if longest is not None and int(lens16.max()) > longest:
            raise ValueError(
                f"a piece of {int(lens16.max()) / ENCODER_SR:.1f} s is longer than the "
                f"{self.encoder.kind.name} encoder takes ({longest / ENCODER_SR:g} s): convert "
                f"with --clip (clip_seconds) below that")
        ulens = np.asarray(self.encoder.num_frames(lens16)).reshape(-1)
        i0 = np.zeros((rows, tb), np.int32)
        i1 = np.zeros((rows, tb), np.int32)
        w1 = np.zeros((rows, tb), np.float32)
        for i in range(rows):
            a, b, w = align_table(int(ulens[i]), int(frames[i]), self.unit_mode)
            i0[i, :frames[i]], i1[i, :frames[i]], w1[i, :frames[i]] = a, b, w
        g = self._speaker_rows(spk, padded, None, tb)
        spk_weights = isinstance(g, np.ndarray)
        g = np.asarray(g, np.float32 if spk_weights else np.int32)
        static = self._static(opts, spk_weights, base is not None)
        dspk = None
        if static[6]:
            dspk = self.diffusion.speaker_weights(self._diffusion_speaker(
                g if spk_weights else [int(x) for x in g]), rows, tb)
        pid = np.array([runtime_lib.piece_id(p.audio, p.start, p.length) for p in padded],
                       np.uint32)

        scalars = [np.float32(opt.noise_scale), np.float32(opt.loudness_mix)]
        params = {"encoder": self._placed("encoder", self.encoder, rows)}
        if not opt.only_diffusion:
            params["sovits"] = self._placed("sovits", self.sovits, rows)
        if any(s[0] for s in static[-1]):
            params["diffusion"] = self._placed("diffusion", self.diffusion, rows)
            params["vocoder"] = self._placed("vocoder", self.vocoder, rows)
        if f0spec is not None:
            params["f0"] = rt.params(("f0",) + f0spec[:3], self._f0_network(f0spec)[1], rows)
            scalars.append(np.float32(2.0 ** (opt.transpose / 12.0)))
        valid = np.arange(rows) < n                 # rows past n only pad the batch
        data = rt.put_rows([audio, lens, frames, lens16, f0, uv, i0, i1, w1, g, dspk, pid,
                            valid], rows)
        key = rt.put_replicated(jax.random.PRNGKey(0 if base is None else int(opt.seed)), rows)
        prog = static if f0spec is None else (static, f0spec)
        fn = rt.program("convert", prog, lambda: self._build_program(static, f0spec))
        wav = np.asarray(fn(params, *data, key, *scalars))      # (rows, settings, samples)
        self._time("convert", t0)
        outs = [[wav[i, s, :frames[i] * HOP] for i in range(n)] for s in range(len(opts))]
        return outs if len(opts) > 1 else outs[0]

    def convert_settings(self, audios: Sequence[np.ndarray],
                         options: Sequence[ConvertOptions]) -> list[list[np.ndarray]]:
        """Convert 44.1 kHz clips under several options that differ only in their diffusion
        setting (``shallow_diffusion``, ``k_step``, ``method``, ``speedup``): F0, units and
        the SoVITS output are computed once per piece and every setting runs from them, in
        one compiled program per (bucket, rows, settings). Returns one list of outputs per
        option, each as :meth:`convert` would give it."""
        opts = list(options)
        if not opts:
            return []
        shared = {f.name for f in dataclasses.fields(ConvertOptions)} - {
            "shallow_diffusion", "k_step", "method", "speedup"}
        for o in opts:
            self.check_options(o)
            diff = [f for f in sorted(shared) if getattr(o, f) != getattr(opts[0], f)]
            if diff:
                raise ValueError(f"convert_settings: the options differ in {diff[0]!r}; only "
                                 "the diffusion setting may differ")
        if len(opts) == 1 or not self._fusable(opts[0]):
            return [self.convert(audios, o, progress=False) for o in opts]
        opt = opts[0]
        spk = self._default_speaker(opt.speaker)
        base = None if opt.seed is None else jax.random.PRNGKey(int(opt.seed))
        self.timings = {}
        layouts, pieces = [], []
        for i, a in enumerate(audios):
            a = np.asarray(a, np.float32)
            if a.ndim != 1 or not np.isfinite(a).all():
                raise ValueError(f"input {i} must be finite 1-D 44.1 kHz audio, got shape "
                                 f"{a.shape}")
            chunks = slicer.slice_on_silence(a, SAMPLING_RATE, threshold_db=opt.slice_db)
            lay = _cut(i, len(a), chunks, opt)
            for _, _, ps in lay.chunks:
                for p in ps:
                    if p.padded_length < MIN_PIECE:
                        p.out = np.zeros(p.padded_length, np.float32)
                    else:
                        _materialize(p, a)
                        pieces.append(p)
            layouts.append(lay)
        for p in pieces:
            p.out = [None] * len(opts)
        batches = self._batches(pieces, opt)
        ahead = self._inputs_ahead(batches, opt)
        try:
            for batch in batches:
                outs = self._run_fused(batch, spk, opts, base, inputs=next(ahead))
                for s, per in enumerate(outs):
                    for p, o in zip(batch, per):
                        p.out[s] = o
                for p in batch:
                    p.audio = None
        finally:
            ahead.close()
        results = []
        for s in range(len(opts)):
            per_setting = []
            for lay in layouts:
                parts = []
                for silent, n, ps in lay.chunks:
                    if silent:
                        parts.append(np.zeros(n, np.float32))
                        continue
                    view = [dataclasses.replace(p, out=p.out[s] if isinstance(p.out, list)
                                                else p.out) for p in ps]
                    parts.append(_chunk_output(view, n, opt))
                per_setting.append(np.concatenate(parts) if parts else np.zeros(0, np.float32))
            results.append(per_setting)
        return results

    def _enhancer(self):
        if getattr(self, "_enhancer_obj", None) is None:
            from svcjax.runtime.enhancer import Enhancer

            if self.vocoder is None:
                raise ValueError("enhance needs the NSF-HiFiGAN vocoder (vocoder= / --vocoder)")
            self._enhancer_obj = Enhancer(self.vocoder)
        return self._enhancer_obj

    def _timbre_index(self, opt: ConvertOptions):
        from svcjax.timbre import index as timbre
        if isinstance(opt.cluster_model, timbre.TimbreIndex):
            return opt.cluster_model
        cache = self.__dict__.setdefault("_timbre_cache", {})
        key = (os.fspath(opt.cluster_model), opt.cluster_search)
        if key not in cache:
            cache.clear()
            cache[key] = timbre.load_timbre_index(key[0], search=opt.cluster_search)
        return cache[key]

    def _check_timbre(self, spk, opt: ConvertOptions) -> None:
        index = self._timbre_index(opt)
        cfg = self.sovits.config if self.sovits is not None else self.diffusion.config
        dim = cfg.model.get("ssl_dim", None) if self.sovits is not None else \
            cfg.data.get("encoder_out_channels", None)
        if dim is not None and int(dim) != index.dim:
            raise ValueError(f"the {index.kind} index {index.source!r} holds units of size "
                             f"{index.dim}, the model uses {int(dim)}")
        rows = self._speaker_rows(spk, [_Piece(0, np.zeros(HOP, np.float32), 0, HOP, 0)], [HOP], 1)
        self._mix_timbre(np.zeros((1, 1, index.dim), np.float32), rows, opt)

    def _mix_timbre(self, units, spk_rows, opt: ConvertOptions):
        """Units moved toward the target speaker(s) by the cluster model / retrieval index;
        index entries are matched to the model's speakers by name, else by id."""
        index = self._timbre_index(opt)
        names = {i: n for n, i in self.speakers.items()}
        n = self.n_speakers

        def key(i):
            for cand in (names.get(i), i):
                if cand is not None and any(str(k) == str(cand) for k in index.speakers):
                    return index.key(cand)
            raise ValueError(f"speaker {names.get(i, i)!r} (id {i}) is not in the "
                             f"{index.kind} index {index.source!r} (it has "
                             f"{', '.join(map(str, index.speakers))})")

        if isinstance(spk_rows, np.ndarray):
            w = np.asarray(spk_rows, np.float32)
        else:
            w = np.zeros((len(spk_rows), units.shape[1], n), np.float32)
            for b, i in enumerate(spk_rows):
                w[b, :, i] = 1.0
        used = [i for i in range(n) if w[..., i].any()]
        keys = tuple(key(i) for i in used)
        return np.asarray(index.mix(units, speaker=(keys, w[..., used]),
                                    ratio=opt.cluster_ratio), np.float32)

    def _units(self, audio, lens, frames, t):
        wav16 = np.asarray(resample_lib.resample(audio, SAMPLING_RATE, ENCODER_SR))
        lens16 = np.array([resample_lib.resampled_length(int(n), SAMPLING_RATE, ENCODER_SR)
                           for n in lens])
        u = self.encoder.frames(wav16, [int(f) for f in frames], lengths=lens16,
                                mode=self.unit_mode)
        return np.asarray(u, np.float32)[:, :t]


# ----------------------------------------------------------------------------- files


def _reason(e: BaseException) -> str:
    """An exception as a short phrase: ``No space left on device``, not ``[Errno 28] ...``."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def check_outputs(inputs: Sequence[str], outputs: Sequence[str], *,
                  overwrite: bool | None = False) -> None:
    """Refuse, before any work, outputs that cannot or must not be written.

    Raises ``ValueError`` naming the first problem (and how many there are): an output whose
    folder cannot exist (a file is in the way), an output that is a directory, an output that
    is one of the inputs (unless ``overwrite`` is True), or any other existing file (unless
    ``overwrite`` is True; ``None`` allows those, as :func:`convert_files` always did).
    """
    problems = []
    ins = [os.path.abspath(p) for p in inputs]
    for out in outputs:
        parent = os.path.dirname(os.path.abspath(out))
        probe = parent
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            problems.append(f"cannot write {out!r}: {probe!r} is a file, not a directory")
            continue
        if not os.path.lexists(out):
            continue
        if os.path.isdir(out):
            problems.append(f"cannot write {out!r}: it is a directory")
            continue
        is_input = False
        for src in ins:
            try:
                is_input = is_input or os.path.samefile(src, out)
            except OSError:
                pass
        if is_input and overwrite is not True:
            problems.append(f"output {out!r} is one of the inputs; pass --overwrite to replace "
                            f"the original recording")
        elif not is_input and overwrite is False:
            problems.append(f"output {out!r} already exists; pass --overwrite to replace it")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)


def prepare_output_dirs(outputs: Sequence[str], log) -> None:
    """Create the output folders and prove each can take a new file, before any work (a
    read-only or otherwise unwritable place fails now, not after the conversion); remove the
    temporary files an interrupted earlier run left for these outputs."""
    from svcjax.audio import io

    for folder in sorted({os.path.dirname(os.path.abspath(o)) for o in outputs}):
        try:
            os.makedirs(folder, exist_ok=True)
            probe = io.temp_path(os.path.join(folder, "svcjax-probe"))
            with open(probe, "xb"):
                pass
            os.unlink(probe)
        except OSError as e:
            raise ValueError(f"cannot write to the output folder {folder!r}: {_reason(e)}"
                             ) from None
    stale = [p for o in outputs for p in io.remove_stale_temps(o)]
    if stale:
        log(f"svcjax convert: removed {len(stale)} temporary file(s) left by an interrupted "
            f"run ({os.path.basename(stale[0])}{', ...' if len(stale) > 1 else ''})")


def convert_files(converter: Converter, inputs: Sequence[str], outputs: Sequence[str],
                  options: ConvertOptions, *, subtype: str = "PCM_16",
                  progress: bool | None = None, log=print,
                  overwrite: bool | None = None,
                  on_written: Callable[[str], Any] | None = None
                  ) -> tuple[list[str], list[str]]:
    """Load, convert and write files; returns (written, failed-with-reasons).

    Outputs are checked first (:func:`check_outputs`; ``overwrite=None`` replaces existing
    outputs but never an input, ``False`` refuses any existing file, ``True`` replaces
    anything) and their folders are proved writable, so nothing is converted for an output
    that cannot be written. Each file is then written as soon as its pieces are done,
    streamed into a hidden temporary file that is renamed into place when complete (see
    the module's notes on memory). Unreadable, corrupt, empty or silent inputs are skipped
    with a message, and so is an output whose write fails (disk full, ...): its temporary
    file is removed and the other files are still converted and written. ``on_written`` is
    called with each output's path as soon as it is in place.
    """
    from svcjax.audio import io

    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
    converter.check_options(options)
    check_outputs(inputs, outputs, overwrite=overwrite)
    prepare_output_dirs(outputs, log)
    failed: list[str] = []

    def skip(msg):
        failed.append(msg)
        log(f"svcjax convert: {msg}")

    def load(path):
        """A long libsndfile file is read twice (see the module's notes on memory): a first
        pass for its length and silence RMS, then spans as their window runs; anything else
        is loaded whole."""
        try:   # (a FIFO is not opened here: load_audio refuses it without blocking)
            long = os.path.isfile(path) and float(sf.info(path).duration) > WINDOW_SECONDS
        except Exception:  # noqa: BLE001 (not libsndfile's or unreadable: load_audio says)
            long = False
        if long:
            rms = slicer.RunningRMS(*slicer.slicer_frames(SAMPLING_RATE))
            src = io.StreamedAudio.scan(path, SAMPLING_RATE, rms.feed)
            if src is not None:
                chunks = slicer.slice_rms(rms.finish(), src.length, SAMPLING_RATE,
                                          threshold_db=options.slice_db)
                return src.length, _Streamed(src.length, chunks, src.reader())
        wav, _ = io.load_audio(path, sr=SAMPLING_RATE)
        return len(wav), wav

    def items():
        for k, path in enumerate(inputs):
            try:
                n, wav = load(path)
            except io.AudioFileError as e:
                skip(f"skipped: {e}")
                continue
            except OSError as e:
                skip(f"skipped: cannot read {path!r}: {_reason(e)}")
                continue
            if n < MIN_PIECE:
                skip(f"skipped: audio file {path!r} is too short ({n} samples at "
                     f"44.1 kHz)")
                continue
            yield k, wav

    import soundfile as sf

    seconds = 0.0
    for path in inputs:
        try:
            if os.path.isfile(path):
                seconds += float(sf.info(path).duration)
        except Exception:  # noqa: BLE001 (only for the progress bar's total)
            pass
    from tqdm.auto import tqdm

    bar = tqdm(total=seconds, desc="converting",
               disable=None if progress is None else not progress,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of audio "
                          "[{elapsed}<{remaining}]")
    converter.timings = {}
    written: list[str] = []
    writers: dict[int, io.AudioWriter] = {}
    cancelled: set[int] = set()

    def drop(k: int, message: str) -> None:
        """Give up on output ``k``: remove its temporary file, stop its work, say why."""
        w = writers.pop(k, None)
        if w is not None:
            w.abort()
        cancelled.add(k)
        skip(f"{message}; no partial file was left")

    try:
        for kind, k, block in converter.stream(items(), options, cancelled=cancelled, bar=bar):
            if k in cancelled:
                continue
            if kind == "error":          # a file read a second time failed part way
                drop(k, f"skipped: {_reason(block)}")
                continue
            try:
                if kind == "data":
                    w = writers.get(k)
                    if w is None:
                        w = writers[k] = io.AudioWriter(outputs[k], SAMPLING_RATE,
                                                        subtype=subtype).open()
                    w.write(block)
                else:
                    writers.pop(k).commit()
            except (OSError, ValueError) as e:
                drop(k, f"could not write {outputs[k]!r}: {_reason(e)}")
                continue
            if kind == "done":
                written.append(outputs[k])
                if on_written is not None:
                    on_written(outputs[k])
    finally:
        bar.close()
        for w in writers.values():
            w.abort()
    return written, failed
