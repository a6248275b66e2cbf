"""Volume, frame alignment and the loudness-envelope mix against their definitions and the
reference (live and the committed fixture).

Tolerances: ``rtol=1e-5`` with an absolute floor of ``1e-6 x`` the array's peak for values
near zero (float32 sums in a different order).
"""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from svcjax.audio import features as F
from tests.audio import cases


def close(actual, expected, rtol=1e-5, floor=1e-6):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=floor * max(np.abs(expected).max(), 1e-30))


def volume64(y, hop=512):
    """RMS of [t*hop - hop/2, (t+1)*hop - hop/2) with the start mirrored (no edge repeat)."""
    y = np.asarray(y, np.float64)
    padded = np.pad(y ** 2, (hop // 2, (hop + 1) // 2), mode="reflect")
    t = len(y) // hop
    return np.sqrt(padded[:t * hop].reshape(t, hop).mean(axis=1))


def interp_linear64(v, n):
    """F.interpolate(mode='linear', align_corners=False) in float64."""
    scale = len(v) / n
    pos = np.maximum((np.arange(n) + 0.5) * scale - 0.5, 0)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(v) - 1)
    w = pos - i0
    return (1 - w) * v[i0] + w * v[i1]


def change_rms64(src, sr1, conv, sr2, rate):
    r1 = librosa.feature.rms(y=src, frame_length=sr1 // 2 * 2, hop_length=sr1 // 2)[0]
    r2 = librosa.feature.rms(y=conv, frame_length=sr2 // 2 * 2, hop_length=sr2 // 2)[0]
    r1 = interp_linear64(r1.astype(np.float64), len(conv))
    r2 = np.maximum(interp_linear64(r2.astype(np.float64), len(conv)), 1e-6)
    return conv * r1 ** (1 - rate) * r2 ** (rate - 1)


@pytest.mark.parametrize("name", cases.voice_names())
def test_volume_matches_definition(name):
    y, _ = cases.voice(name)
    got = F.volume(y)
    assert got.shape == (len(y) // 512,)
    close(got, volume64(y))


def test_volume_batch_padding_and_edges():
    y, _ = cases.voice("kal_16k.wav")
    a, b = y[:20000], y[3000:12345]
    batch = np.zeros((2, 20000), np.float32)
    batch[0], batch[1, :len(b)] = a, b
    out = np.asarray(F.volume(batch))
    close(out[0], F.volume(a))
    close(out[1, :len(b) // 512], F.volume(b))      # zero padding never reaches valid frames
    assert F.volume(y[:511]).shape == (0,)
    close(F.volume(y[:512]), volume64(y[:512]))
    close(F.volume(y, hop_length=320), volume64(y, 320))
    assert F.volume(batch.astype(jnp.bfloat16)).dtype == jnp.float32


def test_align_frames_against_fixture(fixture):
    for src, tgt, mode in cases.ALIGN_CASES:
        content = cases.align_input(src)                       # (C, T) as the reference
        got = F.align_frames(content.T[None], tgt, mode)[0]
        close(got, fixture[f"align_{src}_{tgt}_{mode}"])


def test_align_frames_live_reference(ref):
    import torch

    utils = ref("utils.py")
    rs = np.random.RandomState(3)
    for src, tgt in [(50, 86), (99, 170), (251, 432), (301, 520), (10, 10), (10, 20), (9, 4),
                     (640, 1103)]:
        content = rs.randn(3, src).astype(np.float32)
        for mode in ("left", "nearest", "linear"):
            expected = utils.repeat_expand_2d(torch.from_numpy(content), tgt, mode).numpy().T
            got = np.asarray(F.align_frames(content.T, tgt, mode))
            np.testing.assert_array_equal(got, expected)   # same float32 index arithmetic


def test_align_frames_shapes_and_errors():
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    out = np.asarray(F.align_frames(x, 9, "left"))
    assert out.shape == (2, 9, 3)
    # left: source frame j covers target frames below (j + 1) * 9 / 5
    np.testing.assert_array_equal(out[0, :, 0] // 3, [0, 0, 1, 1, 2, 2, 3, 3, 4])
    with pytest.raises(ValueError, match="mode"):
        F.align_frames(x, 9, "cubic")
    with pytest.raises(ValueError, match="frames"):
        F.align_frames(np.zeros((0, 3)), 9)


def test_mix_loudness_envelope_definition_fixture_and_batch(fixture):
    src, conv, sr = cases.rms_mix_inputs()
    for rate in (0.0, 0.3):
        expected = change_rms64(src, sr, conv, sr, rate)
        got = F.mix_loudness_envelope(src, sr, conv, sr, rate)
        close(got, expected)
        close(got, fixture[f"rms_mix_{rate}"])
    close(F.mix_loudness_envelope(src, sr, conv, sr, 1.0), conv)
    # padded batch with per-row lengths gives each row's unpadded result
    s2, c2 = src[:2100], conv[:1700]
    src_b = np.zeros((2, 3300), np.float32)
    conv_b = np.zeros((2, 3072), np.float32)
    src_b[0], conv_b[0] = src, conv
    src_b[1, :2100], conv_b[1, :1700] = s2, c2
    out = np.asarray(F.mix_loudness_envelope(src_b, sr, conv_b, sr, 0.3,
                                             source_lengths=np.array([3300, 2100]),
                                             converted_lengths=np.array([3072, 1700])))
    close(out[0], change_rms64(src, sr, conv, sr, 0.3))
    close(out[1, :1700], change_rms64(s2, sr, c2, sr, 0.3))
    assert not out[1, 1700:].any()
    # different rates for source and converted
    close(F.mix_loudness_envelope(src, 800, conv, 1000, 0.5), change_rms64(src, 800, conv, 1000, 0.5))


def test_mix_loudness_envelope_live_reference(ref):
    import torch

    utils = ref("utils.py")
    y, sr = cases.voice("slt_up5_44k.wav")
    conv = (np.random.RandomState(0).randn(90112) * 0.1).astype(np.float32)
    expected = utils.change_rms(y, sr, torch.from_numpy(conv.copy()), sr, 0.4).numpy()
    close(F.mix_loudness_envelope(y, sr, conv, sr, 0.4), expected)


def test_volume_against_reference_fixture(fixture):
    close(F.volume(fixture["clip"]), fixture["volume"])


def test_volume_live_reference(ref):
    import torch

    utils = ref("utils.py")
    y, _ = cases.voice("hts_32k.wav")
    close(F.volume(y), utils.Volume_Extractor(512).extract(torch.from_numpy(y)[None]).numpy())


def test_jit_once_per_shape():
    y = np.random.RandomState(0).randn(3, 5000).astype(np.float32)
    F.volume(y)
    before = F._volume_jit._cache_size()
    jax.jit(F.volume)(y * 0.5)
    F.volume(y * 2.0)
    assert F._volume_jit._cache_size() == before
