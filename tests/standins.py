"""Small stand-in tasks for the trainer's tests (never shipped).

``ToyTask`` is a two-layer regression trained by :func:`svcjax.train.loop.train` with a grain
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

    # every field the loop and the optimizer read (svcjax.train.task.LOOP_FIELDS,
    # OPTIMIZER_FIELDS): the GAN's AdamW and per-epoch LR decay at a toy learning rate
    t = ml_collections.ConfigDict(dict(
        num_steps=num_steps, batch_size=batch_size, steps_per_epoch=0, log_every=1,
        eval_every=2, checkpoint_every=checkpoint_every, keep_checkpoints=2,
        async_checkpoint=True, progress=False, learning_rate=1e-2, betas=(0.8, 0.99),
        eps=1e-9, weight_decay=0.01, lr_decay=0.999875, lr_decay_steps=0, lr_decay_begin=0,
        grad_clip=0.0, compute_dtype="float32"))
    t.update(train)
    return ml_collections.ConfigDict(dict(
        kind="toy", seed=7, train=t, mesh=dict(data=-1, fsdp=1),
        data=dict(sampling_rate=16000, hop_length=160, num_examples=40, nan_at=-1)))


def make_toy_task(config, sleep: float = 0.0):
    import grain
    import jax
    import jax.numpy as jnp
    import optax

    from svcjax.train.task import Task, TrainData

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
        from svcjax.runtime import distributed

        distributed.initialize(args.multi[0], int(args.multi[1]), int(args.multi[2]))
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    from svcjax import log
    from svcjax.train.loop import train

    log.configure("svcjax train")   # as train.py does: the loop's messages on stderr
    cfg = toy_config(num_steps=args.num_steps, checkpoint_every=args.checkpoint_every)
    cfg.data.nan_at = args.nan_at
    res = train(cfg, args.workdir, task=make_toy_task(cfg, sleep=args.sleep))
    print(f"RESULT step={res.step} preempted={res.preempted} process={jax.process_index()}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def diffusion_batches(config, n_examples=24):
    """A ``mesh -> TrainData`` function of random diffusion batches (input_pipeline's keys)."""
    import grain
    import jax

    from svcjax.train.task import TrainData

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
