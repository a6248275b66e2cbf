"""The PyTorch-semantics layers compute what torch.nn computes, weight norm included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.interop.torch_params import state_dict_to_params, params_to_state_dict, CheckpointMismatchError
from svcjax.models import layers

torch = pytest.importorskip("torch")


def _compare(flax_module, torch_module, x_nct, rtol=1e-5, atol=1e-5, channels_last_axis=1):
    x = np.asarray(x_nct, np.float32)
    x_cl = np.moveaxis(x, channels_last_axis, -1)
    shapes = jax.eval_shape(flax_module.init, jax.random.PRNGKey(0), jnp.asarray(x_cl))["params"]
    sd = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
    params = state_dict_to_params(sd, shapes)
    y = flax_module.apply({"params": params}, jnp.asarray(x_cl))
    with torch.no_grad():
        ref = torch_module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(y), np.moveaxis(ref, channels_last_axis, -1), rtol=rtol, atol=atol)
    return params, sd


@pytest.mark.parametrize("k,s,p,d,g", [(5, 1, 2, 1, 1), (3, 2, 0, 3, 1), (41, 4, 20, 1, 4), (7, 1, 3, 1, 8)])
@pytest.mark.parametrize("wn", [False, True])
def test_conv1d(k, s, p, d, g, wn):
    torch.manual_seed(0)
    m = torch.nn.Conv1d(8, 16, k, s, padding=p, dilation=d, groups=g)
    if wn:
        m = torch.nn.utils.weight_norm(m)
        with torch.no_grad():
            m.weight_g.mul_(torch.rand_like(m.weight_g) + 0.5)
    f = layers.Conv1d(16, k, s, p, d, groups=g, weight_norm=wn)
    _compare(f, m, np.random.RandomState(0).randn(2, 8, 57))


@pytest.mark.parametrize("k,u,op", [(16, 8, 0), (4, 2, 0), (5, 3, 0), (3, 4, 0), (7, 3, 2)])
@pytest.mark.parametrize("wn", [False, True])
def test_conv_transpose1d(k, u, op, wn):
    torch.manual_seed(0)
    p = (k - u + 1) // 2
    m = torch.nn.ConvTranspose1d(6, 6, k, u, padding=p, output_padding=op)  # square: layout matters
    if wn:
        m = torch.nn.utils.weight_norm(m)
        with torch.no_grad():
            m.weight_g.mul_(torch.rand_like(m.weight_g) + 0.5)
    f = layers.ConvTranspose1d(6, k, u, p, output_padding=op, weight_norm=wn)
    params, sd = _compare(f, m, np.random.RandomState(1).randn(2, 6, 13))
    back = params_to_state_dict(params)
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key])


def test_conv_transpose1d_dilated_uses_general_path():
    torch.manual_seed(0)
    m = torch.nn.ConvTranspose1d(3, 5, 4, 2, padding=1, dilation=2)
    _compare(layers.ConvTranspose1d(5, 4, 2, 1, dilation=2), m, np.random.RandomState(5).randn(1, 3, 9))


@pytest.mark.parametrize("wn", [False, True])
def test_conv2d(wn):
    torch.manual_seed(0)
    m = torch.nn.Conv2d(4, 8, (5, 1), (3, 1), padding=(2, 0))
    if wn:
        m = torch.nn.utils.weight_norm(m)
    f = layers.Conv2d(8, (5, 1), (3, 1), (2, 0), weight_norm=wn)
    _compare(f, m, np.random.RandomState(2).randn(2, 4, 30, 5))


def test_linear_and_layernorm():
    torch.manual_seed(0)
    _compare(layers.Linear(7), torch.nn.Linear(5, 7), np.random.RandomState(3).randn(3, 4, 5),
             channels_last_axis=-1)
    ln = torch.nn.LayerNorm(6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    _compare(layers.LayerNorm(), ln, 10 + 3 * np.random.RandomState(4).randn(3, 4, 6),
             channels_last_axis=-1)


def test_weight_norm_init_matches_v_norm():
    f = layers.Conv1d(4, 3, weight_norm=True)
    params = f.init(jax.random.PRNGKey(0), jnp.ones((1, 10, 2)))["params"]
    v = params["kernel_v"]
    np.testing.assert_allclose(params["kernel_g"], np.sqrt((np.asarray(v) ** 2).sum(axis=(0, 1))), rtol=1e-6)


def test_mismatch_lists_every_problem():
    f = layers.Conv1d(4, 3)
    shapes = jax.eval_shape(f.init, jax.random.PRNGKey(0), jnp.ones((1, 10, 2)))["params"]
    sd = {"weight": np.zeros((4, 3, 3), np.float32), "extra.weight": np.zeros(2, np.float32)}
    with pytest.raises(CheckpointMismatchError) as e:
        state_dict_to_params(sd, shapes, what="G_0.pth")
    msg = str(e.value)
    assert "G_0.pth" in msg and "missing (1): bias\n" in msg and "unexpected (1): extra.weight" in msg
    assert "wrong shape (1): weight" in msg


@pytest.mark.parametrize("shape", [
    (2, 100, 16, 64, 41, 4, (20, 20), 1, 4),    # the scale discriminator's grouped layers
    (3, 57, 8, 8, 5, 1, (4, 4), 2, 8),           # depthwise, dilated
    (2, 33, 12, 12, 4, 3, (1, 2), 3, 2),         # asymmetric padding, stride and dilation
    (1, 40, 6, 9, 3, 2, (0, 1), 1, 1),           # groups=1 (the polyphase transposed conv)
])
def test_grouped_conv1d_gradients_equal_autodiff(shape):
    from svcjax.models.layers import _conv1d, grouped_conv1d

    b, t, c, o, k, s, pad, d, g = shape
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.randn(b, t, c).astype(np.float32))
    w = jnp.asarray(rs.randn(k, c // g, o).astype(np.float32))
    hi = jax.lax.Precision.HIGHEST
    ours = jax.grad(lambda x, w: jnp.sum(jnp.sin(grouped_conv1d(x, w, s, pad, d, g, hi))),
                    (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(_conv1d(x, w, s, pad, d, g, hi))), (0, 1))(x, w)
    for a, r in zip(ours, ref):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5 * float(jnp.abs(r).max()))


def test_conv2d_k_by_1_kernel_equals_the_2d_convolution():
    from svcjax.models.layers import Conv2d

    x = jnp.asarray(np.random.RandomState(1).randn(2, 40, 3, 8).astype(np.float32))
    m = Conv2d(16, (5, 1), (3, 1), padding=(2, 0), precision="highest")
    p = m.init(jax.random.PRNGKey(0), x)
    y = m.apply(p, x)
    k = p["params"]["kernel"]
    ref = jax.lax.conv_general_dilated(x, k, (3, 1), [(2, 2), (0, 0)],
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       precision="highest") + p["params"]["bias"]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
