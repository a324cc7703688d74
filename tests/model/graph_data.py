"""A tiny MMRec-layout dataset for the graph models, converted by ``python -m recbole_mm.prepare mmrec`` per test.

Twenty users, twelve items in three groups (image/text features = group centre + noise); each user interacts
with items of one group (train 3-4 items, one valid, one test item), so the data has structure a model can learn.
The source is the MMSSL/LATTICE json layout (``train.json`` / ``val.json`` / ``test.json`` + two ``.npy``).
"""

import json
import os

import numpy as np
import torch

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.prepare.cli import main as prepare_main
from recbole_mm.registry import get_model

N_USERS, N_ITEMS, N_GROUPS = 20, 12, 3

TINY = {
    "embedding_size": 8,
    "head_num": 2,
    "train_batch_size": 16,
    "eval_batch_size": 64,
    "epochs": 1,
    "m_topk_rate": 0.2,
    "pref_chunk_items": 5,
    "regen_chunk_users": 7,
    "show_progress": False,
    "use_gpu": False,
    "seed": 7,
    "state": "ERROR",
    "topk": [1, 5],
    "valid_metric": "Recall@5",
}


def write_source(directory: str) -> str:
    """Write the json-layout source folder; returns its path."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    group = np.arange(N_ITEMS) % N_GROUPS
    centres = rng.normal(size=(N_GROUPS, 6))
    np.save(os.path.join(directory, "image_feat.npy"), centres[group] + 0.2 * rng.normal(size=(N_ITEMS, 6)))
    np.save(os.path.join(directory, "text_feat.npy"), (-centres[group] + 0.2 * rng.normal(size=(N_ITEMS, 6)))[:, :5])
    splits = {"train": {}, "val": {}, "test": {}}
    for user in range(N_USERS):
        members = [i for i in range(N_ITEMS) if i % N_GROUPS == user % N_GROUPS]
        order = rng.permutation(members).tolist()
        n_train = 2 + user % 2
        splits["train"][str(user)] = order[:n_train]
        splits["val"][str(user)] = order[n_train : n_train + 1]
        splits["test"][str(user)] = order[n_train + 1 : n_train + 2]
    for name, data in splits.items():
        with open(os.path.join(directory, f"{name}.json"), "w") as f:
            json.dump(data, f)
    return directory


def prepare(tmp_path, name="tinymm") -> str:
    """Convert the source into ``tmp_path/data/<name>`` (once per ``tmp_path``); returns the data path."""
    data = tmp_path / "data"
    if not (data / name).exists():
        source = write_source(str(tmp_path / "source"))
        assert prepare_main(["mmrec", "--source", source, "--name", name, "--data-path", str(data)]) == 0
    return str(data)


def make_config(tmp_path, model="MMSSL", name="tinymm", **extra):
    data = prepare(tmp_path, name)
    base = {**TINY, "data_path": data, "checkpoint_dir": str(tmp_path / "saved")}
    return Config(model=model, dataset=name, config_dict={**base, **extra})


def build(tmp_path, model="MMSSL", **extra):
    """``(config, dataset, train, valid, test, model)`` on the tiny dataset."""
    config = make_config(tmp_path, model, **extra)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    torch.manual_seed(config["seed"])
    net = get_model(model)(config, train.dataset)
    return config, dataset, train, valid, test, net


def dense_train_matrix(dataset) -> np.ndarray:
    """``[U, I]`` float64 binary training matrix (the train part of ``dataset`` after the split)."""
    return dataset.inter_matrix(form="coo").toarray().astype(np.float64).clip(max=1)
