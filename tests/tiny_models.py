"""Tiny random-weight conversion models saved as svcjax model directories (for tests).

``make_model_dirs(d)`` writes ``d/sovits`` (configs/sovits_44k.py:variant=test: 32-dim units,
speakers alto/tenor), ``d/encoder`` (a vec768l12 content encoder 32 wide) and ``d/diffusion``
(configs/diffusion_44k.py:variant=test with 2 speakers); the NSF-HiFiGAN vocoder is the
reference-format fixture ``tests/fixtures/vocoder/model``. Weights are drawn without compiling
the models' init functions.
"""

import sys
from pathlib import Path

import jax
import numpy as np

from svcjax.train import checkpoint

ROOT = Path(__file__).parent.parent
VOCODER = ROOT / "tests" / "fixtures" / "vocoder" / "model"


def converter(d: Path):
    """A Converter of the tiny models in ``d`` (:func:`make_model_dirs`) with the vocoder
    fixture: SoVITS, content encoder, shallow diffusion."""
    from svcjax.runtime import converter as pipeline

    return pipeline.Converter.from_paths(d / "sovits", encoder=d / "encoder",
                                         diffusion=d / "diffusion", vocoder=VOCODER)


def make_model_dirs(d: Path) -> Path:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from configs import diffusion_44k, sovits_44k
    from svcjax.interop import sovits as sovits_convert
    from svcjax.models import content_encoder as ce, synthesizer
    from svcjax.models.diffusion import unit2mel

    cfg = sovits_44k.get_config("variant=test")          # 32-dim units, speakers alto/tenor
    model = synthesizer.from_config(cfg, with_posterior=False)
    r = np.random.RandomState(0)
    rand = lambda s: (0.1 * r.randn(*s.shape)).astype(np.float32)  # noqa: E731 (no init compile)
    params = jax.tree.map(rand, synthesizer.init_params(model, shapes_only=True))
    checkpoint.save_model_dir(d / "sovits", params, sovits_convert.model_dir_config(cfg, False))

    enc_cfg = ce.default_config("vec768l12", embed_dim=int(cfg.model.ssl_dim), ffn_dim=64,
                                num_heads=2, conv_pos=16, conv_pos_groups=4,
                                conv_layers=[(16, k, s) for _, k, s in ce.BASE_CONV_LAYERS])
    enc_model = ce.build_model(enc_cfg, full=True)
    enc_params = jax.tree.map(rand, jax.eval_shape(enc_model.init, jax.random.PRNGKey(1),
                                                   np.zeros((1, 16000), np.float32))["params"])
    checkpoint.save_model_dir(d / "encoder", enc_params, enc_cfg)

    dcfg = diffusion_44k.get_config("variant=test,n_spk=2")
    dmodel = unit2mel.build_model(dcfg)
    b, t = 1, 4
    dshapes = jax.eval_shape(lambda: dmodel.init(
        jax.random.PRNGKey(0), np.zeros((b, t, dcfg.data.encoder_out_channels), np.float32),
        np.zeros((b, t), np.float32), np.zeros((b, t), np.float32),
        np.zeros((b, t, 128), np.float32), np.zeros((b,), np.float32),
        np.zeros((b, t, 2), np.float32), np.zeros((b,), np.float32)))["params"]
    dparams = jax.tree.map(rand, dshapes)
    checkpoint.save_model_dir(d / "diffusion", dparams, dcfg)
    return d


