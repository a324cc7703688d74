"""A tiny paired (item, query) dataset for the long-sequence models, written per test.

Follows the data contract of the long-sequence family: a plain ``.inter`` with ``query:token_seq`` (RecBole's
augmentation gives ``query_list [B, L, Q]`` and ``query [B, Q]``), a ``.item`` file with each item's
``dummy_query``, and two 8-d modality feature files. Items fall in 4 groups (features = group centre + noise,
queries = group keywords + an item keyword); each user walks through one group, so the data has structure a
model can learn.
"""

import os

import numpy as np
import torch

from recbole_mm.config import Config
from recbole_mm.data.atomic_files import write_feature_file
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.registry import get_model

N_ITEMS, DIM, N_GROUPS = 40, 8, 4

TINY = {
    "hidden_size": 8,
    "num_heads": 2,
    "retrieve_topk": 3,
    "qin_stage1_topk": 5,
    "mlp_hidden_size": 8,
    "hash_bits": 6,
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 640,  # 64 rows x the family's 10 sampled negatives (RecBole counts one copy per negative)
    "eval_batch_size": 21 * 16,
    "epochs": 1,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni20", "group_by": "user"},
    "load_col": {"inter": ["user_id", "item_id", "timestamp", "query"]},
    "benchmark_filename": None,
    "alias_of_item_id": None,
    "mm_features": {"text": {"suffix": "feat1CLS", "dim": DIM}, "image": {"suffix": "feat3CLS", "dim": DIM}},
    "show_progress": False,
    "use_gpu": False,
    "seed": 3,
    "topk": [1, 5, 10],
}


def item_query(item):
    """Dummy query of item token ``item`` (1-based): its group's keyword, then its own."""
    return [f"g{item % N_GROUPS}", f"k{item}"]


def write_longseq(directory, name="lsq", n_users=30, long_query_user=None, queries=True):
    """Write the dataset under ``directory/name``; ``long_query_user`` gets a 7-keyword query on every interaction;
    ``queries=False`` writes neither the query column nor the ``.item`` file."""
    path = os.path.join(directory, name)
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_GROUPS, DIM))
    group = np.arange(N_ITEMS + 1) % N_GROUPS
    text = centres[group] + 0.3 * rng.normal(size=(N_ITEMS + 1, DIM))
    image = -centres[group] + 0.3 * rng.normal(size=(N_ITEMS + 1, DIM))
    text[0] = image[0] = 0
    write_feature_file(os.path.join(path, f"{name}.feat1CLS"), text, "synthetic")
    write_feature_file(os.path.join(path, f"{name}.feat3CLS"), image, "synthetic")
    rows = ["user_id:token\titem_id:token\ttimestamp:float" + ("\tquery:token_seq" if queries else "")]
    for user in range(n_users):
        members = [i for i in range(1, N_ITEMS + 1) if i % N_GROUPS == user % N_GROUPS]
        start = int(rng.integers(len(members)))
        for t in range(6 + user % 6):
            item = members[(start + t) % len(members)]
            words = item_query(item) if t % 3 else []  # every third interaction has no query
            if user == long_query_user:
                words = [f"x{j}" for j in range(7)]
            rows.append(f"u{user}\t{item}\t{t}" + (f"\t{' '.join(words)}" if queries else ""))
    if not queries:
        with open(os.path.join(path, f"{name}.inter"), "w") as f:
            f.write("\n".join(rows) + "\n")
        return
    with open(os.path.join(path, f"{name}.inter"), "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(os.path.join(path, f"{name}.item"), "w") as f:
        f.write("item_id:token\tdummy_query:token_seq\n")
        f.writelines(f"{i}\t{' '.join(item_query(i))}\n" for i in range(1, N_ITEMS + 1))


def make_config(tmp_path, model, name="lsq", **extra):
    base = {**TINY, "data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved")}
    return Config(model=model, dataset=name, config_dict={**base, **extra})


def attach_dummy_query(dataset):
    """``dataset.dummy_query`` from :func:`item_query`, when the dataset class did not read it itself."""
    if getattr(dataset, "dummy_query", None) is not None:
        return
    width = dataset.field2seqlen["query"]
    table = torch.zeros(dataset.item_num, width, dtype=torch.long)
    for internal, token in enumerate(dataset.field2id_token["item_id"]):
        if internal == 0:
            continue
        ids = [dataset.field2token_id["query"].get(w, 0) for w in item_query(int(token))]
        table[internal, : len(ids)] = torch.tensor(ids[:width])
    dataset.dummy_query = table


def build(tmp_path, model, name="lsq", write=True, **extra):
    """``(config, dataset, train, valid, test, model)`` on the tiny dataset (written once per ``tmp_path``)."""
    if write and not (tmp_path / name).exists():
        write_longseq(str(tmp_path), name)
    config = make_config(tmp_path, model, name, **extra)
    dataset = create_dataset(config)
    attach_dummy_query(dataset)
    train, valid, test = data_preparation(config, dataset)
    torch.manual_seed(config["seed"])
    net = get_model(model)(config, train.dataset)
    return config, dataset, train, valid, test, net


def first_batch(loader):
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) else batch
