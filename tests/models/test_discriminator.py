"""The multi-period discriminator computes what the reference's computes, from D_*.pth files."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.interop.torch_params import CheckpointMismatchError
from svcjax.models import discriminator as D

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "discriminator")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "mpd.npz")))


def test_parity_with_reference(ref):
    div = int(ref["width_div"])
    params = D.load_discriminator(os.path.join(FIX, "D_test.pth"), width_div=div)
    model = D.MultiPeriodDiscriminator(width_div=div)
    rs, gs, frs, fgs = jax.jit(model.apply)({"params": params}, ref["y"][..., None],
                                            ref["y_hat"][..., None])
    assert len(rs) == 6
    for i in range(6):
        np.testing.assert_allclose(rs[i], ref[f"d{i}_real"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gs[i], ref[f"d{i}_fake"], rtol=1e-4, atol=1e-5)
        for j, (a, b) in enumerate(zip(frs[i], fgs[i])):
            np.testing.assert_allclose(a, ref[f"d{i}_fmap{j}_real"], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(b, ref[f"d{i}_fmap{j}_fake"], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip():
    from svcjax.interop import torch_pickle

    sd = torch_pickle.load(os.path.join(FIX, "D_test.pth"))["model"]
    params = D.load_discriminator(os.path.join(FIX, "D_test.pth"), width_div=16)
    back = D.discriminator_state_dict(params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_full_size_matches_reference_key_list():
    """The default (width_div=1) model has exactly the reference's D_*.pth keys and shapes."""
    listing = {}
    # shared/ lies beside the checkout (as in CI)
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "reference",
                        "keys", "keys_D.txt")
    if not os.path.exists(path):
        pytest.skip("reference key list not available")
    for line in open(path):
        k, shape = line.rstrip("\n").split("\t")
        listing[k] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    model = D.MultiPeriodDiscriminator()
    x = jax.ShapeDtypeStruct((1, 10240, 1), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, x)["params"]
    sd = D.discriminator_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes))
    assert {k: v.shape for k, v in sd.items()} == listing
    n = sum(int(np.prod(v)) for v in listing.values())
    assert 46.6e6 < n < 46.8e6


def test_wrong_width_names_every_tensor():
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        D.load_discriminator(os.path.join(FIX, "D_test.pth"), width_div=8)


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_discriminator(tmp_path / "D_0.pth")


@pytest.mark.skipif(not os.environ.get("SVCJAX_REF"), reason="set SVCJAX_REF=/path/to/so-vits-svc "
                    "to check the full-size discriminator against the reference")
def test_full_size_parity_live(tmp_path):
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
    from make_discriminator import build_mpd, import_reference

    models, _, _ = import_reference(os.environ["SVCJAX_REF"])
    mpd = build_mpd(models, torch, 1)
    torch.save({"model": mpd.state_dict(), "iteration": 1, "optimizer": None,
                "learning_rate": 1e-4}, tmp_path / "D_0.pth")
    params = D.load_discriminator(tmp_path / "D_0.pth")
    y = torch.rand(1, 1, 4096) * 2 - 1
    y_hat = torch.rand(1, 1, 4096) * 2 - 1
    with torch.no_grad():
        rs, gs, _, _ = mpd(y, y_hat)
    out = D.MultiPeriodDiscriminator().apply({"params": params}, y.numpy()[:, 0, :, None],
                                             y_hat.numpy()[:, 0, :, None])
    for a, b in zip(out[0] + out[1], rs + gs):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)
