"""RMVPE: parity with So-VITS-SVC 4.1's own ``RMVPE`` (random weights saved as ``rmvpe.pt``).

Fixture: tests/fixtures/make_rmvpe.py (the reference's E2E0, reduced widths, its
``infer_from_audio`` on 16 kHz clips and ``RMVPEF0Predictor.post_process`` to So-VITS frames).

Tolerances (float32, matmul precision "highest" from tests/conftest.py): the saliences come
out of ~40 conv layers and a GRU; float32 rounding (2^-24 relative per op) grows to ~1e-5
relative on the log-mel's small bins (the reference's FFT and XLA's differ in summation order)
and a sigmoid bounds the output's slope by 1/4, so 1e-4 absolute is ~10x the observed worst
case. The F0 of a voiced frame is 20 cents x a weighted mean of bin indices with weights good
to 1e-4; with peak saliences above 0.05 that moves the mean by well under 0.1 cent, so 1 cent
holds wherever the argmax and the voicing decision are not within the salience tolerance of a
tie, which the test checks of the fixture rather than assumes.
"""

import os

import jax
import numpy as np
import pytest

from svcjax.runtime import sharding as shd
from svcjax.audio import f0 as f0mod
from svcjax.interop.rmvpe import RmvpeWeightsError, load_rmvpe
from svcjax.models.rmvpe import RmvpeConfig, decode_local_average

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures", "rmvpe")
PT = os.path.join(FIX, "rmvpe.pt")
CLIPS = ("kal", "slt", "rms")
SAL_TOL = 1e-4
THRESHOLD = 0.05


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "rmvpe_ref.npz")))


@pytest.fixture(scope="module")
def batched(ref):
    """The three clips as one padded batch, split over a 4-device mesh (padded to 4 rows)."""
    mesh = shd.make_mesh(devices=jax.devices()[:4])
    audio = [ref[f"{c}_audio16"] for c in CLIPS]
    n_out = [len(ref[f"{c}_sovits_f0"]) for c in CLIPS]
    return f0mod.rmvpe_f0_16k(audio, n_out, weights=PT, threshold=THRESHOLD, mesh=mesh,
                              return_raw=True)


def _cents(a, b):
    return np.abs(1200.0 * np.log2(a / b))


def test_dimensions_come_from_the_checkpoint():
    model, params = load_rmvpe(PT)
    assert model.config == RmvpeConfig(n_encoders=5, n_inters=1, n_blocks=2, en_out_channels=2,
                                       in_channels=1, gru_hidden=16, gru_layers=1)
    assert params["fc_0_gru"]["weight_hh_l0_reverse"].shape == (48, 16)


def test_salience_and_f0_match_the_reference(ref, batched):
    _, _, sal, counts = batched
    for i, c in enumerate(CLIPS):
        want = ref[f"{c}_salience"]
        assert counts[i] == want.shape[0] == 1 + len(ref[f"{c}_audio16"]) // 160
        got = sal[i, :counts[i]]
        np.testing.assert_allclose(got, want, atol=SAL_TOL, rtol=0, err_msg=c)

        peak = want.max(-1)
        top2 = np.sort(want, -1)[:, -2:]
        clear = (np.abs(peak - THRESHOLD) > SAL_TOL) & (top2[:, 1] - top2[:, 0] > 2 * SAL_TOL)
        assert clear.mean() > 0.9, f"{c}: the fixture has too many near-ties to test F0"
        f0, voiced = (np.asarray(a) for a in jax.jit(decode_local_average)(got, THRESHOLD))
        rf0 = ref[f"{c}_f0"]
        assert 0.2 < (rf0 > 0).mean() < 1.0, "the fixture exercises voiced and unvoiced frames"
        np.testing.assert_array_equal(voiced[clear], rf0[clear] > 0, err_msg=c)
        both = clear & (rf0 > 0)
        assert _cents(f0[both], rf0[both]).max() < 1.0, c


def test_sovits_frames_match_the_reference_predictor(ref, batched):
    f0, uv, _, _ = batched
    for i, c in enumerate(CLIPS):
        want_f0, want_uv = ref[f"{c}_sovits_f0"], ref[f"{c}_sovits_uv"]
        n = len(want_f0)
        np.testing.assert_array_equal(uv[i, :n], want_uv, err_msg=c)
        assert np.all(f0[i, n:] == 0) and np.all(uv[i, n:] == 0)
        assert _cents(f0[i, :n], want_f0).max() < 1.0, c


def test_a_clip_alone_equals_its_row_of_a_padded_batch(ref, batched, monkeypatch):
    # alone: through extract_f0 at 16 kHz (no resampling), weights from the environment
    monkeypatch.setenv(f0mod.RMVPE_ENV, PT)
    c = "slt"
    f0, uv = f0mod.extract_f0(ref[f"{c}_audio16"], 16000, "rmvpe")
    n = len(ref[f"{c}_sovits_f0"])
    assert f0.shape == uv.shape == (n,)
    i = CLIPS.index(c)
    np.testing.assert_array_equal(uv, batched[1][i, :n])
    # same network, other padding and batch size: only float32 summation order differs
    np.testing.assert_allclose(f0, batched[0][i, :n], rtol=1e-5)


def test_missing_weights_is_one_clear_sentence(monkeypatch, tmp_path):
    monkeypatch.delenv(f0mod.RMVPE_ENV, raising=False)
    x = np.zeros(16000, np.float32)
    with pytest.raises(RmvpeWeightsError, match="needs RMVPE.s weights file.*SVCJAX_RMVPE"):
        f0mod.extract_f0(x, 16000, "rmvpe")
    with pytest.raises(RmvpeWeightsError, match="not found"):
        f0mod.extract_f0(x, 16000, "rmvpe", weights=tmp_path / "nope.pt")
    bad = tmp_path / "rmvpe.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RmvpeWeightsError, match="cannot read RMVPE weights"):
        f0mod.extract_f0(x, 16000, "rmvpe", weights=bad)


def test_f0_command_reads_the_weights_from_the_environment(ref, batched, tmp_path, monkeypatch):
    import soundfile as sf

    from svcjax import cli

    c = "slt"
    wav = tmp_path / f"{c}.wav"
    sf.write(wav, ref[f"{c}_audio16"], 16000, subtype="FLOAT")  # the fixture's exact samples
    monkeypatch.setenv(f0mod.RMVPE_ENV, PT)
    assert cli.main(["f0", str(wav), "--method", "rmvpe", "--out", str(tmp_path / "out")]) == 0
    f0, uv = np.load(tmp_path / "out" / f"{c}.f0.npy")
    i, n = CLIPS.index(c), len(ref[f"{c}_sovits_f0"])
    np.testing.assert_array_equal(uv, batched[1][i, :n])
    np.testing.assert_allclose(f0, batched[0][i, :n], rtol=1e-5)


def test_featurizer_passes_the_weights_file_and_records_it(monkeypatch):
    from svcjax.data import featurizer

    seen = {}

    def spy(audio, sr, method, *, lengths=None, weights=None):
        seen.update(method=method, weights=weights)
        return np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)

    monkeypatch.setattr(f0mod, "extract_f0", spy)
    feat = featurizer.Featurizer.from_config(dict(features="f0", f0_method="rmvpe",
                                                  f0_weights=PT))
    feat._f0(np.zeros((1, 4096), np.float32), np.array([4096]))
    assert seen == dict(method="rmvpe", weights=os.path.abspath(PT))
    assert feat.describe()["f0_weights_file"]["path"] == os.path.abspath(PT)
    with pytest.raises(RmvpeWeightsError, match="not found"):
        featurizer.Featurizer.from_config(dict(features="f0", f0_method="rmvpe",
                                               f0_weights=PT + ".missing"))


def test_resampling_is_torchaudios_sinc_hann():
    """The reference resamples to 16 kHz with torchaudio's Resample(sr, 16000,
    lowpass_filter_width=128) (Hann-windowed sinc, roll-off 0.99). Its definition, written as
    one filter on the 44100 * 160 / 441 upsampled grid, run through SciPy's independent
    polyphase ``resample_poly``, must give svcjax's strided-convolution result (float32
    rounding of a ~300-tap sum: < 1e-5 on a unit-scale signal)."""
    import math

    import soundfile as sf
    from scipy.signal import resample_poly

    from svcjax.audio.resample import resample

    x, sr = sf.read(os.path.join(HERE, "..", "fixtures", "voices", "slt_up5_44k.wav"),
                    dtype="float32")
    x = x[:12000]
    o, n, zeros, rolloff = 441, 160, 128, 0.99
    cut = min(o, n) * rolloff
    half = math.ceil(zeros * o * n / cut)
    t = np.arange(-half, half + 1) * cut / (o * n)
    h = np.sinc(t) * np.cos(np.clip(t, -zeros, zeros) * math.pi / zeros / 2) ** 2 * cut / o
    want = resample_poly(x.astype(np.float64), n, o, window=h / n)
    got = np.asarray(resample(x[None], sr, 16000, quality="torchaudio_hann128"))[0]
    assert got.shape == (-(-len(x) * n // o),)  # torchaudio's ceil(L * 16000 / sr)
    np.testing.assert_allclose(got, want[:len(got)], atol=1e-5)


def test_a_44k_clip_is_resampled_then_tracked(ref, batched):
    import soundfile as sf

    from svcjax.audio.resample import resample

    x, sr = sf.read(os.path.join(HERE, "..", "fixtures", "voices", "slt_up5_44k.wav"),
                    dtype="float32")
    x = x[:48510]  # 17600 samples at 16 kHz, as the fixture's slt clip: no new compilation
    f0, uv = f0mod.extract_f0(x, sr, "rmvpe", weights=PT)
    assert f0.shape == uv.shape == (f0mod.num_frames(len(x), sr),)
    x16 = np.asarray(resample(x[None], sr, 16000, quality="torchaudio_hann128"))[0]
    f16, u16 = f0mod.rmvpe_f0_16k([x16], [len(f0)], weights=PT)
    np.testing.assert_array_equal(uv, u16[0])
    np.testing.assert_allclose(f0, f16[0], rtol=1e-6)
    assert 0.3 < uv.mean() < 1.0


def test_converter_hands_the_weights_file_to_the_f0_tracker():
    from svcjax.runtime import converter as pipeline
    from tests.test_pipeline import _voiced, identity_converter

    conv, _ = identity_converter()
    seen = []

    def tracker(audio, sr, method, lengths, **kw):
        seen.append((method, kw))
        t = audio.shape[1] // 512
        return np.full((audio.shape[0], t), 220.0), np.ones((audio.shape[0], t))

    conv.f0_fn = tracker
    opts = pipeline.ConvertOptions(speaker="tenor", f0_method="rmvpe", f0_weights=PT)
    conv.convert([_voiced(44100, 0)], opts, progress=False)
    assert seen and all(call == ("rmvpe", {"weights": PT}) for call in seen)
