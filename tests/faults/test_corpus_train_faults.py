"""Fault injection: `svcjax build-corpus` and `train.py` on bad corpora and a killed save.

build-corpus runs on generated raw folders (mel/volume features only: no encoder or F0
tracker, so a build takes seconds); train.py runs the diffusion ``test`` variant (the
cheapest real task) on the tiny training corpus of ``tests/training_corpus.py`` or a copy of
it with records rewritten to carry the fault.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.data.conftest import VOICES
from tests.faults import harness

BUILD = "svcjax build-corpus"
TRAIN = "train.py"
SPK = '--config.spk={"alto": 0, "tenor": 1}'


# -- build-corpus ------------------------------------------------------------------------------

def _copy(name: str, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(VOICES, name), dst)
    return dst


def _garbage(path: Path, data: bytes = b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(64))):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _build_args(root, out, *extra):
    return ["build-corpus", str(root), "--out", str(out), "--features", "volume,mel",
            "--bucket-growth", "2", *extra]


@pytest.fixture(scope="module")
def faulty_build(tmp_path_factory):
    """One build of a root holding three faults at once: ``tenor`` has one good file of three
    (two unreadable), every file of ``bass`` is unreadable, and ``alto/cut.wav`` is a WAV
    truncated to 60 % of what its header says."""
    tmp = tmp_path_factory.mktemp("faulty_build")
    root = tmp / "raw"
    for name in ("slt_16k.wav", "hts_32k.wav", "slt_up5_44k.wav"):
        _copy(name, root / "alto" / name)
    whole = (Path(VOICES) / "kal_16k.wav").read_bytes()
    (root / "alto" / "cut.wav").write_bytes(whole[: int(len(whole) * 0.6)])
    _copy("rms_16k.wav", root / "tenor" / "rms_16k.wav")
    _garbage(root / "tenor" / "broken_a.wav")
    _garbage(root / "tenor" / "broken_b.wav", b"")
    _garbage(root / "bass" / "x.wav")
    _garbage(root / "bass" / "y.wav", b"not audio at all")
    before = harness.snapshot(root)
    res = harness.run(_build_args(root, tmp / "out"), timeout=600)
    assert res.rc == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert not harness.changed(before, harness.snapshot(root))  # the inputs are untouched
    from svcjax.data import corpus
    folder = corpus.dataset_dir(tmp / "out")
    assert not harness.leftovers(tmp / "out")
    assert not (tmp / "out" / "svc_corpus" / "_build").exists()
    return res, folder, corpus.load_metadata(tmp / "out")


def _examples(folder):
    import tensorflow_datasets as tfds
    ds = tfds.builder_from_directory(str(folder)).as_data_source()
    return {ds[split][i]["source"].decode(): (split, ds[split][i])
            for split in ds for i in range(len(ds[split]))}


def test_speaker_with_one_good_clip_trains_on_it(faulty_build):
    res, folder, meta = faulty_build
    ex = _examples(folder)
    tenor = {k: split for k, (split, _) in ex.items() if k.startswith("tenor/")}
    # Its one usable file is in train (val_per_speaker=2 never takes a speaker's last file).
    assert tenor == {"tenor/rms_16k.wav#0": "train"}
    assert meta["speaker_counts"]["tenor"] == {"train": 1, "validation": 0}
    out = res.stdout
    assert ("speaker 'tenor' has 1 usable file of 3 (2 unreadable (tenor/broken_a.wav, "
            "tenor/broken_b.wav)): 0 in validation") in out
    harness.record("build-corpus", "speaker with one good clip (2 unreadable)",
                   f"{BUILD} ROOT --out D", "handled",
                   "its clip in train, warning names the unusable files with counts")


def test_speaker_whose_files_are_all_unreadable_is_left_out(faulty_build):
    res, folder, meta = faulty_build
    assert meta["speakers"] == {"alto": 0, "tenor": 1}  # no id for bass
    assert "bass" in meta["dropped_speakers"]
    assert not any(k.startswith("bass/") for k in _examples(folder))
    import tensorflow_datasets as tfds
    labels = tfds.builder_from_directory(str(folder)).info.features["speaker"].names
    assert labels == ["alto", "tenor"]
    assert ("speaker 'bass' left out of the corpus: none of its 2 files gave a usable clip: "
            "2 unreadable (bass/x.wav, bass/y.wav)") in res.stdout
    harness.record("build-corpus", "speaker folder with every file unreadable",
                   f"{BUILD} ROOT --out D", "handled",
                   "speaker not registered; warning with counts and names; others built")


def test_truncated_wav_is_used_and_reported(faulty_build):
    res, folder, meta = faulty_build
    assert [w["file"] for w in meta["warnings"]] == ["alto/cut.wav"]
    assert meta["warnings"][0]["warning"].startswith("truncated: the header says")
    assert "1 truncated file" in res.stdout and "alto/cut.wav" in res.stdout
    ex = _examples(folder)
    assert "alto/cut.wav#0" in ex  # used as far as it goes
    full, sr = sf.read(os.path.join(VOICES, "kal_16k.wav"))
    assert len(ex["alto/cut.wav#0"][1]["audio"]) / 44100 < 0.7 * len(full) / sr
    assert "alto/cut.wav: truncated" in (folder / "build_report.txt").read_text()
    harness.record("build-corpus", "truncated WAV", f"{BUILD} ROOT --out D", "handled",
                   "used as far as it goes; warning with count and name; build report lists it")


def test_empty_or_unusable_roots_fail_with_one_sentence(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_folder = tmp_path / "only_folder"
    (only_folder / "alto").mkdir(parents=True)
    _copy("kal_16k.wav", only_folder / "stray.wav")
    unusable = tmp_path / "unusable"
    _garbage(unusable / "alto" / "a.wav")
    _garbage(unusable / "tenor" / "b.wav", b"")
    cases = [(empty, ["no audio under"]),
             (only_folder, ["no audio under", "1 audio file is directly under ROOT"]),
             (unusable, ["no usable clips", "alto: 0 of 1 usable (1 unreadable (alto/a.wav))",
                         "tenor: 0 of 1 usable"])]
    for root, needles in cases:
        out = tmp_path / f"out_{root.name}"
        res = harness.run(_build_args(root, out), timeout=600)
        harness.assert_clear_failure(res, *needles)
        assert len(res.stderr.strip().splitlines()) == 1 or "error:" in res.last_line
        assert not (out / "svc_corpus").exists(), sorted(out.rglob("*"))
    harness.record("build-corpus", "empty root / no speaker audio / every file unusable",
                   f"{BUILD} ROOT --out D", "handled",
                   "one sentence with per-speaker counts, non-zero status, nothing written")


# -- train.py -------------------------------------------------------------------------------------

def _train_args(workdir, data_dir, steps, *extra):
    from tests.training_corpus import N_MELS, UNIT_DIM
    return ["--config=configs/diffusion_44k.py:variant=test", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}",
            f"--config.data.encoder_out_channels={UNIT_DIM}",
            f"--config.model.out_dims={N_MELS}", f"--config.train.num_steps={steps}", *extra]


def _train_steps(workdir) -> list[int]:
    from svcjax.train.metric_writer import read_metrics
    return [r["step"] for r in read_metrics(str(workdir)) if "loss/total" in r]


def test_corpus_speakers_differ_from_config_stop_before_step_1(tmp_path):
    from tests.training_corpus import tiny_corpus
    data = tiny_corpus()
    before = harness.snapshot(data)
    work = tmp_path / "run"
    res = harness.run(_train_args(work, data, 2, '--config.spk={"tenor": 0, "soprano": 1}'),
                      script="train.py", timeout=600)
    harness.assert_clear_failure(res, "speakers differ from the config's speaker map",
                                 'corpus {"alto": 0, "tenor": 1}',
                                 'config.spk {"tenor": 0, "soprano": 1}',
                                 '--config.spk=\'{"alto": 0, "tenor": 1}\'')
    assert res.last_line.startswith("train.py: error: ")
    assert not (work / "checkpoints").exists() and not (work / "metrics.jsonl").exists()
    assert not harness.changed(before, harness.snapshot(data))
    harness.record("train", "corpus speakers differ from config.spk", f"{TRAIN} --config ...",
                   "handled", "stops before step 1 naming both maps and the --config.spk fix")


def _rewrite_train_records(data_dir: Path, edits: dict) -> None:
    """Rewrite the train shards of a copied corpus, applying ``edits[source](example)``."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
    folder = data_dir / "svc_corpus" / "1.0.0"
    features = tfds.builder_from_directory(str(folder)).info.features
    done = set()
    for shard in sorted(folder.glob("svc_corpus-train.array_record-*")):
        reader = ArrayRecordReader(str(shard))
        options, raw = reader.writer_options_string(), reader.read_all()
        reader.close()
        out = []
        for r in raw:
            ex = features.deserialize_example_np(r)
            src = ex["source"].decode()
            if src in edits:
                ex = edits[src](dict(ex))
                done.add(src)
            out.append(features.serialize_example(ex))
        shard.unlink()
        writer = ArrayRecordWriter(str(shard), options)
        for b in out:
            writer.write(b)
        writer.close()
    assert done == set(edits), (done, edits)


def _nan_f0(ex):
    ex["f0"] = ex["f0"].copy()
    ex["f0"][5:8] = np.nan
    return ex


def _short_units(ex):
    ex["units"] = ex["units"][:-7]
    return ex


@pytest.fixture(scope="module")
def bad_records_run(tmp_path_factory):
    """train.py, 2 steps, on a corpus whose train split has a NaN-F0 record and a record whose
    units are 7 frames shorter than its F0 (of 5 train records)."""
    from svcjax.data import input_pipeline
    from tests.training_corpus import tiny_corpus
    tmp = tmp_path_factory.mktemp("bad_records")
    data = tmp / "data"
    shutil.copytree(tiny_corpus(), data)
    src = input_pipeline.data_source(str(data), "train")
    names = sorted(src[i]["source"].decode() for i in range(len(src)))
    nan_rec, short_rec = names[0], names[1]
    _rewrite_train_records(data, {nan_rec: _nan_f0, short_rec: _short_units})
    before = harness.snapshot(data)
    work = tmp / "run"
    res = harness.run(_train_args(work, str(data), 2, SPK), script="train.py", timeout=900)
    assert res.rc == 0, res.stderr[-3000:]
    assert "done at step 2" in res.stderr and "Traceback" not in res.stderr
    assert not harness.changed(before, harness.snapshot(data))
    return res, work, nan_rec, short_rec


def test_nan_feature_record_is_skipped_and_named(bad_records_run):
    res, work, nan_rec, _ = bad_records_run
    assert (f"svcjax train: skipping record {nan_rec} of the train split: f0 has 3 NaN values"
            in res.stderr)
    assert res.stderr.count(f"skipping record {nan_rec} ") == 1  # once, not every epoch
    from svcjax.train.metric_writer import read_metrics
    recs = [r for r in read_metrics(str(work)) if "loss/total" in r]
    assert [r["step"] for r in recs] == [1, 2]
    assert all(np.isfinite(r["loss/total"]) and np.isfinite(r["grad_norm/model"]) for r in recs)
    harness.record("train", "record with a NaN feature", f"{TRAIN} --config ...", "handled",
                   "skipped, named once (source and feature); training continues finite")


def test_mismatched_lengths_record_is_skipped_and_named(bad_records_run):
    res, work, _, short_rec = bad_records_run
    line = [ln for ln in res.stderr.splitlines() if f"skipping record {short_rec} " in ln]
    assert len(line) == 1, res.stderr[-2000:]
    assert line[0].endswith("frames, f0 " + line[0].rsplit(" ", 1)[-1])
    assert "units has" in line[0]
    n_units, n_f0 = int(line[0].split("units has ")[1].split()[0]), int(line[0].split()[-1])
    assert n_f0 - n_units == 7
    assert sorted(os.listdir(work / "checkpoints")) == ["2"]
    harness.record("train", "record with mismatched feature lengths", f"{TRAIN} --config ...",
                   "handled", "skipped, named once with both frame counts; run completes")


def _env() -> dict:
    env = dict(os.environ)
    env.pop("SVCJAX_DEBUG", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(harness.ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["XLA_FLAGS"] = ""
    return env


@pytest.mark.slow  # two train.py runs (compile + steps), ~1 min on 2 cores
def test_sigkill_during_async_checkpoint_save_then_resume(tmp_path):
    """Save every step (asynchronously) and SIGKILL the run the moment a save is in flight
    (Orbax's temporary step folder exists beside a finished one). The rerun restores the
    newest finished checkpoint, drops the half-written one and trains to the target."""
    from tests.training_corpus import tiny_corpus
    data = tiny_corpus()
    work = tmp_path / "run"
    ckpt = work / "checkpoints"
    cmd = [sys.executable, str(harness.ROOT / "train.py")] + _train_args(
        work, data, 200, SPK, "--config.train.interval_val=1")
    proc = subprocess.Popen(cmd, cwd=harness.ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    caught = None
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            names = os.listdir(ckpt) if ckpt.is_dir() else []
            if any(n.isdigit() for n in names) and any(".orbax-checkpoint-tmp" in n
                                                       for n in names):
                proc.send_signal(signal.SIGKILL)
                caught = names
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None and caught is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    assert caught, "the run ended before a save could be caught in flight"
    assert proc.returncode == -signal.SIGKILL
    finished = sorted(int(n) for n in os.listdir(ckpt) if n.isdigit())
    unfinished = [n for n in os.listdir(ckpt) if ".orbax-checkpoint-tmp" in n]
    assert finished and unfinished, os.listdir(ckpt)  # killed mid-save
    last = finished[-1]
    before = harness.snapshot(ckpt / str(last))
    target = last + 3
    res = harness.run(_train_args(work, data, target, SPK, "--config.train.interval_val=1"),
                      script="train.py", timeout=600)
    assert res.rc == 0, res.stderr[-3000:]
    assert f"resumed from {ckpt}/{last}" in res.stderr
    assert "a checkpoint save that was interrupted" in res.stderr
    assert f"done at step {target}" in res.stderr
    names = os.listdir(ckpt)
    assert not [n for n in names if ".orbax-checkpoint-tmp" in n], names
    assert str(target) in names
    assert _train_steps(work) == list(range(1, target + 1))  # each step logged once
    if str(last) in names:  # still kept: the restored checkpoint was not rewritten
        assert not harness.changed(before, harness.snapshot(ckpt / str(last)))
    harness.record("train", "SIGKILL during an async checkpoint save",
                   f"{TRAIN} --config ... (rerun)", "handled",
                   f"rerun resumes from the finished step, removes the half-written save, "
                   f"reaches step {target}")
