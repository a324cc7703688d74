"""Atomic checkpoint writes for every trainer a recbole_mm run uses."""

import os

import pytest
import torch
from recbole.trainer import Trainer
from recbole.utils import ModelType

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.trainer import AtomicCheckpointMixin
from recbole_mm.utils import get_model, get_trainer


@pytest.fixture
def trainer(ml100k_root, tmp_path):
    config = Config(
        model="SASRec",
        dataset="ml-100k_mm",
        config_dict={"data_path": str(ml100k_root), "checkpoint_dir": str(tmp_path), "n_layers": 1, "hidden_size": 8},
    )
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = get_trainer(ModelType.SEQUENTIAL, "SASRec")(config, model)
    return trainer


def test_recbole_trainers_get_the_mixin():
    cls = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(cls, Trainer) and issubclass(cls, AtomicCheckpointMixin) and cls.__name__ == "Trainer"


def test_checkpoint_written_whole_and_reloadable(trainer):
    trainer._save_checkpoint(0)
    assert torch.load(trainer.saved_model_file, weights_only=False)["epoch"] == 0
    assert os.listdir(os.path.dirname(trainer.saved_model_file)) == [os.path.basename(trainer.saved_model_file)]


def test_interrupted_save_keeps_the_previous_checkpoint(trainer, monkeypatch):
    trainer._save_checkpoint(0)
    before = open(trainer.saved_model_file, "rb").read()

    def dies_midway(obj, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(1)
    assert open(trainer.saved_model_file, "rb").read() == before
    assert os.listdir(os.path.dirname(trainer.saved_model_file)) == [os.path.basename(trainer.saved_model_file)]
