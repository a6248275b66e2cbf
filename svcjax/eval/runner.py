"""The evaluation runner: a model converts an evaluation set under several settings, and the
metrics of :mod:`svcjax.eval.metrics` are tabulated (``eval.py`` and ``svcjax eval``).

:func:`run_evaluation` takes the evaluation config (:mod:`svcjax.eval.config`: the models,
the clips, the settings to compare, the metrics) and writes ``WORKDIR/eval/``:
``metrics.json`` (flat ``{"<setting>/<metric>": mean, "<setting>/<speaker>/<metric>": mean}``,
what ``svcjax sweep`` gathers), ``metrics.csv``, ``clips.csv`` and TensorBoard files.
Settings are named ``sovits`` and ``diff_k<k>_<sampler>_x<speedup>`` (:func:`settings_from_config`).
Clips are padded to length buckets and run in batches, so each program compiles once per
bucket; settings that differ only in diffusion share one SoVITS pass
(:meth:`svcjax.runtime.converter.Converter.convert_settings`).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

from svcjax.eval import metrics
from svcjax.audio.constants import AUDIO_EXTENSIONS, HOP, SAMPLING_RATE
from svcjax.files import atomic_write

__all__ = ["EvalClip", "load_eval_set", "settings_from_config", "run_evaluation", "EVAL_DIR",
           "METRICS_JSON", "AUDIO_EXTENSIONS"]

EVAL_DIR = "eval"
METRICS_JSON = "metrics.json"       # flat {"metric": number}: the sweep launcher's contract
_DIFFUSION_FIELDS = ("shallow_diffusion", "k_step", "method", "speedup")


class EvalClip:
    """One evaluation clip: ``name``, 44.1 kHz ``audio``, ``speaker`` label (or None)."""

    def __init__(self, name: str, audio: np.ndarray, speaker: str | None = None):
        self.name, self.audio, self.speaker = name, np.asarray(audio, np.float32), speaker

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLING_RATE


def load_eval_set(data, log=print) -> list[EvalClip]:
    """Clips from ``data.kind``: ``"folder"`` (``data.path``: audio files, or
    ``<speaker>/<files>`` whose folder names label the speakers) or ``"tfds"`` (the
    corpus builder's ``data.split`` under ``data.path``). ``data.max_clips`` > 0 keeps the
    first ones (sorted by name). Unreadable or silent files are skipped with a message."""
    from svcjax.audio import io

    kind = data.get("kind", "folder")
    path = os.fspath(data.get("path", "") or "")
    limit = int(data.get("max_clips", 0) or 0)
    clips: list[EvalClip] = []
    if kind == "folder":
        if not os.path.isdir(path):
            raise FileNotFoundError(f"evaluation folder not found: {path!r} (set "
                                    "--config.data.path)")
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(AUDIO_EXTENSIONS))
        if not files:
            raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {path!r}")
        for f in files:
            if limit and len(clips) >= limit:
                break
            rel = os.path.relpath(f, path)
            spk = rel.split(os.sep)[0] if os.sep in rel else None
            try:
                wav, _ = io.load_audio(f, sr=SAMPLING_RATE)
            except (io.AudioFileError, FileNotFoundError) as e:
                log(f"eval: skipped: {e}")
                continue
            if len(wav) < 4 * HOP:
                log(f"eval: skipped: {f!r} is shorter than {4 * HOP} samples at 44.1 kHz")
                continue
            clips.append(EvalClip(rel, wav, spk))
    elif kind == "tfds":
        clips = _load_tfds(path, data.get("split", "validation"), limit)
    else:
        raise ValueError(f"data.kind must be 'folder' or 'tfds', got {kind!r}")
    if not clips:
        raise ValueError(f"no usable clips in {path!r}")
    return clips


def _load_tfds(data_dir: str, split: str, limit: int) -> list[EvalClip]:
    """Clips of a corpus built by ``svcjax build-corpus`` (16-bit 44.1 kHz audio, speaker id,
    source name per example)."""
    try:
        from svcjax.data import corpus, input_pipeline
    except ImportError:
        raise ValueError("data.kind='tfds' needs the corpus builder (svcjax.data.corpus, "
                         "svcjax.data.input_pipeline)") from None
    names = list(corpus.load_metadata(data_dir).get("speakers", []))
    source = input_pipeline.data_source(data_dir, split)
    clips = []
    for i in range(len(source)):
        if limit and len(clips) >= limit:
            break
        ex = source[i]
        audio = np.asarray(ex["audio"])
        audio = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else \
            audio.astype(np.float32)
        spk = int(ex["speaker"]) if "speaker" in ex else None
        name = ex.get("source", f"{split}_{i}")
        name = name.decode() if isinstance(name, bytes) else str(name)
        clips.append(EvalClip(name, audio, names[spk] if spk is not None and spk < len(names)
                              else None))
    return clips


def settings_from_config(config, has_diffusion: bool) -> list[tuple[str, dict]]:
    """``[(name, ConvertOptions overrides)]``: SoVITS alone, then every diffusion
    ``k_step`` x ``method`` (at ``speedup``) when a diffusion model is given; each at every
    ``cluster_ratios`` with ``cluster_model`` (name suffix ``_cr<percent>`` when there are
    several; a sweep over single ratios keeps the names, so its columns line up)."""
    out = []
    if config.get("sovits_only", True):
        out.append(("sovits", dict(shallow_diffusion=False)))
    if has_diffusion:
        for k in config.diffusion_k:
            for m in config.samplers:
                sp = 1 if m == "ddpm" else int(config.speedup)
                tag = m.replace("+", "p")      # TensorBoard tags: dpm-solver++ -> dpm-solverpp
                out.append((f"diff_k{int(k)}_{tag}" + ("" if m == "ddpm" else f"_x{sp}"),
                            dict(shallow_diffusion=True, k_step=int(k),
                                 method="dpm-solver++" if m == "ddpm" else m, speedup=sp)))
    if not out:
        raise ValueError("nothing to evaluate: sovits_only is False and no diffusion model "
                         "(config.diffusion) or no diffusion_k/samplers")
    # timbre-leakage ablation: every setting at each cluster / retrieval ratio (0: none)
    ratios = [float(r) for r in config.get("cluster_ratios", (0.0,))]
    if any(ratios) and not config.get("cluster_model"):
        raise ValueError("cluster_ratios needs cluster_model (a cluster model or retrieval "
                         "index)")
    if ratios != [0.0]:
        out = [(name if len(ratios) == 1 else f"{name}_cr{round(r * 100)}",
                dict(ov, **(dict(cluster_model=config.cluster_model, cluster_ratio=r,
                                 cluster_search=config.get("cluster_search") or None)
                            if r else {})))
               for name, ov in out for r in ratios]
    return out


def _batched(clips_audio: Sequence[np.ndarray], max_batch: int):
    """Groups of indices with the same length bucket, at most ``max_batch`` each."""
    from svcjax.runtime import buckets

    order = sorted(range(len(clips_audio)), key=lambda i: len(clips_audio[i]))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(buckets.bucket_length(len(clips_audio[i]) // HOP), []).append(i)
    for bucket, idx in sorted(groups.items()):
        for s in range(0, len(idx), max_batch):
            yield bucket, idx[s:s + max_batch]


def _pad_rows(arrays: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    rows = 1 << (len(arrays) - 1).bit_length()
    out = np.zeros((rows, width), np.float32)
    lens = np.zeros(rows, np.int64)
    for i in range(rows):
        a = arrays[min(i, len(arrays) - 1)]
        n = (len(a) // HOP) * HOP
        out[i, :n] = a[:n]
        lens[i] = n
    return out, lens


def _f0_all(f0_fn, method, audios, batch, weights=None):
    res = [None] * len(audios)
    kw = {} if weights is None else {"weights": weights}
    for bucket, idx in _batched(audios, batch):
        x, lens = _pad_rows([audios[i] for i in idx], bucket * HOP)
        f0, uv = f0_fn(x, SAMPLING_RATE, method, lens, **kw)
        for j, i in enumerate(idx):
            t = len(audios[i]) // HOP
            res[i] = (np.asarray(f0)[j, :t], np.asarray(uv)[j, :t] > 0.5)
    return res


def _spectral_all(refs, ests, batch, n_mels, n_mels_mcd):
    res = [None] * len(refs)
    for bucket, idx in _batched(refs, batch):
        r, lens = _pad_rows([refs[i] for i in idx], bucket * HOP)
        e, _ = _pad_rows([ests[i] for i in idx], bucket * HOP)
        m = metrics.spectral_metrics(r, e, lens, n_mels=n_mels, n_mels_mcd=n_mels_mcd)
        m = {k: np.asarray(v) for k, v in m.items()}
        for j, i in enumerate(idx):
            res[i] = {k: float(v[j]) for k, v in m.items()}
    return res


def run_evaluation(config, workdir: str | os.PathLike, *, converter=None, clips=None,
                   log=print) -> dict[str, float]:
    """Convert the evaluation set under every setting and write the metric table.

    Writes ``WORKDIR/eval/``: ``metrics.json`` (flat ``{"<setting>/<metric>": mean,
    "<setting>/<speaker>/<metric>": mean, ...}``), ``metrics.csv`` (one row per setting and
    speaker), ``clips.csv`` (one row per converted clip) and TensorBoard event files under
    ``tensorboard/`` (the means as scalars at ``config.step``, ``config.audio_samples``
    converted clips per setting and speaker as audio, their vocoder mels as images).
    Returns the flat metrics.
    """
    from svcjax.runtime import converter as pipeline

    from svcjax.audio.f0 import prepare_f0

    workdir = os.fspath(workdir)
    out_dir = os.path.join(workdir, EVAL_DIR)
    # the F0 tracker (and its weights file, e.g. rmvpe.pt) is checked before anything is written
    f0_weights = prepare_f0(config.f0_method, config.get("f0_weights") or None)
    from svcjax.models.precision import check_compute_dtype
    compute_dtype = check_compute_dtype(config.get("compute_dtype", "float32"))
    os.makedirs(out_dir, exist_ok=True)
    wanted = set(config.metrics)
    unknown = wanted - {"mel", "mcd", "f0", "rtf", "speaker_similarity", "dnsmos"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: mel, mcd, f0, rtf, "
                         "speaker_similarity, dnsmos")
    if converter is None:
        converter = pipeline.Converter.from_paths(
            config.model or None, config.get("model_config") or None,
            encoder=config.encoder or None, diffusion=config.get("diffusion") or None,
            diffusion_config=config.get("diffusion_config") or None,
            vocoder=config.get("vocoder") or None)
    clips = clips if clips is not None else load_eval_set(config.data, log=log)
    audios = [c.audio for c in clips]
    total_seconds = sum(c.seconds for c in clips)
    speakers = list(config.speakers) or sorted(converter.speakers, key=converter.speakers.get)
    if not speakers:
        speakers = [0]
    settings = settings_from_config(config, converter.diffusion is not None)
    batch = int(config.batch_size)
    log(f"eval: {len(clips)} clips ({total_seconds:.1f} s) x {len(speakers)} speaker(s) x "
        f"{len(settings)} setting(s)")

    extras = {}
    for name in metrics.OPTIONAL_METRICS:
        if name not in wanted:
            continue
        try:
            metrics.require_extra(name)
            extras[name] = True
        except metrics.MissingExtraError as e:
            log(f"eval: {e}")

    src_f0 = (_f0_all(converter.f0_fn, config.f0_method, audios, batch, f0_weights)
              if "f0" in wanted else None)
    targets = {}
    if extras.get("speaker_similarity"):
        for spk in speakers:
            own = [c for c in clips if c.speaker == str(spk)]
            if own:
                targets[str(spk)] = np.mean(
                    [metrics.speaker_embedding(c.audio, SAMPLING_RATE) for c in own], axis=0)
            else:
                log(f"eval: speaker_similarity for {spk!r}: no evaluation clip labelled "
                    f"{spk!r} to take its voice from (skipped)")

    rows, table, samples = [], [], []
    transpose = float(config.transpose)

    def options(spk, overrides):
        return pipeline.ConvertOptions(
            speaker=spk, transpose=transpose, f0_method=config.f0_method,
            f0_weights=f0_weights, noise_scale=float(config.noise_scale),
            seed=None if config.seed is None or int(config.seed) < 0 else int(config.seed),
            batch_size=batch, slice_db=float(config.slice_db),
            pad_seconds=float(config.pad_seconds), compute_dtype=compute_dtype, **overrides)

    # Settings that differ only in diffusion (k, sampler, speedup, or none) are converted
    # together: each clip's F0, units and SoVITS output once per speaker, every diffusion
    # setting from them (Converter.convert_settings); their time is shared equally.
    converted: dict[tuple[str, str], tuple[list, float]] = {}
    for spk in speakers:
        groups: dict[str, list] = {}
        for sname, overrides in settings:
            shared = {k: v for k, v in overrides.items() if k not in _DIFFUSION_FIELDS}
            groups.setdefault(repr(sorted(shared.items())), []).append((sname, overrides))
        for members in groups.values():
            opts = [options(spk, ov) for _, ov in members]
            t0 = time.perf_counter()
            if hasattr(converter, "convert_settings"):
                outs_all = converter.convert_settings(audios, opts)
            else:
                outs_all = [converter.convert(audios, o, progress=bool(config.get(
                    "progress", False))) for o in opts]
            elapsed = (time.perf_counter() - t0) / len(members)
            for (sname, _), outs in zip(members, outs_all):
                converted[(sname, str(spk))] = (outs, elapsed)

    for sname, overrides in settings:
        for spk in speakers:
            outs, elapsed = converted[(sname, str(spk))]
            per_clip = [dict(setting=sname, speaker=str(spk), clip=c.name) for c in clips]
            if wanted & {"mel", "mcd"}:
                spec = _spectral_all(audios, outs, batch, int(config.n_mels),
                                     int(config.mcd_n_mels))
                for r, m in zip(per_clip, spec):
                    if "mel" in wanted:
                        r["mel_l1"], r["mel_l2"] = m["mel_l1"], m["mel_l2"]
                    if "mcd" in wanted:
                        r["mcd"] = m["mcd"]
            if src_f0 is not None:
                out_f0 = _f0_all(converter.f0_fn, config.f0_method, outs, batch, f0_weights)
                for r, (f0s, uvs), (f0o, uvo) in zip(per_clip, src_f0, out_f0):
                    r.update(metrics.f0_metrics(f0s * 2.0 ** (transpose / 12.0), f0o, uvs,
                                                uvo))
            if str(spk) in targets:
                for r, o in zip(per_clip, outs):
                    r["speaker_similarity"] = metrics.speaker_similarity(
                        o, SAMPLING_RATE, targets[str(spk)])
            if extras.get("dnsmos"):
                for r, o in zip(per_clip, outs):
                    r.update(metrics.dnsmos(o, SAMPLING_RATE))
            summary = metrics.summarize(per_clip)
            summary.pop("voiced_frames", None)
            if "rtf" in wanted:
                summary["rtf"] = metrics.real_time_factor(elapsed, total_seconds)
            table.append(dict(setting=sname, speaker=str(spk), **summary))
            rows.extend(per_clip)
            for c, o in list(zip(clips, outs))[:int(config.audio_samples)]:
                samples.append((f"{sname}/{spk}/{c.name}", o))
            log(f"eval: {sname} -> {spk}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in summary.items() if not k.endswith("_missing")))
            for k, v in summary.items():
                if k.endswith("_missing"):
                    log(f"eval: {sname} -> {spk}: {k[:-len('_missing')]} missing for "
                        f"{int(v)} of {len(per_clip)} clip(s) (no frame voiced in both the "
                        f"source and the output)")

    flat: dict[str, float] = {}
    for t in table:
        for k, v in t.items():
            if k not in ("setting", "speaker"):
                flat[f"{t['setting']}/{t['speaker']}/{k}"] = v
    for sname, _ in settings:
        mine = [t for t in table if t["setting"] == sname]
        for k, v in metrics.summarize(mine).items():
            flat[f"{sname}/{k}"] = v
    _write_json_atomic(os.path.join(out_dir, METRICS_JSON), flat)
    _write_csv_atomic(os.path.join(out_dir, "metrics.csv"), table)
    _write_csv_atomic(os.path.join(out_dir, "clips.csv"), rows)
    _write_tensorboard(out_dir, int(config.get("step", 0)), flat, samples)
    return flat


def _write_json_atomic(path: str, obj: Any) -> None:
    import json

    with atomic_write(path, "w") as f:
        json.dump({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in obj.items()}, f, indent=2, sort_keys=True)


def _write_csv_atomic(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    import csv

    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _write_tensorboard(out_dir: str, step: int, flat: Mapping[str, float], samples) -> None:
    from svcjax.train.metric_writer import MetricWriter

    writer = MetricWriter(out_dir)
    try:
        writer.scalars(step, {f"eval/{k}": v for k, v in flat.items()
                              if isinstance(v, float) and math.isfinite(v)})
        for name, wav in samples:
            writer.audio(step, f"audio/{name}", wav, SAMPLING_RATE)
            if len(wav) >= 2 * HOP:
                mel = np.asarray(metrics.log_mel(np.asarray(wav, np.float32)[None], 128))[0]
                writer.image(step, f"mel/{name}", mel)
    finally:
        writer.close()
