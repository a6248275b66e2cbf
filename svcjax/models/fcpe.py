"""FCPE pitch estimators in Flax: both networks users meet under that name.

* ``pcmer``: So-VITS-SVC 4.1's own FCPE (``modules/F0Predictor/fcpe/``, loaded from
  ``pretrain/fcpe.pt``, a ``{'model': state_dict, 'config': {...}}`` file whose ``config``
  holds the ``model`` / ``mel`` sections the network is built from). A 1-D conv stack, then
  ``n_layers`` PCmer layers (Performer linear self-attention with 8 heads of 64 over a random
  feature map ``projection_matrix`` that the checkpoint stores, then a Conformer convolution
  module), a LayerNorm and a weight-normed linear layer to ``out_dims`` sigmoid bins.
* ``cfnaive``: torchfcpe 0.0.4's ``CFNaiveMelPE`` (its wheel ships the trained
  ``torchfcpe/assets/fcpe_c_v001.pt``, a ``{'model', 'config_dict'}`` file). The same
  building blocks under other names; the bundled model is ``conv_only`` (no attention: six
  Conformer convolution modules), optional L2-normalised queries and keys (``use_fa_norm``),
  a configurable head count and an optional harmonic embedding.

:func:`load_fcpe` reads either file with svcjax's restricted unpickler (nothing in the file
runs; PyTorch is not needed) and tells which network it holds from its layout; the dimensions
come from the file's config (and are checked against its tensors).

Front-end (identical in both codes): 16 kHz audio, padded ``(win - hop) // 2`` on the left
and ``max((win - hop + 1) // 2, win - L - left)`` on the right (reflect, or zeros when the clip
is too short to reflect), a magnitude STFT (``center=False``, periodic Hann, ``sqrt(re^2 +
im^2 + 1e-9)``), a Slaney mel filterbank and ``log(max(mel, 1e-5))``. ``L // hop`` frames;
then, as both codes do, the mel is made ``L_in // hop + 1`` frames long where ``L_in`` is the
length at the *input* rate: one copy of the last frame is appended when that is longer (always
for 16 kHz and 44.1 kHz input), the mel is cut when it is shorter.

Decoding (``local_argmax``, the default of both): the argmax bin and the 9 bins around it
(indices clamped to the table, so an edge bin counts several times, as in both codes), the
salience-weighted mean of their cents, ``f0 = 10 * 2 ** (cents / 1200)``; frames whose largest
salience is ``<= threshold`` are unvoiced (0 Hz).

Batches: clips of different lengths share one padded batch; every operation across frames
(the GroupNorm statistics, the convolutions' zero padding, the attention's sums over keys) sees
only a clip's own frames, so a padded clip gives the frames it gives alone. Layout is channels
last ``(B, N, C)``; :class:`FCPERunner` jit-compiles the whole path (mel + network + decoding)
for a few bucketed shapes and splits the batch over the devices of a mesh.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from svcjax.runtime import sharding as shd
from svcjax.runtime.buckets import bucket_length

__all__ = ["FCPEConfig", "FCPENet", "FCPEWeightsError", "load_fcpe", "find_torchfcpe_weights",
           "default_weights", "pad_for_mel", "mel_frames", "prepare", "log_mel", "padded_log_mel",
           "decode_local_argmax", "FCPERunner",
           "KINDS", "DEFAULT_THRESHOLD"]

KINDS = ("pcmer", "cfnaive")
# The threshold each code applies by default: So-VITS-SVC's FCPEF0Predictor passes 0.05 to
# its network; torchfcpe's infer() defaults to 0.006.
DEFAULT_THRESHOLD = {"pcmer": 0.05, "cfnaive": 0.006}
LN_EPS = 1e-5  # torch.nn.LayerNorm / GroupNorm default
DIM_HEAD = 64  # SelfAttention's dim_head default in both codes (independent of the width)
CONV_KERNEL = 31  # ConformerConvModule's depthwise kernel
EXPANSION = 2  # ConformerConvModule's expansion factor


class FCPEWeightsError(ValueError):
    """The file is not an FCPE checkpoint svcjax understands (one sentence says why)."""


@dataclasses.dataclass(frozen=True)
class FCPEConfig:
    kind: str  # "pcmer" or "cfnaive"
    n_mels: int = 128
    out_dims: int = 360
    hidden: int = 512
    n_layers: int = 6
    n_heads: int = 8
    nb_features: int = 266  # rows of each layer's Performer projection matrix
    use_fa_norm: bool = False
    conv_only: bool = False
    harmonic_emb: bool = False
    f0_min: float = 32.70
    f0_max: float = 1975.5
    sr: int = 16000
    n_fft: int = 1024
    win_size: int = 1024
    hop: int = 160
    fmin: float = 0.0
    fmax: float = 8000.0

    @property
    def threshold(self) -> float:
        return DEFAULT_THRESHOLD[self.kind]


# --------------------------------------------------------------------------------------
# network


class _ConvModule(nn.Module):
    """Conformer convolution module: LN, pointwise conv to 2x inner, GLU, depthwise conv
    (kernel 31, zero 'same' padding), SiLU, pointwise conv back. Padded frames are zeroed
    before the depthwise conv so they act as its zero padding."""
    dim: int

    @nn.compact
    def __call__(self, x, mask):
        inner = self.dim * EXPANSION
        h = nn.LayerNorm(epsilon=LN_EPS, name="norm")(x)
        h = nn.Dense(2 * inner, name="pw1")(h)
        h = h[..., :inner] * jax.nn.sigmoid(h[..., inner:])
        h = h * mask
        h = _DepthwiseConv(inner, CONV_KERNEL, name="dw")(h)
        h = jax.nn.silu(h)
        return nn.Dense(self.dim, name="pw2")(h)


class _Conv3(nn.Module):
    """Conv1d, kernel 3, zero padding 1, as one matmul over the three shifted inputs (about
    twice as fast as XLA's CPU convolution here)."""
    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        n = x.shape[1]
        xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
        cols = jnp.concatenate([xp[:, i:i + n] for i in range(3)], axis=-1)
        return cols @ kernel.reshape(-1, self.features) + bias


class _DepthwiseConv(nn.Module):
    """Depthwise conv1d with zero 'same' padding (``calc_same_padding``: k // 2 left,
    k // 2 - (k + 1) % 2 right) as ``kernel_size`` shifted multiply-adds: XLA's CPU backend
    runs a ``feature_group_count == channels`` convolution ~20x slower than this."""
    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, 1, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        left = k // 2
        right = left - (k + 1) % 2
        xp = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
        n = x.shape[1]
        y = xp[:, 0:n] * kernel[0, 0]
        for i in range(1, k):
            y = y + xp[:, i:i + n] * kernel[i, 0]
        return y + bias


class _FastAttention(nn.Module):
    """Performer self-attention (FAVOR+ softmax kernel, non-causal) as both codes compute it,
    keys of padded frames excluded from the sums."""
    dim: int
    heads: int
    nb_features: int
    use_norm: bool

    @nn.compact
    def __call__(self, x, mask):
        b, n, _ = x.shape
        inner = DIM_HEAD * self.heads
        proj = self.param("projection", nn.initializers.normal(1.0),
                          (self.nb_features, DIM_HEAD))
        q, k, v = (nn.Dense(inner, name=name)(x).reshape(b, n, self.heads, DIM_HEAD)
                   for name in ("to_q", "to_k", "to_v"))
        if self.use_norm:
            q = q / (jnp.linalg.norm(q, axis=-1, keepdims=True) + 1e-8)
            k = k / (jnp.linalg.norm(k, axis=-1, keepdims=True) + 1e-8)
        dn = DIM_HEAD ** -0.25
        ratio = self.nb_features ** -0.5

        def features(d):
            dash = jnp.einsum("bnhd,jd->bnhj", dn * d, proj)
            diag = jnp.sum(d * d, axis=-1, keepdims=True) * (0.5 * dn * dn)
            return dash, diag

        qd, qdiag = features(q)
        qf = ratio * (jnp.exp(qd - qdiag - jnp.max(qd, axis=-1, keepdims=True)) + 1e-4)
        kd, kdiag = features(k)
        kf = ratio * jnp.exp(kd - kdiag + 1e-4)  # the key's eps sits inside the exp, as there
        kf = kf * mask[:, :, None, :]
        k_sum = jnp.sum(kf, axis=1)  # (b, h, j)
        d_inv = 1.0 / (jnp.einsum("bnhj,bhj->bnh", qf, k_sum) + 1e-8)
        context = jnp.einsum("bnhj,bnhe->bhje", kf, v)
        out = jnp.einsum("bhje,bnhj,bnh->bnhe", context, qf, d_inv)
        return nn.Dense(self.dim, name="to_out")(out.reshape(b, n, inner))


class _Layer(nn.Module):
    cfg: FCPEConfig

    @nn.compact
    def __call__(self, x, mask):
        c = self.cfg
        if not c.conv_only:
            h = nn.LayerNorm(epsilon=LN_EPS, name="attn_norm")(x)
            x = x + _FastAttention(c.hidden, c.n_heads, c.nb_features, c.use_fa_norm,
                                   name="attn")(h, mask)
        return x + _ConvModule(c.hidden, name="conv")(x, mask)


class FCPENet(nn.Module):
    """mel ``(B, N, n_mels)`` and frame mask ``(B, N)`` -> salience ``(B, N, out_dims)``."""
    cfg: FCPEConfig

    @nn.compact
    def __call__(self, mel, mask):
        c = self.cfg
        m = mask[..., None].astype(mel.dtype)
        x = _Conv3(c.hidden, name="in_conv1")(mel * m)
        x = _masked_group_norm(x, m, 4, self.param("in_gn_scale", nn.initializers.ones,
                                                   (c.hidden,)),
                               self.param("in_gn_bias", nn.initializers.zeros, (c.hidden,)))
        x = jax.nn.leaky_relu(x, 0.01) * m
        x = _Conv3(c.hidden, name="in_conv2")(x)
        if c.harmonic_emb:
            x = x + self.param("harmonic", nn.initializers.normal(1.0), (c.hidden,))
        for i in range(c.n_layers):
            x = _Layer(c, name=f"layer_{i}")(x, m)
        x = nn.LayerNorm(epsilon=LN_EPS, name="norm")(x)
        return jax.nn.sigmoid(nn.Dense(c.out_dims, name="out")(x))


def _masked_group_norm(x, m, groups, scale, bias):
    """torch GroupNorm over the valid frames only (statistics per clip and group)."""
    b, n, ch = x.shape
    xg = x.reshape(b, n, groups, ch // groups)
    mg = m[..., None]
    count = jnp.maximum(jnp.sum(m, axis=1), 1.0)[:, :, None] * (ch // groups)  # (b, 1, 1)
    mean = jnp.sum(xg * mg, axis=(1, 3)) / count[:, 0]
    cen = xg - mean[:, None, :, None]
    var = jnp.sum(cen * cen * mg, axis=(1, 3)) / count[:, 0]
    y = cen / jnp.sqrt(var[:, None, :, None] + LN_EPS)
    return y.reshape(b, n, ch) * scale + bias


def decode_local_argmax(sal: jax.Array, cent_table: jax.Array, threshold) -> jax.Array:
    """Salience ``(..., D)`` -> f0 Hz ``(...)``: weighted cents of the 9 bins around the argmax
    (clamped indices, as both codes gather them), 0 where the peak is ``<= threshold``."""
    d = sal.shape[-1]
    peak = jnp.max(sal, axis=-1)
    idx = jnp.argmax(sal, axis=-1)[..., None] + jnp.arange(-4, 5)
    idx = jnp.clip(idx, 0, d - 1)
    w = jnp.take_along_axis(sal, idx, axis=-1)
    cents = jnp.sum(cent_table[idx] * w, axis=-1) / jnp.sum(w, axis=-1)
    f0 = 10.0 * jnp.exp2(cents / 1200.0)
    return jnp.where(peak > threshold, f0, 0.0)


# --------------------------------------------------------------------------------------
# mel front-end


def pad_for_mel(audio16: np.ndarray, cfg: FCPEConfig) -> np.ndarray:
    """One clip at the model rate padded as both codes pad it before ``torch.stft``."""
    x = np.asarray(audio16, np.float32)
    n = x.shape[0]
    left = (cfg.win_size - cfg.hop) // 2
    right = max((cfg.win_size - cfg.hop + 1) // 2, cfg.win_size - n - left)
    if right < n and left < n:
        return np.pad(x, (left, right), mode="reflect")
    return np.pad(x, (left, right))


def mel_frames(n16: int, n_in: int, cfg: FCPEConfig) -> tuple[int, int]:
    """``(stft_frames, frames)`` of a clip of ``n16`` samples at the model rate whose input
    had ``n_in`` samples (at its own rate): ``frames = n_in // hop + 1`` capped at
    ``stft_frames + 1`` (both codes count the input's samples with the model's hop)."""
    left = (cfg.win_size - cfg.hop) // 2
    right = max((cfg.win_size - cfg.hop + 1) // 2, cfg.win_size - n16 - left)
    t = (n16 + left + right - cfg.n_fft) // cfg.hop + 1
    want = n_in // cfg.hop + 1
    return t, min(want, t + 1)


def padded_log_mel(padded, src, cfg: FCPEConfig):
    """Padded rows ``(B, W)`` -> log-mel ``(B, N, n_mels)`` gathered at frame indices ``src``."""
    from svcjax.audio import spectrogram as sp

    spec = sp.stft(padded, cfg.n_fft, cfg.hop, cfg.win_size, pad=(0, 0), pad_mode="constant")
    mag = jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + 1e-9)
    fb = sp.mel_filterbank(cfg.sr, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(cfg.fmax))
    mel = jnp.log(jnp.maximum(jnp.matmul(mag, jnp.asarray(fb),
                                         precision=jax.lax.Precision.HIGHEST), 1e-5))
    return jnp.take_along_axis(mel, src[..., None], axis=1)


# --------------------------------------------------------------------------------------
# weights


def find_torchfcpe_weights() -> str:
    """Path of ``assets/fcpe_c_v001.pt`` inside an installed torchfcpe (never imported)."""
    spec = importlib.util.find_spec("torchfcpe")
    if spec is None or not spec.submodule_search_locations:
        raise FCPEWeightsError(
            "no FCPE weights given, SVCJAX_FCPE is not set and torchfcpe is not installed; "
            "pass the weights file (So-VITS-SVC's pretrain/fcpe.pt or torchfcpe's "
            "fcpe_c_v001.pt), set SVCJAX_FCPE, or `pip install --no-deps torchfcpe==0.0.4`")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "assets", "fcpe_c_v001.pt")
        if os.path.isfile(path):
            return path
    raise FCPEWeightsError(f"torchfcpe is installed at {list(spec.submodule_search_locations)} "
                           f"but has no assets/fcpe_c_v001.pt")


def default_weights() -> str:
    """``$SVCJAX_FCPE`` if set, else torchfcpe's bundled file."""
    env = os.environ.get("SVCJAX_FCPE")
    return env if env else find_torchfcpe_weights()


def _plain(x: Any) -> Any:
    """Config trees as plain dicts (a pickled DotDict of the training script is an inert
    record holding its items)."""
    from svcjax.interop.torch_pickle import Opaque

    if isinstance(x, Opaque):
        x = x.__dict__.get("mapping", x.__dict__.get("state"))
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _section(cfg: Any, name: str, path: str) -> dict:
    sec = cfg.get(name) if isinstance(cfg, dict) else None
    if not isinstance(sec, dict):
        raise FCPEWeightsError(f"{path}: the checkpoint's config has no {name!r} section")
    return sec


def _get(sec: dict, key: str, path: str, default: Any = None, required: bool = True) -> Any:
    v = sec.get(key, default)
    if v is None:
        if required:
            raise FCPEWeightsError(f"{path}: the checkpoint's config lacks {key!r}")
        return default
    return v


def _strip(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {str(k): np.asarray(v) for k, v in sd.items()}


def _weight_norm(sd: dict, prefix: str, path: str) -> np.ndarray:
    """A Linear's weight whether saved plain or weight-normed (old or parametrizations API)."""
    for g, v in ((f"{prefix}.weight_g", f"{prefix}.weight_v"),
                 (f"{prefix}.parametrizations.weight.original0",
                  f"{prefix}.parametrizations.weight.original1")):
        if g in sd and v in sd:
            gv, vv = sd[g].astype(np.float64), sd[v].astype(np.float64)
            norm = np.sqrt(np.sum(vv * vv, axis=tuple(range(1, vv.ndim)), keepdims=True))
            return (gv * vv / norm).astype(np.float32)
    if f"{prefix}.weight" in sd:
        return sd[f"{prefix}.weight"]
    raise FCPEWeightsError(f"{path}: the checkpoint has no weight for {prefix!r}")


def _config_of(ckpt: Any, path: str) -> tuple[FCPEConfig, dict, str]:
    """Which network the file holds, its config and the prefix map of its state_dict."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        raise FCPEWeightsError(
            f"{path} is not an FCPE checkpoint (expected a dict with a 'model' state_dict and "
            f"a 'config' (So-VITS-SVC's pretrain/fcpe.pt) or 'config_dict' (torchfcpe))")
    sd = _strip(ckpt["model"])
    if "config_dict" in ckpt:
        cfg = _plain(ckpt["config_dict"])
        model, mel = _section(cfg, "model", path), _section(cfg, "mel", path)
        mtype = model.get("type")
        if mtype != "CFNaiveMelPE":
            raise FCPEWeightsError(f"{path} holds a torchfcpe model of type {mtype!r}; svcjax "
                                   f"reads CFNaiveMelPE only")
        mel_type = str(mel.get("type", "default")).lower()
        if mel_type not in ("default", "none"):
            raise FCPEWeightsError(f"{path}: mel type {mel.get('type')!r} is not supported "
                                   f"(only torchfcpe's default mel)")
        conf = FCPEConfig(
            kind="cfnaive", n_mels=int(_get(mel, "num_mels", path)),
            out_dims=int(_get(model, "out_dims", path)),
            hidden=int(_get(model, "hidden_dims", path)),
            n_layers=int(_get(model, "n_layers", path)),
            n_heads=int(_get(model, "n_heads", path)),
            use_fa_norm=bool(_get(model, "use_fa_norm", path)),
            conv_only=bool(_get(model, "conv_only", path, False, required=False)),
            harmonic_emb=bool(_get(model, "use_harmonic_emb", path, False, required=False)),
            f0_min=float(_get(model, "f0_min", path)), f0_max=float(_get(model, "f0_max", path)),
            sr=int(_get(mel, "sr", path, 16000, False)),
            n_fft=int(_get(mel, "n_fft", path, 1024, False)),
            win_size=int(_get(mel, "win_size", path, 1024, False)),
            hop=int(_get(mel, "hop_size", path, 160, False)),
            fmin=float(_get(mel, "fmin", path, 0, False)),
            fmax=float(_get(mel, "fmax", path, 8000, False)))
        names = {"stack": "input_stack", "layers": "net.encoder_layers", "out": "output_proj"}
    elif "config" in ckpt and "stack.0.weight" in sd:
        cfg = _plain(ckpt["config"])
        model, mel = _section(cfg, "model", path), _section(cfg, "mel", path)
        if model.get("use_siren") or model.get("use_full"):
            raise FCPEWeightsError(f"{path}: use_siren / use_full FCPE models are not "
                                   f"supported (the reference cannot build them either)")
        conf = FCPEConfig(
            kind="pcmer", n_mels=int(_get(model, "input_channel", path)),
            out_dims=int(_get(model, "out_dims", path)),
            hidden=int(_get(model, "n_chans", path)),
            n_layers=int(_get(model, "n_layers", path)), n_heads=8,
            f0_min=float(_get(model, "f0_min", path, 32.70, False)),
            f0_max=float(_get(model, "f0_max", path, 1975.5, False)),
            sr=int(_get(mel, "sampling_rate", path)), n_fft=int(_get(mel, "n_fft", path)),
            win_size=int(_get(mel, "win_size", path)), hop=int(_get(mel, "hop_size", path)),
            fmin=float(_get(mel, "fmin", path)), fmax=float(_get(mel, "fmax", path)))
        names = {"stack": "stack", "layers": "decoder._layers", "out": "dense_out"}
    else:
        raise FCPEWeightsError(
            f"{path} is not an FCPE checkpoint: its 'model' state_dict matches neither "
            f"So-VITS-SVC's FCPE (stack.0.weight with a 'config') nor torchfcpe's CFNaiveMelPE "
            f"(a 'config_dict')")
    if conf.hidden % 4 or (not conf.conv_only and conf.hidden % conf.n_heads):
        raise FCPEWeightsError(f"{path}: hidden width {conf.hidden} does not fit GroupNorm(4) "
                               f"and {conf.n_heads} heads")
    layer0 = f"{names['layers']}.0.attn.fast_attention.projection_matrix"
    if not conf.conv_only and conf.n_layers > 0:
        if layer0 not in sd:
            raise FCPEWeightsError(f"{path}: the checkpoint has no {layer0}")
        conf = dataclasses.replace(conf, nb_features=int(sd[layer0].shape[0]))
    return conf, sd, names


def _params_from(conf: FCPEConfig, sd: dict, names: dict, path: str) -> dict:
    """The state_dict mapped onto :class:`FCPENet`'s parameter tree (shapes checked)."""
    def t(key):
        if key not in sd:
            raise FCPEWeightsError(f"{path}: the checkpoint has no {key}")
        return sd[key]

    def conv(key):  # torch (O, I, K) -> flax (K, I, O)
        return np.transpose(t(key), (2, 1, 0))

    def dense(prefix, weight=None):
        w = t(f"{prefix}.weight") if weight is None else weight
        w = w[..., 0] if w.ndim == 3 else w  # 1x1 Conv1d as a Dense
        return {"kernel": np.ascontiguousarray(w.T), "bias": t(f"{prefix}.bias")}

    def ln(prefix):
        return {"scale": t(f"{prefix}.weight"), "bias": t(f"{prefix}.bias")}

    s = names["stack"]
    p: dict[str, Any] = {
        "in_conv1": {"kernel": conv(f"{s}.0.weight"), "bias": t(f"{s}.0.bias")},
        "in_gn_scale": t(f"{s}.1.weight"), "in_gn_bias": t(f"{s}.1.bias"),
        "in_conv2": {"kernel": conv(f"{s}.3.weight"), "bias": t(f"{s}.3.bias")},
        "norm": ln("norm"),
        "out": dense(names["out"], _weight_norm(sd, names["out"], path)),
    }
    if conf.harmonic_emb:
        p["harmonic"] = t("harmonic_emb.weight")[0]
    for i in range(conf.n_layers):
        pre = f"{names['layers']}.{i}"
        # torchfcpe wraps the module in a Sequential when it was trained with conv dropout
        cm = f"{pre}.conformer.net" if f"{pre}.conformer.net.0.weight" in sd \
            else f"{pre}.conformer.0.net"
        layer: dict[str, Any] = {"conv": {
            "norm": ln(f"{cm}.0"), "pw1": dense(f"{cm}.2"),
            "dw": {"kernel": conv(f"{cm}.4.conv.weight"), "bias": t(f"{cm}.4.conv.bias")},
            "pw2": dense(f"{cm}.6")}}
        if not conf.conv_only:
            a = f"{pre}.attn"
            layer["attn_norm"] = ln(f"{pre}.norm")
            layer["attn"] = {n: dense(f"{a}.{n}") for n in ("to_q", "to_k", "to_v", "to_out")}
            layer["attn"]["projection"] = t(f"{a}.fast_attention.projection_matrix")
        p[f"layer_{i}"] = layer
    target = jax.eval_shape(lambda: FCPENet(conf).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4, conf.n_mels)), jnp.ones((1, 4))))["params"]
    flat_t = dict(jax.tree_util.tree_leaves_with_path(target))
    flat_p = dict(jax.tree_util.tree_leaves_with_path(p))
    if set(flat_t) != set(flat_p):
        missing = sorted(jax.tree_util.keystr(k) for k in set(flat_t) - set(flat_p))
        raise FCPEWeightsError(f"{path}: parameters missing for {missing[:3]}")
    for k, v in flat_t.items():
        if tuple(np.shape(flat_p[k])) != tuple(v.shape):
            raise FCPEWeightsError(
                f"{path}: {jax.tree_util.keystr(k)} has shape {tuple(np.shape(flat_p[k]))} in "
                f"the file but the config's dimensions need {tuple(v.shape)}")
    return jax.tree.map(lambda a: np.asarray(a, np.float32), p)


def load_fcpe(path: str | os.PathLike) -> tuple[FCPEConfig, dict, np.ndarray]:
    """``(config, params, cent_table)`` from So-VITS-SVC's ``fcpe.pt`` or torchfcpe's
    ``fcpe_c_v001.pt`` (which one is recognised from the file's layout)."""
    from svcjax.interop import torch_pickle

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FCPEWeightsError(f"FCPE weights {path!r} not found (expected So-VITS-SVC's "
                               f"pretrain/fcpe.pt or torchfcpe's fcpe_c_v001.pt)")
    try:
        ckpt = torch_pickle.load(path)
    except torch_pickle.TorchFileError as e:
        raise FCPEWeightsError(f"cannot read FCPE weights: {e}") from None
    conf, sd, names = _config_of(ckpt, path)
    params = _params_from(conf, sd, names, path)
    table = sd.get("cent_table")
    if table is None or table.shape != (conf.out_dims,):
        raise FCPEWeightsError(f"{path}: the checkpoint has no cent_table of "
                               f"{conf.out_dims} bins")
    return conf, params, np.asarray(table, np.float32)


# --------------------------------------------------------------------------------------
# running


class FCPERunner:
    """FCPE over a batch of clips at the model rate: host padding, then one jit-compiled call
    (mel, network, decoding) per bucketed shape, the batch split over a mesh's devices.

    ``runner(clips16, n_in, threshold)`` returns ``(f0 (B, N), frames (B,))`` (Hz, 0 unvoiced),
    ``N`` the longest clip's frame count; ``raw=True`` adds the salience ``(B, N, D)``.
    ``mesh=None``: every accelerator device, or one device on the CPU (as :class:`CrepeRunner`).
    """

    def __init__(self, conf: FCPEConfig, params: Any, cent_table: np.ndarray, mesh=None):
        self.conf = conf
        if mesh is None:
            cpu = jax.default_backend() == "cpu"
            mesh = shd.make_mesh(devices=jax.devices()[:1] if cpu else None)
        self.mesh = mesh
        self.n_dev = mesh.devices.size
        rep = shd.replicated(mesh)
        self.params = jax.device_put(jax.tree.map(jnp.asarray, params), rep)
        self.table = jax.device_put(jnp.asarray(cent_table), rep)
        self.traces = 0
        net = FCPENet(conf)

        def run(params, table, padded, src, mask, threshold, raw):
            self.traces += 1
            mel = padded_log_mel(padded, src, conf)
            sal = net.apply({"params": params}, mel, mask)
            f0 = decode_local_argmax(sal, table, threshold) * mask
            return (f0, sal) if raw else f0

        b2, b3 = shd.batch_sharding(mesh, 2), shd.batch_sharding(mesh, 3)
        self._run = {raw: jax.jit(
            lambda p, t, a, s, m, th, raw=raw: run(p, t, a, s, m, th, raw),
            in_shardings=(rep, rep, b2, b2, b2, rep),
            out_shardings=(b2, b3) if raw else b2) for raw in (False, True)}

    def __call__(self, clips16: Sequence[np.ndarray], n_in: Sequence[int], threshold: float,
                 raw: bool = False):
        bsz = len(clips16)
        rows = -(-bsz // self.n_dev) * self.n_dev
        padded, src, mask, frames = prepare(clips16, n_in, self.conf, rows)
        out = self._run[bool(raw)](self.params, self.table, padded, src, mask,
                                   np.float32(threshold))
        n = int(frames.max())
        if raw:
            return np.asarray(out[0])[:bsz, :n], frames, np.asarray(out[1])[:bsz, :n]
        return np.asarray(out)[:bsz, :n], frames


def prepare(clips16: Sequence[np.ndarray], n_in: Sequence[int], conf: FCPEConfig,
            rows: int | None = None):
    """Host side of a batch: each clip padded for the STFT as alone, zeros after it; the mel
    frame each output frame copies (the appended last frame), the frame mask and counts.
    Frames are bucketed (few compiled shapes); ``rows`` pads the batch (device multiple)."""
    bsz = len(clips16)
    rows = bsz if rows is None else rows
    counts = [mel_frames(len(x), int(n), conf) for x, n in zip(clips16, n_in)]
    frames = np.array([f for _, f in counts], np.int32)
    n_max = bucket_length(int(frames.max()), min_len=16, multiple=16)
    width = (n_max - 1) * conf.hop + conf.n_fft
    padded = np.zeros((rows, width), np.float32)
    src = np.zeros((rows, n_max), np.int32)
    mask = np.zeros((rows, n_max), np.float32)
    for b, x in enumerate(clips16):
        xp = pad_for_mel(x, conf)[:width]
        padded[b, :xp.shape[0]] = xp
        t, f = counts[b]
        src[b, :f] = np.minimum(np.arange(f), t - 1)
        mask[b, :f] = 1.0
    return padded, src, mask, frames


def log_mel(clips16: Sequence[np.ndarray], n_in: Sequence[int], conf: FCPEConfig):
    """The network's input: ``(mel (B, N, n_mels), frames (B,))`` as both codes compute it."""
    padded, src, _, frames = prepare(clips16, n_in, conf)
    mel = _mel_jit(padded, src, conf)
    return np.asarray(mel)[:, :int(frames.max())], frames


_mel_jit = jax.jit(padded_log_mel, static_argnums=2)
