"""svcjax.data.corpus: scanning, cleaning, the TFDS dataset, skip report, resume, multi-host."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from svcjax.data import corpus
from tests.data import fakes
from tests.data.conftest import BUILD, VOICES

QUIET = dict(log=lambda m: None)


def _examples(folder):
    ds = tfds.builder_from_directory(str(folder)).as_data_source()
    out = {}
    for split in ds:
        for i in range(len(ds[split])):
            ex = ds[split][i]
            out[ex["source"].decode()] = (split, ex)
    return out


def test_scan_sources(raw_corpus, tmp_path):
    sources, speakers, skipped = corpus.scan_sources(raw_corpus, val_per_speaker=1, seed=3)
    assert speakers == ["alto", "tenor"]
    assert [s["file"] for s in skipped] == ["stray.wav"]
    assert len(sources) == 9
    for spk in speakers:
        splits = [s.split for s in sources if s.speaker == spk]
        assert splits.count("validation") == 1
    again, _, _ = corpus.scan_sources(raw_corpus, val_per_speaker=1, seed=3)
    assert again == sources  # deterministic
    with pytest.raises(FileNotFoundError, match="not a folder"):
        corpus.scan_sources(tmp_path / "nope")
    (tmp_path / "empty_speaker").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio under"):
        corpus.scan_sources(tmp_path)


def test_assign_hosts_balanced_and_disjoint(raw_corpus):
    sources, _, _ = corpus.scan_sources(raw_corpus)
    shares = corpus.assign_hosts(sources, 3)
    names = [s.relpath for share in shares for s in share]
    assert sorted(names) == sorted(s.relpath for s in sources) and len(set(names)) == len(names)
    sizes = [sum(s.size for s in share) for share in shares]
    assert max(sizes) - min(sizes) <= max(s.size for s in sources)


def test_prepare_file_cleans_and_resamples(raw_corpus):
    clips, reasons = corpus.prepare_file(os.path.join(raw_corpus, "tenor", "rms_22k_stereo.wav"))
    assert reasons == [] and len(clips) == 1
    clip = clips[0]
    assert clip.dtype == np.int16 and len(clip) % 512 == 0
    assert np.abs(clip.astype(np.int32)).max() >= 32000  # loudness-normalised to peak 1
    src, sr = sf.read(os.path.join(VOICES, "rms_22k_stereo.wav"))
    assert len(clip) / 44100 <= len(src) / sr + 1e-3  # trimmed, not stretched
    assert len(clip) / 44100 > 0.5 * len(src) / sr
    clips, reasons = corpus.prepare_file(os.path.join(raw_corpus, "alto", "short.wav"))
    assert clips == [] and "too short" in reasons[0]
    clips, reasons = corpus.prepare_file(os.path.join(raw_corpus, "tenor", "long.flac"),
                                         dict(max_seconds=3.0))
    assert len(clips) == 3 and reasons == []
    assert all(0.3 * 44100 <= len(c) <= 3.0 * 44100 for c in clips)
    clips, reasons = corpus.prepare_file(os.path.join(raw_corpus, "tenor", "broken.wav"))
    assert clips == [] and reasons[0].startswith("unreadable: cannot be read as audio")


def test_dataset_contents(built_corpus):
    data_dir, folder, feat = built_corpus
    assert folder == corpus.dataset_dir(data_dir)
    meta = corpus.load_metadata(data_dir)
    assert meta["speakers"] == {"alto": 0, "tenor": 1}
    assert meta["sample_rate"] == 44100 and meta["hop_length"] == 512
    assert "RANDOM weights" in meta["featurizer"]["encoder"]
    assert meta["featurizer"]["unit_dim"] == 32 and not meta["featurizer"]["encoder_pretrained"]
    skipped = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert set(skipped) == {"stray.wav", "alto/short.wav", "tenor/broken.wav"}
    assert "too short" in skipped["alto/short.wav"]
    assert skipped["tenor/broken.wav"].startswith("unreadable")
    report = (folder / "build_report.txt").read_text()
    assert "tenor/broken.wav: unreadable" in report and "alto/short.wav" in report
    examples = _examples(folder)
    # 6 good single-clip files + long.flac in 3 slices; 1 validation file per speaker
    assert sum(c["clips"] for c in meta["counts"].values()) == len(examples) == 9
    assert sorted(k for k in examples if k.startswith("tenor/long.flac")) == [
        f"tenor/long.flac#{i}" for i in range(3)]
    assert {s for s, _ in examples.values()} == {"train", "validation"}
    spec = feat.spec()
    for key, (split, ex) in examples.items():
        t = ex["f0"].shape[0]
        assert ex["audio"].shape == (512 * t,) and ex["audio"].dtype == np.int16
        assert ex["speaker"] == (0 if key.startswith("alto/") else 1)
        for name, s in spec.items():
            shape = tuple(t if d is None else d for d in s.shape)
            value = np.asarray(ex[name], dtype=s.dtype if s.shape == () else None)
            assert value.shape == shape and value.dtype == s.dtype, name
        assert -5 <= ex["aug_keyshift"] <= 5
        # dio on real voices: mostly voiced, speech-range pitch, interpolated through gaps
        assert set(np.unique(ex["uv"])) <= {0.0, 1.0} and ex["uv"].mean() > 0.3
        assert 70 < np.median(ex["f0"][ex["uv"] > 0]) < 500 and (ex["f0"] > 0).all()
    # Stored features are what the featurizer gives on the stored audio alone, so batching
    # and bucket padding during the build changed nothing.
    keys = sorted(examples)[:3]
    audio = [examples[k][1]["audio"].astype(np.float32) / 32768 for k in keys]
    for k, a in zip(keys, audio):
        alone, ex = feat([a], [k])[0], examples[k][1]
        for name in spec:
            tol = 2e-3 if name == "units" else 1e-5  # float16 storage
            np.testing.assert_allclose(np.float32(ex[name]), np.float32(alone[name]),
                                       rtol=tol, atol=tol, err_msg=f"{k} {name}")


def test_rerun_skips_finished_corpus(built_corpus, raw_corpus):
    data_dir, folder, _ = built_corpus
    before = (folder / "dataset_info.json").stat().st_mtime_ns
    out = corpus.build_corpus(raw_corpus, data_dir, _Exploding(), BUILD, **QUIET)
    assert out == folder and (folder / "dataset_info.json").stat().st_mtime_ns == before


class _Exploding:
    fingerprint = "x"

    def __call__(self, *a):
        raise AssertionError("featurizer called for a finished corpus")


class _Interrupting:
    """Wraps a featurizer; raises after ``calls`` calls (an interrupted build)."""

    def __init__(self, inner, calls):
        self.inner, self.left, self.seen = inner, calls, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, clips, keys):
        if self.left == 0:
            raise KeyboardInterrupt("simulated preemption")
        self.left -= 1
        self.seen += list(keys)
        return self.inner(clips, keys)


def test_resume_after_interruption(raw_corpus, built_corpus, tmp_path):
    _, reference, feat = built_corpus
    first = _Interrupting(feat, calls=1)
    with pytest.raises(KeyboardInterrupt):
        corpus.build_corpus(raw_corpus, tmp_path, first, BUILD, **QUIET)
    assert first.seen and not corpus.dataset_dir(tmp_path).exists()
    second = _Interrupting(feat, calls=-1)
    out = corpus.build_corpus(raw_corpus, tmp_path, second, BUILD, **QUIET)
    assert not set(first.seen) & set(second.seen)  # finished files were not redone
    assert len(first.seen) + len(second.seen) == 9
    a, b = _examples(out), _examples(reference)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k][0] == b[k][0]
        for name, v in a[k][1].items():
            np.testing.assert_array_equal(v, b[k][1][name])
    assert not (tmp_path / "svc_corpus" / "_build").exists()  # work files cleaned up


def test_two_hosts_write_and_merge(raw_corpus, built_corpus, tmp_path):
    _, reference, feat = built_corpus
    seen = {}
    for host in (1, 0):
        f = _Interrupting(feat, calls=-1)
        if host == 1:
            assert corpus.build_corpus(raw_corpus, tmp_path, f, BUILD, process_index=1,
                                       process_count=2, **QUIET) is None
        else:
            out = corpus.build_corpus(raw_corpus, tmp_path, f, BUILD, process_index=0,
                                      process_count=2, **QUIET)
        seen[host] = {k.split("#")[0] for k in f.seen}
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # each host did its own share
    info = json.loads((out / "dataset_info.json").read_text())
    shards = {s["name"]: s["shardLengths"] for s in info["splits"]}
    assert len(shards["train"]) == 2  # one shard per host, renumbered into one dataset
    files = sorted(p.name for p in out.iterdir() if "array_record" in p.name)
    assert "svc_corpus-train.array_record-00001-of-00002" in files
    a, b = _examples(out), _examples(reference)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k][1]["mel"], b[k][1]["mel"])
    meta = corpus.load_metadata(tmp_path)
    assert meta["hosts"] == 2 and len(meta["skipped"]) == 3


def test_host_zero_waits_for_the_others(raw_corpus, tmp_path):
    feat = fakes.featurizer()
    assert corpus.build_corpus(raw_corpus, tmp_path, feat, BUILD, process_index=0,
                               process_count=2, **QUIET) is None
    assert not corpus.dataset_dir(tmp_path).exists()


def test_all_files_bad_is_one_clear_error(tmp_path):
    (tmp_path / "raw" / "spk").mkdir(parents=True)
    (tmp_path / "raw" / "spk" / "a.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="no usable clips"):
        corpus.build_corpus(tmp_path / "raw", tmp_path / "out", fakes.featurizer(), BUILD,
                            **QUIET)


def test_two_real_processes_build_and_read(raw_corpus, tmp_path):
    """jax.distributed with 2 CPU processes: per-host build, barrier, merge, sharded reading."""
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.data.multihost_worker", str(port), str(i), raw_corpus,
         str(tmp_path)], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outs = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("2-process build timed out")
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0]["out"] == outs[1]["out"] == str(corpus.dataset_dir(tmp_path))
    assert len(_examples(outs[0]["out"])) == 9
    assert outs[0]["shape"] == [4, 32]
    assert outs[0]["local"] != outs[1]["local"]  # each process read its own records
    assert corpus.load_metadata(tmp_path)["hosts"] == 2


def test_slice_long_cuts_voiced_stretches_without_pauses():
    t = np.arange(int(10.0 * 44100)) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)))
    pieces = corpus.slice_long(tone.astype(np.float32), 3.0)
    assert len(pieces) >= 4 and all(len(p) <= 3.0 * 44100 for p in pieces)
    assert sum(len(p) for p in pieces) == len(tone)  # nothing lost, nothing repeated
    np.testing.assert_array_equal(np.concatenate(pieces), tone.astype(np.float32))
    assert corpus.slice_long(tone[:44100].astype(np.float32), 3.0)[0].shape == (44100,)


def test_build_corpus_command(raw_corpus, tmp_path, capsys):
    from svcjax.cli import main
    assert main(["build-corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 "--features", "volume"]) == 1
    assert "corpus root" in capsys.readouterr().err
    assert main(["build-corpus", raw_corpus, "--out", str(tmp_path / "o"),
                 "--encoder", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt' not found" in capsys.readouterr().err
    # mel/volume only: no encoder or F0 tracker needed
    assert main(["build-corpus", raw_corpus, "--out", str(tmp_path / "o"), "--features",
                 "volume,mel", "--max-seconds", "3", "--bucket-growth", "2"]) == 0
    out = capsys.readouterr().out
    assert "tenor/broken.wav: unreadable" in out and "corpus written to" in out
    ex = _examples(corpus.dataset_dir(tmp_path / "o"))
    assert len(ex) == 9 and set(next(iter(ex.values()))[1]) == {
        "audio", "speaker", "source", "volume", "mel"}


def test_wav_truncation(tmp_path):
    whole = open(os.path.join(VOICES, "kal_16k.wav"), "rb").read()
    assert corpus.wav_truncation(os.path.join(VOICES, "kal_16k.wav")) is None
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    msg = corpus.wav_truncation(tmp_path / "cut.wav")
    info = sf.info(os.path.join(VOICES, "kal_16k.wav"))
    assert msg == (f"truncated: the header says {info.frames / info.samplerate:.2f} s, the "
                   f"file holds {(len(whole) // 2 - 44) / 2 / 16000:.2f} s (used as far as it "
                   f"goes)")
    # a streaming writer's unknown size (0xFFFFFFFF) is not a truncation; nor is a FLAC
    data = whole.index(b"data")
    streamed = whole[:data + 4] + b"\xff\xff\xff\xff" + whole[data + 8: len(whole) // 2]
    (tmp_path / "stream.wav").write_bytes(streamed)
    assert corpus.wav_truncation(tmp_path / "stream.wav") is None
    assert corpus.wav_truncation(tmp_path / "missing.wav") is None
    clips, reasons = corpus.prepare_file(str(tmp_path / "cut.wav"))
    assert len(clips) == 1 and reasons == [msg]


def _files(spec):
    """plan_layout input from {speaker: [clips per file]}."""
    return [dict(file=f"{spk}/{i}.wav", speaker=spk, clips=c, frames=100 * c,
                 reasons=[] if c else ["unreadable: broken"])
            for spk, counts in spec.items() for i, c in enumerate(counts)]


def test_plan_layout_rules(raw_corpus):
    # every file usable: the validation files are the ones scan_sources picked
    sources, speakers, _ = corpus.scan_sources(raw_corpus, val_per_speaker=1, seed=3)
    files = [dict(file=s.relpath, speaker=s.speaker, clips=1, frames=10, reasons=[])
             for s in sources]
    layout = corpus.plan_layout(files, speakers, 1, 3)
    assert layout.split == {s.relpath: s.split for s in sources} and not layout.dropped
    # a speaker with one usable file trains on it; one with none is left out (no id)
    spec = {"alto": [1, 2, 1], "bass": [0, 0], "tenor": [0, 1, 0]}
    layout = corpus.plan_layout(_files(spec), sorted(spec), 2, 0)
    assert layout.speakers == ["alto", "tenor"]
    assert layout.split["tenor/1.wav"] == "train" and len(layout.split) == 4
    assert sorted(layout.split[f"alto/{i}.wav"] for i in range(3)) == [
        "train", "validation", "validation"]
    assert layout.dropped == {"bass": "none of its 2 files gave a usable clip: 2 unreadable "
                                      "(bass/0.wav, bass/1.wav)"}
    assert layout.notes[0].startswith("speaker 'bass' left out of the corpus")
    assert layout.notes[1] == ("speaker 'tenor' has 1 usable file of 3 (2 unreadable "
                               "(tenor/0.wav, tenor/2.wav)): 0 in validation "
                               "(val_per_speaker=2), 1 in train")
    with pytest.raises(ValueError, match=r"no usable clips in the corpus: every file was "
                                         r"skipped \(files usable per speaker: bass: 0 of 2 "
                                         r"usable \(2 unreadable"):
        corpus.plan_layout(_files({"bass": [0, 0]}), ["bass"], 2, 0)


def test_format_report_counts_skips_by_reason():
    skipped = [dict(file=f"a/{i}.wav", reason="unreadable: x") for i in range(5)]
    skipped.append(dict(file="b/s.wav", reason="clip too short: 0.10 s < 0.3 s"))
    meta = dict(speakers={"a": 0}, counts={"train": dict(clips=3, files=2, seconds=60.0)},
                skipped=skipped, warnings=[dict(file="a/t.wav", warning="truncated: ...")])
    short = corpus.format_report(meta)
    assert ("skipped: 6 (5 unreadable (a/0.wav, a/1.wav, a/2.wav, ... and 2 more), 1 too short "
            "(b/s.wav))") in short
    assert "1 truncated file" in short and "a/4.wav" not in short
    full = corpus.format_report(meta, full=True)
    assert "    a/4.wav: unreadable: x" in full and "    a/t.wav: truncated: ..." in full
