"""A tiny corpus for the training tests: the real-voice clips featurized by the fast fake
extractors of tests/data/fakes.py (units of 4 dims, 8 mel bins), built once per process."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_BUILT: dict[str, str] = {}


def tiny_corpus() -> str:
    """DATA_DIR of a built svc_corpus (2 speakers, train + validation splits)."""
    if "dir" not in _BUILT:
        from svcjax.data import corpus
        from tests.data import fakes
        from tests.data.conftest import BUILD, make_raw_corpus

        root = tempfile.mkdtemp(prefix="svcjax_train_corpus_")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        raw = make_raw_corpus(os.path.join(root, "raw"))
        data_dir = os.path.join(root, "data")
        corpus.build_corpus(raw, data_dir, fakes.featurizer(), BUILD, log=lambda m: None)
        _BUILT["dir"] = data_dir
    return _BUILT["dir"]


UNIT_DIM = 4
N_MELS = 8
