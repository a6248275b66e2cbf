"""Small stand-in tasks for the trainer's tests (never shipped).

``ToyTask`` is a two-layer regression trained by :func:`svcjax.trainer.train` with a grain
data pipeline: it exercises the loop, sharding, random keys, checkpoints, resume, preemption,
multi-process and non-finite stops in well under a second per step.

Run as a script it trains in ``WORKDIR`` (used by the kill-and-resume and multi-process tests):

    python -m tests.standins WORKDIR NUM_STEPS [--multi COORD NPROC PID] [--nan-at K] [--sleep S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def toy_config(num_steps=6, batch_size=8, checkpoint_every=3, **train):
    import ml_collections

    from svcjax.trainer import default_train_config

    t = default_train_config("sovits")
    t.update(num_steps=num_steps, batch_size=batch_size, checkpoint_every=checkpoint_every,
             keep_checkpoints=2, eval_every=2, progress=False, learning_rate=1e-2)
    t.update(train)
    return ml_collections.ConfigDict(dict(
        kind="toy", seed=7, train=t, mesh=dict(data=-1, fsdp=1),
        data=dict(sampling_rate=16000, hop_length=160, num_examples=40, nan_at=-1)))


def make_toy_task(config, sleep: float = 0.0):
    import grain
    import jax
    import jax.numpy as jnp
    import optax

    from svcjax.trainer import Task, TrainData

    class ToyTask(Task):
        kind = "toy"
        model_names = ("model",)
        progress_keys = ("loss/total",)

        def init_params(self, rng, batch):
            k1, k2 = jax.random.split(rng)
            return {"model": {"w1": jax.random.normal(k1, (4, 16)) * 0.5,
                              "w2": jax.random.normal(k2, (16, 1)) * 0.5,
                              "b": jnp.zeros((1,))}}

        def dummy_batch(self, n):
            return {"x": np.zeros((n, 4), np.float32), "y": np.zeros((n, 1), np.float32),
                    "lengths": np.zeros((n,), np.int32)}

        def step(self, params, opt_state, batch, rng):
            noise = jax.random.normal(jax.random.fold_in(rng, 1), batch["x"].shape) * 0.1

            def loss_fn(p):
                h = jnp.tanh((batch["x"] + noise) @ p["w1"])
                return jnp.mean(jnp.square(h @ p["w2"] + p["b"] - batch["y"]))

            loss, grads = jax.value_and_grad(loss_fn)(params["model"])
            new, opt = self.update("model", grads, opt_state["model"], params["model"])
            if sleep:
                jax.debug.callback(lambda: time.sleep(sleep))
            return ({"model": new}, {"model": opt},
                    {"loss/total": loss, "grad_norm/model": optax.tree.norm(grads),
                     "audio_frames": jnp.sum(batch["lengths"]).astype(jnp.float32)})

        def summaries(self, params, batch, rng):
            h = jnp.tanh(batch["x"] @ params["model"]["w1"]) @ params["model"]["w2"]
            return {"scalars": {"val/loss": jnp.mean(jnp.square(h - batch["y"]))},
                    "audio": {"val/audio_0": jnp.tile(jnp.tanh(h[0]), 800)},
                    "mels": {"val/mel_0": jnp.outer(jnp.arange(5.0), jnp.arange(3.0))}}

        def make_data(self, mesh):
            pidx, pcount = jax.process_index(), jax.process_count()
            d = self.config.data
            n, nan_at = int(d.num_examples), int(d.nan_at)
            rs = np.random.RandomState(0)
            x = rs.randn(n, 4).astype(np.float32)
            y = (np.sin(x.sum(1, keepdims=True))).astype(np.float32)
            if nan_at >= 0:
                x[nan_at] = np.nan
            gb = int(self.tcfg.batch_size)
            local = gb // pcount

            def example(i):
                return {"x": x[i], "y": y[i], "lengths": np.int32(100)}

            def mine(b):  # this process's rows of the global batch
                return {k: v[pidx * local:(pidx + 1) * local] for k, v in b.items()}

            ds = (grain.MapDataset.range(n).shuffle(seed=3).repeat().map(example)
                  .batch(gb, drop_remainder=True).map(mine))
            val = {"x": x[:2], "y": y[:2], "lengths": np.full((2,), 100, np.int32)}
            return TrainData(iter(ds), n, val)

    return ToyTask(config)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("num_steps", type=int)
    p.add_argument("--multi", nargs=3, metavar=("COORD", "NPROC", "PID"))
    p.add_argument("--nan-at", type=int, default=-1)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--checkpoint-every", type=int, default=3)
    args = p.parse_args(argv)
    if args.multi:
        from svcjax import distributed

        distributed.initialize(args.multi[0], int(args.multi[1]), int(args.multi[2]))
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    from svcjax.trainer import train

    cfg = toy_config(num_steps=args.num_steps, checkpoint_every=args.checkpoint_every)
    cfg.data.nan_at = args.nan_at
    res = train(cfg, args.workdir, task=make_toy_task(cfg, sleep=args.sleep))
    print(f"RESULT step={res.step} preempted={res.preempted} process={jax.process_index()}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------
# A stand-in with the generator's interface (until svcjax.models.synthesizer lands)
# ---------------------------------------------------------------------------------------------

def tiny_synthesizer(segment_frames: int, hop: int, ssl_dim: int, n_speakers: int = 2):
    """A small model with ``SynthesizerTrn``'s training/inference signatures and outputs."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from svcjax.models.layers import Conv1d

    class TinySynth(nn.Module):
        dtype: object = None

        def setup(self):
            self.emb_g = nn.Embed(n_speakers, 8)
            self.pre = Conv1d(8, 3, padding=1)
            self.enc_q = Conv1d(16, 1)
            self.proj = Conv1d(16, 1)
            self.flow = Conv1d(8, 1)
            self.dec = Conv1d(hop, 3, padding=1)
            self.f0_decoder = Conv1d(1, 1)

        def _prior(self, c, f0, uv, g, mask):
            x = self.pre(c) * mask[..., None] + self.emb_g(g)[:, None, :] + uv[..., None]
            m_p, logs_p = jnp.split(self.proj(x), 2, axis=-1)
            return x, m_p, logs_p * 0.1

        def __call__(self, c, f0, uv, spec, g, mask, vol=None, slice_start=None, train=True):
            x, m_p, logs_p = self._prior(c, f0, uv, g, mask)
            m_q, logs_q = jnp.split(self.enc_q(jnp.log(spec)), 2, axis=-1)
            logs_q = logs_q * 0.1
            eps = (jax.random.normal(self.make_rng("noise"), m_q.shape)
                   if self.has_rng("noise") else 0.0)
            z = (m_q + eps * jnp.exp(logs_q)) * mask[..., None]
            z_p = z + self.flow(z)
            zs = jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, segment_frames))(
                z, slice_start)
            o = jnp.tanh(self.dec(zs)).reshape(zs.shape[0], -1)
            lf0 = jnp.log1p(f0 / 700.0)
            pred = self.f0_decoder(jax.lax.stop_gradient(x))[..., 0]
            return dict(o=o, ids_slice=slice_start, mask=mask, z=z, z_p=z_p, m_p=m_p,
                        logs_p=logs_p, m_q=m_q, logs_q=logs_q, pred_lf0=pred, norm_lf0=lf0,
                        lf0=lf0)

        def infer(self, c, f0, uv, g, mask, vol=None, noise_scale=0.35, predict_f0=False):
            x, m_p, logs_p = self._prior(c, f0, uv, g, mask)
            z = m_p + self.flow(m_p) * 0
            o = jnp.tanh(self.dec(z)).reshape(z.shape[0], -1)
            return o, f0

    return TinySynth()


def sovits_test_config(num_steps=2, batch_size=8):
    """A So-VITS-SVC training config at test size (for the stand-in models)."""
    import ml_collections

    from svcjax.trainer import default_train_config

    t = default_train_config("sovits")
    t.update(num_steps=num_steps, batch_size=batch_size, segment_size=4 * 512, progress=False,
             checkpoint_every=2, eval_every=2)
    return ml_collections.ConfigDict(dict(
        kind="sovits", seed=1, train=t, mesh=dict(data=-1, fsdp=1),
        data=dict(sampling_rate=44100, hop_length=512, filter_length=2048, win_length=2048,
                  n_mel_channels=80, mel_fmin=0.0, mel_fmax=22050.0, crop_frames=12),
        model=dict(ssl_dim=16, n_speakers=2, use_automatic_f0_prediction=True,
                   vol_embedding=False),
        discriminator=dict(width_div=16, periods=(2, 3)), init_from=""))


def sovits_batches(config, n_examples=24):
    """A ``mesh -> TrainData`` function of random generator batches (input_pipeline's keys)."""
    import grain
    import jax

    from svcjax.trainer import TrainData

    hop, f = int(config.data.hop_length), int(config.data.crop_frames)
    seg = int(config.train.segment_size) // hop
    rs = np.random.RandomState(0)
    lengths = rs.randint(seg + 2, f + 1, n_examples)
    lengths[0] = f

    def example(i):
        r = np.random.RandomState(100 + i)
        n = int(lengths[i])
        mask = (np.arange(f) < n).astype(np.float32)
        t = np.arange(f * hop) / 44100.0
        audio = 0.3 * np.sin(2 * np.pi * (150 + 50 * r.rand()) * t) * np.repeat(mask, hop)
        return dict(audio=audio.astype(np.float32),
                    units=(r.randn(f, int(config.model.ssl_dim)) * mask[:, None]).astype(np.float32),
                    f0=(200 * mask).astype(np.float32), uv=mask.copy(), volume=mask * 0.1,
                    mask=mask, length=np.int32(n), speaker=np.int32(i % 2),
                    slice_start=np.int32(r.randint(0, n - seg + 1)), valid=np.float32(1))

    def make(mesh):
        gb = int(config.train.batch_size)
        pidx, pcount = jax.process_index(), jax.process_count()
        local = gb // pcount

        def mine(b):
            return {k: v[pidx * local:(pidx + 1) * local] for k, v in b.items()}

        ds = (grain.MapDataset.range(n_examples).shuffle(seed=5).repeat().map(example)
              .batch(gb, drop_remainder=True).map(mine))
        val = jax.tree.map(lambda *x: np.stack(x), example(0), example(1))
        return TrainData(iter(ds), n_examples, val)

    return make


def make_sovits_task(config):
    from svcjax.train_sovits import SovitsTask

    hop = int(config.data.hop_length)
    gen = tiny_synthesizer(int(config.train.segment_size) // hop, hop, int(config.model.ssl_dim))
    return SovitsTask(config, generator=gen, data=sovits_batches(config))


def diffusion_batches(config, n_examples=24):
    """A ``mesh -> TrainData`` function of random diffusion batches (input_pipeline's keys)."""
    import grain
    import jax

    from svcjax.trainer import TrainData

    f = int(round(float(config.data.duration) * 44100 / 512))
    c = int(config.data.encoder_out_channels)
    n_spk = max(1, int(config.model.n_spk))

    def example(i):
        r = np.random.RandomState(200 + i)
        n = int(r.randint(f // 2, f + 1)) if i else f
        mask = (np.arange(f) < n).astype(np.float32)
        shift = float(r.choice([0.0, 3.0]))
        return dict(mel=(r.randn(f, 128) * 2 - 5).astype(np.float32) * mask[:, None],
                    units=r.randn(f, c).astype(np.float32) * mask[:, None],
                    f0=(220 * 2 ** (shift / 12) * mask).astype(np.float32),
                    volume=(0.1 * mask).astype(np.float32), mask=mask, length=np.int32(n),
                    speaker=np.int32(i % n_spk), aug_shift=np.float32(shift),
                    valid=np.float32(1))

    def make(mesh):
        gb = int(config.train.batch_size)
        pidx, pcount = jax.process_index(), jax.process_count()
        local = gb // pcount
        ds = (grain.MapDataset.range(n_examples).shuffle(seed=5).repeat().map(example)
              .batch(gb, drop_remainder=True)
              .map(lambda b: {k: v[pidx * local:(pidx + 1) * local] for k, v in b.items()}))
        val = jax.tree.map(lambda *x: np.stack(x), example(0), example(1))
        return TrainData(iter(ds), n_examples, val)

    return make
