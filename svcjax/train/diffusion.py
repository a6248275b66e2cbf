"""Shallow-diffusion training (the reference's ``train_diff.py``) as a :class:`~svcjax.train.task.Task`.

The score network (:class:`svcjax.models.diffusion.unit2mel.Unit2Mel`) learns to predict the noise
added to the normalised 128-bin vocoder mel: ``t ~ U{0 .. k_step_max - 1}`` per example
(all ``timesteps`` when ``k_step_max`` is 0), MSE over the valid frames
(:func:`svcjax.models.diffusion.unit2mel.training_loss`). Key-shift augmentation comes from the input
pipeline: with probability ``data.aug_prob`` (0.5) a clip's precomputed shifted mel and
volume replace the originals, its F0 is scaled by ``2^(shift/12)`` and the shift conditions
the model (``aug_shift``). AdamW lr 1e-4, weight decay 0, LR x0.5 every 100k steps.

Validation: the loss on the validation clips at fixed ``t`` and noise, and a shallow
reconstruction (the clips' mel noised to ``k`` then denoised with ``infer.method`` /
``infer.speedup``), logged as ``val/mel_l1`` and mel images.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from svcjax.files import atomic_write
from svcjax.train import inputs
from svcjax.train.task import Task, TrainData, note, require


__all__ = ["DiffusionTask"]


def _ref(section, what: str, *names, default=None):
    """The first of ``names`` present in a config section (svcjax or reference spelling);
    ``default`` when none is (a missing field without one is an error naming it)."""
    for n in names:
        if section is not None and n in section and section[n] is not None:
            return section[n]
    if default is None:
        raise ValueError(f"config.{what} has no {' / '.join(names)}; the training configs in "
                         "configs/ (diffusion_44k.py) and imported config.yaml files set it")
    return default


class DiffusionTask(Task):
    kind = "diffusion"
    model_names = ("model",)
    progress_keys = ("loss/total",)
    # train_diff.py: torch's AdamW defaults (its yaml sets only lr and weight decay), StepLR
    # built with last_epoch=-2 on a fresh run (the first LR period is one update longer),
    # and the diffusion's p_losses default (its loss type is not configurable there)
    script_constants = {**Task.script_constants, "betas": (0.9, 0.999), "eps": 1e-8,
                        "lr_decay_begin": 1, "loss_type": "l2"}

    def __init__(self, config, *, model=None, data=None):
        super().__init__(config)
        from svcjax.models.diffusion import gaussian as gaussian_diffusion, unit2mel

        self.model = model or unit2mel.build_model(config)
        if self.compute_dtype != jnp.float32:
            if "dtype" not in getattr(self.model, "__dataclass_fields__", {}):
                raise ValueError(f"train.compute_dtype={self.tcfg.compute_dtype}: the diffusion "
                                 "model has no compute-dtype option; train it in float32")
            self.model = self.model.clone(dtype=self.compute_dtype)
        self.schedule = gaussian_diffusion.Schedule.from_config(config)
        self.k_step_max = self.schedule.effective_k_step_max()
        self.n_spk = int(getattr(self.model, "n_spk", 1) or 1)
        self.loss_type = str(self.tcfg.loss_type)
        d = config.get("data") or {}
        self.sr = int(_ref(d, "data", "sampling_rate"))
        self.hop = int(_ref(d, "data", "hop_length", "block_size"))
        # crop_frames (svcjax only) overrides the reference's crop duration
        self.crop_frames = int(_ref(d, "data", "crop_frames", default=0)) or int(
            round(float(_ref(d, "data", "duration")) * self.sr / self.hop))
        infer = config.get("infer") or {}
        self.val_method = str(_ref(infer, "infer", "method"))
        self.val_speedup = int(_ref(infer, "infer", "speedup"))
        self._data_fn = data

    def sample_rate(self) -> int:
        return self.sr

    def hop_length(self) -> int:
        return self.hop

    def dummy_batch(self, n: int) -> dict[str, np.ndarray]:
        f = self.crop_frames
        return dict(units=np.zeros((n, f, int(self.model.input_channel)), np.float32),
                    f0=np.zeros((n, f), np.float32), volume=np.zeros((n, f), np.float32),
                    mel=np.zeros((n, f, int(self.model.out_dims)), np.float32),
                    mask=np.ones((n, f), np.float32), length=np.full((n,), f, np.int32),
                    speaker=np.zeros((n,), np.int32), aug_shift=np.zeros((n,), np.float32))

    def _inputs(self, batch) -> dict:
        """The pipeline's batch -> ``training_loss``'s (speaker ids -> per-frame weights)."""
        out = {k: batch[k] for k in ("units", "f0", "volume", "mel", "mask")}
        if self.n_spk > 1:
            onehot = jax.nn.one_hot(batch["speaker"], self.n_spk, dtype=jnp.float32)
            out["spk"] = jnp.broadcast_to(onehot[:, None, :], batch["f0"].shape + (self.n_spk,))
        if getattr(self.model, "use_pitch_aug", False):
            out["aug_shift"] = batch["aug_shift"]
        return out

    def init_params(self, rng, batch):
        b = self._inputs(jax.tree.map(lambda x: jnp.asarray(x[:1]), batch))
        t = jnp.zeros((1,), jnp.int32)
        params = self.model.init(rng, b["units"], b["f0"], b["volume"], b["mel"], t,
                                 b.get("spk"), b.get("aug_shift"), b["mask"])["params"]
        return {"model": params}

    def pretrained(self, params):
        src = self.config.get("init_from") or ""
        if not src:
            return params
        from svcjax.runtime.diffusion import load_diffusion

        loaded = load_diffusion(src)
        got = jax.tree.map(np.shape, loaded.params)
        want = jax.tree.map(np.shape, jax.device_get(params["model"]))
        if got != want:
            raise ValueError(f"init_from={src}: its network does not have this config's shape "
                             "(n_layers / n_chans / n_hidden / n_spk / units); fix the config")
        note(f"score network initialised from {src}")
        return {"model": loaded.params}

    def step(self, params, opt_state, batch, rng):
        from svcjax.models.diffusion import unit2mel

        inputs = self._inputs(batch)
        # a batch may carry the step's draws (``t`` (B,), ``noise`` like ``mel``): parity tests
        draws = {k: batch[k] for k in ("t", "noise") if k in batch}

        def loss_fn(p):
            return unit2mel.training_loss(self.model, p, inputs, rng, self.schedule,
                                          k_step_max=self.k_step_max, loss_type=self.loss_type,
                                          **draws)

        loss, grads = jax.value_and_grad(loss_fn)(params["model"])
        new, opt = self.update("model", grads, opt_state["model"], params["model"])
        import optax
        return {"model": new}, {"model": opt}, {
            "loss/total": loss, "grad_norm/model": optax.tree.norm(grads),
            "audio_frames": jnp.sum(batch["length"]).astype(jnp.float32)}

    def summaries(self, params, batch, rng):
        from svcjax.runtime.diffusion import sample_mel
        from svcjax.models.diffusion import unit2mel

        n = min(2, batch["f0"].shape[0])
        b = self._inputs(jax.tree.map(lambda x: x[:n], batch))
        k_loss, k_sample = jax.random.split(rng)
        t = (jnp.arange(n) * 7919) % self.k_step_max  # fixed, spread-out steps
        noise = jax.random.normal(k_loss, b["mel"].shape)
        val_loss = unit2mel.training_loss(self.model, params["model"], b, None, self.schedule,
                                          k_step_max=self.k_step_max, loss_type=self.loss_type,
                                          t=t, noise=noise)
        k = min(100, self.k_step_max)
        mel = sample_mel(self.model, self.schedule, params["model"], b["units"], b["f0"],
                         b["volume"], b.get("spk"), b.get("aug_shift"), b["mel"], b["mask"],
                         k_sample, k=k, method=self.val_method,
                         speedup=max(1, min(self.val_speedup, k)))
        from svcjax.train.losses import mel_l1

        return {"scalars": {"val/loss": val_loss,
                            "val/mel_l1": mel_l1(b["mel"], mel, b["mask"][..., None])},
                "mels": {"gen/mel": mel[0], "gt/mel": b["mel"][0]},
                "frames": batch["length"][:n]}

    def make_data(self, mesh) -> TrainData:
        if self._data_fn is not None:
            return self._data_fn(mesh)
        icfg = inputs.pipeline_config(self.config, "diffusion", self.tcfg)
        inputs.check_speakers(self.config, icfg, self.n_spk, "model.n_spk")
        icfg.crop_frames = self.crop_frames
        require(self.tcfg, ("pitch_aug",))
        aug = bool(self.tcfg.pitch_aug) and bool(getattr(self.model, "use_pitch_aug", False))
        if not aug:
            icfg.aug_prob = 0.0
        return inputs.train_data(icfg, mesh)

    def export(self, params, step: int, outdir: str) -> list[str]:
        """``model_{step}.pt`` (``{'global_step', 'model'}``) + ``config.yaml``, as the
        reference's diffusion saver writes them."""
        import os

        from svcjax.interop import diffusion as conv
        from svcjax.interop import torch_save

        os.makedirs(outdir, exist_ok=True)
        sd = conv.to_state_dict(jax.device_get(params["model"]), self.config)
        path = os.path.join(outdir, f"model_{int(step)}.pt")
        torch_save.save({"global_step": int(step), "model": sd}, path)
        import json

        import yaml

        from svcjax.train.checkpoint import config_to_json

        every = json.loads(config_to_json(self.config))
        ref = {s: every[s] for s in ("data", "model", "vocoder", "infer", "train", "spk")
               if s in every}
        cfg_path = os.path.join(outdir, "config.yaml")
        with atomic_write(cfg_path, "w") as f:
            yaml.safe_dump(ref, f, sort_keys=False)
        return [path, cfg_path]
