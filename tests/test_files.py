"""svcjax.files: a file or folder appears whole or not at all; nothing temporary is left."""

import os

import pytest

from svcjax import files
from svcjax.audio import io


def _names(d):
    return sorted(os.listdir(d))


def test_atomic_write_replaces_whole_and_leaves_nothing(tmp_path):
    p = tmp_path / "a.json"
    files.write_text(p, "old")
    with files.atomic_write(p, "w") as f:
        f.write("new, ")
        assert p.read_text() == "old"                # not visible before the block ends
        assert len(_names(tmp_path)) == 2            # the hidden temporary beside it
        f.write("whole")
    assert p.read_text() == "new, whole" and _names(tmp_path) == ["a.json"]
    files.write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01", make_dirs=True)
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "a.csv"
    files.write_text(p, "old")
    with pytest.raises(RuntimeError, match="disk"):
        with files.atomic_write(p, "w", newline="") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old" and _names(tmp_path) == ["a.csv"]
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_write(tmp_path / "new.npz") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert _names(tmp_path) == ["a.csv"]
    with pytest.raises(ValueError, match="mode"):
        with files.atomic_write(p, "a"):
            pass
    with pytest.raises(FileNotFoundError) as e:      # the error names the target
        files.write_text(tmp_path / "no" / "such" / "dir.json", "x")
    assert e.value.filename == str(tmp_path / "no" / "such" / "dir.json")


def test_a_live_writer_keeps_its_temporary_from_the_stale_sweep(tmp_path):
    p = tmp_path / "out.wav"
    with files.atomic_write(p) as f:
        f.write(b"RIFF")
        assert io.remove_stale_temps(p) == []        # locked: a live writer's file
    stale = files.temp_path(p)
    stale.write_bytes(b"left by a killed run")
    assert io.remove_stale_temps(p) == [str(stale)]


def test_atomic_directory(tmp_path):
    out = tmp_path / "model"
    with files.atomic_directory(out) as d:
        (d / "config.json").write_text("1")
        assert not out.exists()
    assert (out / "config.json").read_text() == "1"
    with pytest.raises(FileExistsError):
        with files.atomic_directory(out):
            pass
    with pytest.raises(RuntimeError):
        with files.atomic_directory(out, replace=True) as d:
            (d / "config.json").write_text("2")
            raise RuntimeError("interrupted")
    assert (out / "config.json").read_text() == "1" and _names(tmp_path) == ["model"]
    with files.atomic_directory(out, replace=True) as d:
        (d / "config.json").write_text("2")
    assert _names(out) == ["config.json"] and (out / "config.json").read_text() == "2"
    assert _names(tmp_path) == ["model"]
