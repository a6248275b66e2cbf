"""Import the standalone NSF-HiFiGAN vocoder (openvpi release, ``pretrain/nsf_hifigan/model``).

The reference file is ``torch.save({'generator': state_dict})`` with weight-norm tensors
(``weight_g``/``weight_v``) and a ``config.json`` beside it (HiFiGAN's training config:
``num_mels``, ``upsample_*``, ``resblock*``, ``sampling_rate``, ``hop_size``, ``n_fft``,
``win_size``, ``fmin``, ``fmax``). It is read without PyTorch and mapped onto
:class:`svcjax.models.nsf_hifigan.Generator` with a mel input, no speaker condition and the
frame-rate sine source.

    svcjax import-vocoder pretrain/nsf_hifigan/model models/nsf_hifigan
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.train import checkpoint
from svcjax.interop import torch_pickle
from svcjax.interop.torch_params import state_dict_to_params

__all__ = ["KIND", "REQUIRED_KEYS", "read_config", "build_generator", "load_vocoder_checkpoint",
           "import_vocoder"]

KIND = "nsf_hifigan_vocoder"
REQUIRED_KEYS = ("resblock", "upsample_rates", "upsample_kernel_sizes",
                 "upsample_initial_channel", "resblock_kernel_sizes", "resblock_dilation_sizes",
                 "num_mels", "sampling_rate", "hop_size")
# the mel the vocoder was trained on (nvSTFT defaults of the 44.1 kHz release)
MEL_DEFAULTS = {"n_fft": 2048, "win_size": 2048, "fmin": 40, "fmax": 16000}


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The vocoder's config.json as a ConfigDict with ``kind``; clear errors for bad files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocoder config not found: {path!r} (the reference keeps a "
                                "config.json beside the 'model' file)")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"vocoder config {path!r} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"vocoder config {path!r} must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"vocoder config {path!r} lacks {', '.join(missing)} (is it an "
                         "NSF-HiFiGAN config.json?)")
    cfg = {k: v for k, v in raw.items() if v is not None and k != "dist_config"}
    for k, v in MEL_DEFAULTS.items():
        cfg.setdefault(k, v)
    cfg["kind"] = KIND
    rates, kernels = list(cfg["upsample_rates"]), list(cfg["upsample_kernel_sizes"])
    # The standalone vocoder pads ups by (k - u) // 2 and its noise convs by s // 2, the
    # shared generator by (k - u + 1) // 2 and (s + 1) // 2: the same for even k - u and s
    # (every released config); other layouts are refused rather than run differently.
    odd = [f"upsample kernel {k} with rate {u}" for u, k in zip(rates, kernels) if (k - u) % 2]
    odd += [f"noise-conv stride {int(np.prod(rates[i + 1:]))}" for i in range(len(rates) - 1)
            if int(np.prod(rates[i + 1:])) % 2]
    if odd:
        raise ValueError(f"vocoder config {path!r}: {', '.join(odd)} (odd) is not supported; "
                         "svcjax runs NSF-HiFiGAN layouts with even k - u and strides")
    prod = int(np.prod(cfg["upsample_rates"]))
    if prod != int(cfg["hop_size"]):
        raise ValueError(f"vocoder config {path!r}: upsample_rates multiply to {prod}, not "
                         f"hop_size {cfg['hop_size']}")
    return ml_collections.ConfigDict(cfg)


def build_generator(config: Mapping[str, Any], *, dtype: Any = None, precision: Any = None,
                    conv_kernels: Any = None):
    """The Flax generator for a vocoder config (mel input, no speaker, frame-rate source);
    ``conv_kernels``: :class:`svcjax.models.layers.ConvKernels` (default: the CPU choice)."""
    from svcjax.models import nsf_hifigan
    from svcjax.models.layers import CPU_CONV_KERNELS

    return nsf_hifigan.Generator(
        sampling_rate=int(config["sampling_rate"]),
        resblock=str(config["resblock"]),
        resblock_kernel_sizes=tuple(int(k) for k in config["resblock_kernel_sizes"]),
        resblock_dilation_sizes=tuple(tuple(int(d) for d in ds)
                                      for ds in config["resblock_dilation_sizes"]),
        upsample_rates=tuple(int(u) for u in config["upsample_rates"]),
        upsample_initial_channel=int(config["upsample_initial_channel"]),
        upsample_kernel_sizes=tuple(int(k) for k in config["upsample_kernel_sizes"]),
        gin_channels=0, sine_mode="frame_rate", dtype=dtype, precision=precision,
        conv_kernels=conv_kernels or CPU_CONV_KERNELS)


def param_shapes(config: Mapping[str, Any]) -> Any:
    gen = build_generator(config)
    mel = jnp.zeros((1, 4, int(config["num_mels"])), jnp.float32)
    f0 = jnp.zeros((1, 4), jnp.float32)
    return jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), mel, f0))["params"]


def _state_dict(ckpt: Any, path: str) -> Mapping[str, np.ndarray]:
    if isinstance(ckpt, Mapping) and "generator" in ckpt:
        sd = ckpt["generator"]
    elif isinstance(ckpt, Mapping) and any(str(k).startswith("conv_pre.") for k in ckpt):
        sd = ckpt                                    # a bare state_dict
    else:
        keys = ", ".join(map(str, list(ckpt)[:8])) if isinstance(ckpt, Mapping) else \
            type(ckpt).__name__
        raise ValueError(f"{path!r} is not an NSF-HiFiGAN vocoder checkpoint: expected "
                         f"{{'generator': state_dict}}, found {keys}")
    return {str(k): np.asarray(v, np.float32) for k, v in dict(sd).items()}


def load_vocoder_checkpoint(model_path: str | os.PathLike,
                            config_path: str | os.PathLike | None = None
                            ) -> tuple[Any, ml_collections.ConfigDict]:
    """``(params, config)`` from the reference's ``model`` file and its config.json."""
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"vocoder checkpoint not found: {model_path!r}")
    if config_path is None:
        config_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    config = read_config(config_path)
    try:
        ckpt = torch_pickle.load(model_path)
    except torch_pickle.TorchFileError as e:  # names the file and what is wrong with it
        raise torch_pickle.TorchFileError(f"cannot read the vocoder checkpoint: {e}") from None
    sd = _state_dict(ckpt, model_path)
    params = state_dict_to_params(sd, param_shapes(config),
                                  what=f"NSF-HiFiGAN vocoder {model_path!r}")
    return params, config


def import_vocoder(model_path, outdir, config_path=None, *, overwrite: bool = False) -> str:
    """Convert the reference vocoder to an svcjax model directory; returns its path."""
    params, config = load_vocoder_checkpoint(model_path, config_path)
    return checkpoint.save_model_dir(outdir, params, config, overwrite=overwrite)
