"""Shared fixtures: the real ml-100k_mm demo dataset (built once per session), a clean sys.argv, no anomaly mode."""

import pytest

from recbole_mm.prepare import ml100k_mm


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory):
    """A data_path holding a freshly built ``ml-100k_mm`` (real MovieLens-100K, real MiniLM features)."""
    root = tmp_path_factory.mktemp("data")
    ml100k_mm.build(str(root))
    return root


@pytest.fixture(scope="session", autouse=True)
def plain_argv():
    """RecBole's Config reads ``--key=value`` pairs from sys.argv; pytest's own options must not leak in."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["pytest"])
        yield


@pytest.fixture(autouse=True)
def no_anomaly_mode():
    """Test modules import RecBole's sequential models at collection, and RecBole's SINE module switches autograd
    anomaly detection on at import (see ``recbole_mm.utils.keeping_anomaly_mode``); tests run without it, as
    recbole_mm runs do."""
    import torch

    torch.autograd.set_detect_anomaly(False)
    yield
