"""Every checkpoint loader refuses hostile and broken files with one sentence, runs nothing.

The loaders (So-VITS generator, content encoder, diffusion, vocoder, CREPE, discriminator)
all read through :mod:`svcjax.interop.torch_pickle`; these tests go through each loader's own
entry point, so a loader that bypassed the restricted reader (or turned its error into a
traceback) would fail here. The CLI side is tests/faults/test_model_faults.py.
"""

from __future__ import annotations

import os

import pytest

from tests.interop import malicious

FIX = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
SOVITS_CFG = os.path.join(FIX, "sovits", "tiny", "config.json")
VOCODER_CFG = os.path.join(FIX, "vocoder", "config.json")
DIFFUSION_CFG = os.path.join(FIX, "diffusion", "config.yaml")


def _sovits(path):
    from svcjax.interop import sovits
    sovits.load_sovits_checkpoint(path, SOVITS_CFG)


def _load_sovits(path):
    from svcjax.runtime.sovits import load_sovits
    load_sovits(path, SOVITS_CFG)


def _encoder(path):
    from svcjax.interop import content_encoder
    content_encoder.import_encoder(path)


def _diffusion(path):
    from svcjax.interop import diffusion
    diffusion.import_checkpoint(path, DIFFUSION_CFG)


def _vocoder(path):
    from svcjax.runtime.vocoder import load_vocoder
    load_vocoder(path, VOCODER_CFG)


def _crepe(path):
    from svcjax.models import crepe
    crepe.load_crepe(path)


def _discriminator(path):
    from svcjax.models.discriminator import load_discriminator
    load_discriminator(path)


LOADERS = {"sovits-import": _sovits, "load_sovits": _load_sovits, "encoder": _encoder,
           "diffusion": _diffusion, "vocoder": _vocoder, "crepe": _crepe,
           "discriminator": _discriminator}


def _one_sentence(err: BaseException, path) -> str:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.mark.parametrize("layout", malicious.LAYOUTS)
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_hostile_pickles_are_refused_by_every_loader(tmp_path, loader, layout):
    for i, kind in enumerate(malicious.PAYLOADS):
        marker = tmp_path / f"ran{i}"
        path = malicious.write_malicious(tmp_path / f"evil{i}.pth", kind, layout, marker)
        with pytest.raises(ValueError) as err:
            LOADERS[loader](path)
        assert "refuses to load global" in _one_sentence(err.value, path), (kind, err.value)
        assert not marker.exists(), kind


@pytest.mark.parametrize("case", ["empty", "random", "truncated-zip", "truncated-legacy"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_broken_files_give_one_sentence_in_every_loader(tmp_path, loader, case):
    good = malicious.write_zip(tmp_path / "good.pth", malicious.checkpoint_pickle(None))
    path = malicious.write_broken(tmp_path / "bad.pth", case, good)
    with pytest.raises(ValueError) as err:
        LOADERS[loader](path)
    _one_sentence(err.value, path)


def test_damaged_model_dir_is_one_sentence(tmp_path):
    import numpy as np

    from svcjax.train import checkpoint

    d = checkpoint.save_model_dir(tmp_path / "m", {"w": np.arange(4096, dtype=np.float32),
                                                   "b": np.ones(3, np.float32)}, {"kind": "x"})
    params, cfg = checkpoint.load_model_dir(d)
    assert cfg.kind == "x" and params["w"][-1] == 4095
    shards = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs
              if os.path.basename(r) == "d"]
    with open(max(shards, key=os.path.getsize), "r+b") as f:
        f.truncate(100)
    with pytest.raises(checkpoint.ModelDirError, match="the model directory is damaged") as err:
        checkpoint.load_model_dir(d)
    _one_sentence(err.value, d)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("[1, 2]")
    with pytest.raises(checkpoint.ModelDirError, match="holds list, not a config object"):
        checkpoint.load_model_dir(d)


def test_closed_event_loop_noise_is_dropped_and_nothing_else(monkeypatch):
    """A failed Orbax restore leaves TensorStore callbacks that hit the closed event loop;
    their RuntimeErrors reach sys.unraisablehook, which drops exactly those."""
    import asyncio
    import sys
    import types

    from svcjax.train import checkpoint

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(checkpoint, "_QUIET_HOOK_SET", False)
    checkpoint._quiet_closed_loop_callbacks()

    def unraisable(exc):
        return types.SimpleNamespace(exc_type=type(exc), exc_value=exc,
                                     exc_traceback=exc.__traceback__, err_msg=None, object=None)

    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(lambda: None)
    except RuntimeError as e:
        closed = e
    sys.unraisablehook(unraisable(closed))
    assert seen == []
    try:
        raise RuntimeError("Event loop is closed")  # same words, raised elsewhere: kept
    except RuntimeError as e:
        other = e
    sys.unraisablehook(unraisable(other))
    sys.unraisablehook(unraisable(ValueError("x")))
    assert [u.exc_value for u in seen] == [other, seen[1].exc_value]
    assert isinstance(seen[1].exc_value, ValueError)
