"""The Flax HuBERT network: frame counts, masks (padded batches = clips alone), attention blocks."""

import os

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from flax import traverse_util

from svcjax.models import content_encoder as ce

VOICES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "voices")
SMALL_CONV = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2


def small(**kw):
    args = dict(conv_layers=SMALL_CONV, embed_dim=32, ffn_dim=64, num_heads=4, num_layers=3,
                final_dim=8)
    args.update(kw)
    return ce.Hubert(**args)


def random_params(net, seed=0, length=4000):
    """Parameters of ``net`` drawn with NumPy (no compile): N(0, 0.3); norm scales near 1."""
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, length)))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        x = rng.standard_normal(s.shape).astype(np.float32) * 0.3
        return x + 1 if path[-1].key in ("scale", "kernel_g") else x

    return jax.tree_util.tree_map_with_path(draw, shapes)


def clips():
    """Three real voices at 16 kHz, cut to different lengths."""
    out = []
    for name, n in (("rms_16k.wav", 17000), ("slt_up5_44k.wav", 9100), ("rms_22k_stereo.wav", 13337)):
        wav, _ = librosa.load(os.path.join(VOICES, name), sr=16000, mono=True)
        out.append(wav[4000:4000 + n].astype(np.float32))
    return out


def test_num_frames_is_the_conv_stacks_output_length():
    assert ce.num_frames(16000) == 49 and ce.num_frames(400) == 1 and ce.num_frames(399) == 0
    assert ce.num_frames(16000, input_pad=40) == 50
    net = small()
    for n in (400, 719, 720, 4321, 16000):
        shapes = jax.eval_shape(lambda: net.init_with_output(
            jax.random.key(0), jnp.zeros((1, n)))[0])
        assert shapes[0].shape[1] == ce.num_frames(n, SMALL_CONV), n
    np.testing.assert_array_equal(ce.num_frames(np.array([399, 400, 16000])), [0, 1, 49])
    np.testing.assert_array_equal(ce.num_frames(jnp.array([399, 16000])), [0, 49])


def test_parameter_names_follow_fairseq():
    shapes = jax.eval_shape(small().init, jax.random.key(0), jnp.zeros((1, 4000)))["params"]
    flat = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(shapes).items()}
    assert flat["feature_extractor/conv_layers_0_0/kernel"] == (10, 1, 16)
    assert flat["feature_extractor/conv_layers_0_2/scale"] == (16,)
    assert "feature_extractor/conv_layers_0_0/bias" not in flat  # conv_bias=False
    assert flat["post_extract_proj/kernel"] == (16, 32)
    assert flat["encoder/pos_conv_0/kernel_v"] == (128, 2, 32)   # 16 groups
    assert flat["encoder/pos_conv_0/kernel_g"] == (128,)         # one gain per kernel tap
    assert flat["encoder/layers_2/self_attn/q_proj/kernel"] == (32, 32)
    assert flat["encoder/layers_2/fc1/kernel"] == (32, 64)
    assert flat["final_proj/kernel"] == (32, 8)


def reduction_lengths(samples: int, layer: int, frames: int) -> list[int]:
    """Lengths of the sums on the path from the waveform to hidden state ``layer`` of small().

    The first conv's GroupNorm sums over all its output frames (samples / 5); then the conv
    taps (10, then 3 or 2 x 16 channels), the projection (16), the positional conv (128 taps x
    2 channels a group) and, for each transformer layer, q/k/v (32), the attention over the
    frames, the output projection (32), two layer norms (32) and the feed-forward (32, 64).
    """
    convs = [k * (1 if i == 0 else 16) for i, (_, k, _) in enumerate(SMALL_CONV)]
    return ([samples // 5] + convs + [16, 128 * 2, 32]
            + layer * [32, frames, 32, 32, 32, 64, 32])


def float32_drift(ref: np.ndarray, lengths: list[int], tail: float = 6.0) -> float:
    """Tolerance for two float32 evaluations of one network that sum in different orders.

    A sum of K float32 terms carries a rounding error of about eps * sqrt(K) times the
    magnitude of its terms (a random walk of K roundings). Normalisation keeps every layer's
    scale near the output's RMS, and the errors of successive sums add, so the expected error
    of an element is eps * sqrt(sum K) * rms; ``tail`` covers the largest of a few thousand
    such errors (|N(0, 1)| stays below 6 with probability 1 - 2e-9 per element).
    """
    rms = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    return tail * float(np.finfo(np.float32).eps) * float(np.sqrt(sum(lengths))) * rms


@pytest.mark.parametrize("input_pad", [0, 40], ids=["contentvec", "hubertsoft-padding"])
def test_padded_batch_gives_each_clip_alone(input_pad):
    """Batch with garbage past each length == each clip alone, every layer.

    Padding changes the order of the sums (the GroupNorm over time above all), so the rows
    agree to float32 rounding (:func:`float32_drift`), not bit for bit; leaked garbage (0.7
    loud, past every length) would differ by orders of magnitude more.
    """
    net = small(num_layers=2, input_pad=input_pad)
    params = random_params(net)
    xs = clips()
    jitted = jax.jit(lambda p, w, n: net.apply(p, w, n, hidden_states=True))

    def run(*args):
        with jax.default_matmul_precision("highest"):  # float32 products: the drift model holds
            return jitted(*args)

    batch = np.full((3, 20000), 0.7, np.float32)  # past the lengths: loud garbage
    for j, x in enumerate(xs):
        batch[j, : len(x)] = x
    lengths = np.array([len(x) for x in xs])
    states, frames = run(params, batch, lengths)
    np.testing.assert_array_equal(frames, ce.num_frames(lengths, SMALL_CONV, input_pad))
    for j in (1, 2):
        alone, f = run(params, xs[j][None], None)
        n = int(f[0])
        assert n == frames[j]
        for layer, (a, b) in enumerate(zip(alone, states)):
            a = np.asarray(a)[0]
            atol = float32_drift(a, reduction_lengths(lengths[j], layer, n))
            np.testing.assert_allclose(np.asarray(b)[j, :n], a, atol=atol, rtol=0,
                                       err_msg=f"clip {j} layer {layer}")
            assert not np.asarray(b)[j, n:].any()


def test_attention_in_query_blocks_equals_whole():
    x = jax.random.normal(jax.random.key(0), (2, 70, 32))
    mask = jnp.arange(70)[None] < jnp.array([[70], [41]])
    whole = ce.SelfAttention(4, query_block=1024)
    params = whole.init(jax.random.key(1), x, mask)
    a = whole.apply(params, x, mask)
    b = ce.SelfAttention(4, query_block=16).apply(params, x, mask)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=0)


def test_all_padding_rows_stay_finite():
    net = small(num_layers=2)
    units, frames = jax.jit(net.apply)(random_params(net), jnp.ones((2, 4000)),
                                       jnp.array([4000, 0]))
    assert np.isfinite(np.asarray(units)).all() and int(frames[1]) == 0
    assert not np.asarray(units)[1].any()


def test_build_model_checks_the_kind():
    cfg = ce.default_config("vec256l9", num_layers=8)
    with pytest.raises(ValueError, match="uses layer 9 but the model has only 8"):
        ce.build_model(cfg)
    cfg = ce.default_config("vec256l9", final_dim=0)
    with pytest.raises(ValueError, match="needs the final projection"):
        ce.build_model(cfg)
    with pytest.raises(ValueError, match="unknown content encoder kind 'whisper'"):
        ce.default_config("whisper")
    net = ce.build_model(ce.default_config("vec256l9"))
    assert net.num_layers == 9 and net.final_dim == 256 and net.input_pad == 0
    net = ce.build_model(ce.default_config("hubertsoft"))
    assert net.num_layers == 12 and net.final_dim == 256 and net.input_pad == 40
