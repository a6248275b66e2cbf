"""F0 encodings agree with the reference's definitions (computed here in NumPy)."""

import numpy as np

from svcjax.audio import pitch


def _coarse_ref(f0):
    f0_mel = 1127 * np.log(1 + f0 / 700)
    mel_min, mel_max = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    a = 254 / (mel_max - mel_min)
    b = mel_min * a - 1
    f0_mel = np.where(f0_mel > 0, f0_mel * a - b, f0_mel)
    c = np.round(f0_mel).astype(np.int64)
    c = c * (c > 0)
    c = c + (c < 1)
    c = c * (c < 256)
    return c + (c >= 256) * 255


def test_coarse_matches_reference_definition():
    f0 = np.concatenate([[0.0, 1.0, 49.0, 50.0, 440.0, 1100.0, 1104.0, 1110.0, 3000.0],
                         np.random.RandomState(0).uniform(0, 1200, 1000)]).astype(np.float32)
    got = np.asarray(pitch.f0_to_coarse(f0))
    np.testing.assert_array_equal(got, _coarse_ref(f0.astype(np.float64)))
    assert got[0] == 1 and got[3] == 1 and got[5] == 255
    assert got[7] == 0  # the reference's overflow quirk, kept for parity


def test_lf0_roundtrip():
    f0 = np.linspace(50, 1100, 101, dtype=np.float32)
    lf0 = np.asarray(pitch.f0_to_lf0(f0))
    np.testing.assert_allclose(lf0, 2595 * np.log10(1 + f0 / 700) / 500, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pitch.lf0_to_f0(lf0)), f0, rtol=1e-5)


def test_normalize_lf0():
    rs = np.random.RandomState(1)
    lf0 = rs.rand(2, 10).astype(np.float32)
    uv = (rs.rand(2, 10) > 0.3).astype(np.float32)
    uv[1] = 0
    mask = np.ones((2, 10), np.float32)
    mask[0, 8:] = 0
    got = np.asarray(pitch.normalize_lf0(lf0, mask, uv))
    mean0 = (lf0[0] * uv[0]).sum() / uv[0].sum()
    np.testing.assert_allclose(got[0], (lf0[0] - mean0) * mask[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[1], lf0[1], rtol=1e-6)  # no voiced frame: mean = 0/9999


def test_against_live_reference(ref):
    """The reference's own utils.f0_to_coarse / normalize_f0 (skipped without a checkout)."""
    import torch

    utils = ref("utils.py")
    rs = np.random.RandomState(2)
    f0 = np.concatenate([[0.0, 50.0, 440.0, 1100.0, 1104.9, 1110.0, 3000.0],
                         rs.uniform(0, 1200, 2000)]).astype(np.float32)
    np.testing.assert_array_equal(pitch.f0_to_coarse(f0),
                                  utils.f0_to_coarse(torch.from_numpy(f0)).numpy())
    lf0 = rs.rand(3, 1, 40).astype(np.float32)
    uv = (rs.rand(3, 40) > 0.4).astype(np.float32)
    uv[2] = 0
    mask = np.ones((3, 1, 40), np.float32)
    expected = utils.normalize_f0(torch.from_numpy(lf0), torch.from_numpy(mask),
                                  torch.from_numpy(uv), random_scale=False).numpy()
    got = pitch.normalize_lf0(lf0[:, 0], mask[:, 0], uv)
    np.testing.assert_allclose(got, expected[:, 0], rtol=1e-6, atol=1e-7)
