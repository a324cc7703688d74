"""Training batches drawn on the device (``train_data_on_device``): same rows, same batch sizes as RecBole's loader."""

import math

import numpy as np
import pytest
import torch
from recbole.trainer import Trainer

from recbole_mm.config import Config
from recbole_mm.data.atomic_files import leave_one_out, write_inter_files
from recbole_mm.data.device_loader import DeviceTrainLoader
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.errors import ConfigError
from recbole_mm.registry import get_model

BATCH = 7


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_loader")
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 21, size=rng.integers(4, 9)).tolist() for _ in range(12)]
    (root / "tiny").mkdir()
    write_inter_files(str(root / "tiny"), "tiny", leave_one_out(sequences, 50))
    return str(root)


def make(data_root, **extra):
    settings = {
        "data_path": data_root,
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "train_neg_sample_args": None,
        "train_batch_size": BATCH,
        "hidden_size": 8,
        "inner_size": 8,
        "n_layers": 1,
        "n_heads": 1,
        "use_gpu": False,
        "seed": 3,
        **extra,
    }
    config = Config(model="SASRec", dataset="tiny", config_dict=settings)
    return config, data_preparation(config, create_dataset(config))


def rows(batch):
    """The rows of a batch as hashable tuples (user, target, history)."""
    return [
        (int(u), int(i), tuple(s.tolist()))
        for u, i, s in zip(batch["user_id"], batch["item_id"], batch["item_id_list"])
    ]


def test_every_row_once_per_epoch_in_recbole_batch_sizes(data_root):
    _, (plain, _, _) = make(data_root)
    config, (on_device, _, _) = make(data_root, train_data_on_device=True)
    assert isinstance(on_device, DeviceTrainLoader)
    expected = sorted(r for batch in plain for r in rows(batch))
    n_rows = len(plain.dataset)
    assert len(expected) == n_rows and len(on_device) == len(plain) == math.ceil(n_rows / BATCH)
    epochs = []
    for _ in range(2):
        batches = list(on_device)
        assert [len(b) for b in batches] == [len(b) for b in plain]
        assert all(b["item_id_list"].device == config["device"] for b in batches)
        epochs.append([r for b in batches for r in rows(b)])
        assert sorted(epochs[-1]) == expected
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    _, (again, _, _) = make(data_root, train_data_on_device=True)
    assert [r for b in again for r in rows(b)] == epochs[0]  # same seed, same order


def test_without_shuffle_the_order_is_recbole_order(data_root):
    _, (plain, _, _) = make(data_root, shuffle=False)
    _, (on_device, _, _) = make(data_root, shuffle=False, train_data_on_device=True)
    assert [rows(b) for b in on_device] == [rows(b) for b in plain]


def test_wrapped_loader_attributes_pass_through(data_root):
    _, (on_device, _, _) = make(data_root, train_data_on_device=True)
    assert on_device.dataset is on_device.loader.dataset and on_device.shuffle is True
    with pytest.raises(AttributeError):
        on_device.no_such_attribute


def test_negative_sampling_is_refused_with_the_key(data_root):
    with pytest.raises(ConfigError, match=r"'train_data_on_device'.*negative sampling is on"):
        make(
            data_root,
            train_data_on_device=True,
            loss_type="BPR",
            train_neg_sample_args={"distribution": "uniform", "sample_num": 1},
        )


def test_recbole_trainer_trains_on_device_batches(data_root):
    config, (train_data, _, _) = make(data_root, train_data_on_device=True, learning_rate=0.01)
    torch.manual_seed(0)
    model = get_model("SASRec")(config, train_data.dataset)
    trainer = Trainer(config, model)
    losses = [trainer._train_epoch(train_data, epoch) for epoch in range(8)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
