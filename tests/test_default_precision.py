"""The main models at JAX's DEFAULT matmul precision, what users run, against "highest".

The parity tests run at "highest" (tests/conftest.py): float32 matmuls and convolutions on
every backend. Users run the default, which differs by backend: on CPU it is float32 too
(XLA's CPU backend has no reduced-precision path), on GPU matmuls and convolutions take
TF32 inputs (10 explicit mantissa bits: unit roundoff u = 2^-11 ~ 4.9e-4), on TPU one bf16
pass (7 bits: u = 2^-8 ~ 3.9e-3). Each model here (SoVITS inference, the NSF-HiFiGAN
vocoder, the diffusion sampler, the content encoder; the tiny random-weight models of
tests/tiny_models.py) runs once at "highest" and once under
``jax.default_matmul_precision("default")``.

Tolerance: the error growth of each network, measured rather than guessed. Rounding a
matmul's inputs to the default format moves each of them by a relative <= u; how far such
input errors carry through the network is measured on the network itself: it is run again
at "highest" from its parameters moved by a random relative +-u (u of this backend's
default format: 2^-24 on CPU, as float32's own rounding) and the relative RMS change of the
output is the envelope ``e``. The default run rounds both operands of every matmul (weights
and activations, errors of about the same size, adding in quadrature: ~sqrt(2) e), so it may
differ from "highest" by ``FACTOR * e`` with ``FACTOR = 4`` (sqrt(2), and a factor of about
3 for ``e`` being one random draw); plus ``FLOOR = 2^-18`` (64 float32 ulps, a summation
reordered by the compiler) of the output's RMS. A model whose default precision lost more
than its own rounding explains (bf16 where TF32 was expected, an accumulation in half
precision) fails.
"""

import jax
import numpy as np
import pytest

from tests import tiny_models

FACTOR = 4.0
FLOOR = 2.0 ** -18
SR = 44100


def _unit_roundoff() -> float:
    """u of the format the default precision feeds matmuls on this backend."""
    return {"cpu": 2.0 ** -24, "gpu": 2.0 ** -11, "tpu": 2.0 ** -8}[jax.default_backend()]


def _perturbed(params, seed: int = 0):
    """Every parameter moved by a random relative +-u (its rounding at the default format)."""
    rs = np.random.RandomState(seed)
    u = _unit_roundoff()
    return jax.tree.map(lambda a: (np.asarray(a, np.float64) * (
        1.0 + u * rs.choice([-1.0, 1.0], np.shape(a)))).astype(np.float32), params)


def _rel_rms(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def _check(name: str, run, run_perturbed, traces) -> None:
    """``run()`` at highest and at default precision, ``run_perturbed()`` at highest;
    ``traces()`` counts the model's traces (the default run must compile its own program:
    the precision is part of jit's cache key, so it is not the highest one reused)."""
    with jax.default_matmul_precision("highest"):
        high = run()
        moved = run_perturbed()
    before = traces()
    with jax.default_matmul_precision("default"):
        default = run()
    assert traces() == before + 1, f"{name}: the default-precision run was not traced anew"
    assert np.isfinite(high).all() and np.isfinite(default).all()
    assert np.sqrt(np.mean(np.square(high))) > 0, f"{name}: the output is all zeros"
    envelope = _rel_rms(moved, high)
    got = _rel_rms(default, high)
    tol = FACTOR * envelope + FLOOR
    print(f"\n{name} [{jax.default_backend()}]: default vs highest {got:.2e} (relative RMS); "
          f"envelope at u = {_unit_roundoff():.1e}: {envelope:.2e}; tolerance {tol:.2e}")
    assert got <= tol, (f"{name}: default precision differs from highest by {got:.3g} "
                        f"(relative RMS), more than {FACTOR} x the network's error growth "
                        f"{envelope:.3g} + {FLOOR:.3g}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models.make_model_dirs(tmp_path_factory.mktemp("models"))


def _voice(n_frames: int, hop: int = 512, seed: int = 0):
    """A vibrato tone with a little noise, and its F0 per frame."""
    r = np.random.default_rng(seed)
    t = np.arange(n_frames * hop) / SR
    f = 220 + 20 * np.sin(2 * np.pi * 5 * t)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.01 * r.standard_normal(len(t))
    return x.astype(np.float32), f[::hop][:n_frames].astype(np.float32)


def test_sovits_inference(models):
    from svcjax.runtime.sovits import SovitsModel, load_sovits

    m = load_sovits(models / "sovits")
    other = SovitsModel(_perturbed(jax.device_get(m.params)), m.config)
    t = 48
    units = np.random.RandomState(1).randn(1, t, m.module.ssl_dim).astype(np.float32)
    _, f0 = _voice(t)
    uv = np.ones((1, t), np.float32)
    _check("SoVITS infer", lambda: m.infer(units, f0[None], uv)[0],
           lambda: other.infer(units, f0[None], uv)[0], lambda: m.trace_count)


def test_vocoder():
    from svcjax.runtime.vocoder import Vocoder, load_vocoder

    v = load_vocoder(tiny_models.VOCODER)
    other = Vocoder(_perturbed(jax.device_get(v.params)), v.config)
    x, f0 = _voice(40)
    mel = np.asarray(v.mel(x[None]))
    f0 = f0[None, :mel.shape[1]]
    _check("NSF-HiFiGAN vocoder", lambda: v(mel, f0), lambda: other(mel, f0),
           lambda: v.trace_count)


def test_diffusion_sampler(models):
    from svcjax.runtime.diffusion import Diffusion, load_diffusion

    d = load_diffusion(models / "diffusion")
    other = Diffusion(_perturbed(d.params), d.config)
    t = 32
    r = np.random.RandomState(2)
    units = r.randn(1, t, int(d.config.data.encoder_out_channels)).astype(np.float32)
    _, f0 = _voice(t)
    vol = np.full((1, t), 0.1, np.float32)
    start = r.randn(1, t, 128).astype(np.float32)
    kw = dict(speaker=0, start_mel=start, k_step=4, method="dpm-solver++", speedup=2)
    _check("diffusion sampler (DPM-Solver++, 2 steps)",
           lambda: d.sample(units, f0[None], vol, **kw),
           lambda: other.sample(units, f0[None], vol, **kw), lambda: sum(d.traces.values()))


def test_content_encoder(models):
    from svcjax.runtime.units import ContentEncoder, load_content_encoder

    enc = load_content_encoder(models / "encoder")
    other = ContentEncoder(_perturbed(jax.device_get(enc.params)), enc.config)
    x, _ = _voice(40)
    wav = x[None, ::3][:, :16000]   # 16 kHz-ish, one second: the encoder's own rate
    _check("content encoder", lambda: enc.encode(wav)[0], lambda: other.encode(wav)[0],
           lambda: enc.trace_count)
