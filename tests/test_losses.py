"""Training losses give the reference's numbers (modules/losses.py, train.py) and honour masks."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.train import losses

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def mpd():
    return dict(np.load(os.path.join(FIX, "discriminator", "mpd.npz")))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "losses", "losses.npz")))


def _lists(mpd, kind):
    n = 6
    logits = [mpd[f"d{i}_{kind}"] for i in range(n)]
    fmaps = [[mpd[k] for k in sorted((k for k in mpd if k.startswith(f"d{i}_fmap") and
                                      k.endswith(kind)), key=lambda k: int(k.split("fmap")[1].split("_")[0]))]
             for i in range(n)]
    return logits, fmaps


def test_gan_losses_match_reference(mpd):
    r, fr = _lists(mpd, "real")
    g, fg = _lists(mpd, "fake")
    loss_d, rl, gl = losses.discriminator_loss(r, g)
    np.testing.assert_allclose(loss_d, mpd["loss_disc"], rtol=1e-6)
    assert len(rl) == len(gl) == 6
    loss_g, per = losses.generator_loss(g)
    np.testing.assert_allclose(loss_g, mpd["loss_gen"], rtol=1e-6)
    np.testing.assert_allclose(losses.feature_loss(fr, fg), mpd["loss_fm"], rtol=1e-6)


def test_feature_loss_does_not_train_the_real_branch(mpd):
    r = [[jnp.ones((2, 3))]]
    grad_r = jax.grad(lambda a: losses.feature_loss([[a]], [[jnp.zeros((2, 3))]]))(r[0][0])
    grad_g = jax.grad(lambda a: losses.feature_loss([[jnp.ones((2, 3))]], [[a]]))(r[0][0] * 0)
    assert float(jnp.abs(grad_r).sum()) == 0.0
    assert float(jnp.abs(grad_g).sum()) > 0.0


def test_kl_matches_reference_with_padding(ref):
    t = ref["z_p"].shape[1]
    mask = (np.arange(t)[None, :] < ref["lengths"][:, None]).astype(np.float32)[..., None]
    kl = losses.kl_loss(ref["z_p"], ref["logs_q"], ref["m_p"], ref["logs_p"], mask)
    np.testing.assert_allclose(kl, ref["kl"], rtol=1e-5)
    # (B, T) masks work too, and padded frames do not matter
    garbage = ref["z_p"] + 1e3 * (1 - mask)
    kl2 = losses.kl_loss(garbage, ref["logs_q"], ref["m_p"], ref["logs_p"], mask[..., 0])
    np.testing.assert_allclose(kl2, ref["kl"], rtol=1e-5)


def test_f0_mse(ref):
    np.testing.assert_allclose(losses.f0_mse(ref["pred_lf0"], ref["lf0"]), ref["lf0_mse"], rtol=1e-6)
    t = ref["lf0"].shape[1]
    mask = (np.arange(t)[None, :] < ref["lengths"][:, None])[..., None]
    want = np.sum(((ref["pred_lf0"] - ref["lf0"]) ** 2) * mask) / mask.sum()
    np.testing.assert_allclose(losses.f0_mse(ref["pred_lf0"], ref["lf0"], mask), want, rtol=1e-6)


def test_mel_l1_masked_mean():
    a = np.random.RandomState(0).randn(2, 5, 4).astype(np.float32)
    b = np.zeros_like(a)
    np.testing.assert_allclose(losses.mel_l1(a, b), np.abs(a).mean(), rtol=1e-6)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)[..., None]
    want = (np.abs(a) * mask).sum() / (mask.sum() * 4)
    np.testing.assert_allclose(losses.mel_l1(a, b, mask), want, rtol=1e-6)


def test_bf16_inputs_are_reduced_in_f32(mpd):
    g, _ = _lists(mpd, "fake")
    loss, _ = losses.generator_loss([jnp.asarray(x, jnp.bfloat16) for x in g])
    assert loss.dtype == jnp.float32


def test_mel_l1_matches_train_py(ref):
    """45 x L1 between the 80-bin mel of a generated wave (mel_spectrogram_torch) and the mel
    of the target's linear spectrogram (spec_to_mel_torch), via svcjax's audio front-end."""
    from svcjax.audio import spectrogram as S

    spec = S.linear_spectrogram(ref["y"])
    y_mel = S.spec_to_mel(spec)
    np.testing.assert_allclose(y_mel, ref["y_mel"], rtol=1e-4, atol=1e-4)
    y_hat_mel = S.mel_spectrogram(ref["y_hat"])
    np.testing.assert_allclose(losses.mel_l1(y_mel, y_hat_mel) * 45, ref["mel_l1"], rtol=1e-5)
