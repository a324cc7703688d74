"""Atomic checkpoint writes for every trainer a recbole_mm run uses, and the training epoch without a host sync per
step."""

import os

import pytest
import torch
from recbole.trainer import KGTrainer, Trainer
from recbole.utils import ModelType, init_seed

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.prepare.ml100k_mm_domains import copy_slice
from recbole_mm.registry import get_model, get_trainer
from recbole_mm.trainer import AtomicCheckpointMixin, DeviceLossMixin, for_recbole_mm


@pytest.fixture(scope="module")
def ml100k_slice(ml100k_root, tmp_path_factory):
    """A data_path with the first 120 users of ml-100k_mm, 12 training rows each (a few batches per epoch)."""
    root = tmp_path_factory.mktemp("slice")
    copy_slice(str(ml100k_root), str(root), "ml-100k_mm", 120, 12)
    return root


def sasrec_run(data_path, tmp_path, trainer_class):
    """A tiny SASRec on ``data_path``'s ml-100k_mm and ``trainer_class`` over it, every draw seeded alike."""
    config = Config(
        model="SASRec",
        dataset="ml-100k_mm",
        config_dict={
            "data_path": str(data_path),
            "checkpoint_dir": str(tmp_path),
            "n_layers": 1,
            "hidden_size": 8,
            "inner_size": 8,
            "train_batch_size": 256,
            "seed": 7,
        },
    )
    train_data, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    model = get_model("SASRec")(config, train_data._dataset)
    return trainer_class(config, model), train_data


@pytest.fixture
def trainer(ml100k_slice, tmp_path):
    return sasrec_run(ml100k_slice, tmp_path, get_trainer(ModelType.SEQUENTIAL, "SASRec"))[0]


def test_recbole_trainers_get_the_mixins():
    cls = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(cls, Trainer) and issubclass(cls, AtomicCheckpointMixin) and cls.__name__ == "Trainer"
    assert cls._train_epoch is DeviceLossMixin._train_epoch  # RecBole's loop, without a sync per step
    own_loop = for_recbole_mm(KGTrainer)  # overrides _train_epoch: keeps it, gets atomic checkpoints only
    assert issubclass(own_loop, AtomicCheckpointMixin) and not issubclass(own_loop, DeviceLossMixin)
    assert own_loop._train_epoch is KGTrainer._train_epoch


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


@pytest.mark.parametrize("parts", [1, 2])  # one loss, or a tuple of two
def test_device_loss_epoch_equals_recbole_epoch(ml100k_slice, tmp_path, parts):
    def loss_func(model):
        if parts == 1:
            return model.calculate_loss
        return lambda interaction: (0.25 * model.calculate_loss(interaction), 0.75 * model.calculate_loss(interaction))

    results = []
    for trainer_class in (Trainer, type("DeviceLossTrainer", (DeviceLossMixin, Trainer), {})):
        trainer, train_data = sasrec_run(ml100k_slice, tmp_path / trainer_class.__name__, trainer_class)
        init_seed(7, True)
        total = trainer._train_epoch(train_data, 0, loss_func=loss_func(trainer.model))
        results.append((total, trainer.model.state_dict()))
    (recbole_total, recbole_state), (ours_total, ours_state) = results
    assert type(ours_total) is type(recbole_total) and ours_total == pytest.approx(recbole_total, rel=1e-12, abs=0)
    assert recbole_state.keys() == ours_state.keys()
    assert all(torch.equal(recbole_state[k], ours_state[k]) for k in recbole_state)  # the same steps, bit for bit


def test_device_loss_epoch_names_the_first_nan_step(ml100k_slice, tmp_path):
    trainer, train_data = sasrec_run(ml100k_slice, tmp_path, type("T", (DeviceLossMixin, Trainer), {}))
    steps = []

    def loss_func(interaction):
        steps.append(len(steps))
        loss = trainer.model.calculate_loss(interaction)
        return loss * float("nan") if len(steps) - 1 in (2, 4) else loss

    with pytest.raises(ValueError, match=r"Training loss is nan \(epoch 3, first at step 2\)"):
        trainer._train_epoch(train_data, 3, loss_func=loss_func)
    assert len(steps) == len(train_data) > 4  # read once, at the end of the epoch


def test_checkpoint_folder_exists_before_recbole_checks_it(ml100k_slice, tmp_path, monkeypatch):
    """Processes started together (torchrun) all create the checkpoint folder. RecBole checks, then calls
    ``os.makedirs`` without ``exist_ok``, which fails where another process created the folder in between: that
    call must never be reached. Here every such call behaves as if another process had just won the race."""
    real_makedirs = os.makedirs

    def racing_makedirs(path, *args, exist_ok=False, **kwargs):
        real_makedirs(path, *args, exist_ok=True, **kwargs)
        if not exist_ok:
            raise FileExistsError(f"[Errno 17] File exists: {path!r} (created by another process meanwhile)")

    def construct(config, model):
        monkeypatch.setattr(os, "makedirs", racing_makedirs)
        return get_trainer(ModelType.SEQUENTIAL, "SASRec")(config, model)

    checkpoint_dir = tmp_path / "new" / "saved"
    trainer, _ = sasrec_run(ml100k_slice, checkpoint_dir, construct)
    assert trainer.checkpoint_dir == str(checkpoint_dir) and checkpoint_dir.is_dir()


@pytest.mark.parametrize("model_name", ["LightGCN", "Pop"])
def test_one_element_losses_of_recbole_models_sum_to_a_number(ml100k_slice, tmp_path, model_name):
    """RecBole's graph models (EmbLoss starts from ``torch.zeros(1)``) and Pop return losses of shape ``(1,)``;
    RecBole reads them with ``.item()``. The epoch's sum must be a number, as RecBole's own loop gives, so that
    the epoch's loss line formats (it failed with ``TypeError: must be real number, not list``)."""
    results = []
    for trainer_class in (Trainer, get_trainer(ModelType.GENERAL, model_name)):
        config = Config(
            model=model_name,
            dataset="ml-100k_mm",
            config_dict={
                "data_path": str(ml100k_slice),
                "checkpoint_dir": str(tmp_path / trainer_class.__module__),
                "embedding_size": 8,
                "n_layers": 1,
                "train_batch_size": 512,
                "seed": 7,
            },
        )
        train_data, _, _ = data_preparation(config, create_dataset(config))
        init_seed(config["seed"], True)
        model = get_model(model_name)(config, train_data._dataset)
        trainer = trainer_class(config, model)
        init_seed(config["seed"], True)
        total = trainer._train_epoch(train_data, 0)
        assert isinstance(total, float), (trainer_class, type(total))
        assert "train loss" in trainer._generate_train_loss_output(0, 0.0, 1.0, total)
        results.append(total)
    recbole_total, ours_total = results
    assert ours_total == pytest.approx(recbole_total, rel=1e-6)
    if model_name == "LightGCN":
        assert recbole_total > 0
