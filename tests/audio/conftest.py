"""Fixtures for the audio tests: the live reference (skipped when absent) and its .npz."""

import numpy as np
import pytest

from tests.audio import cases


@pytest.fixture(scope="session")
def ref():
    """Loader for reference modules; skips when there is no So-VITS-SVC checkout."""
    if cases.reference_path() is None:
        pytest.skip("So-VITS-SVC reference checkout not found (set SVCJAX_REF=/path/to/"
                    "so-vits-svc); tests/fixtures/audio/reference.npz covers it")
    pytest.importorskip("torch")
    return cases.load_reference


@pytest.fixture(scope="session")
def fixture():
    with np.load(cases.FIXTURE) as data:
        return {k: data[k] for k in data.files}
