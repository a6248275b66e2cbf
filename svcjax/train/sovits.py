"""So-VITS-SVC's GAN training (the reference's ``train.py``) as a :class:`~svcjax.train.task.Task`.

One jitted step does what the reference does per batch, in the same order:

1. the generator's training forward (``SynthesizerTrn.__call__``: posterior encoder, flow,
   prior, F0 decoder, and the NSF-HiFiGAN decoder on a 20-frame slice), kept as a VJP;
2. the discriminator step: LSGAN loss on the real slice and the (detached) generated one,
   AdamW update of ``d``;
3. the generator step against the *updated* discriminator: LSGAN + feature matching (x2)
   + ``c_mel`` x mel L1 (80-bin mel of the generated slice vs the mel of the real slice's
   linear spectrogram) + ``c_kl`` x KL + F0 MSE (with automatic F0 prediction), pulled back
   through the forward's VJP (the forward runs once), AdamW update of ``g``.

The linear spectrogram the posterior encoder reads is computed on the device from the
batch's audio (:mod:`svcjax.audio.spectrogram`, the reference's ``spectrogram_torch``).
Random streams: ``noise`` (flow prior / source noise / F0 scaling) and ``dropout``, split
from the step key.

Fine-tuning (``config.init_from``): a reference ``G_*.pth`` (e.g. the 4.1 base model
``G_0.pth``) or an svcjax model directory; ``config.init_discriminator_from`` (default: the
``D_*.pth`` beside a ``G_*.pth``) for the discriminator. As the reference's
``load_checkpoint`` does, tensors whose shape differs (typically ``emb_g`` when the speaker
count differs) keep their fresh initialisation and are listed. Optimizer states start fresh.
"""

from __future__ import annotations

import importlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.files import atomic_write
from svcjax.train import losses
from svcjax.models.discriminator import (PERIODS, MultiPeriodDiscriminator,
                                         discriminator_state_dict, load_discriminator)
from svcjax.train import inputs
from svcjax.runtime import runner
from svcjax.train.task import Task, TrainData, note, require


__all__ = ["SovitsTask", "generator_state_dict", "export_reference_checkpoints"]


def _cut(x, start, size):
    """Per-example ``x[b, start[b]:start[b] + size]`` along axis 1."""
    return jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, size, axis=0))(x, start)


class SovitsTask(Task):
    kind = "sovits"
    model_names = ("g", "d")
    progress_keys = ("loss/g/total", "loss/d/total", "loss/g/mel")
    train_fields = ("segment_size", "c_mel", "c_kl")
    # train.py: torch's AdamW weight decay (0.01; betas and eps come from config.json), the
    # LR decayed once per epoch by ExponentialLR (no offset)
    script_constants = {**Task.script_constants, "weight_decay": 0.01, "lr_decay_steps": 0,
                        "lr_decay_begin": 0}
    # True: unrolled layer stacks in the step (CPU: ~10x faster gradients, slower compile);
    # False: scanned; None: this backend's choice, svcjax.runtime.runner.KERNELS
    unroll_layers: bool | None = None

    def __init__(self, config, *, generator=None, spectrogram=None, data=None):
        """``generator`` / ``spectrogram`` / ``data`` replace the real model, the audio
        front-end module and the data pipeline (a ``mesh -> TrainData`` function), for tests."""
        super().__init__(config)
        d = config.data
        self.hop = int(d.hop_length)
        self.sr = int(d.sampling_rate)
        self.stft = dict(n_fft=int(d.filter_length), hop_length=self.hop,
                         win_length=int(d.win_length))
        self.mel_kw = dict(sampling_rate=self.sr, n_fft=int(d.filter_length),
                           n_mels=int(d.n_mel_channels), fmin=float(d.mel_fmin),
                           fmax=None if d.mel_fmax is None else float(d.mel_fmax))
        self.segment = int(self.tcfg.segment_size)
        if self.segment % self.hop:
            raise ValueError(f"train.segment_size={self.segment} must be a multiple of "
                             f"data.hop_length={self.hop}")
        self.seg_frames = self.segment // self.hop
        m = config.model
        self.auto_f0 = bool(m.get("use_automatic_f0_prediction", True))
        self.vol_embedding = bool(m.get("vol_embedding", False))
        cdt = None if self.compute_dtype == jnp.float32 else self.compute_dtype
        # this backend's convolution kernels (runner.KERNELS["conv"]), a field of both models
        conv_kernels = runner.kernel_choices()["conv"]
        if generator is None:
            from svcjax.models import synthesizer

            generator = synthesizer.from_config(config, dtype=cdt, conv_kernels=conv_kernels)
        self.G = generator
        dcfg = config.get("discriminator") or {}
        self.D = MultiPeriodDiscriminator(tuple(dcfg.get("periods", PERIODS)),
                                          int(dcfg.get("width_div", 1)), dtype=cdt,
                                          conv_kernels=conv_kernels)
        self.spectrogram = spectrogram or importlib.import_module("svcjax.audio.spectrogram")
        self._data_fn = data

    # -- parameters ---------------------------------------------------------------------------

    def dummy_batch(self, n: int) -> dict[str, np.ndarray]:
        f = self.seg_frames
        return dict(audio=np.zeros((n, f * self.hop), np.float32),
                    units=np.zeros((n, f, int(self.config.model.ssl_dim)), np.float32),
                    f0=np.zeros((n, f), np.float32), uv=np.zeros((n, f), np.float32),
                    volume=np.zeros((n, f), np.float32), mask=np.ones((n, f), np.float32),
                    length=np.full((n,), f, np.int32), speaker=np.zeros((n,), np.int32),
                    slice_start=np.zeros((n,), np.int32))

    def init_params(self, rng, batch):
        kg, kd = jax.random.split(rng)
        b = jax.tree.map(lambda x: x[:1], batch)
        spec = jnp.zeros(b["f0"].shape + (self.stft["n_fft"] // 2 + 1,), jnp.float32)
        g = self.G.init({"params": kg}, b["units"], b["f0"], b["uv"], spec, b["speaker"],
                        b["mask"], b["volume"] if self.vol_embedding else None,
                        slice_start=b["slice_start"], train=False)["params"]
        y = jnp.zeros((1, self.segment, 1), jnp.float32)
        d = self.D.init(kd, y, y)["params"]
        return {"g": g, "d": d}

    def pretrained(self, params):
        src = self.config.get("init_from") or ""
        if not src:
            return params
        params = dict(params)
        params["g"] = self._load_generator(src, params["g"])
        dsrc = self.config.get("init_discriminator_from") or ""
        if not dsrc:
            base = os.path.basename(src)
            if re.match(r"^G_.*\.pth$", base):
                cand = os.path.join(os.path.dirname(src), "D_" + base[2:])
                dsrc = cand if os.path.isfile(cand) else ""
        if dsrc:
            dcfg = self.config.get("discriminator") or {}
            params["d"] = load_discriminator(dsrc, int(dcfg.get("width_div", 1)),
                                             tuple(dcfg.get("periods", PERIODS)))
            note(f"discriminator initialised from {dsrc}")
        else:
            note("no discriminator checkpoint (init_discriminator_from): the discriminator "
                 "starts from random weights")
        return params

    def _load_generator(self, src: str, fresh):
        from svcjax.train import checkpoint
        from svcjax.interop import sovits, torch_params

        src = os.fspath(src)
        if checkpoint.is_model_dir(src):
            loaded, cfg = checkpoint.load_model_dir(src)
            if "enc_q" not in loaded:
                raise ValueError(f"{src} holds an inference-only generator (no enc_q); "
                                 "fine-tuning needs a training checkpoint (G_*.pth)")
            sd = generator_state_dict(loaded, cfg)
        else:
            sd = sovits.read_state_dict(src)
        rename = sovits.shared_flow_rename(
            sd, bool(self.config.model.get("flow_share_parameter", False)))
        merged, report = torch_params.merge_state_dict(sd, jax.device_get(fresh), rename=rename)
        if not any(k.startswith("enc_q") for k in sd):
            raise ValueError(f"{src} has no enc_q (a compressed release checkpoint?); "
                             "fine-tuning needs the full training checkpoint")
        n_loaded = len(jax.tree.leaves(fresh)) - len(report["kept"])
        note(f"generator initialised from {src}: {n_loaded} tensors loaded")
        if report["kept"] or report["wrong_shape"] or report["unexpected"]:
            note("  kept from random init (not in the checkpoint or another shape): "
                 + ", ".join(report["kept"][:12]) + (" ..." if len(report["kept"]) > 12 else ""))
            if report["unexpected"]:
                note("  unused checkpoint tensors: " + ", ".join(report["unexpected"][:12]))
        return merged

    # -- the step -----------------------------------------------------------------------------

    def _spec(self, batch):
        lengths = batch["length"].astype(jnp.int32) * self.hop
        spec = self.spectrogram.linear_spectrogram(batch["audio"].astype(jnp.float32),
                                                   lengths=lengths, **self.stft)
        return jax.lax.stop_gradient(spec)

    def step(self, params, opt_state, batch, rng):
        grads_g, _, new_d, opt_d, metrics = self.gradients(params, opt_state, batch, rng)
        new_g, opt_g = self.update("g", grads_g, opt_state["g"], params["g"])
        return {"g": new_g, "d": new_d}, {"g": opt_g, "d": opt_d}, metrics

    def gradients(self, params, opt_state, batch, rng):
        """The step up to the generator's update: ``(grads_g, grads_d, new_d, opt_d,
        metrics)``. ``rng=None``: every random draw zero and no dropout (parity tests).
        Layer stacks are unrolled here on CPU (the generator's ``unroll_layers`` field, see
        :meth:`train_generator`): their scanned reverse pass is ~10x slower there
        (``unroll_layers = False``: scanned, for tests on tiny shapes where compile time
        dominates)."""
        return self._gradients(params, opt_state, batch, rng, self.train_generator())

    def train_generator(self):
        """The generator as the training step traces it: ``self.G`` with this task's
        ``unroll_layers`` (default: the backend's ``KERNELS["train_unroll_layers"]``) as a
        module field, so the choice is part of what the jitted step closes over, not state
        read while tracing."""
        unroll = self.unroll_layers
        if unroll is None:
            unroll = runner.kernel_choices()["train_unroll_layers"]
        G = self.G
        if getattr(G, "unroll_layers", None) not in (None, bool(unroll)):
            G = G.clone(unroll_layers=bool(unroll))
        return G

    def _gradients(self, params, opt_state, batch, rng, G):
        if rng is None:
            rngs = {}
        else:
            k_noise, k_drop = jax.random.split(rng)
            rngs = {"noise": k_noise, "dropout": k_drop}
        spec = self._spec(batch)
        vol = batch["volume"] if self.vol_embedding else None

        def forward(pg):
            out = G.apply({"params": pg}, batch["units"], batch["f0"], batch["uv"], spec,
                               batch["speaker"], batch["mask"], vol,
                               slice_start=batch["slice_start"], train=True, rngs=rngs)
            diff = {k: out[k] for k in ("o", "z_p", "m_p", "logs_p", "logs_q", "pred_lf0")}
            aux = {k: jax.lax.stop_gradient(out[k]) for k in ("ids_slice", "mask", "lf0")}
            return diff, aux

        gen, pullback, aux = jax.vjp(forward, params["g"], has_aux=True)
        ids = aux["ids_slice"]
        y = _cut(batch["audio"].astype(jnp.float32), ids * self.hop, self.segment)[..., None]
        seg_mask = _cut(aux["mask"], ids, self.seg_frames)[..., None]
        y_mel = self.spectrogram.spec_to_mel(_cut(spec, ids, self.seg_frames), **self.mel_kw)

        def y_hat_of(gen):
            return gen["o"].reshape(y.shape[0], -1, 1)

        # 1. discriminator on the real and the detached generated slice
        def d_loss_fn(pd):
            rs, gs, _, _ = self.D.apply({"params": pd}, y, jax.lax.stop_gradient(y_hat_of(gen)))
            return losses.discriminator_loss(rs, gs)[0]

        loss_d, grads_d = jax.value_and_grad(d_loss_fn)(params["d"])
        new_d, opt_d = self.update("d", grads_d, opt_state["d"], params["d"])

        # 2. generator against the updated discriminator
        c_mel, c_kl = float(self.tcfg.c_mel), float(self.tcfg.c_kl)

        def g_loss_fn(gen):
            y_hat = y_hat_of(gen)
            _, gs, fr, fg = self.D.apply({"params": new_d}, y, y_hat)
            loss_gen, _ = losses.generator_loss(gs)
            loss_fm = losses.feature_loss(fr, fg)
            y_hat_mel = self.spectrogram.mel_spectrogram(
                y_hat[..., 0].astype(jnp.float32), hop_length=self.hop,
                win_length=self.stft["win_length"], **self.mel_kw)
            loss_mel = losses.mel_l1(y_mel, y_hat_mel, seg_mask) * c_mel
            loss_kl = losses.kl_loss(gen["z_p"], gen["logs_q"], gen["m_p"], gen["logs_p"],
                                     aux["mask"]) * c_kl
            loss_lf0 = (losses.f0_mse(gen["pred_lf0"], aux["lf0"], aux["mask"]) if self.auto_f0
                        else jnp.zeros((), jnp.float32))
            total = loss_gen + loss_fm + loss_mel + loss_kl + loss_lf0
            return total, {"loss/g/gen": loss_gen, "loss/g/fm": loss_fm, "loss/g/mel": loss_mel,
                           "loss/g/kl": loss_kl, "loss/g/lf0": loss_lf0}

        (loss_g, parts), ct = jax.value_and_grad(g_loss_fn, has_aux=True)(gen)
        (grads_g,) = pullback(ct)
        metrics = {"loss/g/total": loss_g, "loss/d/total": loss_d, **parts,
                   "grad_norm/g": _norm(grads_g), "grad_norm/d": _norm(grads_d),
                   "audio_frames": jnp.sum(batch["length"]).astype(jnp.float32)}
        return grads_g, grads_d, new_d, opt_d, metrics

    # -- validation ---------------------------------------------------------------------------

    def summaries(self, params, batch, rng):
        """The reference's ``evaluate``: ``infer`` on validation clips, audio and mels."""
        n = min(2, batch["f0"].shape[0])
        b = jax.tree.map(lambda x: x[:n], batch)
        vol = b["volume"] if self.vol_embedding else None
        wav, _ = self.G.apply({"params": params["g"]}, b["units"], b["f0"], b["uv"],
                              b["speaker"], b["mask"], vol, method="infer",
                              rngs={"noise": rng})
        wav = wav.reshape(n, -1).astype(jnp.float32)
        lengths = b["length"].astype(jnp.int32) * self.hop
        kw = dict(hop_length=self.hop, win_length=self.stft["win_length"], **self.mel_kw)
        gen_mel = self.spectrogram.mel_spectrogram(wav, lengths=lengths, **kw)
        gt_mel = self.spectrogram.mel_spectrogram(b["audio"].astype(jnp.float32),
                                                  lengths=lengths, **kw)
        mask = b["mask"][..., None]
        out = {"scalars": {"val/mel_l1": losses.mel_l1(gt_mel, gen_mel, mask)},
               "audio": {}, "mels": {}, "frames": b["length"]}
        for i in range(n):
            out["audio"][f"gen/audio_{i}"] = wav[i]
            out["audio"][f"gt/audio_{i}"] = b["audio"][i]
        out["mels"]["gen/mel"] = gen_mel[0]
        out["mels"]["gt/mel"] = gt_mel[0]
        return out

    # -- data ---------------------------------------------------------------------------------

    def make_data(self, mesh) -> TrainData:
        if self._data_fn is not None:
            return self._data_fn(mesh)
        icfg = inputs.pipeline_config(self.config, "generator", self.tcfg)
        inputs.check_speakers(self.config, icfg, int(self.config.model.n_speakers),
                              "model.n_speakers")
        icfg.segment_frames = self.seg_frames
        require(self.tcfg, ("vol_aug",))
        icfg.vol_aug = bool(self.tcfg.vol_aug)
        return inputs.train_data(icfg, mesh)

    # -- export -------------------------------------------------------------------------------

    def export(self, params, step: int, outdir: str) -> list[str]:
        per_epoch = int(self.tcfg.steps_per_epoch or 0)
        epoch = step // per_epoch + 1 if per_epoch > 0 else 1
        return export_reference_checkpoints(params, self.config, step, outdir,
                                            learning_rate=float(self.tcfg.learning_rate),
                                            epoch=epoch)


def _norm(tree):
    import optax

    return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


# ---------------------------------------------------------------------------------------------
# Export to the reference's files
# ---------------------------------------------------------------------------------------------

# nn.ModuleList attributes of the reference's generator (models.py, modules/*.py,
# vdecoder/hifigan): a Flax name "<list>_<i>" is element i of one of these. Every other
# name ending in _<digit> (conv_1, ...) is an attribute of its own.
GENERATOR_LISTS = ("flows", "convs", "self_attn_layers", "norm_layers_0", "norm_layers_1",
                   "norm_layers_2", "ffn_layers", "attn_layers", "encdec_attn_layers",
                   "conv_layers", "norm_layers", "in_layers", "res_skip_layers", "convs1",
                   "convs2", "ups", "resblocks", "noise_convs", "snakes", "activations")


def generator_state_dict(params, config) -> dict[str, np.ndarray]:
    """The reference's ``SynthesizerTrn.state_dict()`` for generator ``params``.

    List elements follow :data:`GENERATOR_LISTS`; layer norms are VITS's (``gamma``/``beta``).
    With ``flow_share_parameter`` the shared WaveNet is repeated under every coupling layer's
    ``enc`` as the reference's state_dict has it. The result is checked by importing it back
    (a wrong name is an error here, never a bad file).
    """
    from flax import traverse_util

    from svcjax.interop import sovits
    from svcjax.interop.torch_params import params_to_state_dict, path_to_torch_key

    params = jax.device_get(params)
    flat = traverse_util.flatten_dict(dict(params))
    norms = {path_to_torch_key(p[:-1], GENERATOR_LISTS) for p in flat if p[-1] == "scale"}

    vits_leaf = {"weight": "gamma", "bias": "beta"}

    def vits_norm(key: str) -> str:
        module, _, leaf = key.rpartition(".")
        return f"{module}.{vits_leaf[leaf]}" if module in norms else key

    sd = params_to_state_dict(params, list_modules=GENERATOR_LISTS, rename=vits_norm)
    sd.update(sovits.decoder_buffers(config, params))  # nsf-snake-hifigan's fixed filters
    if bool(config["model"].get("flow_share_parameter", False)):
        shared = {k[len("flow.wn."):]: v for k, v in sd.items() if k.startswith("flow.wn.")}
        flows = sorted({int(m.group(1)) for k in sd
                        for m in [re.match(r"^flow\.flows\.(\d+)\.pre\.", k)] if m})
        for i in flows:  # the coupling layers (Flip layers have no parameters)
            for k, v in shared.items():
                sd[f"flow.flows.{i}.enc.{k}"] = v
    back = sovits.sovits_params(config, sd, with_posterior="enc_q" in params,
                                what="exported generator")
    for path, v in traverse_util.flatten_dict(dict(back)).items():
        if not np.array_equal(np.asarray(v, np.float32), np.asarray(flat[path], np.float32)):
            raise AssertionError(f"generator export does not round-trip at {'/'.join(path)}")
    return sd


def export_reference_checkpoints(params, config, step: int, outdir: str, *,
                                 learning_rate: float = 1e-4, epoch: int | None = None
                                 ) -> list[str]:
    """Write ``G_{step}.pth`` and ``D_{step}.pth`` as the reference's ``train.py`` saves them
    (``{'model', 'iteration', 'optimizer': None, 'learning_rate'}``), without PyTorch, plus
    the reference ``config.json`` beside them. The reference loads them to resume or infer
    (an absent optimizer state is skipped by its ``load_checkpoint``)."""
    import collections
    import json

    from svcjax.interop import torch_save

    os.makedirs(outdir, exist_ok=True)
    iteration = int(epoch if epoch is not None else 1)
    written = []
    sd_g = generator_state_dict(params["g"], config)
    sd_d = discriminator_state_dict(params["d"])
    for name, sd in (("G", sd_g), ("D", sd_d)):
        path = os.path.join(outdir, f"{name}_{int(step)}.pth")
        torch_save.save({"model": collections.OrderedDict(sd), "iteration": iteration,
                         "optimizer": None, "learning_rate": float(learning_rate)}, path)
        written.append(path)
    ref_cfg = {s: config[s].to_dict() if hasattr(config[s], "to_dict") else dict(config[s])
               for s in ("train", "data", "model", "spk") if s in config}
    cfg_path = os.path.join(outdir, "config.json")
    with atomic_write(cfg_path, "w") as f:
        json.dump(ref_cfg, f, indent=2)
    written.append(cfg_path)
    return written
