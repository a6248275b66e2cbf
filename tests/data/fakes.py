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


def mel(audio, keyshift, lengths):
    TRACES["n"] += 1
    keyshift = jnp.broadcast_to(jnp.asarray(keyshift, jnp.float32), audio.shape[:1])
    t = audio.shape[1] // HOP
    p = jnp.pad(audio, ((0, 0), (768, 768)), mode="reflect")
    frames = p[:, jnp.arange(t)[:, None] * HOP + jnp.arange(2048)[None]]
    freqs = jnp.linspace(0.01, 1.0, N_MELS)[None, None, :] * 2.0 ** (keyshift[:, None, None] / 12)
    basis = jnp.cos(jnp.arange(2048.0)[None, :, None] * freqs)
    return jnp.log(jnp.abs(jnp.einsum("btn,bnm->btm", frames, basis)) + 1e-5)


def units(audio, lengths):
    """Host call like the content encoder's: numpy (B, L), lengths -> (B, T, C)."""
    t = audio.shape[1] // HOP
    w = np.random.default_rng(0).normal(size=(HOP, UNIT_DIM)).astype(np.float32)
    out = audio[:, : t * HOP].reshape(audio.shape[0], t, HOP) @ w
    return out * (np.arange(t)[None, :, None] < (lengths // HOP)[:, None, None])


def f0(audio, lengths, sr=44100):
    """Host call like extract_f0 on a padded batch: zero-crossing pitch per frame."""
    t = audio.shape[1] // HOP
    frames = audio[:, : t * HOP].reshape(audio.shape[0], t, HOP)
    crossings = (np.diff(np.sign(frames), axis=-1) != 0).sum(-1)
    valid = np.arange(t)[None] < (lengths // HOP)[:, None]
    uv = ((np.abs(frames).max(-1) > 0.02) & valid).astype(np.float32)
    return np.where(uv > 0, crossings * sr / (2.0 * HOP), 0.0).astype(np.float32), uv


def featurizer(**config):
    """Fake extractors throughout (fast; mel counts its traces)."""
    from svcjax.data.featurizer import Featurizer
    config.setdefault("batch_size", 4)
    return Featurizer(config, units=units, unit_dim=UNIT_DIM, f0=f0, mel=mel, n_mels=N_MELS,
                      volume=volume)


# A tiny random content encoder: same architecture as vec768l12, 32 channels.
TINY_ENCODER = dict(conv_layers=[[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2,
                    embed_dim=32, ffn_dim=64, num_heads=4, num_layers=12, conv_pos=16,
                    conv_pos_groups=4)


def svcjax_featurizer(**config):
    """Featurizer.from_config: tiny random encoder, dio F0, svcjax's mel and volume.

    One length bucket covers the test clips (growth 2), so each program compiles once.
    """
    from svcjax.data.featurizer import Featurizer
    config = dict(dict(random_encoder=True, encoder_overrides=TINY_ENCODER, f0_method="dio",
                       batch_size=4, bucket_growth=2.0), **config)
    return Featurizer.from_config(config)
