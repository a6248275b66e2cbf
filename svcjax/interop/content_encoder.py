"""Import speech content encoders (ContentVec / HuBERT / HuBERT-Soft) from their checkpoints.

    svcjax import-encoder checkpoint_best_legacy_500.pt --kind vec768l12 models/vec768l12

Three file layouts are read, all without PyTorch:

``fairseq``
    A fairseq checkpoint (ContentVec ``checkpoint_best_legacy_500.pt``, HuBERT
    ``hubert_base_ls960.pt``, Chinese HuBERT-large ``chinese-hubert-large-fairseq-ckpt.pt``):
    ``{'model': state_dict, 'cfg': ..., 'args': ...}`` with keys
    ``feature_extractor.conv_layers.0.0.weight``, ``post_extract_proj``,
    ``encoder.pos_conv.0.weight_g``, ``encoder.layers.N.self_attn.k_proj``, ``final_proj``,
    ``label_embs_concat``, ``mask_emb``. The config is read from ``cfg['model']`` (a plain
    dict in recent fairseq, a pickled omegaconf DictConfig in older releases) or from the
    legacy ``args`` Namespace; dimensions are taken from the tensors themselves.
``hf``
    A Hugging Face ``transformers`` ``HubertModel`` state_dict (``pytorch_model.bin`` or
    ``model.safetensors``, optionally with ``config.json`` beside it, or the directory
    holding them): ``feature_extractor.conv_layers.0.conv.weight``,
    ``encoder.pos_conv_embed.conv.weight_g`` (or ``parametrizations.weight.original0``),
    ``encoder.layers.N.attention.q_proj``, ... A ``final_proj`` (ContentVec ports) is kept.
``hubert_soft``
    bshall's HuBERT-Soft (``hubert-soft-0d54a1f4.pt``): ``feature_extractor.conv0``,
    ``positional_embedding.conv``, ``encoder.layers.N.self_attn.in_proj_weight``
    (q, k, v stacked), ``proj``; optionally under ``'hubert'`` and with a ``module.`` prefix.

Each is renamed onto the fairseq names that :mod:`svcjax.models.content_encoder` uses and
filled by :func:`svcjax.interop.torch_params.state_dict_to_params`. HuBERT-large's structure
(``extractor_mode='layer_norm'``: ``conv_layers.N.2.1`` layer norms, conv bias, and
``layer_norm_first``) is read from the tensors and the config, and serves ``cnhubertlarge``;
the ContentVec / HuBERT-Soft kinds take HuBERT-base's structure only. Training-only tensors
(mask embedding, label embeddings) are dropped. A file of another kind (a So-VITS-SVC
generator, a pitch tracker, HuBERT-large when a base layout is expected) is refused with one
sentence saying what was found and what was expected.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svcjax.interop import safetensors_reader, torch_pickle
from svcjax.interop.torch_params import state_dict_to_params
from svcjax.models import content_encoder as ce
from svcjax.models import encoders

__all__ = [
    "ContentEncoderFileError",
    "read_encoder_object",
    "read_encoder_file",
    "sniff",
    "import_checkpoint",
    "import_encoder",
    "import_encoder_dir",
]

# training-only tensors of each layout, never needed to compute units
_TRAINING_ONLY = [r"^mask_emb$", r"^label_embs_concat$", r"^target_glu\.", r"^masked_spec_embed$",
                  r"^label_embedding\."]

_BASE_EXPECTED = ("the HuBERT-base layout (a group-norm conv feature extractor without conv "
                  "bias, post-LN transformer layers)")


class ContentEncoderFileError(ValueError):
    """A file that is not (or not the expected kind of) speech content encoder."""


# --------------------------------------------------------------------------------------------
# reading and recognising files


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray)


def _state_dict_like(x) -> bool:
    return isinstance(x, Mapping) and bool(x) and all(
        isinstance(k, str) and _is_array(v) for k, v in x.items())


def read_encoder_object(path: str | os.PathLike) -> tuple[Any, str]:
    """``(obj, file)``: the object a content-encoder file holds, read without running code.

    ``path`` is a checkpoint file (safetensors, or a PyTorch pickle read by the restricted
    unpickler) or a Hugging Face model directory (its ``model.safetensors`` /
    ``pytorch_model.bin`` is read; ``file`` names it).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                return read_encoder_object(os.path.join(path, name))
        raise ContentEncoderFileError(
            f"{path} is a directory without model.safetensors or pytorch_model.bin (nor an svcjax "
            "model directory with config.json and params/)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"content encoder checkpoint not found: {path}")
    if safetensors_reader.is_safetensors(path):
        return safetensors_reader.load(path), path
    try:
        return torch_pickle.load(path), path
    except torch_pickle.TorchFileError as e:  # names the file and what is wrong with it
        raise ContentEncoderFileError(f"cannot read the content encoder: {e}") from None


def read_encoder_file(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray], dict]:
    """``(layout, state_dict, meta)`` of a HuBERT-family file (or HF model directory).

    ``meta`` holds the config found with it (fairseq ``cfg['model']`` / ``args``, or HF
    ``config.json``) as a plain dict. Raises :class:`ContentEncoderFileError` naming what the
    file looks like when it is not a content encoder.
    """
    return _identify(*read_encoder_object(path))


def _strip(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _identify(obj: Any, path: str) -> tuple[str, dict[str, np.ndarray], dict]:
    found = _layout(obj, path)
    if found is None:
        raise ContentEncoderFileError(
            f"{path} is {describe_object(obj)}, not a speech content encoder; expected {EXPECTED}")
    return found


def _layout(obj: Any, path: str | None) -> tuple[str, dict[str, np.ndarray], dict] | None:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        sd = obj["model"]
        # fairseq's cfg has sections (cfg['model']); a flat one is WavLM's (svcjax.interop.wavlm)
        flat_cfg = isinstance(obj.get("cfg"), Mapping) and "encoder_embed_dim" in obj["cfg"]
        if not flat_cfg and any(
                str(k).startswith("feature_extractor.conv_layers.") for k in sd) and any(
                str(k).startswith("encoder.") for k in sd):
            return "fairseq", {k: v for k, v in sd.items() if _is_array(v)}, _fairseq_meta(obj)
    candidates = [obj]
    if isinstance(obj, Mapping) and isinstance(obj.get("hubert"), Mapping):
        candidates.insert(0, obj["hubert"])
    for sd in candidates:
        if not _state_dict_like(sd):
            continue
        sd = _strip(_strip(sd, "module."), "hubert.")
        if "feature_extractor.conv0.weight" in sd and "positional_embedding.conv.bias" in sd:
            return "hubert_soft", sd, {}
        if "feature_extractor.conv_layers.0.conv.weight" in sd and any(
                k.startswith("encoder.pos_conv_embed.") for k in sd):
            return "hf", sd, (_hf_meta(path) if path else {})
    return None


EXPECTED = ("a ContentVec/HuBERT fairseq checkpoint (checkpoint_best_legacy_500.pt, "
            "chinese-hubert-large-fairseq-ckpt.pt), a Hugging "
            "Face HubertModel (pytorch_model.bin / model.safetensors) or HuBERT-Soft "
            "(hubert-soft-0d54a1f4.pt)")


def sniff(obj: Any) -> bool:
    """Whether ``obj`` (a checkpoint read by the restricted unpickler) is a HuBERT-family file."""
    return _layout(obj, None) is not None


def describe_object(obj: Any) -> str:
    """A few words on what a checkpoint that is not a content encoder looks like."""
    if not isinstance(obj, Mapping):
        return f"a pickled {type(obj).__name__}"
    keys = [str(k) for k in obj]
    model = obj.get("model")
    if isinstance(model, Mapping):
        mkeys = [str(k) for k in model]
        if any(k.startswith("enc_p.") for k in mkeys):
            return "a So-VITS-SVC generator checkpoint (G_*.pth)"
        if any(k.startswith("discriminators.") for k in mkeys):
            return "a So-VITS-SVC discriminator checkpoint (D_*.pth)"
        if any(k.startswith(("unit_embed.", "decoder.")) for k in mkeys):
            return "a shallow-diffusion model checkpoint (model_*.pt)"
        if any(k.startswith(("input_stack.", "cent_table")) for k in mkeys):
            return "an FCPE pitch-tracker checkpoint"
        if any(k.startswith("feature_extractor.") for k in mkeys):
            return "a fairseq checkpoint of an unrecognised speech model"
    if "generator" in obj:
        return "an NSF-HiFiGAN vocoder checkpoint"
    if _state_dict_like(obj):
        if "classifier.weight" in obj and any(k.startswith("conv1_BN.") for k in keys):
            return "a CREPE pitch-tracker state_dict"
        if any(k.startswith("unet.") for k in keys) or "fc.0.gru.weight_ih_l0" in keys:
            return "an RMVPE pitch-tracker state_dict"
        shown = ", ".join(keys[:5])
        return f"a state_dict of {len(keys)} tensors ({shown}, ...)"
    return "a checkpoint with top-level keys " + ", ".join(keys[:8])


# --------------------------------------------------------------------------------------------
# configs: omegaconf DictConfig (pickled), plain dicts, argparse Namespaces


def plain_value(obj: Any, depth: int = 0) -> Any:
    """omegaconf containers / nodes, Namespaces and enums (as Opaque records) -> plain Python."""
    if depth > 50:
        return None
    if isinstance(obj, Mapping):
        return {str(k): plain_value(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_value(v, depth + 1) for v in obj]
    if isinstance(obj, argparse.Namespace):
        return {k: plain_value(v, depth + 1) for k, v in vars(obj).items()}
    if isinstance(obj, torch_pickle.Opaque):
        state = obj.__dict__.get("state")
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) state
        if isinstance(state, dict):
            if "_content" in state:   # DictConfig / ListConfig
                return plain_value(state["_content"], depth + 1)
            if "_val" in state:       # AnyNode, StringNode, EnumNode, ...
                return plain_value(state["_val"], depth + 1)
            return {k: plain_value(v, depth + 1) for k, v in state.items() if not k.startswith("_")}
        args = obj.__dict__.get("args") or ()
        if len(args) == 1:            # an Enum member pickled as (EnumClass, (value,))
            return plain_value(args[0], depth + 1)
        return None
    return obj


def _fairseq_meta(ckpt: Mapping) -> dict:
    cfg = plain_value(ckpt.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return cfg["model"]
    args = plain_value(ckpt.get("args"))
    if isinstance(args, dict):
        return args
    return {}


def _hf_meta(path: str) -> dict:
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.isfile(cfg):
        try:
            with open(cfg) as f:
                out = json.load(f)
            return out if isinstance(out, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def parse_conv_layers(text: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    Only list/tuple literals of ints, ``+`` and ``* int`` are accepted (no ``eval``).
    """
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ev(node.left) + ev(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return ev(node.left) * ev(node.right)
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = ev(ast.parse(str(text), mode="eval"))
        return [tuple(int(v) for v in layer) for layer in layers]
    except (SyntaxError, ValueError, TypeError) as e:
        raise ContentEncoderFileError(f"cannot read conv_feature_layers {text!r}: {e}") from None


# --------------------------------------------------------------------------------------------
# renaming onto fairseq's names


def _hf_rename(key: str) -> str | None:
    rules = [
        (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.2."),
        (r"^feature_projection\.layer_norm\.", "layer_norm."),
        (r"^feature_projection\.projection\.", "post_extract_proj."),
        (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
        (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
        (r"^encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
        (r"^encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
        (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
        (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
        (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    ]
    for pat, rep in rules:
        if re.search(pat, key):
            return re.sub(pat, rep, key)
    return key


def _soft_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """bshall's names -> fairseq's; the stacked q/k/v in-projection split in three."""
    rules = [
        (r"^feature_extractor\.conv(\d+)\.", r"feature_extractor.conv_layers.\1.0."),
        (r"^feature_extractor\.norm0\.", "feature_extractor.conv_layers.0.2."),
        (r"^feature_projection\.norm\.", "layer_norm."),
        (r"^feature_projection\.projection\.", "post_extract_proj."),
        (r"^positional_embedding\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
        (r"^positional_embedding\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
        (r"^positional_embedding\.conv\.", "encoder.pos_conv.0."),
        (r"^norm\.", "encoder.layer_norm."),
        (r"^encoder\.layers\.(\d+)\.linear1\.", r"encoder.layers.\1.fc1."),
        (r"^encoder\.layers\.(\d+)\.linear2\.", r"encoder.layers.\1.fc2."),
        (r"^encoder\.layers\.(\d+)\.norm1\.", r"encoder.layers.\1.self_attn_layer_norm."),
        (r"^encoder\.layers\.(\d+)\.norm2\.", r"encoder.layers.\1.final_layer_norm."),
        (r"^proj\.", "final_proj."),
    ]
    out = {}
    for key, value in sd.items():
        m = re.match(r"^(encoder\.layers\.\d+\.self_attn\.)in_proj_(weight|bias)$", key)
        if m:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
                out[f"{m.group(1)}{name}.{m.group(2)}"] = part
            continue
        for pat, rep in rules:
            if re.search(pat, key):
                key = re.sub(pat, rep, key)
                break
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# architecture from the tensors (+ config), and the checks per kind


def _architecture(layout: str, sd: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                  num_heads: int | None) -> dict:
    """Everything needed to build the model, read from fairseq-named tensors and the config."""
    conv = []
    i = 0
    while f"feature_extractor.conv_layers.{i}.0.weight" in sd:
        w = sd[f"feature_extractor.conv_layers.{i}.0.weight"]
        conv.append((int(w.shape[0]), int(w.shape[2])))
        i += 1
    if not conv:
        raise ContentEncoderFileError("no feature-extractor convolutions found")
    strides = None
    if layout == "fairseq" and meta.get("conv_feature_layers"):
        spec = parse_conv_layers(meta["conv_feature_layers"])
        strides = [s for _, _, s in spec]
    elif layout == "hf" and meta.get("conv_stride"):
        strides = [int(s) for s in meta["conv_stride"]]
    if strides is None:
        base = [(d, k) for d, k, _ in ce.BASE_CONV_LAYERS]
        if [k for _, k in conv] != [k for _, k in base]:
            raise ContentEncoderFileError(
                f"conv kernels {[k for _, k in conv]} differ from HuBERT-base's and the file has "
                "no config giving the strides")
        strides = [s for _, _, s in ce.BASE_CONV_LAYERS]
    if len(strides) != len(conv):
        raise ContentEncoderFileError(
            f"the config lists {len(strides)} conv layers, the tensors {len(conv)}")

    layers = 0
    while f"encoder.layers.{layers}.fc1.weight" in sd:
        layers += 1
    embed = int(sd["encoder.layer_norm.weight"].shape[0]) if "encoder.layer_norm.weight" in sd else 0
    v = sd.get("encoder.pos_conv.0.weight_v")
    arch = dict(
        layout=layout,
        conv_layers=[[d, k, s] for (d, k), s in zip(conv, strides)],
        embed_dim=embed,
        ffn_dim=int(sd["encoder.layers.0.fc1.weight"].shape[0]) if layers else 0,
        num_layers=layers,
        conv_pos=int(v.shape[2]) if v is not None else 0,
        conv_pos_groups=(embed // int(v.shape[1])) if v is not None and v.shape[1] else 0,
        final_dim=int(sd["final_proj.weight"].shape[0]) if "final_proj.weight" in sd else 0,
        conv_bias="feature_extractor.conv_layers.0.0.bias" in sd,
        layer_norm_extractor=any(re.match(r"feature_extractor\.conv_layers\.\d+\.2\.1\.", k)
                                 for k in sd) or (layout == "hf" and any(
                                     re.match(r"feature_extractor\.conv_layers\.[1-9]\d*\.2\.", k)
                                     for k in sd)),
        layer_norm_first=False,
        pos_conv_weight_norm=v is not None,
    )
    if layout == "fairseq":
        arch["layer_norm_first"] = bool(meta.get("layer_norm_first", False))
        if str(meta.get("extractor_mode", "default")) == "layer_norm":
            arch["layer_norm_extractor"] = True
        act = str(meta.get("activation_fn", "gelu"))
        if act != "gelu":
            raise ContentEncoderFileError(f"activation_fn {act!r} found; expected 'gelu'")
        if str(meta.get("layer_type", "transformer")) != "transformer":
            raise ContentEncoderFileError(
                f"layer_type {meta.get('layer_type')!r} found; expected 'transformer'")
        if meta.get("untie_final_proj"):
            arch["final_dim"] = 0  # one projection per label set: no single unit space
        heads = meta.get("encoder_attention_heads")
    elif layout == "hf":
        arch["layer_norm_first"] = bool(meta.get("do_stable_layer_norm", False))
        if meta.get("feat_extract_norm") == "layer":
            arch["layer_norm_extractor"] = True
        for field, want in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu")):
            if meta.get(field, want) != want:
                raise ContentEncoderFileError(f"{field} {meta[field]!r} found; expected {want!r}")
        heads = meta.get("num_attention_heads")
    else:
        heads = None
    if num_heads is not None:
        heads = num_heads
    arch["num_heads"] = int(heads) if heads else max(embed // 64, 1)
    return arch


def _found(arch: dict) -> str:
    parts = [f"{arch['num_layers']} layers", f"width {arch['embed_dim']}"]
    if arch["layer_norm_extractor"]:
        parts.append("layer-norm conv feature extractor")
    if arch["conv_bias"]:
        parts.append("conv bias")
    if arch["layer_norm_first"]:
        parts.append("pre-LN layers (layer_norm_first)")
    if not arch["pos_conv_weight_norm"]:
        parts.append("a position convolution without weight norm")
    big = arch["num_layers"] >= 24 and arch["embed_dim"] >= 1024
    return ("a HuBERT-large-like model (" if big else "a model with ") + ", ".join(parts) + \
        (")" if big else "")


def _check(kind: ce.Kind, arch: dict, path: str) -> None:
    if kind.name == "cnhubertlarge":
        if arch["layout"] == "hubert_soft":
            raise ContentEncoderFileError(
                f"{path} is a HuBERT-Soft checkpoint; it gives hubertsoft units, not cnhubertlarge "
                "(use --kind hubertsoft)")
        if not arch["pos_conv_weight_norm"]:
            raise ContentEncoderFileError(
                f"{path}: found {_found(arch)}; cnhubertlarge expects a weight-normed position "
                f"convolution, as in {kind.source}")
        return
    if (kind.name == "hubertsoft") != (arch["layout"] == "hubert_soft"):
        if arch["layout"] == "hubert_soft":
            raise ContentEncoderFileError(
                f"{path} is a HuBERT-Soft checkpoint; it gives hubertsoft units, not {kind.name} "
                "(use --kind hubertsoft)")
        raise ContentEncoderFileError(
            f"{path} is a {'fairseq' if arch['layout'] == 'fairseq' else 'Hugging Face'} "
            f"HuBERT/ContentVec checkpoint; hubertsoft needs bshall's HuBERT-Soft "
            "(hubert-soft-0d54a1f4.pt)")
    if (arch["layer_norm_extractor"] or arch["conv_bias"] or arch["layer_norm_first"]
            or not arch["pos_conv_weight_norm"]):
        raise ContentEncoderFileError(
            f"{path}: found {_found(arch)}; {kind.name} expects {_BASE_EXPECTED}, as in "
            f"{kind.source}" + ("; this file gives cnhubertlarge units (--kind cnhubertlarge)"
                                if arch["pos_conv_weight_norm"] else ""))
    if arch["num_layers"] < kind.output_layer:
        raise ContentEncoderFileError(
            f"{path}: found {arch['num_layers']} transformer layers; {kind.name} uses the output "
            f"of layer {kind.output_layer} ({kind.source})")
    if kind.use_head and not arch["final_dim"]:
        what = ("a Hugging Face HubertModel has none" if arch["layout"] == "hf"
                else "this checkpoint has none")
        raise ContentEncoderFileError(
            f"{path}: {kind.name} needs the final projection final_proj, and {what}; use the "
            f"fairseq {kind.source}")


# --------------------------------------------------------------------------------------------
# import


def import_encoder(path: str | os.PathLike, kind: str | None = None, *,
                   num_heads: int | None = None) -> tuple[dict, ml_collections.ConfigDict]:
    """``(params, config)`` of the content encoder in ``path``, of any registered family.

    The family is the one whose importer recognises the file (:mod:`svcjax.models.encoders`);
    ``kind`` (a So-VITS ``speech_encoder`` name) defaults to the family's usual one for the file
    (``vec768l12`` for ContentVec/HuBERT, ``hubertsoft`` for HuBERT-Soft). ``num_heads``
    overrides the attention head count where a HuBERT file does not record it.
    """
    path = os.fspath(path)
    obj, file = read_encoder_object(path)
    families = list(encoders.FAMILIES)
    claims = [f for f in families if encoders.importer_module(f).sniff(obj)]
    if len(claims) > 1:  # never guess between two networks
        raise ContentEncoderFileError(
            f"{path} fits the checkpoint layouts of several encoder families "
            f"({', '.join(claims)}); it cannot be imported unambiguously")
    found = claims[0] if claims else None
    if found is None:
        expected = "; ".join(filter(None, (getattr(encoders.importer_module(f), "EXPECTED", None)
                                           for f in families)))
        raise ContentEncoderFileError(
            f"{path} is {describe_object(obj)}, not a speech content encoder; expected {expected}")
    if kind is not None:
        want = encoders.get_kind(kind)
        if want.family != found:
            gives = ", ".join(k for k, v in encoders.KINDS.items() if v.family == found)
            raise ContentEncoderFileError(
                f"{path} is a {found}-family checkpoint: it gives {gives} units, not {kind} "
                f"(which needs {want.source})")
    importer = encoders.importer_module(found)
    if found == "hubert":
        return import_checkpoint(obj, file, kind, num_heads=num_heads)
    return importer.import_checkpoint(obj, file, kind)


def import_checkpoint(obj: Any, path: str, kind: str | None = None, *,
                      num_heads: int | None = None) -> tuple[dict, ml_collections.ConfigDict]:
    """``(params, config)`` of a HuBERT-family checkpoint object read from ``path``.

    ``kind`` defaults to ``hubertsoft`` for a HuBERT-Soft file, ``cnhubertlarge`` for a
    HuBERT-large-structured one (pre-LN or layer-norm conv extractor) and ``vec768l12`` otherwise.
    Every layer of the checkpoint (and ``final_proj`` when present) is imported, so one
    import of ContentVec serves both ``vec768l12`` and ``vec256l9``. ``num_heads`` overrides
    the attention head count where the file does not record it (HuBERT-Soft, a HF state_dict
    without config.json: 64-wide heads are assumed).
    """
    layout, sd, meta = _identify(obj, path)
    if layout == "hf":
        sd = {_hf_rename(k): v for k, v in sd.items()}
    elif layout == "hubert_soft":
        sd = _soft_state_dict(sd)
    arch = _architecture(layout, sd, meta, num_heads)
    if kind is None:
        kind = ("hubertsoft" if layout == "hubert_soft" else "cnhubertlarge"
                if arch["layer_norm_first"] or arch["layer_norm_extractor"] else "vec768l12")
    spec = ce.get_kind(kind)
    _check(spec, arch, path)
    if arch["final_dim"] == 0:
        sd = {k: v for k, v in sd.items() if not k.startswith("final_proj.")}
    if layout == "hf" and arch["layer_norm_extractor"]:
        # transformers' conv_layers.N.layer_norm is fairseq's conv_layers.N.2.1 in this mode
        sd = {re.sub(r"^(feature_extractor\.conv_layers\.\d+\.2)\.", r"\1.1.", k): v
              for k, v in sd.items()}
    config = ce.default_config(kind)
    for field in ("layout", "conv_layers", "embed_dim", "ffn_dim", "num_heads", "num_layers",
                  "conv_pos", "conv_pos_groups", "final_dim", "conv_bias", "layer_norm_first"):
        config[field] = arch[field]
    config.extractor_mode = "layer_norm" if arch["layer_norm_extractor"] else "default"
    if config.embed_dim % config.num_heads:
        raise ContentEncoderFileError(
            f"{path}: width {config.embed_dim} is not divisible by {config.num_heads} attention heads")
    model = ce.build_model(config, full=True)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 16000), jnp.float32))["params"]
    params = state_dict_to_params(sd, shapes, ignore=_TRAINING_ONLY,
                                  what=f"{path} ({layout} layout)")
    return params, config


def import_encoder_dir(path: str | os.PathLike, outdir: str | os.PathLike, kind: str | None = None,
                       *, num_heads: int | None = None, overwrite: bool = False) -> str:
    """Import ``path`` and write an svcjax model directory (atomically) at ``outdir``."""
    from svcjax.train.checkpoint import save_model_dir

    params, config = import_encoder(path, kind, num_heads=num_heads)
    config.source = os.path.basename(os.fspath(path))
    return save_model_dir(outdir, params, config, overwrite=overwrite)
