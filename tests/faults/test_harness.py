"""The harness itself: outcomes are checked, tables count, snapshots see changes."""

import pytest

from tests.faults import harness


def test_snapshot_sees_a_changed_and_a_removed_file(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    before = harness.snapshot(tmp_path)
    (tmp_path / "a").write_bytes(b"3")
    (tmp_path / "b").unlink()
    assert sorted(harness.changed(before, harness.snapshot(tmp_path))) == sorted(before)


def test_record_refuses_unknown_outcome():
    with pytest.raises(ValueError, match="outcome"):
        harness.record("x", "y", "z", "fine")


def test_help_exits_zero_without_traceback():
    res = harness.run(["--help"], timeout=120)
    assert res.rc == 0 and "Traceback" not in res.stderr
    assert "convert" in res.stdout
