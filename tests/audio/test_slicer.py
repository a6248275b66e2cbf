"""Silence slicing against the reference Slicer (fixture and live); padding and crossfades."""

import numpy as np
import pytest

from svcjax.audio import slicer as S
from tests.audio import cases


def ours(sig, sr, params):
    db, min_len, min_int, hop, keep = params
    chunks = S.slice_on_silence(sig, sr, threshold_db=db, min_length_ms=min_len,
                                min_interval_ms=min_int, hop_ms=hop, max_silence_kept_ms=keep)
    return np.asarray([(c.start, c.end, int(c.silent)) for c in chunks], np.int64).reshape(-1, 3)


def test_slicer_matches_reference_fixture(fixture):
    for name in cases.voice_names():
        for kind in ("clip", "long"):
            sig, sr = cases.voice(name) if kind == "clip" else cases.slicer_signal(name)
            for j, params in enumerate(cases.SLICER_PARAMS):
                got = ours(sig, sr, params)
                np.testing.assert_array_equal(got, fixture[f"slice_{name}_{kind}_{j}"],
                                              err_msg=f"{name} {kind} {params}")
                assert got[0, 0] == 0 and got[-1, 1] == len(sig)
                assert (got[1:, 0] == got[:-1, 1]).all()      # contiguous, no gaps


def synthetic_signals(sr=8000):
    rs = np.random.RandomState(7)

    def tone(sec):
        return (0.3 * np.sin(np.arange(int(sr * sec)) * 0.3)).astype(np.float32)

    def quiet(sec):
        return (rs.randn(int(sr * sec)) * 1e-4).astype(np.float32)

    yield np.concatenate([quiet(8.0), tone(1.0)])                       # long leading silence
    yield np.concatenate([tone(6.0), quiet(0.4), tone(6.0), quiet(7.0)])  # trailing silence
    yield np.concatenate([tone(6.0), quiet(8.0), tone(6.0), quiet(12.0), tone(2.0)])
    yield np.concatenate([tone(0.5), quiet(0.2)] * 30)
    yield quiet(20.0)
    yield tone(0.3)
    yield np.zeros(0, np.float32)


def test_slicer_live_reference_edge_cases(ref):
    slicer = ref("inference/slicer.py")
    for sig in synthetic_signals():
        for params in cases.SLICER_PARAMS:
            db, min_len, min_int, hop, keep = params
            chunks = slicer.Slicer(sr=8000, threshold=db, min_length=min_len,
                                   min_interval=min_int, hop_size=hop,
                                   max_sil_kept=keep).slice(sig)
            expected = [tuple(int(t) for t in v["split_time"].split(",")) + (int(v["slice"]),)
                        for v in chunks.values()]
            expected = [e for e in expected if e[0] != e[1]]
            np.testing.assert_array_equal(ours(sig, 8000, params),
                                          np.asarray(expected, np.int64).reshape(-1, 3))


def test_slicer_arguments():
    with pytest.raises(ValueError, match="min_length_ms >= min_interval_ms"):
        S.slice_on_silence(np.zeros(100), 8000, min_interval_ms=6000)
    stereo = np.stack([np.ones(50000), np.ones(50000)]).astype(np.float32) * 0.1
    assert S.slice_on_silence(stereo, 8000) == [S.Chunk(0, 50000, False)]


def test_crossfade():
    x = np.random.RandomState(0).randn(10000)
    # pieces of 3000 samples, each after the first starting 800 early (the reference's
    # split_list_by_n, as the converter cuts long chunks)
    pieces = [x[(s - 800 if s >= 800 else s):s + 3000] for s in range(0, 10000, 3000)]
    assert [(len(p)) for p in pieces] == [3000, 3800, 3800, 1800]
    # identical content on both sides of every overlap joins back to the input
    np.testing.assert_allclose(S.crossfade_join(pieces, 800), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(S.crossfade_join(pieces, 800, fade_ratio=1.0), x, atol=1e-12)
    # the fade sits in the middle of the overlap: keep (800-600)//2 of the old piece first
    out = S.crossfade_join([np.ones(1000), np.zeros(1000)], 800, fade_ratio=0.75)
    assert out.shape == (1200,)
    expected = np.concatenate([np.ones(200 + 100), 1 - np.linspace(0, 1, 600), np.zeros(300)])
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(S.crossfade_join([np.ones(3), np.zeros(2)], 0), [1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="shorter"):
        S.crossfade_join([np.ones(1000), np.zeros(10)], 800)


def test_rms_fed_in_blocks_and_slicing_from_it_match_the_whole_clip():
    """RunningRMS over blocks of any size (smaller and larger than its frame groups) is
    frame_rms bit for bit, and slice_rms of it cuts where slice_on_silence does."""
    sr = 44100
    rng = np.random.default_rng(3)
    parts = []
    for k in range(14):     # voiced stretches and pauses, some long enough to cut at
        parts.append((0.3 * rng.standard_normal(int(sr * rng.uniform(0.5, 6)))))
        parts.append(1e-4 * rng.standard_normal(int(sr * rng.uniform(0.1, 2.5))))
    y = np.concatenate(parts).astype(np.float32)
    win, hop = S.slicer_frames(sr)
    whole = S.frame_rms(y, win, hop)
    assert whole.shape == (1 + len(y) // hop,)
    for block in (99991, 1 << 18, 3 * 10 ** 6, len(y)):
        r = S.RunningRMS(win, hop)
        for a in range(0, len(y), block):
            r.feed(y[a:a + block])
        np.testing.assert_array_equal(r.finish(), whole)
    for db in (-40.0, -20.0):
        chunks = S.slice_on_silence(y, sr, threshold_db=db)
        assert len(chunks) > 3
        assert S.slice_rms(whole, len(y), sr, threshold_db=db) == chunks
    with pytest.raises(ValueError, match="too short"):
        S.RunningRMS(2049, 512).finish()      # 2 x 1024 padding only
