"""The content-encoder registry: every registered kind and family keeps the family contract."""

import pytest

from svcjax.models import encoders

MODEL_API = ("default_config", "build_model", "num_frames", "min_samples", "max_samples",
             "unit_dim", "hop")


@pytest.mark.parametrize("family", sorted(encoders.FAMILIES))
def test_family_modules_have_the_contract(family):
    net = encoders.model_module(family)
    missing = [f for f in MODEL_API if not callable(getattr(net, f, None))]
    assert not missing, f"{net.__name__} lacks {missing}"
    importer = encoders.importer_module(family)
    assert callable(importer.sniff) and callable(importer.import_checkpoint)
    assert importer.sniff({"nothing": 1}) is False


@pytest.mark.parametrize("kind", sorted(encoders.KINDS))
def test_full_size_config_gives_the_kinds_dimension(kind):
    k = encoders.get_kind(kind)
    net = encoders.model_module(k.family)
    cfg = net.default_config(kind)
    assert cfg.kind == kind and encoders.family_of(cfg) == k.family
    assert net.unit_dim(cfg) == k.dim
    assert net.hop(cfg) == 320  # every So-VITS encoder gives 50 Hz units at 16 kHz
    assert net.num_frames(16000, cfg) in (49, 50)


def test_unknown_names_are_one_sentence():
    with pytest.raises(ValueError, match="unknown content encoder kind 'nope'; known: vec768l12"):
        encoders.get_kind("nope")
    with pytest.raises(ValueError, match="unknown content encoder family 'nope'"):
        encoders.model_module("nope")


def _encoder_fixtures():
    import glob
    import os

    fix = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
    files = []
    for pattern in ("content_encoder/*.pt", "content_encoder/hf_tiny", "wavlm/*.pt",
                    "hubert_large/*.pt", "dphubert/*.pth", "whisper/*.pt"):
        files += sorted(glob.glob(os.path.join(fix, pattern)))
    return files


@pytest.mark.parametrize("path", _encoder_fixtures(), ids=lambda p: "/".join(p.split("/")[-2:]))
def test_each_encoder_file_is_claimed_by_exactly_one_family(path):
    from svcjax.interop.content_encoder import read_encoder_object

    obj, _ = read_encoder_object(path)
    claims = [f for f in encoders.FAMILIES if encoders.importer_module(f).sniff(obj)]
    assert len(claims) == 1, f"{path}: claimed by {claims}"
