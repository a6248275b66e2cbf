"""Evaluation of a conversion model: ``python eval.py --config configs/eval.py --workdir DIR``.

    python eval.py --config configs/eval.py --workdir runs/eval \
        --config.model=logs/44k/G_800.pth --config.encoder=checkpoint_best_legacy_500.pt \
        --config.diffusion=logs/44k/diffusion/model_100000.pt \
        --config.vocoder=pretrain/nsf_hifigan/model --config.data.path=eval_clips

The config itself ships with the package, so an installed svcjax evaluates without this
checkout: :mod:`svcjax.eval.config` (its fields, the ``full`` and ``test`` variants, e.g.
``configs/eval.py:variant=test``). ``svcjax eval`` and ``eval.py`` use it when no
``--config`` is given.
"""

from svcjax.eval.config import get_config

__all__ = ["get_config"]
