"""Every So-VITS ``speech_encoder`` converts end to end: a SoVITS model whose config names the
kind (``ssl_dim`` = the encoder's width) and the encoder file of that kind, through
``Converter.from_paths`` (what ``svcjax convert`` runs).

The encoder files are the committed parity fixtures (reduced widths, random weights, in each
real file format); the SoVITS model is the ``variant=test`` generator with random weights.
Each kind compiles its own encoder and, per width, a generator: two kinds of two families run
in ``make test``, every kind with ``pytest -m slow``.
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from svcjax.train import checkpoint
from svcjax.models import encoders

ROOT = Path(__file__).parent.parent
FIX = ROOT / "tests" / "fixtures"

FILES = {
    "vec768l12": ("content_encoder/contentvec_tiny.pt", 32),
    "vec256l9": ("content_encoder/contentvec_tiny.pt", 16),
    "hubertsoft": ("content_encoder/hubert_soft_tiny.pt", 16),
    "cnhubertlarge": ("hubert_large/cnhubert_tiny.pt", 32),
    "dphubert": ("dphubert/dphubert_tiny.pth", 32),
    "wavlmbase+": ("wavlm/wavlm_base_tiny.pt", 64),
    "whisper-ppg": ("whisper/whisper_tiny.pt", 64),
    "whisper-ppg-large": ("whisper/whisper_tiny.pt", 64),
}
FAST = {"dphubert", "whisper-ppg"}  # two families and two widths in make test


def test_every_registered_kind_has_a_case():
    assert set(FILES) == set(encoders.KINDS)


def _sovits_dir(d: Path, kind: str, dim: int) -> Path:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from configs import sovits_44k
    from svcjax.interop import sovits as sovits_convert
    from svcjax.models import synthesizer

    cfg = sovits_44k.get_config("variant=test")
    cfg.model.speech_encoder = kind
    cfg.model.ssl_dim = dim
    model = synthesizer.from_config(cfg, with_posterior=False)
    r = np.random.RandomState(0)
    params = jax.tree.map(lambda s: (0.1 * r.randn(*s.shape)).astype(np.float32),
                          synthesizer.init_params(model, shapes_only=True))
    out = d / f"sovits_{kind}"
    checkpoint.save_model_dir(out, params, sovits_convert.model_dir_config(cfg, False))
    return out


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k in FAST else pytest.mark.slow)
                                  for k in FILES])
def test_a_model_of_each_speech_encoder_converts(tmp_path, kind):
    import soundfile as sf

    from svcjax.runtime import converter as pipeline
    from svcjax.audio.io import resample_audio

    rel, dim = FILES[kind]
    model = _sovits_dir(tmp_path, kind, dim)
    conv = pipeline.Converter.from_paths(str(model), encoder=str(FIX / rel))
    assert conv.encoder.kind.name == kind and conv.encoder.dim == dim
    wav, sr = sf.read(FIX / "voices" / "kal_16k.wav", dtype="float32")
    wav = resample_audio(wav[:sr], sr, 44100)
    out, = conv.convert([wav], pipeline.ConvertOptions(speaker="alto", f0_method="dio"))
    assert out.shape == wav.shape and np.all(np.isfinite(out))
    assert float(np.abs(out).max()) > 0
