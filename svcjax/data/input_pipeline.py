"""Training batches from the svc_corpus dataset: grain over ArrayRecord, per-host, resumable.

    loader = input_pipeline.make_loader(config)             # this host's grain DataLoader
    batches = input_pipeline.GlobalBatches(loader, mesh)   # global jax.Arrays, checkpointable
    batch = next(batches); state = batches.get_state(); ...; batches.set_state(state)

Each process reads its own shard of the records (grain ``ShardOptions`` with
``jax.process_index()`` / ``jax.process_count()``), shuffles with the config seed, crops every
clip to a fixed number of frames (static shapes: shorter clips are zero-padded and masked),
batches ``batch_size / process_count`` examples and hands them to
:func:`svcjax.runtime.sharding.global_batch`, which assembles the global batch sharded over the
mesh's batch axes. Every random choice (crop start, decoder slice, augmentation) is drawn
from grain's per-record generator, so the stream is a pure function of the seed and the
position: restoring the iterator state gives exactly the batches an uninterrupted run sees.

Two kinds of batch (``config.kind``):

``generator`` (So-VITS-SVC training, ``TextAudioSpeakerLoader``): ``crop_frames`` (790) frame
crops at a random start, ``audio`` (``512 * crop_frames`` samples, float in [-1, 1]),
``units`` (B, F, C), ``f0``, ``uv``, ``volume``, ``mask`` (B, F), ``length``, ``speaker`` and
``slice_start``: a random start for the ``segment_frames`` (20) decoder slice inside the
valid frames. With ``vol_aug`` half of the clips are scaled by a random gain (audio and
volume alike), as the reference's ``vol_aug`` does.

``diffusion`` (shallow diffusion training, ``AudioDataset``): ``crop_frames`` (172 = 2 s)
frame crops; with probability ``aug_prob`` (0.5) the clip's precomputed key-shift
augmentation is used: ``mel`` <- ``aug_mel``, ``volume`` <- ``aug_vol``, ``f0`` scaled by
``2 ** (aug_keyshift / 12)``, ``aug_shift`` = the key shift (else 0).

Every batch also has ``valid`` (B,): 1 for real examples, 0 for the padding rows that fill
the last batch of a finite (evaluation) pass.

Unusable records are skipped, not trained on: a record with a NaN/inf feature or features
whose frame counts disagree (:func:`svcjax.data.featurizer.clip_problem`) is left out of every
batch and reported once per process by its source (``svcjax train: skipping record
tenor/a.wav#0 of the train split: f0 has 3 NaN values``). A split none of whose records is
usable stops with a ``ValueError`` (after two passes' worth of rejected draws).

:func:`check_speakers` compares the corpus's speaker map with the config's before training.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterator

import grain
import ml_collections
import numpy as np

from svcjax.audio.constants import HOP
from svcjax.audio.constants import SAMPLING_RATE as SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["default_config", "data_source", "make_loader", "GlobalBatches",
           "GeneratorCrop", "DiffusionCrop", "UsableRecords", "batch_spec", "corpus_speakers",
           "check_speakers"]

# Features each kind of batch needs from the dataset.
_NEEDS = {
    "generator": ("units", "f0", "uv", "volume"),
    "diffusion": ("units", "f0", "volume", "mel"),
}


def default_config(kind: str = "generator") -> ml_collections.ConfigDict:
    """Pipeline defaults for ``kind`` ('generator' or 'diffusion') as the reference trains."""
    if kind not in _NEEDS:
        raise ValueError(f"unknown batch kind {kind!r}; expected 'generator' or 'diffusion'")
    return ml_collections.ConfigDict(dict(
        data_dir="",             # DATA_DIR given to build-corpus, or the svc_corpus/1.0.0 folder
        split="train",
        kind=kind,
        batch_size=6 if kind == "generator" else 48,   # global, over all processes
        crop_frames=790 if kind == "generator" else int(2.0 * SAMPLE_RATE / HOP),
        crop="random",           # 'random' start, or 'start' (deterministic, for evaluation)
        segment_frames=20,       # generator: decoder slice (segment_size 10240 / hop 512)
        vol_aug=False,           # generator: random gain on half of the clips
        aug_prob=0.5,            # diffusion: share of clips using the key-shift augmentation
        shuffle=True,
        seed=1234,
        num_epochs=-1,           # -1: repeat forever
        drop_remainder=True,     # False: pad the last batch (rows with valid=0)
        worker_count=0,          # grain worker processes (0: in this process)
        worker_buffer_size=2,
        read_threads=4,
        prefetch=2,              # global batches put on the devices ahead of use
    ))


def _resolve_dir(data_dir: str | Path) -> Path:
    path = Path(data_dir)
    if (path / "dataset_info.json").exists():
        return path
    for candidate in (path / "svc_corpus" / "1.0.0", path / "1.0.0"):
        if (candidate / "dataset_info.json").exists():
            return candidate
    raise FileNotFoundError(f"no svc_corpus dataset under {str(data_dir)!r} (expected "
                            f"DATA_DIR/svc_corpus/1.0.0/dataset_info.json); build one with "
                            f"`svcjax build-corpus ROOT --out DATA_DIR`")


def data_source(data_dir: str | Path, split: str = "train"):
    """Random-access source over one split of a built corpus (no TFDS builder class needed)."""
    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory(str(_resolve_dir(data_dir)))
    if split not in builder.info.splits:
        raise ValueError(f"split {split!r} not in the corpus at {data_dir}; it has "
                         f"{', '.join(builder.info.splits)}")
    return builder.as_data_source(split=split)


def _features_of(source) -> set[str]:
    info = getattr(source, "dataset_info", None)
    if info is not None:
        return set(info.features.keys())
    return set(source[0].keys()) if len(source) else set()  # any random-access source


def _crop(n: int, crop: int, mode: str, rng: np.random.Generator) -> tuple[int, int]:
    """(start, valid length) of a ``crop``-frame window over ``n`` frames."""
    if n <= crop:
        return 0, n
    start = 0 if mode == "start" else int(rng.integers(0, n - crop + 1))
    return start, crop


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    if x.shape[0] == length:
        return x
    out = np.zeros((length,) + x.shape[1:], x.dtype)
    out[: x.shape[0]] = x
    return out


def _window(x: np.ndarray, start: int, stop: int, length: int, scale: float = 1.0
            ) -> np.ndarray:
    """``x[start:stop]`` as float32, times ``scale``, zero-padded to ``length`` rows
    (one allocation, one pass)."""
    out = np.zeros((length,) + x.shape[1:], np.float32)
    view = out[: stop - start]
    view[...] = x[start:stop]
    if scale != 1.0:
        view *= np.float32(scale)
    return out


def corpus_speakers(data_dir: str | Path) -> dict[str, int]:
    """The built corpus's speaker map (name -> id), from its ``metadata.json`` (else its
    ``speaker`` class labels)."""
    import json
    path = _resolve_dir(data_dir)
    meta = path / "metadata.json"
    if meta.exists():
        spk = json.loads(meta.read_text()).get("speakers")
        if isinstance(spk, dict):
            return {str(k): int(v) for k, v in spk.items()}
    import tensorflow_datasets as tfds
    names = tfds.builder_from_directory(str(path)).info.features["speaker"].names
    return {n: i for i, n in enumerate(names)}


def _fmt_map(m: dict) -> str:
    return "{" + ", ".join(f'"{k}": {v}' for k, v in sorted(m.items(), key=lambda kv: kv[1])) + "}"


def check_speakers(config_spk, data_dir: str | Path, n_model: int | None = None,
                   model_field: str = "model.n_speakers") -> list[str]:
    """Stop (``ValueError`` naming both lists) unless every corpus speaker has the same id in
    the config's ``spk`` map, and every id fits the model's ``n_model`` speakers; returns
    warnings (config speakers with no clips in the corpus).

    The model learns speaker *ids*: a corpus id the config names differently (or not at all)
    would train one voice under another's name, so this is checked before step 1.
    """
    corpus = corpus_speakers(data_dir)
    cfg = {str(k): int(v) for k, v in dict(config_spk or {}).items()}
    wrong = {k: v for k, v in corpus.items() if cfg.get(k) != v}
    fix = f"--config.spk='{_fmt_map(corpus)}'"
    if wrong:
        raise ValueError(
            f"the corpus's speakers differ from the config's speaker map: corpus "
            f"{_fmt_map(corpus)}, config.spk {_fmt_map(cfg)}; train with {fix} (ids as in "
            f"the corpus)")
    need = max(cfg.values()) + 1 if cfg else 0
    if n_model is not None and need > int(n_model):
        raise ValueError(f"config.spk {_fmt_map(cfg)} needs {need} speakers but "
                         f"{model_field}={n_model}; set --config.{model_field}={need} or "
                         f"train with {fix}")
    extra = sorted(set(cfg) - set(corpus))
    if extra:
        return [f"config.spk names {', '.join(extra)}, which the corpus has no clips of "
                f"(corpus speakers: {', '.join(sorted(corpus, key=corpus.get))}); "
                f"their embeddings stay untrained"]
    return []


class UsableRecords(grain.transforms.Filter):
    """grain Filter: drop records :func:`svcjax.data.featurizer.clip_problem` finds unusable
    (NaN/inf features, frame counts that disagree), reporting each once (to stderr).

    ``limit`` rejected draws in a row (two passes over the split) mean nothing is usable:
    a ``ValueError`` names the split and the first rejected record.
    """

    def __init__(self, split: str, limit: int):
        self.split, self.limit = split, max(1, int(limit))
        self.reported: set[str] = set()
        self.in_a_row = 0
        self.first = ""
        from svcjax.data.featurizer import clip_problem  # featurizer is heavy: imported on use
        self._problem = clip_problem

    def filter(self, ex: dict) -> bool:
        problem = self._problem({k: v for k, v in ex.items() if k not in ("speaker", "source")})
        if problem is None:
            self.in_a_row = 0
            return True
        src = ex.get("source", b"?")
        name = src.decode() if isinstance(src, bytes) else str(src)
        if name not in self.reported:
            self.reported.add(name)
            logger.warning(f"skipping record {name} of the {self.split} split: {problem}")
        self.first = self.first or f"{name}: {problem}"
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise ValueError(f"no usable record in the {self.split} split ({self.in_a_row} "
                             f"draws in a row were unusable, e.g. {self.first}); rebuild the "
                             f"corpus with `svcjax build-corpus --overwrite`")
        return False


@dataclasses.dataclass
class GeneratorCrop(grain.transforms.RandomMap):
    """grain RandomMap: a dataset example -> a fixed-size generator training example."""
    crop_frames: int = 790
    segment_frames: int = 20
    mode: str = "random"
    vol_aug: bool = False

    def random_map(self, ex: dict, rng: np.random.Generator) -> dict:
        n = int(ex["f0"].shape[0])
        start, length = _crop(n, self.crop_frames, self.mode, rng)
        stop, f = start + length, self.crop_frames
        gain = 1.0
        if self.vol_aug and rng.random() < 0.5:
            from svcjax.data.featurizer import loudness_gain  # heavy: imported on use

            peak = float(np.max(np.abs(ex["audio"]))) / 32768.0 + 1e-5  # whole clip
            gain = loudness_gain(peak, rng)
        hi = max(0, length - self.segment_frames)
        slice_start = 0 if self.mode == "start" else int(rng.integers(0, hi + 1))
        return dict(
            audio=_window(ex["audio"], start * HOP, stop * HOP, f * HOP, gain / 32768.0),
            units=_window(ex["units"], start, stop, f),
            f0=_window(ex["f0"], start, stop, f),
            uv=_window(ex["uv"], start, stop, f),
            volume=_window(ex["volume"], start, stop, f, gain),
            mask=_window(np.ones((n,), np.float32), start, stop, f),
            length=np.int32(length),
            speaker=np.int32(ex["speaker"]),
            slice_start=np.int32(slice_start),
            valid=np.float32(1.0),
        )


@dataclasses.dataclass
class DiffusionCrop(grain.transforms.RandomMap):
    """grain RandomMap: a dataset example -> a fixed-size diffusion training example."""
    crop_frames: int = 172
    mode: str = "random"
    aug_prob: float = 0.5

    def random_map(self, ex: dict, rng: np.random.Generator) -> dict:
        n = int(ex["f0"].shape[0])
        start, length = _crop(n, self.crop_frames, self.mode, rng)
        stop = start + length
        use_aug = (self.mode != "start" and self.aug_prob > 0 and "aug_mel" in ex
                   and rng.random() < self.aug_prob)
        shift = float(ex["aug_keyshift"]) if use_aug else 0.0
        mel = ex["aug_mel"] if use_aug else ex["mel"]
        volume = ex["aug_vol"] if use_aug else ex["volume"]
        f = self.crop_frames
        return dict(
            mel=_window(mel, start, stop, f),
            units=_window(ex["units"], start, stop, f),
            f0=_window(ex["f0"], start, stop, f, 2.0 ** (shift / 12)),
            volume=_window(volume, start, stop, f),
            mask=_window(np.ones((n,), np.float32), start, stop, f),
            length=np.int32(length),
            speaker=np.int32(ex["speaker"]),
            aug_shift=np.float32(shift),
            valid=np.float32(1.0),
        )


def batch_spec(config: ml_collections.ConfigDict, unit_dim: int, n_mels: int = 128
               ) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Per-host batch shapes and dtypes (local batch = batch_size / process_count)."""
    import jax
    b = int(config.batch_size) // jax.process_count()
    f = int(config.crop_frames)
    common = dict(units=((b, f, unit_dim), np.float32), f0=((b, f), np.float32),
                  volume=((b, f), np.float32), mask=((b, f), np.float32),
                  length=((b,), np.int32), speaker=((b,), np.int32), valid=((b,), np.float32))
    if config.kind == "generator":
        return dict(common, audio=((b, f * HOP), np.float32), uv=((b, f), np.float32),
                    slice_start=((b,), np.int32))
    return dict(common, mel=((b, f, n_mels), np.float32), aug_shift=((b,), np.float32))


class _PadBatch(grain.transforms.Map):
    """grain Map after a non-dropping Batch: pad a short last batch with valid=0 rows."""

    def __init__(self, size: int):
        self.size = size

    def map(self, batch: dict) -> dict:
        n = batch["valid"].shape[0]
        if n == self.size:
            return batch
        return {k: _pad(v, self.size) for k, v in batch.items()}


def make_loader(config: ml_collections.ConfigDict, *, source=None,
                process_index: int | None = None, process_count: int | None = None):
    """This host's grain ``DataLoader`` of local batches (numpy dicts).

    ``process_index``/``process_count`` default to jax's; passing them simulates a host of a
    larger job. ``source`` overrides ``config.data_dir``/``config.split``.
    """
    import jax
    cfg = default_config(config.get("kind", "generator"))
    cfg.update(dict(config))
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if int(cfg.batch_size) % count:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {count} "
                         f"processes")
    local = int(cfg.batch_size) // count
    if source is None:
        if not cfg.data_dir:
            raise ValueError("config.data_dir is empty: set it to the DATA_DIR given to "
                             "`svcjax build-corpus`")
        source = data_source(cfg.data_dir, cfg.split)
    missing = [f for f in _NEEDS[cfg.kind] if f not in _features_of(source)]
    if missing:
        raise ValueError(f"the corpus has no {', '.join(missing)} (needed for {cfg.kind} "
                         f"batches); rebuild it with those features")
    if cfg.crop not in ("random", "start"):
        raise ValueError(f"crop must be 'random' or 'start', got {cfg.crop!r}")
    if len(source) < count:
        raise ValueError(f"split has {len(source)} examples, fewer than the {count} processes")
    shard = grain.sharding.ShardOptions(shard_index=index, shard_count=count,
                                        drop_remainder=True)
    epochs = None if int(cfg.num_epochs) < 0 else int(cfg.num_epochs)
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=shard, shuffle=bool(cfg.shuffle),
        num_epochs=epochs, seed=int(cfg.seed))
    if cfg.kind == "generator":
        crop = GeneratorCrop(int(cfg.crop_frames), int(cfg.segment_frames), cfg.crop,
                             bool(cfg.vol_aug))
    else:
        crop = DiffusionCrop(int(cfg.crop_frames), cfg.crop, float(cfg.aug_prob))
    ops = [UsableRecords(str(cfg.split), 2 * len(source)), crop,
           grain.transforms.Batch(local, drop_remainder=bool(cfg.drop_remainder))]
    if not cfg.drop_remainder:
        ops.append(_PadBatch(local))
    return grain.DataLoader(
        data_source=source, sampler=sampler, operations=ops, shard_options=shard,
        worker_count=int(cfg.worker_count), worker_buffer_size=int(cfg.worker_buffer_size),
        read_options=grain.ReadOptions(num_threads=int(cfg.read_threads),
                                       prefetch_buffer_size=max(1, 2 * local)))


class GlobalBatches:
    """Iterator of global batches (``jax.Array`` sharded over ``mesh``) from a grain loader.

    ``prefetch`` batches are put on the devices ahead of use. ``get_state()`` describes the
    position after the last batch *returned* (prefetched ones are not counted), so restoring
    it with ``set_state`` resumes with exactly the next batch. The state is grain's (JSON
    bytes, one per process). It plugs into Orbax as grain's iterators do::

        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(train_state),
            data=grain.checkpoint.CheckpointSave(batches)))
        manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(batches)))
    """

    def __init__(self, loader, mesh, prefetch: int = 2):
        self._loader = loader
        self._mesh = mesh
        self._prefetch = max(0, int(prefetch))
        self._it = iter(loader)
        self._state = self._it.get_state()
        self._queue: list[tuple[Any, bytes]] = []

    @property
    def local_iterator(self):
        """The grain ``DataLoaderIterator`` (e.g. for grain's Orbax checkpoint handler)."""
        return self._it

    def _pull(self) -> bool:
        from svcjax.runtime.sharding import global_batch
        try:
            local = next(self._it)
        except StopIteration:
            return False
        self._queue.append((global_batch(local, self._mesh), self._it.get_state()))
        return True

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        while len(self._queue) <= self._prefetch and self._pull():
            pass
        if not self._queue:
            raise StopIteration
        batch, self._state = self._queue.pop(0)
        return batch

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        self._queue.clear()
        self._it.set_state(state)
        self._state = state

    def start_prefetch(self) -> None:
        """Fill the device prefetch queue now (grain's checkpoint handler calls this)."""
        while len(self._queue) < self._prefetch and self._pull():
            pass
