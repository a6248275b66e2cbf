"""Fault injection for ``svcjax convert``: bad inputs, bad output places, a full disk, a kill.

Each case drives the real command in a subprocess (tests/faults/harness.py) with the tiny
random-weight models of tests/tiny_models.py (one model dir and one compilation cache for the
module), DIO F0 and short clips, checks the guarantees (one clear sentence and a non-zero
status, the good inputs still converted, nothing partial left, nothing already there changed)
and records a row.

Places that cannot be written: tests may run as root, which ``chmod`` does not stop, so an
unwritable folder is a read-only tmpfs mount where ``mount`` is allowed, else a folder the
kernel refuses (under ``/proc``), or a ``chmod 555`` folder for other users. A full disk is a
200 kB tmpfs where ``mount`` is allowed, else ``RLIMIT_FSIZE`` (``ulimit -f``, with SIGXFSZ
ignored so the write fails with EFBIG instead of killing the process).
"""

from __future__ import annotations

import contextlib
import hashlib
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

from tests import tiny_models
from tests.faults import harness

AREA = "convert"
VOICES = Path(__file__).resolve().parents[1] / "fixtures" / "voices"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jaxcache")


@pytest.fixture(scope="module")
def voice():
    """1.5 s of a real voice at 16 kHz."""
    y, sr = sf.read(VOICES / "slt_16k.wav", dtype="float32")
    return y[: int(1.5 * sr)], sr


def _args(models, cache, *extra):
    return ["-m", str(models / "sovits"), "-e", str(models / "encoder"), "-s", "alto",
            "--f0-method", "dio", "--no-progress", "--batch-size", "16",
            "--cache-dir", str(cache), *extra]


def _convert(inputs, out, models, cache, *extra, cwd=None, timeout=600):
    return harness.run(["convert", *[str(p) for p in inputs], "-o", str(out),
                        *_args(models, cache, *extra)], cwd=cwd, timeout=timeout)


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _frames44(path) -> int:
    info = sf.info(str(path))
    return -(-info.frames * 44100 // info.samplerate)


def _assert_converted(out, src_len44):
    y, sr = sf.read(str(out), dtype="float32")
    assert sr == 44100 and y.ndim == 1 and len(y) == src_len44
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` (yields False where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    ok = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True).returncode == 0
    try:
        yield bool(ok)
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ----------------------------------------------------------------------------- bad inputs


def _bad_inputs(d: Path, voice):
    """``{name: (path, expectation)}``: expectation "converted" or a phrase of the reason."""
    y, sr = voice
    d.mkdir()
    cases = {}

    def add(name, expect, write):
        p = d / name
        write(p)
        cases[name] = (p, expect)

    add("good.wav", "converted", lambda p: sf.write(p, y, sr))
    add("corrupt.wav", "cannot be read",
        lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4))
    add("empty.wav", "cannot be read", lambda p: p.write_bytes(b""))
    add("no_samples.wav", "no samples", lambda p: sf.write(p, np.zeros(0, np.float32), sr))
    add("silent.flac", "silent", lambda p: sf.write(p, np.zeros(sr, np.float32), sr))

    def nan(p):
        z = y.copy()
        z[len(z) // 2] = np.nan
        sf.write(p, z, sr, subtype="FLOAT")
    add("nan.wav", "NaN", nan)
    for rate in (8000, 44101, 192000):
        t = np.arange(int(1.2 * rate)) / rate
        add(f"rate_{rate}.wav", "converted", lambda p, t=t, rate=rate: sf.write(
            p, (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * t))).astype(np.float32), rate))
    add("rate_300.wav", "sample rate of 300 Hz",
        lambda p: sf.write(p, (0.3 * np.sin(np.arange(900))).astype(np.float32), 300))
    add("channels_16.wav", "converted",
        lambda p: sf.write(p, np.stack([y * (0.5 + k / 32) for k in range(16)], 1), sr))
    for subtype in ("PCM_U8", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        add(f"width_{subtype.lower()}.wav", "converted",
            lambda p, s=subtype: sf.write(p, y, sr, subtype=s))

    def truncated(p):
        sf.write(p, y, sr)
        data = p.read_bytes()
        p.write_bytes(data[: 44 + (len(data) - 44) // 2])   # header promises twice the data
    add("truncated.wav", "truncated", truncated)
    add("fifo.wav", "not a regular file", lambda p: os.mkfifo(p))
    add("folder.wav", "directory", lambda p: p.mkdir())
    add("notes.wav", "cannot be read", lambda p: p.write_text("these are not samples\n" * 50))
    return cases


def test_bad_inputs_of_every_kind_beside_a_good_one(tmp_path, models, cache, voice):
    cases = _bad_inputs(tmp_path / "in", voice)
    out = tmp_path / "out"
    before = harness.snapshot(tmp_path / "in")
    t0 = time.perf_counter()
    res = _convert([p for p, _ in cases.values()], out, models, cache, timeout=900)
    elapsed = time.perf_counter() - t0
    harness.assert_clear_failure(res)
    assert "not converted" in res.last_line, res.stderr
    assert harness.changed(before, harness.snapshot(tmp_path / "in")) == []
    assert harness.leftovers(out) == []
    written = set(res.stdout.split())
    for name, (path, expect) in cases.items():
        target = out / (Path(name).stem + ".wav")
        if expect == "converted":
            assert str(target) in written, (name, res.stderr)
            _assert_converted(target, _frames44(path))
            detail = "converted"
        elif name == "truncated.wav" and str(target) in written:
            # libsndfile reads the samples that are there; the header's length is ignored
            y, sr = sf.read(str(target))
            assert sr == 44100 and 0 < len(y) < _frames44(VOICES / "slt_16k.wav")
            detail = "the samples present converted"
        else:
            assert not target.exists(), name
            line = next((ln for ln in res.stderr.splitlines() if repr(str(path)) in ln), "")
            assert "skipped" in line and expect.lower() in line.lower(), (name, res.stderr)
            detail = line.split("skipped: ", 1)[-1]
        if name != "good.wav":
            harness.record(AREA, f"input: {name}", "svcjax convert good.wav BAD... -o out/",
                           "handled", detail)
    # the FIFO is refused without being opened: the call does not hang
    assert elapsed < 600


# ----------------------------------------------------------------------------- outputs


def test_output_in_the_way_is_refused_before_any_work(tmp_path, models, cache, voice):
    y, sr = voice
    src = tmp_path / "song.wav"
    sf.write(src, y, sr)
    afile = tmp_path / "afile"
    afile.write_bytes(b"not a folder")
    before = harness.snapshot(tmp_path)
    for out, case in ((afile, "afile"), (f"{afile}/sub/", "afile/sub/")):
        t0 = time.perf_counter()
        res = _convert([src], out, models, cache)
        harness.assert_clear_failure(res, "afile", "is a file, not a directory")
        assert res.last_line.startswith("svcjax convert: error:")
        assert time.perf_counter() - t0 < 120          # refused before loading any model
        assert harness.changed(before, harness.snapshot(tmp_path)) == []
        assert harness.leftovers(tmp_path) == []
        harness.record(AREA, f"output: -o {case} (afile a regular file)",
                       f"svcjax convert song.wav -o {case}", "refused", res.last_line)


def test_unwritable_output_folder_is_refused_before_any_work(tmp_path, models, cache, voice):
    y, sr = voice
    src = tmp_path / "song.wav"
    sf.write(src, y, sr)
    ro = tmp_path / "ro"
    with _tmpfs(ro, "ro,size=1m") as mounted:
        if mounted:
            out, how = ro / "sub", "read-only tmpfs"
        elif os.geteuid() != 0:
            ro.chmod(0o555)
            out, how = ro / "sub", "chmod 555 folder"
        else:
            out, how = Path("/proc/1/svcjax-out"), "a folder under /proc"
        res = _convert([src], out, models, cache)
        harness.assert_clear_failure(res, "cannot write to the output folder")
        assert not os.path.exists(out)
        harness.record(AREA, f"output: unwritable folder ({how})",
                       "svcjax convert song.wav -o RO/sub", "refused", res.last_line)
    ro.chmod(0o755)


def test_full_disk_loses_only_the_file_that_did_not_fit(tmp_path, models, cache, voice):
    y, sr = voice
    small = tmp_path / "small.wav"
    sf.write(small, y[: sr], sr)                          # 1 s: 88 kB at 44.1 kHz 16-bit
    big = tmp_path / "big.wav"
    sf.write(big, np.tile(y, 4), sr)                      # 6 s: 530 kB
    full = tmp_path / "full"
    with _tmpfs(full, "size=200k") as mounted:
        (full / "earlier.wav").write_bytes(b"an earlier result" * 100)
        before = harness.snapshot(full)
        args = ["convert", str(big), str(small), "-o", str(full),
                *_args(models, cache)]
        if mounted:
            how, reason = "200 kB tmpfs", "no space left on device"
            res = harness.run(args, timeout=600)
        else:
            how, reason = "RLIMIT_FSIZE 200 kB", "file too large"
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(harness.ROOT), os.environ.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu",
                XLA_FLAGS="")
            env.pop("SVCJAX_DEBUG", None)
            p = subprocess.run(["bash", "-c", 'trap "" XFSZ; ulimit -f 200; exec "$@"', "sh",
                                sys.executable, "-m", "svcjax", *args], env=env,
                               capture_output=True, text=True, timeout=600,
                               stdin=subprocess.DEVNULL)
            res = harness.Result(p.returncode, p.stdout, p.stderr)
        harness.assert_clear_failure(res, f"could not write {str(full / 'big.wav')!r}", reason,
                                     "no partial file was left")
        assert harness.changed(before, harness.snapshot(full)) == []
        assert harness.leftovers(full) == []
        assert sorted(p.name for p in full.iterdir()) == ["earlier.wav", "small.wav"]
        _assert_converted(full / "small.wav", _frames44(small))
        harness.record(AREA, f"output: disk full ({how})",
                       "svcjax convert big.wav small.wav -o FULL/", "handled",
                       "big.wav not written, no temp left; small.wav written")


def test_input_folder_as_output_needs_overwrite(tmp_path, models, cache, voice):
    y, sr = voice
    d = tmp_path / "songs"
    d.mkdir()
    sf.write(d / "song.wav", y, sr)
    sum_before = _sha(d / "song.wav")
    res = _convert(["song.wav"], "./", models, cache, cwd=d)
    harness.assert_clear_failure(res, "is one of the inputs", "--overwrite")
    assert _sha(d / "song.wav") == sum_before and sorted(os.listdir(d)) == ["song.wav"]
    harness.record(AREA, "output: the input's own folder", "svcjax convert song.wav -o ./",
                   "refused", res.last_line)

    res = _convert(["song.wav"], "./", models, cache, "--overwrite", cwd=d)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    _assert_converted(d / "song.wav", -(-len(y) * 44100 // sr))
    assert sorted(os.listdir(d)) == ["song.wav"]
    harness.record(AREA, "output: the input's own folder, --overwrite",
                   "svcjax convert song.wav -o ./ --overwrite", "handled",
                   "the recording replaced by its conversion, atomically")


def test_existing_outputs_are_not_replaced_without_overwrite(tmp_path, models, cache, voice):
    y, sr = voice
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    sf.write(a, y, sr)
    sf.write(b, y[::-1].copy(), sr)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.wav").write_bytes(b"someone's earlier result")
    before = harness.snapshot(out)
    res = _convert([a, b], out, models, cache)
    harness.assert_clear_failure(res, "b.wav' already exists", "--overwrite")
    assert harness.changed(before, harness.snapshot(out)) == []
    assert sorted(os.listdir(out)) == ["b.wav"]          # refused before any conversion
    res2 = _convert([a], out / "b.wav", models, cache)
    harness.assert_clear_failure(res2, "already exists")
    assert harness.changed(before, harness.snapshot(out)) == []
    harness.record(AREA, "output: files that exist already", "svcjax convert a.wav b.flac -o out/",
                   "refused", res.last_line)


def test_options_that_would_be_ignored_are_refused(tmp_path, models, cache, voice):
    y, sr = voice
    src = tmp_path / "song.wav"
    sf.write(src, y, sr)
    res = _convert([src], tmp_path / "o.wav", models, cache, "--vocoder",
                   str(tiny_models.VOCODER))
    harness.assert_clear_failure(res, "--vocoder is only used with --diffusion")
    assert not (tmp_path / "o.wav").exists()
    harness.record(AREA, "--vocoder without --diffusion", "svcjax convert ... --vocoder V",
                   "refused", res.last_line)


# ----------------------------------------------------------------------------- kill, length


def _song(seconds: float, seed: int = 0, voiced: float = 6.0, period: float = 7.0):
    """A sung tone with a pause every ``period`` s (``voiced`` s of it sung), 44.1 kHz."""
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    f = 220 * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t))
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr)
    x += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (x * ((t % period) < voiced)).astype(np.float32)


@pytest.mark.slow
def test_sigkill_leaves_no_partial_output_and_a_rerun_cleans_up(tmp_path, models, cache):
    from svcjax.runtime import converter as pipeline

    src = tmp_path / "long.wav"
    # longer than one window of pieces: the output's temporary file is open while the
    # second window is converted
    sf.write(src, _song(pipeline.WINDOW_SECONDS + 40), 44100)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(harness.ROOT), os.environ.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu",
        XLA_FLAGS="")
    proc = subprocess.Popen([sys.executable, "-m", "svcjax", "convert", str(src), "-o",
                             str(out), *_args(models, cache)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    tmp_seen = []
    while time.time() < deadline and proc.poll() is None:
        tmp_seen = list(out.glob(".long.wav.*.tmp")) if out.is_dir() else []
        if tmp_seen:
            break
        time.sleep(0.05)
    assert tmp_seen, "the output's temporary file never appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # no output is visible: only the hidden, dead temporary file
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    stale = [p.name for p in out.iterdir()]
    assert stale and all(n.startswith(".long.wav.") and n.endswith(".tmp") for n in stale)
    harness.record(AREA, "SIGKILL during conversion", "kill -9 `svcjax convert long.wav -o out/`",
                   "handled", "no output visible; only a hidden temporary file")

    res = _convert([src], out, models, cache)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    assert "removed 1 temporary file(s) left by an interrupted run" in res.stderr
    assert sorted(os.listdir(out)) == ["long.wav"] and harness.leftovers(out) == []
    _assert_converted(out / "long.wav", _frames44(src))
    harness.record(AREA, "rerun after SIGKILL", "svcjax convert long.wav -o out/", "handled",
                   "stale temporary file removed, output complete")


@pytest.mark.slow
def test_one_hour_input(tmp_path, models, cache):
    """An hour of recording (a few sung phrases in long silences, so the tiny models take
    minutes, not hours) streams through: the output is complete and peak memory stays near
    the decoded input (10.6 MB per minute) plus a constant."""
    import resource

    sr = 44100
    src = tmp_path / "hour.flac"
    with sf.SoundFile(src, "w", sr, 1, format="FLAC") as f:
        for minute in range(60):
            block = np.zeros(60 * sr, np.float32)
            if minute % 10 == 0:
                block[5 * sr: 11 * sr] = _song(6.0, seed=minute, voiced=6.0, period=7.0)
            f.write(block)
    out = tmp_path / "out"
    res = _convert([src], out, models, cache, timeout=1800)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    y, rate = sf.read(str(out / "hour.wav"), dtype="float32")
    assert rate == sr and len(y) == 3600 * sr and np.isfinite(y).all()
    for minute in range(0, 60, 10):
        assert np.abs(y[(minute * 60 + 6) * sr:(minute * 60 + 10) * sr]).max() > 1e-3
        assert np.abs(y[(minute * 60 + 20) * sr:(minute * 60 + 50) * sr]).max() == 0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    decoded = 3600 * sr * 4
    assert peak < decoded + 2.5e9, peak
    harness.record(AREA, "1-hour input", "svcjax convert hour.flac -o out/", "handled",
                   f"complete output; peak RSS {peak / 1e9:.2f} GB (decoded input "
                   f"{decoded / 1e9:.2f} GB)")
