"""The training corpus: ``ROOT/<speaker>/*.{wav,flac,mp3,ogg}`` -> a TFDS ArrayRecord dataset.

    svcjax build-corpus ROOT --out DATA_DIR [--encoder FILE | --random-encoder] [--f0 dio]

Each file is loaded at any rate and channel count, silence-trimmed (40 dB), peak-limited,
resampled to 44.1 kHz and loudness-normalised to peak 1 as the reference's ``resample.py``
does, sliced on silence when longer than ``max_seconds``, and stored as 16-bit audio cut to
whole 512-sample hops together with its features (:mod:`svcjax.data.featurizer`). Clips under
0.3 s, silent and unreadable files, and clips whose features come out non-finite are skipped
and reported by name; they never stop a build. A WAV file shorter than its header says
(truncated) is used as far as it goes and reported as truncated.

Speakers are the folder names, numbered in sorted order (the speaker map is in the dataset's
metadata). A speaker folder none of whose files gives a usable clip is left out (not given an
id) with a warning that counts its files by reason; a build with no usable speaker fails. The
validation split takes ``val_per_speaker`` of each speaker's usable files (chosen with a fixed
seed), always leaving at least one for ``train``; the rest is ``train``.

Multi-host: every process lists the same ROOT, takes its share of the files (balanced by
size), featurizes them on its local devices and writes its own TFDS shards; process 0 then
merges all hosts' shards into one dataset (renumbered, listed in one ``dataset_info.json``).
Work is resumable: features of each finished file are cached (atomically) under
``DATA_DIR/svc_corpus/_build``, a finished host dataset is not rebuilt and a finished corpus
is left alone, so re-running the same command after an interruption continues where it
stopped. The TFDS builder itself is :mod:`svcjax.data.tfds_builder`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np

from svcjax.audio.constants import AUDIO_EXTENSIONS
from svcjax.data import featurizer as featurizer_lib
from svcjax.files import atomic_directory, write_bytes, write_text

DATASET_NAME = "svc_corpus"
VERSION = "1.0.0"
SAMPLE_RATE = featurizer_lib.SAMPLE_RATE
HOP = featurizer_lib.HOP

__all__ = ["DATASET_NAME", "VERSION", "default_config", "Source", "scan_sources",
           "assign_hosts", "prepare_file", "build_corpus", "merge_hosts", "dataset_dir",
           "load_metadata", "builder_class", "plan_layout", "wav_truncation", "format_report"]


def default_config() -> ml_collections.ConfigDict:
    """How files become clips and how they are split (featurizer settings are separate)."""
    return ml_collections.ConfigDict(dict(
        top_db=40.0,           # silence trim threshold (librosa.effects.trim)
        loudnorm=True,         # scale each file to peak 1 after resampling
        resampler="kaiser_best",  # to 44.1 kHz (the reference's librosa 0.9.1 default)
        min_seconds=0.3,       # shorter clips are skipped (and reported)
        max_seconds=15.0,      # longer files are sliced on silence
        val_per_speaker=2,     # files per speaker in the validation split
        split_seed=1234,
        load_workers=2,        # threads loading and resampling files
        chunk_clips=64,        # clips featurized together (then cached)
    ))


# -- sources ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Source:
    speaker: str
    relpath: str      # "speaker/sub/file.wav", with forward slashes
    path: str
    size: int
    mtime_ns: int
    split: str        # "train" or "validation"


def scan_sources(root: str | os.PathLike, val_per_speaker: int = 2, seed: int = 1234
                 ) -> tuple[list[Source], list[str], list[dict]]:
    """List ``root/<speaker>/**/*.{wav,flac,mp3,ogg}``: (sources, speakers, skipped).

    Audio files directly under ``root`` (outside a speaker folder) are reported as skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {str(root)!r} is not a folder; expected "
                                f"ROOT/<speaker>/*.wav")
    skipped = []
    for f in sorted(root.iterdir()):
        if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS:
            skipped.append(dict(file=f.name, reason="not inside a speaker folder"))
    by_speaker: dict[str, list[Source]] = {}
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if spk_dir.name.startswith("."):
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(spk_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                files.append(Path(dirpath) / name)
        if not files:
            skipped.append(dict(file=spk_dir.name + "/", reason="speaker folder without "
                                f"audio files ({'/'.join(AUDIO_EXTENSIONS)})"))
        if files:
            by_speaker[spk_dir.name] = []
            rel = sorted(f.relative_to(root).as_posix() for f in files)
            rng = random.Random(f"{seed}:{spk_dir.name}")
            order = rel[:]
            rng.shuffle(order)
            n_val = min(val_per_speaker, len(rel) - 1)
            val = set(order[:max(0, n_val)])
            for r in rel:
                st = (root / r).stat()
                by_speaker[spk_dir.name].append(Source(
                    speaker=spk_dir.name, relpath=r, path=str(root / r), size=st.st_size,
                    mtime_ns=st.st_mtime_ns, split="validation" if r in val else "train"))
    if not by_speaker:
        stray = sum(s["reason"] == "not inside a speaker folder" for s in skipped)
        raise FileNotFoundError(
            f"no audio under {str(root)!r}: expected ROOT/<speaker>/*"
            f"{{{','.join(AUDIO_EXTENSIONS)}}}"
            + (f" ({stray} audio file{'s are' if stray > 1 else ' is'} directly under ROOT, "
               f"outside any speaker folder)" if stray else ""))
    speakers = sorted(by_speaker)
    sources = [s for spk in speakers for s in by_speaker[spk]]
    return sources, speakers, skipped


def assign_hosts(sources: Sequence[Source], count: int) -> list[list[Source]]:
    """Split sources over ``count`` hosts: largest first, round robin (balanced bytes)."""
    if count < 1:
        raise ValueError(f"process count must be at least 1, got {count}")
    order = sorted(sources, key=lambda s: (-s.size, s.relpath))
    shares: list[list[Source]] = [[] for _ in range(count)]
    for i, s in enumerate(order):
        shares[i % count].append(s)
    return [sorted(share, key=lambda s: s.relpath) for share in shares]


# -- one file -> clips -----------------------------------------------------------------------

def _split_evenly_at_pauses(x: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """Cut a voiced stretch longer than ``max_samples`` into pieces of at most that size,
    each cut at the quietest 20 ms of the last third of the piece."""
    out = []
    win = SAMPLE_RATE // 50
    while len(x) > max_samples:
        lo = max_samples * 2 // 3
        seg = x[lo:max_samples]
        n = len(seg) // win
        energy = (seg[: n * win].reshape(n, win) ** 2).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * win + win // 2
        out.append(x[:cut])
        x = x[cut:]
    out.append(x)
    return out


def slice_long(x: np.ndarray, max_seconds: float) -> list[np.ndarray]:
    """Voiced pieces of at most ``max_seconds`` of a clip at 44.1 kHz.

    Clips within the limit are kept whole. Longer ones are cut on silence
    (:func:`svcjax.audio.slicer.slice_on_silence`, -40 dB, pauses of 300 ms or more, up to
    0.5 s of silence kept beside the voice, silent chunks dropped); a voiced stretch still
    too long is cut at its quietest moments.
    """
    from svcjax.audio.slicer import slice_on_silence
    max_samples = int(max_seconds * SAMPLE_RATE)
    if len(x) <= max_samples:
        return [x]
    chunks = slice_on_silence(x, SAMPLE_RATE, threshold_db=-40.0,
                              min_length_ms=min(5000, int(max_seconds * 500)),
                              min_interval_ms=300, hop_ms=20, max_silence_kept_ms=500)
    pieces = []
    for c in chunks:
        if not c.silent:
            pieces += _split_evenly_at_pauses(x[c.start:c.end], max_samples)
    return pieces


def wav_truncation(path: str | os.PathLike) -> str | None:
    """For a RIFF/WAVE file whose ``data`` chunk is shorter than its header says: what is
    missing (``'truncated: the header says 2.95 s, the file holds 1.48 s'``); else None.

    Streaming writers that leave the size unknown (0 or 0xFFFFFFFF) are not truncated.
    """
    import struct
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos, rate, block = 12, 0, 0
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt " and n >= 16:
                    fmt = f.read(16)
                    if len(fmt) == 16:
                        _, _, rate, _, block = struct.unpack("<HHIIH", fmt[:14])
                if cid == b"data":
                    have = size - pos - 8
                    if n in (0, 0xFFFFFFFF) or n <= have:
                        return None
                    if rate and block:
                        return (f"truncated: the header says {n / block / rate:.2f} s, the file "
                                f"holds {have / block / rate:.2f} s (used as far as it goes)")
                    return (f"truncated: the header says {n} bytes of audio, the file holds "
                            f"{have} (used as far as it goes)")
                pos += 8 + n + (n & 1)
    except (OSError, struct.error):
        return None
    return None


def _is_note(reason: str) -> bool:
    """Reasons that describe a file that was still used (not a skip)."""
    return reason.startswith("truncated")


def prepare_file(path: str, config: ml_collections.ConfigDict | Mapping | None = None
                 ) -> tuple[list[np.ndarray], list[str]]:
    """Load, clean and slice one file: (int16 clips of whole hops, skip reasons).

    The reference's ``resample.py`` chain (:func:`svcjax.audio.prepare.prepare_training_audio`:
    trim at ``top_db``, peak-limit, resample to 44.1 kHz, normalise to peak 1), then
    :func:`slice_long` and ``int16(x * 32767)``. A file that cannot be used (unreadable,
    corrupt, empty, silent) and pieces under ``min_seconds`` come back as reasons; a
    truncated WAV file (:func:`wav_truncation`) is used and its reason starts "truncated".
    """
    from svcjax.audio.io import AudioFileError, load_audio
    from svcjax.audio.prepare import prepare_training_audio, to_int16
    cfg = default_config()
    if config is not None:
        cfg.update(dict(config))
    if cfg.max_seconds < 1.0:
        raise ValueError(f"max_seconds must be at least 1, got {cfg.max_seconds}")
    try:
        audio, sr = load_audio(path)
        x = prepare_training_audio(audio, sr, SAMPLE_RATE, top_db=float(cfg.top_db),
                                   loudnorm=bool(cfg.loudnorm), resampler=cfg.resampler)
    except AudioFileError as e:
        problem = str(e).replace(f"audio file {e.path!r} ", "", 1)
        return [], [("silent: " if "silent" in problem else "unreadable: ") + problem]
    except ValueError as e:  # prepare_training_audio: silent after trimming etc.
        return [], [f"silent: {e}" if "silent" in str(e) else f"unusable: {e}"]
    pieces = slice_long(x, float(cfg.max_seconds))
    clips, reasons = [], []
    truncated = wav_truncation(path)
    if truncated:
        reasons.append(truncated)
    for i, piece in enumerate(pieces):
        seconds = len(piece) / SAMPLE_RATE
        if seconds < cfg.min_seconds or len(piece) < HOP:
            what = "clip" if len(pieces) == 1 else f"slice {i}"
            reasons.append(f"{what} too short: {seconds:.2f} s < {cfg.min_seconds} s")
            continue
        q = to_int16(np.clip(piece, -1.0, 1.0))
        clips.append(q[: len(q) // HOP * HOP])
    return clips, reasons


# -- per-file feature cache (resume) ---------------------------------------------------------

def _cache_path(cache_dir: Path, src: Source) -> Path:
    return cache_dir / (hashlib.sha1(src.relpath.encode()).hexdigest()[:20] + ".npz")


def _cache_valid(path: Path, src: Source, fingerprint: str) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
    except Exception:
        return False
    return (meta.get("relpath") == src.relpath and meta.get("size") == src.size
            and meta.get("mtime_ns") == src.mtime_ns and meta.get("fingerprint") == fingerprint)


def _write_cache(path: Path, src: Source, fingerprint: str, clips: list[dict],
                 reasons: list[str]) -> None:
    arrays = {}
    for i, clip in enumerate(clips):
        for name, value in clip.items():
            arrays[f"{i}/{name}"] = np.asarray(value)
    meta = dict(relpath=src.relpath, size=src.size, mtime_ns=src.mtime_ns,
                fingerprint=fingerprint, clips=len(clips), skipped=reasons)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    write_bytes(path, buf.getvalue())


def _read_cache(path: Path) -> tuple[dict, list[dict]]:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        clips: list[dict] = [dict() for _ in range(meta["clips"])]
        for k in z.files:
            if k == "meta":
                continue
            i, name = k.split("/", 1)
            clips[int(i)][name] = z[k]
    return meta, clips


def featurize_sources(sources: Sequence[Source], featurizer: featurizer_lib.Featurizer,
                      cache_dir: str | os.PathLike, config: ml_collections.ConfigDict,
                      log: Callable[[str], None] = print) -> dict:
    """Featurize every source not already cached; returns counts of this run's work."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fp = featurizer.fingerprint
    todo = [s for s in sources if not _cache_valid(_cache_path(cache_dir, s), s, fp)]
    if len(todo) < len(sources):
        log(f"  {len(sources) - len(todo)} of {len(sources)} files already featurized")
    done = {"files": 0, "clips": 0, "seconds": 0.0}
    t0 = time.time()

    def load(src):
        try:
            return prepare_file(src.path, config)
        except Exception as e:  # anything else a bad file provokes: report it, keep going
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return [], [f"unreadable: {type(e).__name__}: {msg}"]

    workers = max(1, int(config.load_workers))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        # Files load (and resample) in background threads, a few ahead of the featurizer;
        # a chunk is featurized once it holds chunk_clips clips, then cached file by file.
        ahead = collections.deque()
        queue = iter(todo)
        chunk: list[tuple[Source, list, list]] = []
        while True:
            while len(ahead) < 2 * workers:
                src = next(queue, None)
                if src is None:
                    break
                ahead.append((src, pool.submit(load, src)))
            if ahead:
                src, fut = ahead.popleft()
                chunk.append((src, *fut.result()))
            n_clips = sum(len(c) for _, c, _ in chunk)
            if chunk and (n_clips >= int(config.chunk_clips) or not ahead):
                _featurize_chunk(chunk, featurizer, cache_dir, fp, log)
                done["files"] += len(chunk)
                done["clips"] += n_clips
                done["seconds"] += sum(len(c) for _, cl, _ in chunk for c in cl) / SAMPLE_RATE
                log(f"  featurized {done['files']}/{len(todo)} files, {done['clips']} clips, "
                    f"{done['seconds']:.0f} s of audio ({time.time() - t0:.0f} s)")
                chunk = []
            if not ahead and not chunk:
                break
    return done


def _featurize_chunk(chunk, featurizer, cache_dir: Path, fp: str, log) -> None:
    clips, keys, owner = [], [], []
    for j, (src, cl, _) in enumerate(chunk):
        for k, c in enumerate(cl):
            clips.append(c.astype(np.float32) / 32768.0)
            keys.append(f"{src.relpath}#{k}")
            owner.append((j, k))
    feats = featurizer(clips, keys) if clips else []
    per_file: list[list[dict]] = [[] for _ in chunk]
    extra: list[list[str]] = [[] for _ in chunk]
    for (j, k), f in zip(owner, feats):
        clip = dict(audio=chunk[j][1][k], **f)
        problem = featurizer_lib.clip_problem(clip)
        if problem:  # never store a clip the trainer cannot use
            what = "clip" if len(chunk[j][1]) == 1 else f"slice {k}"
            extra[j].append(f"unusable features: {what}: {problem}")
            continue
        per_file[j].append(clip)
    for (src, _, reasons), more, file_feats in zip(chunk, extra, per_file):
        reasons = list(reasons) + more
        _write_cache(_cache_path(cache_dir, src), src, fp, file_feats, reasons)
        for r in reasons:
            log(f"  {'warning' if _is_note(r) else 'skipped'} {src.relpath}: {r}")


def iter_examples(sources: Sequence[Source], split: str, cache_dir: str | os.PathLike,
                  speakers: Sequence[str]) -> Iterator[tuple[str, dict]]:
    """(key, example) for every cached clip of ``split`` among ``sources``."""
    spk_id = {s: i for i, s in enumerate(speakers)}
    for src in sources:
        if src.split != split:
            continue
        meta, clips = _read_cache(_cache_path(Path(cache_dir), src))
        for i, clip in enumerate(clips):
            key = f"{src.relpath}#{i}"
            yield key, dict(clip, speaker=spk_id[src.speaker], source=key)


def _file_summary(sources: Sequence[Source], cache_dir: Path) -> list[dict]:
    """Per file of ``sources`` (featurized): speaker, clips, frames and reasons."""
    out = []
    for src in sources:
        with np.load(_cache_path(cache_dir, src)) as z:
            meta = json.loads(str(z["meta"]))
            frames = sum(int(z[f"{i}/audio"].shape[0]) for i in range(meta["clips"])) // HOP
        out.append(dict(file=src.relpath, speaker=src.speaker, clips=int(meta["clips"]),
                        frames=int(frames), reasons=list(meta["skipped"])))
    return out


def _reason_kind(reason: str) -> str:
    if "too short" in reason:
        return "too short"
    if reason.startswith("unusable features"):
        return "unusable features"
    return reason.split(":", 1)[0]


def _first(names: Sequence[str], n: int = 3) -> str:
    names = list(names)
    more = f", ... and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _kinds(items: Sequence[tuple[str, str]]) -> str:
    """'2 unreadable (a.wav, b.wav), 1 too short (c.wav)' from (file, reason) pairs."""
    by: dict[str, list[str]] = {}
    for name, reason in items:
        by.setdefault(_reason_kind(reason), []).append(name)
    return ", ".join(f"{len(v)} {k} ({_first(v)})" for k, v in by.items())


@dataclasses.dataclass
class Layout:
    """What the corpus holds, decided once every file is featurized."""
    speakers: list[str]            # speakers with a usable clip; id = position
    split: dict[str, str]          # relpath of every usable file -> "train" / "validation"
    dropped: dict[str, str]        # speaker left out -> why (with counts)
    notes: list[str]               # warnings for the report


def plan_layout(files: Sequence[dict], speakers: Sequence[str], val_per_speaker: int,
                seed: int) -> Layout:
    """Speakers and splits from the featurized files (:func:`_file_summary` entries).

    A file is usable when it gave at least one clip. A speaker without a usable file is left
    out (no id); each other speaker gets ``min(val_per_speaker, usable - 1)`` validation
    files, chosen with ``seed`` as :func:`scan_sources` chooses them (the same files when all
    are usable), so ``train`` always holds every kept speaker. No usable file at all is a
    ``ValueError`` with the counts per speaker.
    """
    by_spk: dict[str, list[dict]] = {s: [] for s in speakers}
    for f in files:
        by_spk[f["speaker"]].append(f)
    kept, split, dropped, notes, per_speaker = [], {}, {}, [], []
    for spk in speakers:
        fs = by_spk[spk]
        usable = sorted(f["file"] for f in fs if f["clips"] > 0)
        bad = [(f["file"], (f["reasons"] or ["no clips"])[0]) for f in fs if f["clips"] == 0]
        per_speaker.append(f"{spk}: {len(usable)} of {len(fs)} usable"
                           + (f" ({_kinds(bad)})" if bad else ""))
        if not usable:
            dropped[spk] = (f"none of its {len(fs)} file{'s' if len(fs) != 1 else ''} gave a "
                            f"usable clip: {_kinds(bad)}")
            continue
        kept.append(spk)
        order = usable[:]
        random.Random(f"{seed}:{spk}").shuffle(order)
        n_val = max(0, min(int(val_per_speaker), len(usable) - 1))
        val = set(order[:n_val])
        for r in usable:
            split[r] = "validation" if r in val else "train"
        if n_val < int(val_per_speaker):
            notes.append(f"speaker {spk!r} has {len(usable)} usable file"
                         f"{'s' if len(usable) != 1 else ''} of {len(fs)}"
                         + (f" ({_kinds(bad)})" if bad else "") + f": {n_val} in "
                         f"validation (val_per_speaker={val_per_speaker}), "
                         f"{len(usable) - n_val} in train")
    if not kept:
        raise ValueError("no usable clips in the corpus: every file was skipped (files usable "
                         "per speaker: " + "; ".join(per_speaker) + ")")
    for spk, why in dropped.items():
        notes.insert(0, f"speaker {spk!r} left out of the corpus: {why}")
    return Layout(kept, split, dropped, notes)


def _counts(files: Sequence[dict], layout: Layout) -> tuple[dict, dict]:
    """(clips/files/seconds per split, clips per speaker and split) of the usable files."""
    counts: dict[str, dict] = {}
    per_spk: dict[str, dict] = {s: {"train": 0, "validation": 0} for s in layout.speakers}
    for f in files:
        split = layout.split.get(f["file"])
        if split is None:
            continue
        c = counts.setdefault(split, dict(files=0, clips=0, seconds=0.0))
        c["files"] += 1
        c["clips"] += f["clips"]
        c["seconds"] += f["frames"] * HOP / SAMPLE_RATE
        per_spk[f["speaker"]][split] += f["clips"]
    return counts, per_spk


# -- the TFDS builder ------------------------------------------------------------------------

@dataclasses.dataclass
class HostPlan:
    """What one host's TFDS builder (:mod:`svcjax.data.tfds_builder`) writes."""
    sources: list[Source]
    cache_dir: str
    speakers: list[str]
    spec: dict          # feature name -> featurizer.FeatureSpec
    splits: list[str]   # splits with at least one clip on this host
    metadata: dict

    def examples(self, split: str) -> Iterator[tuple[str, dict]]:
        """(key, example) for every clip of ``split`` on this host (:func:`iter_examples`)."""
        return iter_examples(self.sources, split, self.cache_dir, self.speakers)


def builder_class():
    """The ``svc_corpus`` TFDS builder class (:class:`svcjax.data.tfds_builder.Builder`;
    imported on first use: it imports TFDS)."""
    from svcjax.data import tfds_builder

    return tfds_builder.Builder


def dataset_dir(data_dir: str | os.PathLike) -> Path:
    """Where the finished corpus lives: ``DATA_DIR/svc_corpus/1.0.0``."""
    return Path(data_dir) / DATASET_NAME / VERSION


def _quiet_tfds():
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    import logging
    logging.getLogger("absl").setLevel(logging.WARNING)
    return tfds


def _host_dir(work: Path, index: int, count: int) -> Path:
    return work / f"host-{index:05d}-of-{count:05d}"


def _build_host(plan: HostPlan, host_dir: Path) -> Path:
    """Write this host's TFDS dataset (skipped when it already exists)."""
    import contextlib
    _quiet_tfds()
    builder = builder_class()(data_dir=str(host_dir), plan=plan)
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading ..." banners
        builder.download_and_prepare()
    return Path(builder.data_dir)


def build_corpus(root: str | os.PathLike, data_dir: str | os.PathLike,
                 featurizer: featurizer_lib.Featurizer,
                 config: ml_collections.ConfigDict | None = None, *,
                 process_index: int | None = None, process_count: int | None = None,
                 overwrite: bool = False, keep_work: bool = False,
                 log: Callable[[str], None] = print) -> Path | None:
    """Build (or finish building) the corpus; returns its folder.

    With several processes each one featurizes and writes its share; process 0 merges once
    every share is written and returns the folder, the others wait for it (under
    ``jax.distributed``) or return ``None`` when run by hand with explicit
    ``process_index``/``process_count`` (re-run process 0, or call :func:`merge_hosts`).
    """
    import jax
    cfg = default_config()
    if config is not None:
        cfg.update(dict(config))
    distributed = process_index is None and jax.process_count() > 1
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is not in [0, {count})")
    final = dataset_dir(data_dir)
    if (final / "dataset_info.json").exists() and not overwrite:
        log(f"corpus already built at {final} (pass overwrite to rebuild)")
        return final
    sources, speakers, scan_skips = scan_sources(root, int(cfg.val_per_speaker),
                                                 int(cfg.split_seed))
    base = Path(data_dir) / DATASET_NAME / "_build"
    cache_dir = base / "cache"
    work = base / _run_id(sources, speakers, featurizer, cfg, count)
    mine = assign_hosts(sources, count)[index]
    host_dir = _host_dir(work, index, count)
    log(f"host {index}/{count}: {len(mine)} of {len(sources)} files, "
        f"{len(speakers)} speakers -> {host_dir}")
    if (host_dir / "report.json").exists():
        log(f"host {index}/{count}: already written")
    elif not (host_dir / "featurized.json").exists():
        featurize_sources(mine, featurizer, cache_dir, cfg, log)
        host_dir.mkdir(parents=True, exist_ok=True)
        _write_json(host_dir / "featurized.json", dict(files=_file_summary(mine, cache_dir)))
    if distributed:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("svc_corpus: hosts featurized")
    files = _all_files(work, count)
    if files is None:
        missing = [i for i in range(count)
                   if not (_host_dir(work, i, count) / "featurized.json").exists()]
        log(f"waiting for host(s) {', '.join(map(str, missing))} of {count} to featurize "
            f"their files; run them, then re-run process 0 to finish")
        return None
    # Speakers and splits are decided on every host alike once all files are featurized;
    # host 0 run by hand writes the shards of the hosts that have not (from the shared cache).
    try:
        layout = plan_layout(files, speakers, int(cfg.val_per_speaker), int(cfg.split_seed))
    except ValueError:
        if index == 0 and not keep_work:  # nothing usable: no work worth keeping
            shutil.rmtree(base, ignore_errors=True)
            with contextlib.suppress(OSError):
                base.parent.rmdir()  # DATA_DIR/svc_corpus, when it holds nothing else
        raise
    writers = [index] if distributed or index != 0 else list(range(count))
    shares = assign_hosts(sources, count)
    for i in writers:
        hdir = _host_dir(work, i, count)
        if not (hdir / "report.json").exists():
            _write_host(i, count, shares[i], hdir, layout, cache_dir, featurizer, cfg)
    if distributed:
        multihost_utils.sync_global_devices("svc_corpus: hosts written")
    if index != 0:
        if distributed:
            multihost_utils.sync_global_devices("svc_corpus: merged")
            return final
        return None
    out = merge_hosts(work, count, data_dir, featurizer, speakers, cfg, scan_skips, log=log)
    if not keep_work:
        shutil.rmtree(base, ignore_errors=True)
    if distributed:
        multihost_utils.sync_global_devices("svc_corpus: merged")
    return out


def _all_files(work: Path, count: int) -> list[dict] | None:
    """Every host's featurized files, or None while a host has not featurized its share."""
    files = []
    for i in range(count):
        path = _host_dir(work, i, count) / "featurized.json"
        if not path.exists():
            return None
        files += json.loads(path.read_text())["files"]
    return files


def _write_host(index: int, count: int, share: Sequence[Source], host_dir: Path,
                layout: Layout, cache_dir: Path, featurizer, cfg) -> None:
    """One host's TFDS dataset (its usable files, final speaker ids) and its report.json."""
    mine = [dataclasses.replace(s, split=layout.split[s.relpath]) for s in share
            if s.relpath in layout.split]
    splits = [sp for sp in ("train", "validation") if any(s.split == sp for s in mine)]
    plan = HostPlan(sources=mine, cache_dir=str(cache_dir), speakers=list(layout.speakers),
                    spec=featurizer.spec(), metadata=_metadata(layout.speakers, featurizer, cfg),
                    splits=splits)
    host_dir.mkdir(parents=True, exist_ok=True)
    if plan.splits:
        _build_host(plan, host_dir)
    _write_json(host_dir / "report.json", dict(index=index, count=count, splits=splits))


def _run_id(sources, speakers, featurizer, cfg, count) -> str:
    blob = json.dumps(dict(
        layout=2,  # speakers and splits decided after featurizing (older work dirs differ)
        files=[(s.relpath, s.size, s.mtime_ns, s.split) for s in sources],
        speakers=list(speakers), featurizer=featurizer.fingerprint, count=count,
        config={k: v for k, v in cfg.to_dict().items() if k not in ("load_workers", "chunk_clips")},
    ), sort_keys=True).encode()
    return "run-" + hashlib.sha1(blob).hexdigest()[:12]


def _metadata(speakers, featurizer, cfg) -> dict:
    return dict(speakers={s: i for i, s in enumerate(speakers)}, sample_rate=SAMPLE_RATE,
                hop_length=HOP, featurizer=featurizer.describe(),
                preprocess={k: v for k, v in cfg.to_dict().items()
                            if k not in ("load_workers", "chunk_clips")})


def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


def merge_hosts(work: str | os.PathLike, count: int, data_dir: str | os.PathLike,
                featurizer: featurizer_lib.Featurizer, speakers: Sequence[str],
                config: ml_collections.ConfigDict, scan_skips: Sequence[dict] = (),
                log: Callable[[str], None] = print) -> Path:
    """Merge the hosts' TFDS datasets into ``DATA_DIR/svc_corpus/1.0.0`` (atomically)."""
    tfds = _quiet_tfds()
    work = Path(work)
    final = dataset_dir(data_dir)
    # the new version is built beside the old one and replaces it whole
    with atomic_directory(final, replace=True) as tmp:
        reports = [json.loads((_host_dir(work, i, count) / "report.json").read_text())
                   for i in range(count)]
        featurized = _all_files(work, count)
        if featurized is None:
            raise FileNotFoundError(f"a host of {count} has not featurized its files under {work}")
        layout = plan_layout(featurized, speakers, int(config.val_per_speaker),
                             int(config.split_seed))
        counts, per_speaker = _counts(featurized, layout)
        split_infos = []
        for split in ("train", "validation"):
            shards: list[tuple[Path, int]] = []
            num_bytes = 0
            for i, rep in enumerate(reports):
                if split not in rep["splits"]:
                    continue
                host_ds = _host_dir(work, i, count) / DATASET_NAME / VERSION
                info = tfds.builder_from_directory(str(host_ds)).info.splits[split]
                files = info.filename_template.sharded_filepaths(len(info.shard_lengths))
                shards += [(Path(f), n) for f, n in zip(files, info.shard_lengths)]
                num_bytes += info.num_bytes
            if not shards:
                continue
            template = tfds.core.naming.ShardedFileTemplate(
                data_dir=tfds.core.Path(str(tmp)), dataset_name=DATASET_NAME, split=split,
                filetype_suffix="array_record")
            targets = template.sharded_filepaths(len(shards))
            for (src, _), dst in zip(shards, targets):
                _link_or_copy(src, Path(str(dst)))
            split_infos.append(tfds.core.SplitInfo(
                name=split, shard_lengths=[n for _, n in shards], num_bytes=num_bytes,
                filename_template=template))
        if not split_infos:
            raise ValueError("no usable clips in the corpus: every file was skipped (see the "
                             "messages above)")
        skipped = list(scan_skips) + [dict(file=f["file"], reason=r) for f in featurized
                                      for r in f["reasons"] if not _is_note(r)]
        skipped.sort(key=lambda s: s["file"])
        warnings = sorted((dict(file=f["file"], warning=r) for f in featurized
                           for r in f["reasons"] if _is_note(r)), key=lambda w: w["file"])
        metadata = _metadata(layout.speakers, featurizer, config)
        metadata.update(counts=counts, speaker_counts=per_speaker, skipped=skipped,
                        warnings=warnings, dropped_speakers=layout.dropped, notes=layout.notes,
                        hosts=count)
        plan = HostPlan(sources=[], cache_dir="", speakers=list(layout.speakers),
                        spec=featurizer.spec(),
                        splits=[s.name for s in split_infos], metadata=metadata)
        builder = builder_class()(data_dir=str(final.parent / "_merge_info"), plan=plan)
        builder.info.set_splits(tfds.core.SplitDict(split_infos))
        builder.info.write_to_directory(str(tmp))
        (tmp / "build_report.txt").write_text(format_report(metadata, full=True))
    shutil.rmtree(final.parent / "_merge_info", ignore_errors=True)
    log(format_report(metadata))
    return final


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link a host's shard into the merged dataset (copy across filesystems), so the
    host datasets stay whole until the merge has succeeded."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def format_report(metadata: dict, full: bool = False) -> str:
    """Human-readable summary: clips per split and speaker, speakers left out, warnings, and
    the skipped files counted by reason with the first few names (``full``: every skipped
    and truncated file and why, as ``build_report.txt`` has it)."""
    lines = [f"svc_corpus: {len(metadata['speakers'])} speakers "
             f"({', '.join(metadata['speakers'])})"]
    for split, c in sorted(metadata.get("counts", {}).items()):
        lines.append(f"  {split}: {c['clips']} clips from {c['files']} files, "
                     f"{c['seconds'] / 60:.1f} min")
    per = metadata.get("speaker_counts") or {}
    if per:
        lines.append("  clips per speaker (train/validation): " + ", ".join(
            f"{s} {c['train']}/{c['validation']}" for s, c in per.items()))
    for note in metadata.get("notes", []):
        lines.append(f"  warning: {note}")
    warnings = metadata.get("warnings", [])
    if warnings:
        lines.append(f"  warning: {len(warnings)} truncated file"
                     f"{'s' if len(warnings) != 1 else ''} (shorter than the WAV header says; "
                     f"used as far as they go): {_first([w['file'] for w in warnings], 5)}")
    skipped = metadata.get("skipped", [])
    by_file: dict[str, str] = {}
    for s in skipped:
        by_file.setdefault(s["file"], s["reason"])
    lines.append(f"  skipped: {len(skipped)}"
                 + (f" ({_kinds(list(by_file.items()))})" if skipped else ""))
    if full:
        lines += [f"    {s['file']}: {s['reason']}" for s in skipped]
        lines += [f"    {w['file']}: {w['warning']}" for w in warnings]
    return "\n".join(lines) + "\n"


def load_metadata(data_dir: str | os.PathLike) -> dict:
    """The finished corpus's metadata: speakers, featurizer, counts, skipped files."""
    path = Path(data_dir)
    if not (path / "metadata.json").exists():
        path = dataset_dir(data_dir)
    meta = path / "metadata.json"
    if not meta.exists():
        raise FileNotFoundError(f"no svc_corpus dataset at {str(data_dir)!r} (expected "
                                f"{dataset_dir(data_dir)}/metadata.json); build it with "
                                f"`svcjax build-corpus`")
    return json.loads(meta.read_text())
