"""svcjax.runtime.runner and the fused conversion program: stable random draws, compile discipline.

Tiny random-weight models (tests/tiny_models.py): SoVITS + content encoder + shallow diffusion
+ the NSF-HiFiGAN fixture, DIO F0, on synthetic voiced clips without pauses (one piece each).
The conversion tests compile six or seven programs of eight rows over the eight test devices
(3-10 minutes on a shared 2-core machine): they are marked slow (``pytest -m slow
tests/test_runtime.py``); tests/test_convert_cli.py and tests/test_eval.py run the same
program in the fast suite.
"""

import numpy as np
import pytest

from svcjax.runtime import converter as pipeline, runner as runtime
from tests import tiny_models

SR = 44100


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def conv(model_dirs):
    return tiny_models.converter(model_dirs)


def _clip(n, seed):
    """A voiced, pause-free clip of ``n`` samples (a vibrato tone with noise)."""
    r = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f = 180 + 40 * seed % 7 + 8 * np.sin(2 * np.pi * 5 * t)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.01 * r.standard_normal(n)
    return x.astype(np.float32)


def _opts(**kw):
    return pipeline.ConvertOptions(**{**dict(
        speaker="tenor", f0_method="dio", k_step=4, method="ddim", speedup=2, pad_seconds=0.05,
        loudness_mix=0.5, batch_size=4, seed=3), **kw})


def test_row_count_and_piece_id():
    assert [runtime.row_count(n, 8) for n in (1, 2, 5, 8, 9)] == [1, 8, 8, 8, 16]
    assert [runtime.row_count(n, 1) for n in (1, 2, 3, 5)] == [1, 2, 4, 8]
    x = np.arange(10, dtype=np.float32)
    assert runtime.piece_id(x, 0, 10) == runtime.piece_id(x.copy(), 0, 10)
    assert runtime.piece_id(x, 0, 10) != runtime.piece_id(x, 1, 10)
    assert 0 <= runtime.piece_id(x) < 2 ** 31


def test_map_rows_maps_like_vmap_and_skips_padding_rows():
    import jax
    import jax.numpy as jnp

    calls = []

    def row(w, x, n, scale):
        jax.debug.callback(lambda: calls.append(1))     # runs once per computed row
        return {"y": jnp.tanh(x @ w) * n * scale, "n": n}

    rs = np.random.RandomState(0)
    w = rs.randn(3, 4).astype(np.float32)
    x = rs.randn(8, 5, 3).astype(np.float32)
    n = np.arange(8, dtype=np.float32)
    valid = np.arange(8) < 5
    axes = (None, 0, 0, None)
    want = jax.jit(runtime.map_rows(row, axes, "vmap"))(w, x, n, 2.0, valid)
    for shards in (1, 4, 3):          # 3 does not divide 8 rows: one group
        calls.clear()
        got = jax.jit(runtime.map_rows(row, axes, "map", shards))(w, x, n, 2.0, valid)
        jax.effects_barrier()
        groups = shards if 8 % shards == 0 else 1
        np.testing.assert_allclose(got["y"][:5], want["y"][:5], rtol=1e-6, atol=1e-6)
        if groups == 1:               # the padding rows computed nothing: zeros
            assert len(calls) == 5 and not np.asarray(got["y"][5:]).any()
            assert not np.asarray(got["n"][5:]).any()
        else:                         # vmapped over the groups: every row computed
            np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="rows must be"):
        runtime.map_rows(row, axes, "scan")
    assert runtime.kernel_choices("cpu")["rows"] == "map"
    assert runtime.kernel_choices("gpu")["rows"] == "vmap"


def test_public_views_compile_nothing_for_new_lengths_in_the_same_buckets(model_dirs):
    # The four public entry points are views on one runtime (svcjax.runtime.runner): after a
    # warm-up in one frame bucket (64 frames; the encoder's 20160-sample bucket) with three
    # clips (eight rows on the eight test devices), new lengths in the same buckets, with
    # two or five clips (also eight rows), compile and trace nothing. (One clip alone runs
    # on one device, another program per view: tests/test_inference.py and
    # tests/test_vocoder.py cover it.)
    import jax

    import svcjax

    d = model_dirs
    rt = runtime.Runtime()       # its own runtime: exact counts whatever ran before
    sov = svcjax.load_sovits(d / "sovits", runtime=rt)
    enc = svcjax.load_content_encoder(d / "encoder", runtime=rt)
    dif = svcjax.load_diffusion(d / "diffusion", runtime=rt)
    voc = svcjax.load_vocoder(tiny_models.VOCODER, runtime=rt)
    r = np.random.default_rng(0)

    def run(samples16, frames):
        b, t = len(frames), max(frames)
        units, _ = enc.encode([0.1 * r.standard_normal(n).astype(np.float32)
                               for n in samples16])
        assert units.shape[0] == len(samples16)
        c = r.standard_normal((b, t, sov.module.ssl_dim)).astype(np.float32)
        f0 = np.full((b, t), 220.0, np.float32)
        wav, f0 = sov.infer(c, f0, np.ones((b, t), np.float32), speaker="alto",
                            rng=jax.random.PRNGKey(1), lengths=frames)
        assert wav.shape == (b, t * sov.hop) and np.isfinite(wav).all()
        mel0 = r.standard_normal((b, t, 128)).astype(np.float32) - 5
        mel = dif.sample(c, f0, np.full((b, t), 0.1, np.float32), speaker={1: 1.0},
                         start_mel=mel0, k_step=4, method="ddim", speedup=2, rng=3,
                         lengths=frames)
        out = voc(mel, f0, lengths=frames)
        assert out.shape == (b, t * voc.hop_size) and np.isfinite(out).all()

    with runtime.CompileCounter() as cold:
        run([16500, 18000, 19000], [45, 41, 49])
    # one program per view and options, traced once for its one shape (bucket, 8 rows)
    assert sorted(rt.traces.values()) == [1, 1, 1, 1], rt.traces
    assert sorted(k[0] for k in rt.traces) == ["diffusion.sample", "encoder", "sovits.infer",
                                               "vocoder"]
    assert sov.trace_count == enc.trace_count == voc.trace_count == 1
    assert sum(dif.traces.values()) == 1 and cold.compiles >= 4
    traces = dict(rt.traces)
    with runtime.CompileCounter() as warm:
        run([16100, 20000], [40, 64])
        run([16001, 17500, 18500, 19500, 20100], [64, 58, 44, 41, 62])
    assert warm.compiles == 0, warm.compiles
    assert warm.traces == 0 and rt.traces == traces


@pytest.mark.slow   # ten programs of tiny models: 1-4 minutes on the shared 2 cores
def test_views_with_one_key_per_clip_draw_what_each_clip_draws_alone(model_dirs):
    # rng=jax.random.split(key, B): row i of a batch equals clip i alone with key i (its
    # random draws do not depend on its place in the batch), for SoVITS, shallow diffusion
    # (DDPM: noise at every step) and the vocoder. With one key for the batch instead, row 1
    # draws other numbers: that difference bounds the comparison (the random-weight models
    # depend on their noise only weakly, so no absolute tolerance would do).
    import jax

    import svcjax

    d = model_dirs
    sov = svcjax.load_sovits(d / "sovits")
    dif = svcjax.load_diffusion(d / "diffusion")
    voc = svcjax.load_vocoder(tiny_models.VOCODER)
    r = np.random.default_rng(1)
    b, t = 2, 40
    frames = [40, 33]
    c = r.standard_normal((b, t, sov.module.ssl_dim)).astype(np.float32)
    f0 = np.full((b, t), 200.0, np.float32)
    uv = np.ones((b, t), np.float32)
    vol = np.full((b, t), 0.1, np.float32)
    mel0 = (r.standard_normal((b, t, 128)) - 5).astype(np.float32)
    keys = jax.random.split(jax.random.PRNGKey(5), b)
    dkw = dict(k_step=4, method="ddpm", speedup=1)

    def batch(rng):
        wav, _ = sov.infer(c, f0, uv, speaker=[0, 1], rng=rng, lengths=frames)
        mel = dif.sample(c, f0, vol, speaker=[1, 0], start_mel=mel0, rng=rng,
                         lengths=frames, **dkw)
        return wav, mel, voc(mel0, f0, rng=rng, lengths=frames)

    per_clip, shared = batch(keys), batch(keys[0])
    n = frames[1]
    alone = (sov.infer(c[1:, :n], f0[1:, :n], uv[1:, :n], speaker=1, rng=keys[1])[0],
             dif.sample(c[1:, :n], f0[1:, :n], vol[1:, :n], speaker=0, start_mel=mel0[1:, :n],
                        rng=keys[1], **dkw),
             voc(mel0[1:, :n], f0[1:, :n], rng=keys[1]))
    for name, x, y, z in zip(("sovits", "diffusion", "vocoder"), per_clip, shared, alone):
        x, y, z = x[1, :z.shape[1]], y[1, :z.shape[1]], z[0]
        same, other = np.abs(x - z).max(), np.abs(y - z).max()
        # one row alone and eight rows are different programs (float32 rounding may differ)
        assert other > 0 and same < other / 20, (name, same, other)
    with pytest.raises(ValueError, match=r"rng must be one PRNG key or one per clip \(2, 2\)"):
        sov.infer(c, f0, uv, rng=jax.random.split(keys[0], 3))


def test_component_path_keys_each_piece_by_its_id_not_its_batch():
    # The component-by-component path (stand-in models here, as with a cluster model or the
    # enhancer) hands each view one key per row, fold_in(seed, piece id): a piece gets the
    # same keys alone or among others, whatever its row.
    from tests.test_pipeline import _voiced, identity_converter

    conv, sov = identity_converter()
    seen = []
    infer = sov.infer

    def recording(units, *args, rng=None, **kw):
        seen.append(np.asarray(rng))
        return infer(units, *args, rng=rng, **kw)

    sov.infer = recording
    assert not conv._fusable(pipeline.ConvertOptions())
    a, b, c = _voiced(int(1.05 * SR), 1), _voiced(int(1.0 * SR), 2), _voiced(int(1.1 * SR), 3)
    opt = pipeline.ConvertOptions(speaker="alto", seed=3, pad_seconds=0.05)
    conv.convert([a], opt, progress=False)
    conv.convert([c, a, b], opt, progress=False)      # one batch, rows sorted by length
    conv.convert([a], pipeline.ConvertOptions(speaker="alto", seed=4, pad_seconds=0.05),
                 progress=False)
    alone, together, other_seed = seen
    assert alone.shape == (1, 2) and together.shape == (4, 2)   # rows: 1; 3 -> 4 (1 device)
    np.testing.assert_array_equal(together[1], alone[0])        # a is the middle length
    assert len({tuple(k) for k in together[:3]}) == 3 and (together[3] == together[2]).all()
    assert (other_seed[0] != alone[0]).any()


@pytest.mark.slow   # compiles several conversion programs: minutes on 2 cores
def test_a_file_converts_the_same_alone_or_among_others(conv):
    a, b, c = _clip(int(1.3 * SR), 1), _clip(int(1.25 * SR), 2), _clip(int(1.35 * SR), 3)
    opt = _opts()
    assert conv._fusable(opt)
    alone = conv.convert([a], opt, progress=False)[0]
    together = conv.convert([b, a, c], opt, progress=False)
    other_seed = conv.convert([a], _opts(seed=4), progress=False)[0]
    assert len(alone) == len(a) and np.abs(alone).max() > 1e-3
    # alone is one row on one device; together three rows of eight on eight devices:
    # different programs, so float32 rounding may differ (XLA may tile the rows' matmuls
    # differently) but not the random draws, which move the output by O(1e-2) or more
    scale = np.abs(alone).max()
    np.testing.assert_allclose(together[1], alone, atol=1e-4 * scale, rtol=0)
    assert np.abs(other_seed - alone).max() > 1e-2 * scale
    # the same inputs in another order: the same outputs
    again = conv.convert([c, a, b], opt, progress=False)
    np.testing.assert_allclose(again[1], together[1], atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(again[0], together[2], atol=1e-5 * scale, rtol=0)
    # the models' parameters were placed once, by their own views (what their public APIs
    # use), not again by the conversion program's runtime
    for name, model in (("encoder", conv.encoder), ("sovits", conv.sovits),
                        ("diffusion", conv.diffusion), ("vocoder", conv.vocoder)):
        assert model not in conv.runtime._owned, name
        assert any(k[0] == name for k in model.runtime._owned[model]), name
    assert not conv.runtime._params


@pytest.mark.slow   # compiles several conversion programs: minutes on 2 cores
def test_new_lengths_in_the_same_buckets_compile_nothing(conv):
    # 12 pause-free clips of distinct lengths in two frame buckets (six a bucket: one batch
    # of eight rows each), then 12 clips of other lengths in the same buckets: nothing new
    # is compiled, not even the host F0's interpolation (the options are those of the test
    # above, whose programs may be reused: only the seed, which is data, differs)
    opt = _opts(seed=0, batch_size=8)
    bucket_frames = [(70, 79), (86, 111)]            # buckets of 80 and 112 frames
    pad = 2 * int(0.05 * SR)

    def clips(offset):
        out = []
        for lo, hi in bucket_frames:
            for j in range(6):
                frames = lo + (2 * j + offset) % (hi - lo)
                out.append(_clip(frames * 512 - pad - 7 * j - 100 * offset, j + offset))
        return out

    first, second = clips(0), clips(1)
    assert len({len(x) for x in first + second}) == 24
    with runtime.CompileCounter() as cold:
        out1 = conv.convert(first, opt, progress=False)
    with runtime.CompileCounter() as warm:
        out2 = conv.convert(second, opt, progress=False)
    assert [len(x) for x in out2] == [len(x) for x in second]
    assert all(np.isfinite(x).all() and np.abs(x).max() > 1e-4 for x in out1 + out2)
    assert cold.compiles >= 2, cold.compiles          # at least the two bucket programs
    assert warm.compiles == 0, warm.compiles
    assert warm.traces == 0, warm.traces


@pytest.mark.slow   # compiles several conversion programs: minutes on 2 cores
def test_several_diffusion_settings_from_one_front(conv):
    # F0, units and the SoVITS output once, every setting from them: the same outputs as
    # separate conversions (float32 rounding of differently fused programs aside)
    a, b = _clip(int(1.3 * SR), 5), _clip(int(1.25 * SR), 6)
    opts = [_opts(shallow_diffusion=False), _opts()]
    together = conv.convert_settings([a, b], opts)
    traces = dict(conv.runtime.traces)
    assert len(next(k for k in traces if len(k[1][-1]) == 2)[1][-1]) == 2  # one program
    for o, outs in zip(opts, together):
        alone = conv.convert([a, b], o, progress=False)
        for x, y in zip(outs, alone):
            scale = np.abs(y).max()
            assert len(x) == len(y) and scale > 1e-3
            np.testing.assert_allclose(x, y, atol=1e-4 * scale, rtol=0)
    assert np.abs(together[0][0] - together[1][0]).max() > 1e-3
    with pytest.raises(ValueError, match="differ in 'transpose'"):
        conv.convert_settings([a], [_opts(), _opts(transpose=2)])
