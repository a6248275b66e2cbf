"""The per-backend convolution kernels (``runner.KERNELS["conv"]``, ``layers.ConvKernels``).

Every choice computes the same function: the CPU forms (polyphase transposed conv, matmul
kernel gradients, folded (K, 1) conv) and XLA's native forms (GPU/TPU) must give the same
outputs and gradients, and the choice is a module field, so part of a program's key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svcjax.models import discriminator, layers
from svcjax.runtime import runner

CPU, NATIVE = layers.CPU_CONV_KERNELS, layers.NATIVE_CONV_KERNELS
HIGHEST = jax.lax.Precision.HIGHEST


def _value_and_grads(module, params, x):
    def loss(p, x):
        y = module.apply({"params": p}, x)
        y = y[0] if isinstance(y, tuple) else y
        return jnp.sum(jnp.sin(y) * 0.5 + y ** 2 * 0.1)

    out = module.apply({"params": params}, x)
    grads = jax.grad(loss, argnums=(0, 1))(params, x)
    return out, grads


def _close(a, b, fan_in):
    # float32 sums of fan_in products of O(1) terms in different orders: error ~ sqrt(fan_in)
    # ulps of the magnitudes involved, bounded here with a 16x margin
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        scale = max(1.0, float(np.abs(y).max()))
        np.testing.assert_allclose(x, y, rtol=0, atol=16 * np.sqrt(fan_in) * 1.2e-7 * scale)


@pytest.mark.parametrize("make,x_shape,fan_in", [
    (lambda k: layers.ConvTranspose1d(12, 16, 8, padding=4, weight_norm=True,
                                      precision=HIGHEST, conv_kernels=k), (2, 20, 24), 24 * 16),
    (lambda k: layers.Conv1d(32, 41, 4, 20, groups=8, weight_norm=True, precision=HIGHEST,
                             conv_kernels=k), (2, 64, 16), 2 * 41),
    (lambda k: layers.Conv2d(16, (5, 1), (3, 1), (2, 0), weight_norm=True, precision=HIGHEST,
                             conv_kernels=k), (2, 30, 3, 8), 8 * 5),
    (lambda k: layers.SeparableConv1d(16, 5, padding=2, precision=HIGHEST, conv_kernels=k),
     (2, 24, 16), 16 * 5),
])
def test_cpu_and_native_kernels_agree(make, x_shape, fan_in):
    x = jax.random.normal(jax.random.PRNGKey(1), x_shape)
    cpu, native = make(CPU), make(NATIVE)
    params = cpu.init(jax.random.PRNGKey(0), x)["params"]
    out_c, grads_c = _value_and_grads(cpu, params, x)
    out_n, grads_n = _value_and_grads(native, params, x)
    _close(out_c, out_n, fan_in)
    _close(grads_c, grads_n, fan_in * x_shape[1])


def test_discriminator_kernels_agree():
    y = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (1, 1024, 1))
    cpu = discriminator.MultiPeriodDiscriminator((2, 3), width_div=16, conv_kernels=CPU)
    native = cpu.clone(conv_kernels=NATIVE)
    params = cpu.init(jax.random.PRNGKey(0), y, y)["params"]

    def loss(d, p):
        real, fake, _, _ = d.apply({"params": p}, y, 0.5 * y)
        return sum(jnp.mean(r ** 2) + jnp.mean(f) for r, f in zip(real, fake))

    gc = jax.jit(jax.grad(lambda p: loss(cpu, p)))(params)
    gn = jax.jit(jax.grad(lambda p: loss(native, p)))(params)
    _close(gc, gn, 1024 * 41)


def test_kernel_table_and_program_key():
    assert runner.kernel_choices("cpu")["conv"] == CPU
    assert runner.kernel_choices("gpu")["conv"] == NATIVE
    assert runner.kernel_choices("tpu")["conv"] == NATIVE
    with pytest.raises(ValueError, match="ConvKernels.grad"):
        layers.ConvKernels(grad="fast")
    # the choice is a field: modules differing in it are different jit keys (no ambient read)
    a = layers.ConvTranspose1d(4, 4, 2, conv_kernels=CPU)
    b = layers.ConvTranspose1d(4, 4, 2, conv_kernels=NATIVE)
    assert a != b and hash(a.conv_kernels) != hash(b.conv_kernels)
    x = jnp.ones((1, 6, 4))
    p = a.init(jax.random.PRNGKey(0), x)["params"]
    fn = jax.jit(lambda m, p, x: m.apply({"params": p}, x), static_argnums=0)
    fn(a, p, x), fn(b, p, x)
    assert fn._cache_size() == 2


def test_sovits_model_same_with_native_kernels():
    """The tiny SoVITS fixture (depthwise WN, NSF decoder): its view is built with this
    backend's choice, and the whole inference is the same with XLA's native convolutions."""
    import os

    import svcjax

    tiny = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "sovits", "tiny")
    model = svcjax.load_sovits(os.path.join(tiny, "G_1.pth"), os.path.join(tiny, "config.json"))
    assert model.module.conv_kernels == model.runtime.kernels["conv"] == CPU
    rs = np.random.RandomState(0)
    t = 24
    units = rs.randn(1, t, model.module.ssl_dim).astype(np.float32)
    f0 = rs.uniform(150, 400, (1, t)).astype(np.float32)
    args = (units, f0, np.ones((1, t), np.float32), np.zeros(1, np.int32),
            np.ones((1, t), np.float32), rs.uniform(0, 0.3, (1, t)).astype(np.float32))

    def run(module):
        with jax.default_matmul_precision("highest"):
            wav, _ = module.apply({"params": model.params}, *args, noise_scale=0.0,
                                  method="infer")
        return np.asarray(wav)

    cpu, native = run(model.module), run(model.module.clone(conv_kernels=NATIVE))
    assert np.abs(cpu).max() > 1e-3
    # the decoder's ~20 layers each add float32 reassociation error of the sums it feeds
    np.testing.assert_allclose(cpu, native, rtol=0, atol=1e-5)
