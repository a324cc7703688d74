"""One evaluation protocol for the long-sequence family: a dataset prepared for it (``prepare amazon2018`` /
``kuaisar`` presets) evaluates as the family's model properties say, and the results table reads the same."""

import os

import pytest
import yaml

from recbole_mm.config import PROPERTIES_DIR, Config
from recbole_mm.prepare.long_sequence import write_preset
from recbole_mm.results.tables import LONGSEQ_EVALUATION

FAMILY = ("SIM", "ETA", "QIN", "TWIN", "SEMINAR", "LongSASRec")
KEYS = ("eval_args", "metrics", "topk", "valid_metric")


def properties(model):
    with open(os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_family_properties_and_table_share_one_protocol():
    protocols = {model: {key: properties(model)[key] for key in KEYS} for model in FAMILY}
    assert all(p == protocols["TWIN"] for p in protocols.values()), protocols
    assert LONGSEQ_EVALUATION == protocols["TWIN"]
    assert protocols["TWIN"]["eval_args"]["mode"] == "uni99"  # the positive + 99 negatives: 100 candidates


@pytest.mark.parametrize("model", ["TWIN", "SEMINAR"])
def test_prepared_preset_evaluates_with_the_family_protocol(tmp_path, model):
    folder = tmp_path / "Movies"
    folder.mkdir()
    path = write_preset(str(folder), "Movies", max_len=100)
    with open(path, encoding="utf-8") as f:
        preset = yaml.safe_load(f)
    assert not set(KEYS) & set(preset)  # the preset defines no protocol of its own
    config = Config(model=model, dataset="Movies", config_dict={"data_path": str(tmp_path)})
    assert config["MAX_ITEM_LIST_LENGTH"] == 100  # the preset is read
    want = properties(model)
    assert set(config["eval_args"]["mode"].values()) == {want["eval_args"]["mode"]}  # RecBole's per-phase form
    assert config["eval_args"]["split"] == want["eval_args"]["split"]
    for key in ("metrics", "topk", "valid_metric"):
        assert config[key] == want[key], key
