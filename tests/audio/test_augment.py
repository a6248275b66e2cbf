"""Augmentation draws: ranges as the reference's, deterministic without a key."""

import jax
import numpy as np

from svcjax.audio import augment as A


def test_random_gain_range():
    audio = np.zeros((4000, 64), np.float32)
    peaks = np.linspace(0.001, 2.0, 4000)
    audio[:, 0] = peaks
    gains = np.asarray(A.random_gain(jax.random.key(0), audio))
    high = np.minimum(1, np.log10(1 / (peaks + 1e-5)))
    logs = np.log10(gains)
    assert (logs >= -1 - 1e-5).all() and (logs <= high + 1e-5).all()
    assert (gains * peaks <= 1 + 1e-4).all()          # never clips
    np.testing.assert_array_equal(A.random_gain(None, audio), np.ones(4000))
    np.testing.assert_array_equal(A.random_gain(jax.random.key(0), audio), gains)


def test_random_keyshift():
    k = np.asarray(A.random_keyshift(jax.random.key(1), (10000,)))
    assert k.min() >= -5 and k.max() <= 5 and k.std() > 2.5
    assert not np.asarray(A.random_keyshift(None, (3,))).any()
