"""A tiny real-voice corpus (2 speakers, a corrupt file, a too-short clip, a long file)."""

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

VOICES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "voices")

# Corpus settings the tests build with: short slices so the long file gets sliced.
BUILD = dict(max_seconds=3.0, val_per_speaker=1, chunk_clips=3, load_workers=1)


def make_raw_corpus(root):
    alto, tenor = os.path.join(root, "alto"), os.path.join(root, "tenor")
    os.makedirs(alto)
    os.makedirs(tenor)
    for name in ("slt_16k.wav", "hts_32k.wav", "slt_up5_44k.wav"):
        shutil.copy(os.path.join(VOICES, name), alto)
    for name in ("rms_16k.wav", "rms_22k_stereo.wav", "kal_16k.wav"):
        shutil.copy(os.path.join(VOICES, name), tenor)
    slt, sr = sf.read(os.path.join(VOICES, "slt_16k.wav"), dtype="float32")
    kal, _ = sf.read(os.path.join(VOICES, "kal_16k.wav"), dtype="float32")
    # 0.15 s of voiced speech: kept whole by the trim, skipped as too short.
    voiced = np.flatnonzero(np.abs(kal) > 0.1 * np.abs(kal).max())[0]
    sf.write(os.path.join(alto, "short.wav"), kal[voiced: voiced + int(0.15 * sr)], sr)
    # A ~7 s flac with pauses: sliced on silence into clips of at most 3 s.
    pause = np.zeros(int(0.4 * sr), np.float32)
    sf.write(os.path.join(tenor, "long.flac"), np.concatenate([kal, pause, slt, pause, kal]), sr)
    with open(os.path.join(tenor, "broken.wav"), "wb") as f:  # a corrupt file
        f.write(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    shutil.copy(os.path.join(VOICES, "kal_16k.wav"), os.path.join(root, "stray.wav"))
    return root


@pytest.fixture(scope="session")
def raw_corpus(tmp_path_factory):
    return make_raw_corpus(str(tmp_path_factory.mktemp("raw")))


@pytest.fixture(scope="session")
def built_corpus(raw_corpus, tmp_path_factory):
    """(data_dir, dataset folder, featurizer) built once for the session."""
    from svcjax.data import corpus
    from tests.data import fakes
    data_dir = str(tmp_path_factory.mktemp("built"))
    feat = fakes.svcjax_featurizer()
    out = corpus.build_corpus(raw_corpus, data_dir, feat, BUILD, log=lambda m: None)
    return data_dir, out, feat
