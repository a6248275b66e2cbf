"""svcjax.runtime.converter: slicing, padding, batching, reassembly, speakers, options, files.

The conversion plumbing is checked with an identity "model" (the generator returns the input
audio it was given), so every sample that comes out can be predicted exactly; the real
components run end to end in tests/test_convert_cli.py.
"""

import json
import os
import types

import numpy as np
import pytest

from svcjax.runtime import converter as pipeline
from svcjax.cli.convert import output_paths
from svcjax.audio import io

SR = 44100


class IdentitySovits:
    """Stand-in generator: 'units' carry the audio; infer gives it back (times a gain)."""

    sampling_rate, hop = SR, 512

    def __init__(self, speakers=("alto", "tenor", "bass"), gain=None):
        self.speakers = {s: i for i, s in enumerate(speakers)}
        self.n_speakers = len(speakers)
        self.config = types.SimpleNamespace(data={"unit_interpolate_mode": "nearest"},
                                            model={"speech_encoder": "vec768l12"})
        self.module = types.SimpleNamespace(vol_embedding=False,
                                            use_automatic_f0_prediction=True)
        self.gain = gain
        self.calls = []

    def speaker_index(self, s):
        if isinstance(s, str):
            if s not in self.speakers:
                raise ValueError(f"speaker {s!r} not in model; known: {', '.join(self.speakers)}")
            return self.speakers[s]
        return int(s)

    def infer(self, units, f0, uv, speaker=0, vol=None, noise_scale=0.4, predict_f0=False,
              rng=None, lengths=None):
        self.calls.append(dict(shape=units.shape, speaker=speaker, lengths=np.array(lengths),
                               f0=np.array(f0)))
        b, t, _ = units.shape
        wav = units.reshape(b, t * 512).copy()
        if self.gain is not None:   # per-frame gain from the speaker weights of row/frame
            w = np.asarray(speaker, np.float32)
            wav *= np.repeat(w[..., 0], 512, axis=1)
        for i, n in enumerate(lengths):
            wav[i, n * 512:] = 0
        return wav, f0


def identity_converter(**kw):
    sov = IdentitySovits(**kw)
    conv = pipeline.Converter(sov, encoder=object(),
                              f0_fn=lambda a, sr, m, lens: (np.full(a.shape[:1] + (a.shape[1] // 512,), 220.0),
                                                            np.ones((a.shape[0], a.shape[1] // 512))))

    def units(audio, lens, frames, t):   # the audio itself, 512 samples a frame
        return audio[:, :t * 512].reshape(audio.shape[0], t, 512)

    conv._units = units
    return conv, sov


def _voiced(n, seed):
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(np.arange(n) * 0.05) * (1 + 0.1 * rng.standard_normal(n))
            ).astype(np.float32)


def _with_silence(seed=0):
    a, b = _voiced(3 * SR, seed), _voiced(int(2.5 * SR), seed + 1)
    return np.concatenate([np.zeros(SR // 2, np.float32), a, np.zeros(SR, np.float32), b,
                           np.zeros(SR // 3, np.float32)])


def test_identity_model_gives_the_input_back_from_many_files_in_few_batches():
    conv, sov = identity_converter()
    x1, x2, x3 = _with_silence(0), _voiced(SR + 123, 5), _voiced(7 * SR, 6)
    outs = conv.convert([x1, x2, x3], pipeline.ConvertOptions(speaker="tenor"), progress=False)
    for x, y in zip((x1, x2, x3), outs):
        # every sample back in place: pieces are padded to whole frames, not truncated
        np.testing.assert_array_equal(y, x)
    # 4 pieces (2 from x1) in at most 3 length buckets; batch rows are powers of two
    assert len(sov.calls) <= 3
    assert all((c["shape"][0] & (c["shape"][0] - 1)) == 0 for c in sov.calls)
    assert all(list(c["speaker"]) == [1] * c["shape"][0] for c in sov.calls)


def test_clip_and_crossfade_reassemble_exactly_and_transpose_scales_f0():
    conv, sov = identity_converter()
    x = _voiced(5 * SR, 9)
    opt = pipeline.ConvertOptions(speaker="alto", clip_seconds=1.3, crossfade_seconds=0.2,
                                  pad_seconds=0.3, transpose=12)
    (y,) = conv.convert([x], opt, progress=False)
    assert y.shape == x.shape
    # pieces of 1.3 s overlap by 0.2 s; identical content crossfades to itself
    np.testing.assert_allclose(y, x, atol=1e-6)
    assert np.allclose(sov.calls[0]["f0"][sov.calls[0]["lengths"] > 0][:, :5], 440.0)
    assert sum(c["shape"][0] for c in sov.calls) >= 4


def test_speaker_mix_tracks_and_fixed_mixes(tmp_path):
    conv, sov = identity_converter(gain=True)
    x = _voiced(4 * SR, 3)
    mix = {"alto": [[0, 1, 1.0, 0.0]], "tenor": [[0, 1, 0.0, 1.0]]}   # alto fades out
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(mix))
    spk = pipeline.parse_speaker(str(path))
    (y,) = conv.convert([x], pipeline.ConvertOptions(speaker=spk, pad_seconds=0.0),
                        progress=False)
    w = sov.calls[0]["speaker"][0, :, 0]              # alto's weight per frame
    assert w[0] > 0.99 and w[-1] < 0.01 and np.all(np.diff(w) <= 1e-6)
    ratio = y[SR:SR + 100] / x[SR:SR + 100]
    assert np.allclose(ratio, ratio.mean(), atol=0.01) and 0.7 < ratio.mean() < 0.8

    ref_py = tmp_path / "spkmix.py"
    ref_py.write_text("# tracks\nspk_mix_map = {\n 0: [[0., 0.5, 1, 0.5], [0.5, 1, 0.5, 1]],\n"
                      " 1: [[0., 1., 0., 0.]]\n}\n")
    m = pipeline.load_speaker_mix(ref_py)
    assert set(m.tracks) == {0, 1}
    assert pipeline.parse_speaker("alto:1,tenor:3") == {"alto": 0.25, "tenor": 0.75}
    assert pipeline.parse_speaker("tenor") == "tenor" and pipeline.parse_speaker("2") == 2
    for bad in ({"alto": [[0, 0.5, 1, 1]]}, {"alto": [[0, 0.5, 1, 1], [0.6, 1, 1, 1]]},
                {"alto": [[0, 1, -1, 1]]}):
        with pytest.raises(ValueError, match="alto"):
            pipeline.SpeakerMix(bad)


def test_unknown_speaker_and_bad_options_are_clear_errors():
    conv, _ = identity_converter()
    x = _voiced(SR, 1)
    with pytest.raises(ValueError, match="'bob' not in model; known: alto, tenor, bass"):
        conv.convert([x], pipeline.ConvertOptions(speaker="bob"))
    with pytest.raises(ValueError, match="choose one with --speaker"):
        conv.convert([x], pipeline.ConvertOptions())
    with pytest.raises(ValueError, match="crossfade"):
        conv.convert([x], pipeline.ConvertOptions(speaker=0, crossfade_seconds=0.1))
    with pytest.raises(ValueError, match="loudness_mix"):
        conv.convert([x], pipeline.ConvertOptions(speaker=0, loudness_mix=2.0))
    with pytest.raises(ValueError, match="only_diffusion needs"):
        conv.convert([x], pipeline.ConvertOptions(speaker=0, only_diffusion=True))
    with pytest.raises(ValueError, match="NAME:weight"):
        pipeline.parse_speaker("alto:x")


def test_convert_files_skips_bad_inputs_and_writes_atomically(tmp_path):
    conv, _ = identity_converter()
    good = tmp_path / "good.flac"
    io.save_audio(good, _voiced(SR, 2), SR)
    silent = tmp_path / "silent.wav"
    io.save_audio(silent, np.zeros(SR, np.float32), SR)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEjunk")
    outs = [str(tmp_path / "out" / f"{n}.wav") for n in ("good", "silent", "corrupt")]
    msgs = []
    written, failed = pipeline.convert_files(conv, [str(good), str(silent), str(corrupt)], outs,
                                             pipeline.ConvertOptions(speaker=0),
                                             progress=False, log=msgs.append)
    assert written == outs[:1] and len(failed) == 2
    assert "silent" in failed[0] and "corrupt" in failed[1]
    assert "allow_silent" not in failed[0]     # no Python argument named to a CLI user
    y, sr = io.load_audio(outs[0])
    assert sr == SR and len(y) == SR
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav"]   # no temp left


def test_output_paths():
    assert output_paths(["a/x.wav"], "o.flac", None) == ["o.flac"]
    assert output_paths(["a/x.wav", "b/y.mp3"], "out", "flac") == \
        ["out/x.flac", "out/y.flac"]
    with pytest.raises(ValueError, match="same file"):
        output_paths(["a/x.wav", "b/x.wav"], "out", None)
    with pytest.raises(ValueError, match="directory"):
        output_paths(["a.wav", "b.wav"], "o.wav", None)
    with pytest.raises(ValueError, match=r"\.wav/\.flac"):
        output_paths(["a.wav"], "o.mp3", None)


# ----------------------------------------------------------------------------- streaming


def _long_with_pauses(seconds, seed):
    """Voiced 6 s stretches separated by 1 s pauses (so the slicer cuts every 7 s)."""
    parts = []
    for k in range(int(np.ceil(seconds / 7))):
        parts += [_voiced(6 * SR, seed + k), np.zeros(SR, np.float32)]
    return np.concatenate(parts)[: int(seconds * SR)]


def test_stream_hands_each_input_on_in_order_and_pulls_inputs_only_as_needed(monkeypatch):
    conv, sov = identity_converter()
    xs = [_long_with_pauses(40, 0), _voiced(SR, 50), _voiced(2 * SR, 60), _with_silence(7)]
    opt = pipeline.ConvertOptions(speaker="alto", clip_seconds=2.0, crossfade_seconds=0.25)
    whole = conv.convert(xs, opt, progress=False)      # one window: the reference result
    calls_whole = len(sov.calls)

    monkeypatch.setattr(pipeline, "WINDOW_SECONDS", 10.0)
    pulled, events = [], []

    def items():
        for k, x in enumerate(xs):
            pulled.append(k)
            events.append(("pull", k))
            yield k, x

    got = {k: [] for k in range(len(xs))}
    for kind, key, block in conv.stream(items(), opt):
        events.append((kind, key))
        if kind == "data":
            got[key].append(block)
            # the long input is handed on piece-window by piece-window, before later
            # inputs are even read
            if key == 0 and len(got[0]) == 1:
                assert pulled == [0]
    for k, x in enumerate(xs):
        np.testing.assert_array_equal(np.concatenate(got[k]), whole[k])
        np.testing.assert_allclose(whole[k], x, atol=1e-6)
    # inputs finish in order, each before the next but one is read
    done = [e for e in events if e[0] == "done"]
    assert [k for _, k in done] == [0, 1, 2, 3]
    assert events.index(("done", 0)) < events.index(("pull", 2))
    assert len(sov.calls) - calls_whole > calls_whole    # many small windows, not one
    # a window holds about WINDOW_SECONDS of pieces: no batch ever had more
    assert max(c["shape"][0] * c["shape"][1] * 512 for c in sov.calls[calls_whole:]) \
        <= 4 * (10.0 + 2.5 + 2 * 0.5) * SR


def test_speaker_mix_positions_do_not_depend_on_windows(monkeypatch):
    conv, sov = identity_converter(gain=True)
    x = _long_with_pauses(30, 3)
    spk = pipeline.SpeakerMix({"alto": [[0, 1, 1.0, 0.0]], "tenor": [[0, 1, 0.0, 1.0]]})
    opt = pipeline.ConvertOptions(speaker=spk, pad_seconds=0.1)
    (whole,) = conv.convert([x], opt, progress=False)
    monkeypatch.setattr(pipeline, "WINDOW_SECONDS", 5.0)
    (small,) = conv.convert([x], opt, progress=False)
    np.testing.assert_array_equal(small, whole)


def _files(tmp_path, arrays):
    paths = []
    for k, a in enumerate(arrays):
        p = tmp_path / "in" / f"f{k}.wav"
        io.save_audio(p, a, SR, subtype="FLOAT")
        paths.append(str(p))
    return paths


def test_convert_files_writes_each_file_as_soon_as_it_is_done(tmp_path, monkeypatch):
    conv, _ = identity_converter()
    xs = [_long_with_pauses(30, 1), _voiced(6 * SR, 2), _voiced(SR, 3)]
    ins = _files(tmp_path, xs)
    outs = [str(tmp_path / "out" / f"o{k}.wav") for k in range(3)]
    monkeypatch.setattr(pipeline, "WINDOW_SECONDS", 5.0)
    seen = {}
    real_load = io.load_audio

    real_scan = io.StreamedAudio.scan

    def load(path, *a, **k):              # what is on disk when each input is read
        seen[path] = sorted(p.name for p in (tmp_path / "out").iterdir())
        return real_load(path, *a, **k)

    def scan(path, *a, **k):              # the first pass over a long input
        seen[path] = sorted(p.name for p in (tmp_path / "out").iterdir())
        return real_scan(path, *a, **k)

    monkeypatch.setattr(io, "load_audio", load)
    monkeypatch.setattr(io.StreamedAudio, "scan", scan)
    written, failed = pipeline.convert_files(conv, ins, outs,
                                             pipeline.ConvertOptions(speaker=0),
                                             progress=False, subtype="FLOAT")
    assert written == outs and not failed
    assert seen[ins[0]] == []
    # o0 is being written (a hidden temporary file) while the 30 s input is converted,
    # and it and o1 are complete (renamed into place) before the third input is read
    assert [n for n in seen[ins[1]] if not n.startswith(".o0.wav.")] == []
    assert seen[ins[2]] == ["o0.wav", "o1.wav"]
    for x, o in zip(xs, outs):
        np.testing.assert_allclose(real_load(o, allow_silent=True)[0], x, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o0.wav", "o1.wav",
                                                                     "o2.wav"]


def test_long_files_are_read_twice_instead_of_held_with_the_same_outputs(tmp_path,
                                                                          monkeypatch):
    """A file longer than a window is scanned (length, silence RMS) and its pieces are read
    back when their window runs: the outputs are bit for bit those of loading it whole, for
    files at 48 kHz stereo, 44.1 and 22.05 kHz, with and without clip pieces; a file that
    changes between the two passes is skipped with one sentence and leaves no output."""
    import soundfile as sf

    conv, _ = identity_converter()
    ins = []
    for k, (rate, channels) in enumerate([(48000, 2), (SR, 1), (22050, 1)]):
        y = _long_with_pauses(25, 10 * k)
        p = tmp_path / "in" / f"f{k}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, np.stack([y, 0.5 * y], 1) if channels == 2 else y, rate, subtype="FLOAT")
        ins.append(str(p))
    real_scan = io.StreamedAudio.scan
    scanned = []

    def scan(path, *a, **k):
        got = real_scan(path, *a, **k)
        scanned.append(got is not None)
        return got

    monkeypatch.setattr(io.StreamedAudio, "scan", scan)
    for n, opt in enumerate([pipeline.ConvertOptions(speaker=0),
                             pipeline.ConvertOptions(speaker=1, clip_seconds=2.0,
                                                     crossfade_seconds=0.25, pad_seconds=0.1)]):
        results = {}
        for window in (1e4, 4.0):           # all files loaded whole / every file streamed
            monkeypatch.setattr(pipeline, "WINDOW_SECONDS", window)
            monkeypatch.setattr(io, "_BLOCK", 1 << 18 if window > 100 else 5000)
            del scanned[:]
            outs = [str(tmp_path / f"out{n}-{window}" / f"o{k}.wav") for k in range(3)]
            written, failed = pipeline.convert_files(conv, ins, outs, opt, progress=False,
                                                     subtype="FLOAT")
            assert written == outs and not failed
            assert scanned == ([] if window > 100 else [True] * 3)
            results[window] = [sf.read(o, dtype="float32")[0] for o in outs]
        for whole, streamed in zip(results[1e4], results[4.0]):
            assert len(whole) > 20 * SR
            np.testing.assert_array_equal(streamed, whole)

    # a file rewritten after its first pass
    def scan_then_change(path, *a, **k):
        got = real_scan(path, *a, **k)
        if path == ins[1]:
            sf.write(path, _voiced(8 * SR, 5), SR, subtype="FLOAT")
        return got

    monkeypatch.setattr(io.StreamedAudio, "scan", scan_then_change)
    outs = [str(tmp_path / "changed" / f"o{k}.wav") for k in range(3)]
    msgs = []
    written, failed = pipeline.convert_files(conv, ins, outs, pipeline.ConvertOptions(speaker=0),
                                             progress=False, log=msgs.append)
    assert written == [outs[0], outs[2]]
    assert failed == [f"skipped: audio file {ins[1]!r} changed while it was being converted; "
                      f"no partial file was left"]
    assert sorted(os.listdir(tmp_path / "changed")) == ["o0.wav", "o2.wav"]


def test_a_failed_write_loses_only_that_file(tmp_path, monkeypatch):
    import errno

    conv, _ = identity_converter()
    ins = _files(tmp_path, [_voiced(SR, 1), _voiced(2 * SR, 2), _voiced(SR, 3)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "o1.wav").write_bytes(b"earlier output")
    outs = [str(out_dir / f"o{k}.wav") for k in range(3)]
    real_write = io.AudioWriter.write

    def write(self, block):
        real_write(self, block[: len(block) // 2])    # half a block reaches the disk
        if self.path.name == "o1.wav":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, block[len(block) // 2:])

    monkeypatch.setattr(io.AudioWriter, "write", write)
    msgs = []
    written, failed = pipeline.convert_files(conv, ins, outs, pipeline.ConvertOptions(speaker=0),
                                             progress=False, log=msgs.append, overwrite=True)
    assert written == [outs[0], outs[2]]
    assert failed == [f"could not write {outs[1]!r}: no space left on device; no partial "
                      f"file was left"]
    assert (out_dir / "o1.wav").read_bytes() == b"earlier output"
    assert sorted(p.name for p in out_dir.iterdir()) == ["o0.wav", "o1.wav", "o2.wav"]


def test_outputs_are_checked_before_any_work(tmp_path):
    src = tmp_path / "song.wav"
    io.save_audio(src, _voiced(SR, 1), SR)
    other = tmp_path / "other.wav"
    other.write_bytes(b"keep me")
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    check = pipeline.check_outputs
    with pytest.raises(ValueError, match="is one of the inputs; pass --overwrite"):
        check([str(src)], output_paths([str(src)], str(tmp_path), None))
    with pytest.raises(ValueError, match="is one of the inputs"):
        check([str(src)], [str(src)], overwrite=None)       # the API default: never an input
    check([str(src)], [str(src)], overwrite=True)
    with pytest.raises(ValueError, match=r"other.wav' already exists; pass --overwrite"):
        check([str(src)], [str(other)])
    check([str(src)], [str(other)], overwrite=None)
    for out in (afile / "x.wav", afile / "sub" / "x.wav"):
        with pytest.raises(ValueError, match="afile' is a file, not a directory"):
            check([str(src)], [str(out)], overwrite=True)
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(ValueError, match=r"d.wav': it is a directory \(and 1 more\)"):
        check([str(src)], [str(tmp_path / "d.wav"), str(other)])
    conv, sov = identity_converter()
    with pytest.raises(ValueError, match="is one of the inputs"):
        pipeline.convert_files(conv, [str(src)], [str(src)], pipeline.ConvertOptions(speaker=0))
    assert not sov.calls and other.read_bytes() == b"keep me"


def test_stale_temporary_files_are_removed_unless_a_writer_holds_them(tmp_path):
    import fcntl

    out = tmp_path / "x.wav"
    stale = tmp_path / ".x.wav.0123abcd.tmp"
    stale.write_bytes(b"half")
    live = tmp_path / ".x.wav.89abcdef.tmp"
    live.write_bytes(b"being written")
    unrelated = tmp_path / ".y.wav.0123abcd.tmp"
    unrelated.write_bytes(b"")
    with open(live, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert io.remove_stale_temps(out) == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.wav.89abcdef.tmp",
                                                          ".y.wav.0123abcd.tmp"]
    assert io.remove_stale_temps(out) == [str(live)]   # its writer is gone now


def test_loading_reads_and_resamples_block_by_block_exactly(tmp_path, monkeypatch):
    from svcjax.audio import resample

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((200_003, 2))).astype(np.float32)
    path = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(path, x, 48000, subtype="FLOAT")
    monkeypatch.setattr(io, "_BLOCK", 1 << 12)          # ~50 segments
    y, sr = io.load_audio(path, sr=SR)
    mono = np.mean(x.T, axis=0)
    np.testing.assert_array_equal(y, resample.resample_host(mono, 48000, SR))
    np.testing.assert_array_equal(io.load_audio(path)[0], mono)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(io.AudioFileError, match="not a regular file"):
        io.load_audio(fifo)                              # returns at once, no blocking read
    sf.write(tmp_path / "slow.wav", x[:100], 200, subtype="FLOAT")
    with pytest.raises(io.AudioFileError, match="sample rate of 200 Hz"):
        io.load_audio(tmp_path / "slow.wav", sr=SR)


_RSS_SCRIPT = r"""
import resource, sys
from svcjax.runtime import converter as pipeline
from tests.test_pipeline import identity_converter
conv, _ = identity_converter()
written, failed = pipeline.convert_files(conv, [sys.argv[1]], [sys.argv[2]],
                                         pipeline.ConvertOptions(speaker=0), progress=False)
assert written == [sys.argv[2]] and not failed, failed
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    """Peak RSS of convert_files on a 5- and a 20-minute 48 kHz stereo file (pieces every
    7 s, the identity model): both fill whole 120 s windows, and nothing else is held but
    the slicer's RMS (0.24 MB for 20 minutes) and the chunk list, so the two peaks differ by
    less than 30 MB of allocator slack. Holding the decoded input (as before: 159 MB more for
    the 15 extra minutes), the file-rate samples or every converted piece would each add
    several times that."""
    import subprocess
    import sys
    from pathlib import Path

    import soundfile as sf

    root = Path(__file__).resolve().parents[1]
    peaks = {}
    for minutes in (5, 20):
        src = tmp_path / f"in{minutes}.wav"
        with sf.SoundFile(src, "w", 48000, 2, subtype="PCM_16") as f:
            for k in range(minutes * 60 // 7 + 1):
                x = _voiced(6 * 48000, k)
                f.write(np.stack([x, 0.5 * x], 1))
                f.write(np.zeros((48000, 2), np.float32))
        out = tmp_path / f"out{minutes}.wav"
        env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu", XLA_FLAGS="")
        p = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(src), str(out)], env=env,
                           capture_output=True, text=True, timeout=1800, cwd=root)
        assert p.returncode == 0, p.stderr
        peaks[minutes] = int(p.stdout.split()[-1])
        assert sf.info(out).frames == -(-sf.info(src).frames * 441 // 480)
    held = 15 * 60 * SR * 4                 # the decoded input of the longer file's extra 15 min
    assert peaks[20] - peaks[5] < 30e6 < held / 5, peaks
