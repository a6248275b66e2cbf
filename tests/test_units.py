"""svcjax.runtime.units: the ContentEncoder runtime (buckets, sharding, trace counts) and unit->frame maps."""

import os

import jax
import numpy as np
import pytest

import svcjax
from svcjax.audio.features import align_frames
from svcjax.runtime import runner as runtime
from svcjax.runtime import units as U
from svcjax.models import content_encoder as ce

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "content_encoder")


def fixture_maps():
    ref = np.load(os.path.join(FIX, "reference.npz"))
    pairs = ref["interp_pairs"]
    split = np.cumsum(pairs[:, 1])[:-1]
    return pairs, {m: np.split(ref[f"interp_{m}"], split) for m in ("nearest", "left")}


def index_map(n_units, n_frames, mode):
    """Which unit each frame copies: interpolate the unit indices themselves."""
    units = np.arange(n_units, dtype=np.float32)[:, None]
    return U.interpolate_units(units, n_frames, mode)[:, 0].round().astype(np.int64)


@pytest.mark.parametrize("mode", ["nearest", "left"])
def test_index_maps_match_the_reference(mode):
    """utils.repeat_expand_2d of the reference (saved by make_content_encoder.py), exactly."""
    pairs, maps = fixture_maps()
    for (n_units, n_frames), want in zip(pairs, maps[mode]):
        np.testing.assert_array_equal(index_map(n_units, n_frames, mode), want,
                                      err_msg=f"{mode} {n_units}->{n_frames}")


def test_interpolate_units_batches_and_errors():
    rng = np.random.default_rng(1)
    units = rng.standard_normal((2, 10, 3)).astype(np.float32)
    out = U.interpolate_units(units, [17, 9], unit_lengths=[10, 6])
    assert out.shape == (2, 17, 3)
    np.testing.assert_array_equal(out[0], U.interpolate_units(units[0], 17))
    np.testing.assert_array_equal(out[1, :9], U.interpolate_units(units[1, :6], 9))
    assert not out[1, 9:].any()
    with pytest.raises(ValueError, match="unknown alignment mode 'cubic'"):
        U.interpolate_units(units[0], 5, "cubic")
    # nearest / left gather on the host: units of new lengths compile nothing
    for mode in ("nearest", "left"):
        U.interpolate_units(units[:1, :3], [7], mode)
        with runtime.CompileCounter() as cc:
            out = U.interpolate_units(units, [29, 23], mode, unit_lengths=[10, 7])
        assert cc.compiles == 0 and out.shape == (2, 29, 3)
        np.testing.assert_array_equal(out[1, :23],
                                      np.asarray(align_frames(units[1, :7], 23, mode)))
    # linear blends in one program per (source, target) length bucket: new lengths in the
    # buckets already used compile nothing, and give align_frames' float32 numbers
    U.interpolate_units(units[:1, :9], [30], "linear")
    with runtime.CompileCounter() as cc:
        out = U.interpolate_units(units, [29, 23], "linear", unit_lengths=[10, 7])
    assert cc.compiles == 0 and out.shape == (2, 29, 3)
    for j, (m, n) in enumerate(((10, 29), (7, 23))):
        np.testing.assert_allclose(out[j, :n], np.asarray(align_frames(units[j, :m], n, "linear")),
                                   rtol=0, atol=2.4e-7 * np.abs(units).max())


def test_public_api_is_registered():
    assert svcjax.load_content_encoder is U.load_content_encoder
    assert svcjax.init_content_encoder is U.init_content_encoder
    assert svcjax.interpolate_units is U.interpolate_units


def test_encoder_runtime_buckets_shards_and_traces_once_per_bucket():
    """One trace per (bucket, rows); B > 1 runs as row_count(B) rows split over the devices
    (svcjax.runtime.runner); frames() aligns."""
    # a runtime of its own (by default encoders share the process's runtime and its programs)
    enc = svcjax.load_content_encoder(os.path.join(FIX, "contentvec_tiny.pt"), kind="vec256l9",
                                      runtime=runtime.Runtime())
    assert enc.pretrained and enc.dim == 16 and enc.hop == 320 and enc.min_samples == 400
    start = enc.trace_count
    assert start == 0
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(40000).astype(np.float32) * 0.1
    # lengths 16001..20160 share one bucket: one trace for B=1, one for B=2 (8 rows)
    a = enc(wav[:17000])
    b = enc(wav[:19999])
    assert enc.trace_count == 1
    both, frames = enc.encode([wav[:17000], wav[:19999]])
    padded = np.stack([wav[:20000], wav[:20000]])
    again, _ = enc.encode(padded, lengths=[19999, 17000])  # a padded batch with its lengths
    assert enc.trace_count == 2
    np.testing.assert_array_equal(frames, [enc.num_frames(17000), enc.num_frames(19999)])
    np.testing.assert_allclose(both[0, : frames[0]], a[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(both[1], b[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(again[0], b[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(again[1, : frames[0]], a[0], atol=1e-5, rtol=0)
    # more clips than devices: rows padded to a multiple of them, all devices used
    many = enc([wav[: 16100 + 100 * j] for j in range(jax.local_device_count() + 2)])
    assert enc.trace_count == 3 and many.shape[0] == jax.local_device_count() + 2
    rows = enc.runtime.rows(len(many))
    assert rows == 16 and rows % jax.local_device_count() == 0
    params = enc.runtime.params("encoder", enc.params, rows, owner=enc)
    assert len(params["layer_norm"]["scale"].sharding.device_set) == jax.local_device_count()
    traces = enc.trace_count
    np.testing.assert_allclose(many[9, : frames[0]], a[0], atol=1e-5, rtol=0)  # 17000 samples
    # at the 44.1 kHz / 512 frame rate
    n44 = 17000 * 44100 // 16000 // 512
    c = enc.frames(wav[:17000], n44)
    np.testing.assert_array_equal(c[0], U.interpolate_units(a[0], n44))
    assert enc.trace_count == traces
    # another encoder of the same network: no new trace for these shapes
    twin = svcjax.load_content_encoder(os.path.join(FIX, "contentvec_tiny.pt"), kind="vec256l9",
                                       runtime=enc.runtime)
    with runtime.CompileCounter() as cc:
        np.testing.assert_array_equal(twin(wav[:17000]), a)
    assert cc.traces == 0 and cc.compiles == 0 and twin.trace_count == traces
    with pytest.raises(ValueError, match="clip 1 has 399 samples at 16 kHz; .* at least 400"):
        enc([wav[:1000], wav[:399]])
    with pytest.raises(ValueError, match="lengths .* do not fit"):
        enc(np.zeros((2, 100)), lengths=[100, 101])


def test_init_content_encoder_says_it_is_random():
    cfg = ce.default_config("hubertsoft", conv_layers=[[16, 10, 5]] + [[16, 3, 2]] * 4
                            + [[16, 2, 2]] * 2, embed_dim=32, ffn_dim=64, num_heads=4, final_dim=8,
                            num_layers=12)
    enc = svcjax.init_content_encoder("hubertsoft", rng=3, config=cfg)
    assert not enc.pretrained and "RANDOM weights" in repr(enc)
    assert enc.num_frames(16000) == 50 and enc.min_samples == 320  # 40 zero samples each side
    units = enc(np.zeros(16000, np.float32))
    assert units.shape == (1, 50, 8) and np.isfinite(units).all()
