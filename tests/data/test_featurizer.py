"""svcjax.data.featurizer: batching over length buckets is exact, draws are deterministic."""

import numpy as np
import pytest
import soundfile as sf

from svcjax.data import featurizer as featurizer_lib
from tests.data import fakes
from tests.data.conftest import VOICES


def _clips():
    x, sr = sf.read(f"{VOICES}/slt_up5_44k.wav", dtype="float32")
    assert sr == 44100
    lengths = [60, 61, 150, 33]  # frames: three buckets, one bucket shared
    return [x[1000: 1000 + n * 512] for n in lengths], [f"c{i}" for i in range(len(lengths))]


def test_batched_equals_one_by_one_and_compiles_once_per_bucket():
    clips, keys = _clips()
    feat = fakes.featurizer(batch_size=3)
    fakes.TRACES["n"] = 0
    together = feat(clips, keys)
    traces = fakes.TRACES["n"]
    # mel is traced twice per compile (plain + key-shifted); buckets: 64 (60, 61, 33), 160
    assert traces == 2 * 2
    feat(clips, keys)
    assert fakes.TRACES["n"] == traces  # cached: no retrace on a second call
    for clip, key, out in zip(clips, keys, together):
        alone = feat([clip], [key])[0]
        t = len(clip) // 512
        for name, spec in feat.spec().items():
            assert np.shape(out[name]) == tuple(t if d is None else d for d in spec.shape)
            np.testing.assert_allclose(out[name], alone[name], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{key} {name}")


def test_aug_draws_deterministic_and_in_range():
    clips, keys = _clips()
    feat = fakes.featurizer(aug_keyshift=5.0, seed=7)
    draws = [feat.aug_draws(c, k) for c, k in zip(clips, keys)]
    assert draws == [feat.aug_draws(c, k) for c, k in zip(clips, keys)]
    assert len({d[0] for d in draws}) == len(draws)
    for (shift, gain), clip in zip(draws, clips):
        assert -5.0 <= shift <= 5.0
        assert 0.1 <= gain and gain * np.abs(clip).max() <= 1.0 + 1e-4
    other = fakes.featurizer(seed=8)
    assert other.aug_draws(clips[0], keys[0]) != draws[0]
    out = feat(clips[:1], keys[:1])[0]
    assert out["aug_keyshift"] == np.float32(draws[0][0])
    np.testing.assert_allclose(out["aug_vol"], out["volume"] * draws[0][1], rtol=1e-4)


def test_loudness_gain_range_never_clips():
    """The reference's loudness draw (moved here from the unused audio/augment.py, whose
    copy of the formula nothing called): log10 of the gain in [-1, min(1, log10(1 / peak))]."""
    rng = np.random.default_rng(0)
    peaks = np.linspace(0.001, 2.0, 4000) + 1e-5
    gains = np.array([featurizer_lib.loudness_gain(p, rng) for p in peaks])
    logs = np.log10(gains)
    assert (logs >= -1 - 1e-9).all() and (logs <= np.minimum(1, np.log10(1 / peaks)) + 1e-9).all()
    assert (gains * peaks <= 1 + 1e-9).all()            # never clips
    assert logs[:100].max() > 0.5 and logs[-100:].max() < -0.2   # quiet clips get louder
    again = np.random.default_rng(0)
    assert [featurizer_lib.loudness_gain(p, again) for p in peaks[:5]] == list(gains[:5])


def test_key_shifts_span_the_configured_range():
    feat = fakes.featurizer(aug_keyshift=5.0, seed=7)
    clip = np.full(512, 0.1, np.float32)
    shifts = np.array([feat.aug_draws(clip, f"k{i}")[0] for i in range(2000)])
    assert shifts.min() >= -5 and shifts.max() <= 5 and shifts.std() > 2.5   # U(-5, 5): 2.89


def test_feature_selection_and_errors():
    feat = fakes.featurizer(features="f0,volume")
    assert set(feat.spec()) == {"f0", "uv", "volume"}
    clips, keys = _clips()
    assert set(feat(clips[:1], keys[:1])[0]) == {"f0", "uv", "volume"}
    with pytest.raises(ValueError, match="unknown feature"):
        fakes.featurizer(features="units,pitch")
    with pytest.raises(ValueError, match="whole 512-sample hops"):
        feat([np.zeros(1000, np.float32)], ["odd"])
    with pytest.raises(ValueError, match="no extractor for units"):
        featurizer_lib.Featurizer(dict(features="units"))


def test_fingerprint_tracks_what_changes_values():
    a = fakes.featurizer()
    assert a.fingerprint == fakes.featurizer(batch_size=16).fingerprint
    assert a.fingerprint != fakes.featurizer(aug_keyshift=3.0).fingerprint
    assert a.fingerprint != fakes.featurizer(f0_method="harvest").fingerprint


def test_clip_problem_names_non_finite_and_misaligned_features():
    n = 10
    good = dict(audio=np.zeros(n * 512, np.int16), units=np.zeros((n, 4), np.float16),
                f0=np.full(n, 200.0, np.float32), uv=np.ones(n, np.float32),
                volume=np.ones(n, np.float32), mel=np.zeros((n, 8), np.float32),
                aug_keyshift=np.float32(1.0))
    assert featurizer_lib.clip_problem(good) is None
    bad = dict(good, f0=good["f0"].copy())
    bad["f0"][[2, 5]] = np.nan
    assert featurizer_lib.clip_problem(bad) == "f0 has 2 NaN values"
    bad = dict(good, mel=good["mel"].copy())
    bad["mel"][0, 0] = np.inf
    assert featurizer_lib.clip_problem(bad) == "mel has 1 NaN/inf value"
    assert featurizer_lib.clip_problem(dict(good, aug_keyshift=np.float32("nan"))) == \
        "aug_keyshift has 1 NaN value"
    assert featurizer_lib.clip_problem(dict(good, units=good["units"][:7])) == \
        "units has 7 frames, f0 10"
    assert featurizer_lib.clip_problem(dict(good, audio=good["audio"][:-1])) == \
        "audio has 5119 samples, f0 10 frames (5120 samples)"
    # without f0 the first per-frame feature sets the count
    no_f0 = {k: v for k, v in good.items() if k not in ("f0", "uv")}
    assert featurizer_lib.clip_problem(dict(no_f0, mel=good["mel"][:3])) == \
        "mel has 3 frames, units 10"
