"""Import So-VITS-SVC 4.1 shallow-diffusion checkpoints (``model_<step>.pt`` + ``config.yaml``).

The reference saves ``{'global_step': int, 'model': state_dict}`` of its ``Unit2Mel`` with
the training ``config.yaml`` beside it. This module reads both without PyTorch, checks that
the checkpoint fits the config (every hyper-parameter the tensors reveal: units width,
``n_hidden``, ``n_chans``, ``n_layers``, mel bins, ``n_spk``, ``use_pitch_aug``,
``timesteps``, the beta schedule and the mel range), and returns Flax parameters plus an
svcjax config whose fields keep the yaml's names::

    kind: diffusion
    data:    sampling_rate, block_size, encoder, encoder_out_channels, ...
    model:   type, n_layers, n_chans, n_hidden, use_pitch_aug, timesteps, k_step_max, n_spk,
             out_dims, max_beta, spec_min, spec_max
    infer:   method, speedup
    vocoder: type, ckpt
    spk:     {name: id}  (a list of [name, id] pairs if a name has a dot)

``k_step_max`` is not stored in the checkpoint; it comes from the yaml only.

    svcjax import-diffusion logs/44k/diffusion/model_100000.pt [config.yaml] OUTDIR
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import yaml

from svcjax.audio.constants import HOP, SAMPLING_RATE
from svcjax.train import checkpoint
from svcjax.interop import torch_pickle
from svcjax.interop.torch_params import CheckpointMismatchError, state_dict_to_params
from svcjax.models.diffusion.gaussian import Schedule, check_k_step
from svcjax.models.diffusion.unit2mel import build_model

__all__ = ["read_config", "config_from_yaml", "checkpoint_hparams", "import_checkpoint",
           "import_diffusion", "to_state_dict", "speaker_map", "DEFAULTS"]

# Library defaults for fields a yaml may leave out (the reference's own fallbacks).
DEFAULTS = dict(
    data=dict(sampling_rate=SAMPLING_RATE, block_size=HOP, encoder="vec768l12",
              encoder_out_channels=768, encoder_sample_rate=16000, encoder_hop_size=320,
              unit_interpolate_mode="nearest", duration=2.0),
    model=dict(type="Diffusion", n_layers=20, n_chans=512, n_hidden=256, use_pitch_aug=False,
               timesteps=1000, k_step_max=0, n_spk=1, out_dims=128, max_beta=0.02,
               spec_min=-12.0, spec_max=2.0),
    infer=dict(method="dpm-solver++", speedup=10),
    vocoder=dict(type="nsf-hifigan", ckpt="pretrain/nsf_hifigan/model"),
)

_REQUIRED = {"data": ("encoder_out_channels",),
             "model": ("n_layers", "n_chans", "n_hidden", "n_spk")}


def read_config(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"diffusion config not found: {path}")
    with open(path) as f:
        try:
            args = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(args, dict):
        raise ValueError(f"{path}: expected a diffusion config (a YAML mapping), got {type(args).__name__}")
    return args


def config_from_yaml(args: Mapping[str, Any], source: str = "config.yaml") -> ml_collections.ConfigDict:
    """An svcjax diffusion config from the reference's yaml (as a dict)."""
    for section, keys in _REQUIRED.items():
        sec = args.get(section) or {}
        missing = [k for k in keys if sec.get(k) is None]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(f'{section}.{k}' for k in missing)} "
                             "(not a So-VITS-SVC diffusion config?)")
    out: dict[str, Any] = {"kind": "diffusion"}
    for section, defaults in DEFAULTS.items():
        given = args.get(section) or {}
        sec = dict(defaults)
        for k, v in given.items():
            if k in defaults and v is not None:
                try:
                    sec[k] = _coerce(defaults[k], v)
                except (TypeError, ValueError):
                    raise ValueError(f"{source}: {section}.{k}={v!r} is not a "
                                     f"{type(defaults[k]).__name__}") from None
            elif k not in defaults and section == "data" and isinstance(v, (str, int, float, bool)):
                sec[k] = v  # other scalar data fields travel along (cnhubertsoft_gate, ...)
        out[section] = sec
    m = out["model"]
    if m["type"] != "Diffusion":
        raise ValueError(f"{source}: model.type is {m['type']!r}; only 'Diffusion' (Unit2Mel) is supported")
    check_k_step(timesteps=m["timesteps"], k_step_max=m["k_step_max"], where=f"{source}: ")
    spk = args.get("spk") or {}
    if not isinstance(spk, Mapping):
        raise ValueError(f"{source}: spk must map speaker names to ids, got {spk!r}")
    try:
        spk = {str(k): int(v) for k, v in spk.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{source}: spk must map speaker names to integer ids, got {spk!r}") from None
    # ConfigDict refuses dotted keys: such names are kept as [name, id] pairs instead
    out["spk"] = [[k, v] for k, v in spk.items()] if any("." in k for k in spk) else spk
    n_spk = max(int(m["n_spk"]), 1)
    bad = {k: v for k, v in spk.items() if not 0 <= v < n_spk}
    if bad and n_spk > 1:
        raise ValueError(f"{source}: speaker ids {bad} outside [0, n_spk={n_spk})")
    return ml_collections.ConfigDict(out)


def speaker_map(config) -> dict[str, int]:
    """``{name: id}`` from a config's ``spk`` (a mapping, or ``[name, id]`` pairs)."""
    spk = config.get("spk") or {}
    items = spk.items() if hasattr(spk, "items") else spk
    return {str(k): int(v) for k, v in items}


def _coerce(default, v):
    if isinstance(default, bool):
        return bool(v)
    if isinstance(default, (int, float)):
        return type(default)(v)
    return v


_PREFIX = "decoder.denoise_fn."
_LAYER = re.compile(r"^decoder\.denoise_fn\.residual_layers\.(\d+)\.")


def checkpoint_hparams(sd: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """Hyper-parameters a Unit2Mel state_dict reveals (raises if it is not one)."""
    need = ("unit_embed.weight", _PREFIX + "input_projection.weight", "decoder.betas")
    missing = [k for k in need if k not in sd]
    if missing:
        hint = " (a SoVITS G_*.pth?)" if "emb_g.weight" in sd or "enc_p.proj.weight" in sd else ""
        raise CheckpointMismatchError(
            f"{source} is not a So-VITS-SVC diffusion (Unit2Mel) checkpoint{hint}: "
            f"no {', '.join(missing)}")
    units = np.shape(sd["unit_embed.weight"])
    inp = np.shape(sd[_PREFIX + "input_projection.weight"])
    layers = {int(m.group(1)) for k in sd for m in [_LAYER.match(k)] if m}
    hp = dict(encoder_out_channels=int(units[1]), n_hidden=int(units[0]), n_chans=int(inp[0]),
              out_dims=int(inp[1]), n_layers=len(layers),
              n_spk=int(np.shape(sd["spk_embed.weight"])[0]) if "spk_embed.weight" in sd else None,
              use_pitch_aug="aug_shift_embed.weight" in sd,
              timesteps=int(np.shape(sd["decoder.betas"])[0]))
    for name in ("spec_min", "spec_max"):
        v = np.asarray(sd.get(f"decoder.{name}", np.nan), np.float64)
        if v.size != 1:
            raise CheckpointMismatchError(
                f"{source}: decoder.{name} has shape {v.shape}; only a single value is supported")
        hp[name] = float(v.reshape(()))
    return hp


def _check_against(config: ml_collections.ConfigDict, hp: dict, sd: Mapping, ckpt: str, cfg: str):
    m = config.model
    wanted = dict(encoder_out_channels=config.data.encoder_out_channels, n_hidden=m.n_hidden,
                  n_chans=m.n_chans, out_dims=m.out_dims, n_layers=m.n_layers,
                  use_pitch_aug=m.use_pitch_aug, timesteps=m.timesteps)
    evidence = dict(encoder_out_channels="unit_embed.weight", n_hidden="unit_embed.weight",
                    n_chans=_PREFIX + "input_projection.weight",
                    out_dims=_PREFIX + "input_projection.weight",
                    n_layers=_PREFIX + "residual_layers.*", use_pitch_aug="aug_shift_embed.weight",
                    timesteps="decoder.betas")
    lines = []
    for name, want in wanted.items():
        if hp[name] != want:
            where = evidence[name]
            shape = f" {tuple(np.shape(sd[where]))}" if where in sd else (
                "" if "*" in where else " absent")
            lines.append(f"{name}: {os.path.basename(cfg)} says {want}, "
                         f"{os.path.basename(ckpt)} has {hp[name]} ({where}{shape})")
    n_cfg = int(m.n_spk or 1)
    n_ckpt = hp["n_spk"]
    if (n_cfg > 1) != (n_ckpt is not None) or (n_ckpt is not None and n_ckpt != n_cfg):
        got = f"{n_ckpt} (spk_embed.weight {tuple(np.shape(sd['spk_embed.weight']))})" \
            if n_ckpt is not None else "no speaker embedding (n_spk <= 1)"
        lines.append(f"n_spk: {os.path.basename(cfg)} says {n_cfg}, {os.path.basename(ckpt)} has {got}")
    if lines:
        raise CheckpointMismatchError(
            f"{ckpt} does not match {cfg}:\n  " + "\n  ".join(lines))


def _schedule_from_buffers(sd: Mapping, hp: dict, ckpt: str) -> float:
    """The checkpoint's max_beta (its decoder.betas must be the linear schedule)."""
    betas = np.asarray(sd["decoder.betas"], np.float64)
    for max_beta in (0.02, float(np.float32(betas[-1]))):
        ref = Schedule(timesteps=hp["timesteps"], max_beta=max_beta).betas.astype(np.float64)
        if np.allclose(betas, ref, rtol=1e-6, atol=1e-9):
            return max_beta
    raise CheckpointMismatchError(
        f"{ckpt}: decoder.betas is not a linear schedule from 1e-4 to {betas[-1]:.6g} over "
        f"{len(betas)} steps (only the linear schedule is supported)")


def import_checkpoint(model_path: str | os.PathLike, config_path: str | os.PathLike | None = None,
                      ) -> tuple[dict, ml_collections.ConfigDict]:
    """``(params, config)`` from a reference ``model_*.pt`` and its ``config.yaml``.

    ``config_path`` defaults to ``config.yaml`` beside the checkpoint.
    """
    model_path = os.fspath(model_path)
    if config_path is None:
        config_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.yaml")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"no config.yaml beside {model_path}; pass the diffusion config.yaml explicitly")
    config_path = os.fspath(config_path)
    config = config_from_yaml(read_config(config_path), config_path)
    try:
        ckpt = torch_pickle.load(model_path)
    except torch_pickle.TorchFileError as e:  # names the file and what is wrong with it
        raise torch_pickle.TorchFileError(f"cannot read the diffusion checkpoint: {e}") from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointMismatchError(
            f"{model_path}: expected a diffusion checkpoint {{'global_step', 'model'}}, got "
            f"{sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__}")
    sd = {k: np.asarray(v) for k, v in ckpt["model"].items()}
    hp = checkpoint_hparams(sd, model_path)
    _check_against(config, hp, sd, model_path, config_path)
    config.model.max_beta = _schedule_from_buffers(sd, hp, model_path)
    config.model.spec_min = hp["spec_min"]
    config.model.spec_max = hp["spec_max"]
    config.global_step = int(ckpt.get("global_step", 0) or 0)

    model = build_model(config)
    shapes = _param_shapes(model, config)
    params = state_dict_to_params(
        sd, shapes, what=model_path,
        rename=lambda k: ("denoise_fn." + k[len(_PREFIX):]) if k.startswith(_PREFIX)
        else (None if k.startswith("decoder.") else k))
    return params, config


def _param_shapes(model, config) -> dict:
    m = config.model
    b, t = 1, 4
    args = (jnp.zeros((b, t, config.data.encoder_out_channels)), jnp.zeros((b, t)),
            jnp.zeros((b, t)), jnp.zeros((b, t, m.out_dims)), jnp.zeros((b,)))
    spk = jnp.zeros((b, t, int(m.n_spk))) if int(m.n_spk or 1) > 1 else None
    aug = jnp.zeros((b,)) if m.use_pitch_aug else None
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, spk, aug))["params"]


def to_state_dict(params: Mapping, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The reference's ``Unit2Mel.state_dict()`` (NumPy, buffers included) for ``params``;
    ``torch.save({'global_step': step, 'model': sd})`` of it loads in So-VITS-SVC."""
    from svcjax.interop.torch_params import params_to_state_dict
    sd = params_to_state_dict(params, list_modules=("residual_layers", "mlp"),
                              rename=lambda k: "decoder." + k if k.startswith("denoise_fn.") else k)
    sch = Schedule.from_config(config)
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                 "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                 "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2"):
        sd[f"decoder.{name}"] = sch.table(name).copy()
    sd["decoder.spec_min"] = np.full((1, 1, 1), sch.spec_min, np.float32)
    sd["decoder.spec_max"] = np.full((1, 1, 1), sch.spec_max, np.float32)
    return sd


def import_diffusion(model_path, config_path, outdir, *, overwrite: bool = False) -> str:
    """Convert a reference diffusion checkpoint into an svcjax model directory."""
    params, config = import_checkpoint(model_path, config_path)
    return checkpoint.save_model_dir(outdir, params, config, overwrite=overwrite)
