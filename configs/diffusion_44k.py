"""Shallow-diffusion model (Unit2Mel) at 44.1 kHz, So-VITS-SVC 4.1's diffusion_template.yaml.

    python train.py --config configs/diffusion_44k.py:variant=full --workdir logs/44k/diffusion \
        --config.data.data_dir=DATA_DIR

Variants (``:variant=NAME``, other arguments ``:variant=full,n_spk=4,k_step_max=100``):

* ``full``    the template: 20 layers x 512 channels, 256 condition, pitch augmentation,
              trained on all 1000 steps (``k_step_max=0``); 55.2 M parameters.
* ``shallow`` the same network trained only on the first 100 steps (``k_step_max=100``):
              it can refine a SoVITS mel with ``k_step <= 100`` but not generate from noise.
* ``test``    4 layers x 64 channels, 64 condition, 3 speakers, 32-dim units: runs on a CPU.

Field names follow the reference's yaml (``data``, ``model``, ``infer``, ``train``, ``spk``);
``svcjax import-diffusion`` turns a reference config.yaml into the same structure.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = parse_arg(arg, variant="full", n_spk=1, k_step_max=-1, encoder="vec768l12")
    if a.variant not in ("full", "shallow", "test"):
        raise ValueError(f"unknown variant {a.variant!r}; known: full, shallow, test")
    c = ml_collections.ConfigDict()
    c.kind = "diffusion"

    c.data = dict(
        sampling_rate=44100,
        block_size=512,             # = hop length
        duration=2.0,               # seconds per training crop
        encoder=a.encoder,          # vec768l12 / vec256l9 / hubertsoft / whisper-ppg / ...
        encoder_sample_rate=16000,
        encoder_hop_size=320,
        encoder_out_channels=768,   # 256 for hubertsoft / vec256l9
        unit_interpolate_mode="nearest",
        training_files="filelists/train.txt",
        validation_files="filelists/val.txt",
    )
    c.model = dict(
        type="Diffusion",
        n_layers=20,
        n_chans=512,
        n_hidden=256,
        use_pitch_aug=True,
        timesteps=1000,
        k_step_max=0,               # 0: train all steps; else only t < k_step_max
        n_spk=a.n_spk,
        out_dims=128,               # vocoder mel bins
        max_beta=0.02,
        spec_min=-12.0,
        spec_max=2.0,
    )
    c.vocoder = dict(type="nsf-hifigan", ckpt="pretrain/nsf_hifigan/model")
    c.infer = dict(method="dpm-solver++", speedup=10)
    c.train = dict(
        batch_size=48,
        lr=1e-4,
        decay_step=100_000,         # StepLR
        gamma=0.5,
        weight_decay=0.0,
        amp_dtype="fp32",
        interval_log=10,
        interval_val=2000,
        interval_force_save=5000,
        epochs=100_000,
        pitch_aug=True,             # half the samples use the key-shifted mel
    )
    c.spk = {"nyaru": 0}

    if a.variant == "shallow":
        c.model.k_step_max = 100
    elif a.variant == "test":
        c.data.encoder_out_channels = 32
        c.data.duration = 0.5
        c.model.update(n_layers=4, n_chans=64, n_hidden=64, n_spk=3)
        c.train.update(batch_size=4, interval_val=10, interval_force_save=10)
        c.infer.update(speedup=5)
        c.spk = {"alto": 0, "tenor": 1, "bass": 2}
    if a.n_spk != 1:
        c.model.n_spk = a.n_spk
        c.spk = {f"spk{i}": i for i in range(a.n_spk)}
    if a.k_step_max >= 0:
        c.model.k_step_max = a.k_step_max
    _trainer(c, a.variant)
    return c


def _trainer(c: ml_collections.ConfigDict, variant: str) -> None:
    """svcjax's trainer fields (svcjax.train.loop.train reads them all from here); those the
    reference's yaml also has are references to its names, so either spelling overrides.

    The placeholders (None unless overridden) are what the reference's train_diff.py
    hard-codes rather than reads from its yaml: their values are
    ``DiffusionTask.script_constants`` (torch's AdamW betas (0.9, 0.999) and eps 1e-8, the
    first LR period one update longer, the L2 loss, no gradient clipping, float32)."""
    t = c.train
    t.learning_rate = t.get_ref("lr")
    t.lr_decay = t.get_ref("gamma")
    t.lr_decay_steps = t.get_ref("decay_step")
    t.eval_every = t.get_ref("interval_val")
    t.checkpoint_every = t.get_ref("interval_val")
    t.update(num_steps=200_000, steps_per_epoch=0, log_every=1, keep_checkpoints=3,
             async_checkpoint=True, progress=True)
    t.betas = config_dict.placeholder(tuple)
    t.eps = config_dict.placeholder(float)
    t.lr_decay_begin = config_dict.placeholder(int)   # updates at the full LR before decaying
    t.loss_type = config_dict.placeholder(str)        # "l1" or "l2"
    t.grad_clip = config_dict.placeholder(float)      # global-norm clip; 0: off
    t.compute_dtype = config_dict.placeholder(str)
    c.seed = 1234
    c.mesh = dict(data=-1, fsdp=1)
    c.init_from = ""                # a reference model_*.pt (with config.yaml) or model dir
    c.data.update(data_dir="",      # DATA_DIR of `svcjax build-corpus`
                  aug_prob=0.5, worker_count=0, prefetch=2)
    if variant == "test":
        t.update(num_steps=2, batch_size=8, progress=False)
