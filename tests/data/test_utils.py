"""Dataset creation guards."""

import os

import pandas as pd
import pytest

from recbole_mm.data import utils
from recbole_mm.errors import RecBoleMMError


def test_pandas_3_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(pd, "__version__", "3.0.6")
    with pytest.raises(RecBoleMMError, match=r"pandas 3\.0\.6 is installed; RecBole 1\.2\.1 needs pandas<3"):
        utils.check_pandas()
    monkeypatch.setattr(pd, "__version__", "2.3.3")
    utils.check_pandas()


def test_available_datasets_lists_both_layouts(tmp_path):
    for name, suffix in [("a", ".inter"), ("b", ".train.inter"), ("c", ".item"), ("downstream/d", ".train.inter")]:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / f"{os.path.basename(name)}{suffix}").write_text("x\n")
    assert utils.available_datasets(str(tmp_path)) == ["a", "b", "d"]  # as --dataset takes them
    assert utils.available_datasets(str(tmp_path / "missing")) == []
