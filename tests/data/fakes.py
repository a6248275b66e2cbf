"""Small, fast jax extractors with the Featurizer's contracts (for testing the mechanics).

They are frame-local with reflect padding at the ends, like the real spectrogram and volume
functions, so batching and padding must not change their valid frames.
"""

import jax.numpy as jnp
import numpy as np

HOP = 512
UNIT_DIM = 4
N_MELS = 8
TRACES = {"n": 0}


def volume(audio):
    t = audio.shape[1] // HOP
    p = jnp.pad(audio ** 2, ((0, 0), (HOP // 2, HOP // 2)), mode="reflect")
    return jnp.sqrt(p[:, : t * HOP].reshape(audio.shape[0], t, HOP).mean(-1))


def mel(audio, keyshift):
    TRACES["n"] += 1
    t = audio.shape[1] // HOP
    p = jnp.pad(audio, ((0, 0), (768, 768)), mode="reflect")
    frames = p[:, jnp.arange(t)[:, None] * HOP + jnp.arange(2048)[None]]
    freqs = jnp.linspace(0.01, 1.0, N_MELS)[None, None, :] * 2.0 ** (keyshift[:, None, None] / 12)
    basis = jnp.cos(jnp.arange(2048.0)[None, :, None] * freqs)
    return jnp.log(jnp.abs(jnp.einsum("btn,bnm->btm", frames, basis)) + 1e-5)


def units(audio, lengths):
    t = audio.shape[1] // HOP
    w = jnp.asarray(np.random.default_rng(0).normal(size=(HOP, UNIT_DIM)), jnp.float32)
    return audio[:, : t * HOP].reshape(audio.shape[0], t, HOP) @ w


def f0(x, sr):
    t = len(x) // HOP
    frames = x[: t * HOP].reshape(t, HOP)
    crossings = (np.diff(np.sign(frames), axis=1) != 0).sum(1)
    f = crossings * sr / (2.0 * HOP)
    uv = (np.abs(frames).max(1) > 0.02).astype(np.float32)
    return np.where(uv > 0, f, 0.0).astype(np.float32), uv


def featurizer(**config):
    from svcjax.featurizer import Featurizer
    config.setdefault("batch_size", 4)
    return Featurizer(config, units=units, unit_dim=UNIT_DIM, f0=f0, mel=mel, n_mels=N_MELS,
                      volume=volume)
