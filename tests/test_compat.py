"""The compatibility layer: numpy-2 aliases, trusted torch.load, scipy's dok_matrix._update."""

import os

import numpy as np
import pytest
import torch
from scipy.sparse import dok_matrix

from recbole_mm import compat


def test_numpy_aliases_added_only_when_missing(monkeypatch):
    for name in ["float_", "complex_", "unicode_", "bool8"]:
        monkeypatch.delitem(np.__dict__, name, raising=False)
    assert sorted(compat.missing_numpy_aliases()) == ["bool8", "complex_", "float_", "unicode_"]
    compat.apply()
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_ and np.bool8 is np.bool_
    assert compat.missing_numpy_aliases() == []


def test_recbole_config_survives_numpy2_style_removals(monkeypatch):
    """RecBole's Config.compatibility_settings reads np.float_ etc.; with them removed it would raise."""
    from recbole.config import Config as RecBoleConfig

    for name in ["float_", "complex_", "unicode_"]:
        monkeypatch.delitem(np.__dict__, name, raising=False)
    with pytest.raises(AttributeError):
        RecBoleConfig.compatibility_settings(None)
    compat.apply()
    RecBoleConfig.compatibility_settings(None)


def test_apply_is_idempotent():
    compat.apply()
    before = {name: np.__dict__.get(name) for name in ["float_", "complex_", "unicode_", "bool8"]}
    update = getattr(dok_matrix, "_update", None)
    compat.apply()
    assert before == {name: np.__dict__.get(name) for name in before}
    assert getattr(dok_matrix, "_update", None) is update
    assert os.environ[compat.TORCH_LOAD_ENV] == "1"


def test_torch_load_of_a_pickled_config_checkpoint(tmp_path):
    """RecBole's trainer calls torch.load(file) without weights_only; its checkpoints pickle objects."""
    from collections import OrderedDict

    compat.apply()
    path = tmp_path / "ckpt.pth"
    torch.save({"config": OrderedDict(a=1), "state_dict": {"w": torch.ones(2)}}, path)
    assert torch.load(path)["config"]["a"] == 1  # would raise UnpicklingError under weights_only=True


def test_dok_update_matches_a_plain_fill():
    data = {(0, 1): 1.0, (2, 0): 3.0, (1, 1): -2.0}
    patched = dok_matrix((3, 3), dtype=np.float32)
    compat._dok_update(patched, data)
    expected = np.zeros((3, 3), np.float32)
    for (i, j), v in data.items():
        expected[i, j] = v
    np.testing.assert_array_equal(patched.toarray(), expected)
    native = dok_matrix((3, 3), dtype=np.float32)
    native._update(data)  # native on scipy<1.13, the patch on newer scipy
    np.testing.assert_array_equal(native.toarray(), expected)


def test_config_applies_the_layer(monkeypatch, ml100k_root):
    from recbole_mm.config import Config

    for name in ["float_", "complex_", "unicode_", "bool8"]:
        monkeypatch.delitem(np.__dict__, name, raising=False)
    monkeypatch.delenv(compat.TORCH_LOAD_ENV, raising=False)
    Config(model="SASRec", dataset="ml-100k_mm", config_dict={"data_path": str(ml100k_root)})  # reads np.float_
    assert compat.missing_numpy_aliases() == []
    assert os.environ[compat.TORCH_LOAD_ENV] == "1"


def test_recbole_future_warnings_are_silenced_and_others_kept(ml100k_slice, tmp_path):
    """pandas warns about RecBole's own code on every long-sequence dataset load; the layer ignores exactly those."""
    import warnings

    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset

    config_dict = {"data_path": str(ml100k_slice), "checkpoint_dir": str(tmp_path), "MAX_ITEM_LIST_LENGTH": 20}
    config = Config(model="TWIN", dataset="ml-100k_mm", config_dict=config_dict)

    def load(apply: bool) -> list:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if apply:
                compat.apply()
            create_dataset(config).build()
            warnings.warn("a FutureWarning of the caller's own", FutureWarning)
        return [(w.category, os.sep.join(w.filename.split(os.sep)[-3:])) for w in caught]

    unfiltered = load(apply=False)
    assert (FutureWarning, os.path.join("data", "dataset", "dataset.py")) in unfiltered  # RecBole's, under our pins
    filtered = load(apply=True)
    future = [where for category, where in filtered if category is FutureWarning]
    assert len(future) == 1 and future[0].endswith(os.path.join("tests", "test_compat.py")), future  # the caller's
