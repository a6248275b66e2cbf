"""The evaluation config that ships with svcjax: the default of ``svcjax eval`` and ``eval.py``.

    svcjax eval --workdir runs/eval \
        --config.model=logs/44k/G_800.pth --config.encoder=checkpoint_best_legacy_500.pt \
        --config.diffusion=logs/44k/diffusion/model_100000.pt \
        --config.vocoder=pretrain/nsf_hifigan/model --config.data.path=eval_clips

(``python eval.py`` takes the same flags.) Converts every clip of ``data`` to each of
``speakers`` (empty: all the model's) with SoVITS alone and with shallow diffusion at every
``diffusion_k`` x ``samplers`` (at ``speedup``; "ddpm" runs all k steps), and writes
WORKDIR/eval/metrics.json (flat ``{name: number}``), metrics.csv, clips.csv and TensorBoard
files (:func:`svcjax.eval.runner.run_evaluation`). An ablation is an override, e.g.
``--config.diffusion_k='(20,50,100)' --config.samplers='("dpm-solver++","unipc")'``
(:mod:`svcjax.configlib`).

Variants (``--config FILE:variant=test``, FILE this file or the checkout's
``configs/eval.py``, which re-exports it): ``full`` (the defaults above) and ``test`` (two
clips, one speaker, k 4 DDIM + DPM-Solver++ at speedup 2, no optional metrics: CPU tests).
Another config file may start from this one: ``from svcjax.eval.config import get_config``.
"""

from __future__ import annotations

import os

import ml_collections

from svcjax.configlib import parse_arg

# this file: the default of `svcjax eval --config` and `eval.py --config`
PATH = os.path.abspath(__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="full")
    c = ml_collections.ConfigDict()
    # models: G_*.pth (config.json beside it) or model dirs; "" = not used
    c.model = ""
    c.model_config = ""
    c.encoder = ""
    c.diffusion = ""
    c.diffusion_config = ""
    c.vocoder = ""
    # the evaluation set: a folder of clips (<speaker>/<clip> labels speakers) or a TFDS split
    c.data = ml_collections.ConfigDict(dict(kind="folder", path="", split="validation",
                                            max_clips=0))
    c.speakers = ()            # target speakers; () = every speaker of the model
    c.transpose = 0.0
    c.f0_method = "dio"        # any of svcjax.audio.f0.METHODS (rmvpe, crepe, dio, ...)
    c.f0_weights = ""          # the tracker's weights file ("" = default; rmvpe: $SVCJAX_RMVPE)
    c.noise_scale = 0.4
    c.seed = 0                 # < 0: every random draw zero
    c.slice_db = -40.0
    c.pad_seconds = 0.5
    c.batch_size = 8
    # "bfloat16": the networks' matmuls/convs on bfloat16 operands (float32 accumulation,
    # float32 parameters; see bench/precision.py for its difference from float32)
    c.compute_dtype = "float32"
    # settings
    c.sovits_only = True
    c.diffusion_k = (100,)
    c.samplers = ("dpm-solver++", "ddim")
    c.speedup = 10
    # timbre-leakage controls: a cluster model / retrieval index and the ratios to compare
    c.cluster_model = ""       # kmeans_10000.pt, feature_and_index.pkl or an svcjax .npz
    c.cluster_ratios = (0.0,)  # e.g. (0.0, 0.5, 1.0): every setting at each ratio
    c.cluster_search = ""      # "exact" / "ivf"; "" = the index's own
    # metrics and logging
    c.metrics = ("mel", "mcd", "f0", "rtf", "speaker_similarity", "dnsmos")
    c.n_mels = 128             # mel distance on the vocoder mel (80: the training mel)
    c.mcd_n_mels = 80
    c.audio_samples = 2        # converted clips per setting and speaker in TensorBoard
    c.step = 0                 # TensorBoard step (e.g. the checkpoint's training step)
    c.progress = False

    if arg.variant == "test":
        c.data.max_clips = 2
        c.diffusion_k = (4,)
        c.samplers = ("ddim", "dpm-solver++")
        c.speedup = 2
        c.metrics = ("mel", "mcd", "f0", "rtf")
        c.batch_size = 4
        c.audio_samples = 1
        c.f0_method = "dio"
    elif arg.variant != "full":
        raise ValueError(f"unknown variant {arg.variant!r}; expected full or test")
    return c
