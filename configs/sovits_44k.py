"""So-VITS-SVC 4.1 generator (SynthesizerTrn) at 44.1 kHz, hop 512.

    python train.py --config configs/sovits_44k.py --workdir /tmp/sovits \
        --config.data.data_dir=DATA_DIR
    python train.py --config configs/sovits_44k.py:variant=tiny --workdir /tmp/sovits_tiny
    python train.py --config configs/sovits_44k.py:variant=test --workdir /tmp/sovits_test

Variants:
  full  configs_template/config_template.json of the reference, field by field.
  tiny  configs_template/config_tiny_template.json (filter 512, upsample_initial_channel 400,
        depthwise-separable WaveNet convolutions, one WaveNet shared by the four flows).
  test  the same structure with small widths, so a forward+backward pass runs in seconds
        on a laptop CPU (tests use it).

The four sections (``train``, ``data``, ``model``, ``spk``) carry the reference's names, so
``svcjax.interop.sovits.config_from_reference("config.json")`` builds the same ConfigDict
from a reference config.json. Overrides: ``--config.model.vol_embedding=True``,
``--config.spk='{"alto": 0}'``, ``--config.model.vocoder_name=nsf-snake-hifigan`` (the decoder
with anti-aliased snake activations instead of leaky ReLUs; default ``nsf-hifigan``).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def _train() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        log_interval=200,
        eval_interval=800,
        seed=1234,
        epochs=10000,
        learning_rate=0.0001,
        betas=[0.8, 0.99],
        eps=1e-09,
        batch_size=6,
        fp16_run=False,
        half_type="fp16",
        lr_decay=0.999875,
        segment_size=10240,
        init_lr_ratio=1,
        warmup_epochs=0,
        c_mel=45,
        c_kl=1.0,
        use_sr=True,
        max_speclen=512,
        port="8001",
        keep_ckpts=3,
        all_in_mem=False,
        vol_aug=False,
    ))


def _data() -> ml_collections.ConfigDict:
    a = common.audio()
    return ml_collections.ConfigDict(dict(
        training_files="filelists/train.txt",
        validation_files="filelists/val.txt",
        max_wav_value=a.max_wav_value,
        sampling_rate=a.sampling_rate,
        filter_length=a.filter_length,
        hop_length=a.hop_length,
        win_length=a.win_length,
        n_mel_channels=a.n_mel_channels,
        mel_fmin=a.mel_fmin,
        mel_fmax=22050,
        unit_interpolate_mode=a.unit_interpolate_mode,
    ))


def _model() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        inter_channels=192,
        hidden_channels=192,
        filter_channels=768,
        n_heads=2,
        n_layers=6,
        kernel_size=3,
        p_dropout=0.1,
        resblock="1",
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        upsample_rates=[8, 8, 2, 2, 2],
        upsample_initial_channel=512,
        upsample_kernel_sizes=[16, 16, 4, 4, 4],
        n_layers_q=3,
        n_layers_trans_flow=3,
        n_flow_layer=4,
        use_spectral_norm=False,
        gin_channels=768,
        ssl_dim=768,
        n_speakers=200,
        vocoder_name="nsf-hifigan",
        speech_encoder="vec768l12",
        speaker_embedding=False,
        vol_embedding=False,
        use_depthwise_conv=False,
        flow_share_parameter=False,
        use_automatic_f0_prediction=True,
        use_transformer_flow=False,
    ))


def _spk() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(nyaru=0, huiyu=1, nen=2, paimon=3, yunhao=4))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, variant="full")
    config = ml_collections.ConfigDict(dict(
        train=_train(), data=_data(), model=_model(), spk=_spk()))
    if args.variant == "full":
        pass
    elif args.variant == "tiny":
        config.model.filter_channels = 512
        config.model.upsample_initial_channel = 400
        config.model.use_depthwise_conv = True
        config.model.flow_share_parameter = True
    elif args.variant == "test":
        m = config.model
        m.inter_channels = 16
        m.hidden_channels = 16
        m.filter_channels = 32
        m.n_layers = 2
        m.resblock_kernel_sizes = [3]
        m.resblock_dilation_sizes = [[1, 3, 5]]
        m.upsample_initial_channel = 64
        m.n_flow_layer = 2
        m.gin_channels = 16
        m.ssl_dim = 32
        m.n_speakers = 2
        config.spk = ml_collections.ConfigDict(dict(alto=0, tenor=1))
        config.train.batch_size = 2
        config.train.segment_size = 8 * 512
    else:
        raise ValueError(f"unknown variant {args.variant!r}; known: full, tiny, test")
    _trainer(config, args.variant)
    return config


def _trainer(c: ml_collections.ConfigDict, variant: str) -> None:
    """svcjax's trainer fields (svcjax.train.loop.train reads them all from here). Those the
    reference's config.json also has are references to its names, so either spelling
    overrides (``--config.train.eval_interval=400`` moves evaluation and checkpoints).

    The placeholders (None unless overridden) are what the reference's train.py hard-codes
    rather than reads from config.json: their values are ``SovitsTask.script_constants``
    (AdamW weight decay 0.01, the LR decayed once per epoch, no gradient clipping, float32)."""
    t = c.train
    t.eval_every = t.get_ref("eval_interval")
    t.checkpoint_every = t.get_ref("eval_interval")
    t.keep_checkpoints = t.get_ref("keep_ckpts")
    t.update(num_steps=100_000, steps_per_epoch=0, log_every=1, async_checkpoint=True,
             progress=True)
    t.weight_decay = config_dict.placeholder(float)
    t.lr_decay_steps = config_dict.placeholder(int)   # 0: once per epoch
    t.lr_decay_begin = config_dict.placeholder(int)   # updates at the full LR before decaying
    t.grad_clip = config_dict.placeholder(float)      # global-norm clip; 0: off
    t.compute_dtype = config_dict.placeholder(str)    # "bfloat16": parameters stay float32
    c.kind = "sovits"
    c.seed = t.get_ref("seed")
    c.mesh = dict(data=-1, fsdp=1, fsdp_min_size=2 ** 18)
    c.init_from = ""                  # fine-tune from a G_*.pth (e.g. the base model G_0.pth)
    c.init_discriminator_from = ""    # its D_*.pth (default: the one beside init_from)
    c.discriminator = dict(width_div=1, periods=(2, 3, 5, 7, 11))
    c.data.update(data_dir="",        # DATA_DIR of `svcjax build-corpus`
                  crop_frames=790, worker_count=0, prefetch=2)
    if variant == "test":
        c.discriminator.update(width_div=16, periods=(2, 3))
        c.data.crop_frames = 16
        t.update(num_steps=2, batch_size=8, eval_interval=2, progress=False)
