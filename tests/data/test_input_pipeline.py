"""svcjax.data.input_pipeline: crops, masks, static shapes, sharding, seeds, resumable state."""

import jax
import numpy as np
import pytest

from svcjax.data import input_pipeline as ip
from svcjax.runtime.sharding import make_mesh

HOP = 512


def _example(i, n, c=3, m=4):
    """Record ``i`` with ``n`` frames; every per-frame value encodes (record, frame)."""
    t = np.arange(n, dtype=np.float32)
    return dict(
        audio=np.repeat(np.arange(n) % 30000 + 1, HOP).astype(np.int16),
        f0=1000.0 * i + t + 100.0,
        uv=np.ones(n, np.float32),
        volume=t + 1,
        units=np.repeat(t[:, None], c, 1).astype(np.float16),
        mel=np.repeat(t[:, None], m, 1),
        aug_mel=-np.repeat(t[:, None], m, 1),
        aug_vol=2 * (t + 1),
        aug_keyshift=np.float32(3.0 - 0.25 * i),
        speaker=i % 2,
        source=f"spk/{i}.wav#0".encode(),
    )


SOURCE = [_example(i, n) for i, n in enumerate([40, 7, 25, 60, 12, 33, 18, 50, 9, 41, 22, 30])]


def _record(batch):
    return (np.asarray(batch["f0"][:, 0]) // 1000).astype(int).tolist()


def _cfg(kind="generator", **kw):
    cfg = ip.default_config(kind)
    cfg.update(dict(batch_size=4, crop_frames=16, segment_frames=5, prefetch=1))
    cfg.update(kw)
    return cfg


def test_generator_crop_alignment_masks_and_slice():
    crop = ip.GeneratorCrop(crop_frames=16, segment_frames=5)
    rng = np.random.default_rng(0)
    for ex in SOURCE:
        n = ex["f0"].shape[0]
        for _ in range(3):
            out = crop.random_map(ex, rng)
            length = int(out["length"])
            assert length == min(n, 16)
            assert out["audio"].shape == (16 * HOP,) and out["f0"].shape == (16,)
            assert out["units"].shape == (16, 3) and out["units"].dtype == np.float32
            start = int(out["f0"][0] - ex["f0"][0])
            assert 0 <= start <= n - length
            frames = np.arange(start, start + length)
            np.testing.assert_array_equal(out["f0"][:length], ex["f0"][frames])
            np.testing.assert_array_equal(out["units"][:length, 0], frames)
            audio = out["audio"][: length * HOP].reshape(length, HOP) * 32768
            np.testing.assert_array_equal(audio, np.repeat(frames[:, None] + 1, HOP, 1))
            np.testing.assert_array_equal(out["mask"], (np.arange(16) < length).astype(float))
            assert not out["f0"][length:].any() and not out["audio"][length * HOP:].any()
            assert 0 <= out["slice_start"] <= max(0, length - 5)
            assert out["speaker"] == ex["speaker"] and out["valid"] == 1


def test_generator_volume_augmentation_scales_audio_and_volume_alike():
    crop = ip.GeneratorCrop(crop_frames=16, mode="start", vol_aug=True)
    gains = set()
    for seed in range(8):
        out = crop.random_map(SOURCE[0], np.random.default_rng(seed))
        gain = out["volume"][0] / SOURCE[0]["volume"][0]
        np.testing.assert_allclose(out["volume"], SOURCE[0]["volume"][:16] * gain, rtol=1e-5)
        np.testing.assert_allclose(out["audio"][:HOP] * 32768, gain, rtol=1e-4)
        assert gain * np.abs(SOURCE[0]["audio"][:16 * HOP]).max() / 32768 <= 1.0 + 1e-4
        gains.add(round(float(gain), 6))
    assert 1.0 in gains and len(gains) > 2  # about half the clips keep their level


def test_diffusion_crop_uses_key_shift_augmentation():
    ex = SOURCE[3]
    aug = ip.DiffusionCrop(crop_frames=16, aug_prob=1.0).random_map(ex, np.random.default_rng(1))
    start = int(aug["f0"][0] / 2 ** (aug["aug_shift"] / 12) - ex["f0"][0] + 0.5)
    frames = np.arange(start, start + 16)
    assert aug["aug_shift"] == ex["aug_keyshift"]
    np.testing.assert_allclose(aug["f0"], ex["f0"][frames] * 2 ** (ex["aug_keyshift"] / 12),
                               rtol=1e-6)
    np.testing.assert_array_equal(aug["mel"], ex["aug_mel"][frames])
    np.testing.assert_array_equal(aug["volume"], ex["aug_vol"][frames])
    plain = ip.DiffusionCrop(crop_frames=16, aug_prob=0.0).random_map(ex, np.random.default_rng(1))
    assert plain["aug_shift"] == 0
    start = int(plain["f0"][0] - ex["f0"][0])
    np.testing.assert_array_equal(plain["mel"], ex["mel"][start:start + 16])
    short = ip.DiffusionCrop(crop_frames=16).random_map(SOURCE[1], np.random.default_rng(0))
    assert short["length"] == 7 and short["mel"].shape == (16, 4) and not short["mel"][7:].any()


def test_global_batches_static_shapes_sharded_over_devices():
    mesh = make_mesh()
    assert mesh.size == 8
    loader = ip.make_loader(_cfg(batch_size=8), source=SOURCE)
    batches = ip.GlobalBatches(loader, mesh)
    for _ in range(3):
        b = next(batches)
        assert b["audio"].shape == (8, 16 * HOP) and b["units"].shape == (8, 16, 3)
        assert b["speaker"].dtype == np.int32 and b["slice_start"].dtype == np.int32
        assert isinstance(b["f0"], jax.Array) and len(b["f0"].addressable_shards) == 8
        assert b["f0"].addressable_shards[0].data.shape == (1, 16)
    spec = ip.batch_spec(_cfg(batch_size=8), unit_dim=3)
    assert {k: v[0] for k, v in spec.items()} == {k: v.shape for k, v in b.items()}


def test_shuffle_is_seeded():
    def order(**kw):
        cfg = _cfg(num_epochs=1, crop="start", **kw)
        return sum((_record(b) for b in ip.make_loader(cfg, source=SOURCE)), [])
    assert order(shuffle=False) == list(range(12))
    a, b, c = order(seed=1), order(seed=1), order(seed=2)
    assert a == b and a != c and sorted(a) == list(range(12)) and a != list(range(12))


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_host_reads_its_own_shard(shuffle):
    seen = []
    for host in range(2):
        cfg = _cfg(batch_size=4, num_epochs=1, shuffle=shuffle, crop="start")
        loader = ip.make_loader(cfg, source=SOURCE, process_index=host, process_count=2)
        seen.append(sum((_record(b) for b in loader), []))
        assert all(len(b["f0"]) == 2 for b in loader)  # local batch = 4 / 2 hosts
    assert len(seen[0]) == len(seen[1]) == 6
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(12))


def test_restored_state_gives_the_same_batches():
    mesh = make_mesh()
    cfg = _cfg("generator", batch_size=8, vol_aug=True, seed=5, prefetch=2)
    run = ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), mesh, prefetch=2)
    for _ in range(3):
        next(run)
    state = run.get_state()
    expected = [jax.device_get(next(run)) for _ in range(4)]  # crosses epoch boundaries
    resumed = ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), mesh, prefetch=2)
    resumed.set_state(state)
    for want in expected:
        got = jax.device_get(next(resumed))
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # an uninterrupted run and a fresh iterator from the start agree too
    fresh = ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), mesh)
    first = jax.device_get(next(fresh))
    again = ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), mesh)
    np.testing.assert_array_equal(jax.device_get(next(again))["audio"], first["audio"])


def test_finite_pass_pads_the_last_batch():
    cfg = _cfg("diffusion", batch_size=8, num_epochs=1, shuffle=False, crop="start",
               drop_remainder=False)
    batches = list(ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), make_mesh()))
    assert len(batches) == 2
    valid = np.concatenate([np.asarray(b["valid"]) for b in batches])
    assert valid.tolist() == [1.0] * 12 + [0.0] * 4
    assert batches[1]["mel"].shape == (8, 16, 4) and not np.asarray(batches[1]["mask"])[4:].any()


def test_pipeline_on_a_built_corpus(built_corpus):
    data_dir, folder, feat = built_corpus
    src = ip.data_source(data_dir, "train")
    for kind in ("generator", "diffusion"):
        cfg = _cfg(kind, data_dir=str(data_dir), batch_size=2, crop_frames=64,
                   shuffle=False, crop="start", aug_prob=0.0)
        b = next(iter(ip.make_loader(cfg)))
        assert b["units"].shape == (2, 64, feat.unit_dim)
        assert set(b["speaker"].tolist()) <= {0, 1}
        if kind == "generator":
            np.testing.assert_array_equal(b["audio"][0], src[0]["audio"][:64 * HOP] / 32768)
        else:
            np.testing.assert_array_equal(b["mel"][0], src[0]["mel"][:64])
    with pytest.raises(ValueError, match="split 'test' not in"):
        ip.data_source(data_dir, "test")
    with pytest.raises(FileNotFoundError, match="no svc_corpus dataset"):
        ip.data_source(folder.parent.parent / "elsewhere")


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        ip.make_loader(_cfg(batch_size=4), source=SOURCE, process_index=0, process_count=3)
    no_mel = [{k: v for k, v in ex.items() if k != "mel"} for ex in SOURCE]
    with pytest.raises(ValueError, match="has no mel"):
        ip.make_loader(_cfg("diffusion"), source=no_mel)
    with pytest.raises(ValueError, match="unknown batch kind"):
        ip.default_config("vocoder")


def test_orbax_checkpoint_round_trip(tmp_path):
    """The iterator state saved with an Orbax CheckpointManager (grain's handler) resumes."""
    import grain
    import orbax.checkpoint as ocp
    mesh = make_mesh()
    cfg = _cfg("diffusion", batch_size=8, seed=11)
    batches = ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), mesh, prefetch=2)
    next(batches), next(batches)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(batches)))
        manager.wait_until_finished()
    expected = [jax.device_get(next(batches)) for _ in range(3)]
    fresh = ip.GlobalBatches(ip.make_loader(cfg, source=SOURCE), mesh, prefetch=2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(2, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(fresh)))
    for want in expected:
        got = jax.device_get(next(fresh))
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_unusable_records_are_skipped_named_once_and_all_bad_stops(caplog):
    bad = list(SOURCE)
    bad[3] = dict(SOURCE[3], f0=np.where(np.arange(60) == 4, np.nan, SOURCE[3]["f0"]))
    bad[5] = dict(SOURCE[5], units=SOURCE[5]["units"][:20])
    loader = ip.make_loader(_cfg(shuffle=False, batch_size=2), source=bad, process_index=0,
                            process_count=1)
    it = iter(loader)
    seen = [r for _ in range(15) for r in _record(next(it))]  # 3 passes over 10 good records
    assert sorted(set(seen)) == [i for i in range(12) if i not in (3, 5)]
    err = caplog.text   # a logging warning (train.py shows it as "svcjax train: skipping ...")
    assert err.count("skipping record spk/3.wav#0 of the train split: f0 has 1 NaN value") == 1
    assert err.count("skipping record spk/5.wav#0 of the train split: units has 20 frames, "
                     "f0 33") == 1
    nan = [dict(ex, volume=np.full_like(ex["volume"], np.nan)) for ex in SOURCE]
    loader = ip.make_loader(_cfg(batch_size=2), source=nan, process_index=0, process_count=1)
    with pytest.raises(ValueError, match=r"no usable record in the train split \(24 draws in "
                                         r"a row were unusable, e\.g\. spk/\d+\.wav#0: volume"):
        next(iter(loader))


def test_check_speakers(tmp_path):
    import json
    folder = tmp_path / "svc_corpus" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    (folder / "metadata.json").write_text(json.dumps({"speakers": {"alto": 0, "tenor": 1}}))
    assert ip.corpus_speakers(tmp_path) == {"alto": 0, "tenor": 1}
    assert ip.check_speakers({"alto": 0, "tenor": 1}, tmp_path, 2) == []
    notes = ip.check_speakers({"alto": 0, "tenor": 1, "bass": 2}, tmp_path, 3)
    assert notes and "config.spk names bass, which the corpus has no clips of" in notes[0]
    with pytest.raises(ValueError) as e:
        ip.check_speakers({"tenor": 0, "alto": 1}, tmp_path, 2)
    assert str(e.value) == (
        "the corpus's speakers differ from the config's speaker map: corpus "
        '{"alto": 0, "tenor": 1}, config.spk {"tenor": 0, "alto": 1}; train with '
        '--config.spk=\'{"alto": 0, "tenor": 1}\' (ids as in the corpus)')
    with pytest.raises(ValueError, match="corpus .* config.spk {}"):
        ip.check_speakers({}, tmp_path, 2)
    with pytest.raises(ValueError, match=r"needs 2 speakers but model.n_speakers=1; set "
                                         r"--config.model.n_speakers=2"):
        ip.check_speakers({"alto": 0, "tenor": 1}, tmp_path, 1)
