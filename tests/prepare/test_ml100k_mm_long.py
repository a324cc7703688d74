"""ml-100k_mm_long, ml-100k_mm's long-sequence twin: the same users, items, features and leave-one-out targets, with
histories that are not cut, read through RecBole's split by the long-sequence dataset."""

import os

import numpy as np
import pytest
import torch

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.prepare import ml100k_mm_long


def presplit(root, part):
    """``{user token: (history tokens, target token)}`` of ml-100k_mm's pre-split file ``part``."""
    rows = {}
    with open(os.path.join(root, "ml-100k_mm", f"ml-100k_mm.{part}.inter"), encoding="utf-8") as f:
        f.readline()
        for line in f:
            user, history, item = line.rstrip("\n").split("\t")
            rows[user] = (history.split(), item)
    return rows


@pytest.fixture(scope="module")
def twin(ml100k_root):
    return ml100k_mm_long.ensure_built(str(ml100k_root))


def rows_by_user(part):
    data = part.dataset
    batch = data[torch.arange(len(data))]
    users = data.id2token("user_id", batch["user_id"].numpy())
    histories = [data.id2token("item_id", h[: int(n)].numpy()) for h, n in zip(batch["item_id_list"], batch["item_length"])]
    targets = data.id2token("item_id", batch["item_id"].numpy())
    return {u: (list(h), t) for u, h, t in zip(users, histories, targets)}, batch


@pytest.mark.slow
def test_twin_keeps_targets_and_whole_histories(ml100k_root, twin):
    for suffix in ("feat1CLS", "feat3CLS", "item", "item2index", "user2index"):
        a = os.path.join(ml100k_root, "ml-100k_mm", f"ml-100k_mm.{suffix}")
        b = os.path.join(twin, f"ml-100k_mm_long.{suffix}")
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), suffix
    config = Config(
        model="TWIN",
        dataset="ml-100k_mm_long",
        config_dict={
            "data_path": str(ml100k_root),
            "checkpoint_dir": str(ml100k_root / "saved_long"),
            "MAX_ITEM_LIST_LENGTH": 800,
            "train_rows_per_user": 10,
            "show_progress": False,
            "use_gpu": False,
        },
    )
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert dataset.queries_from_items  # every rating's query is its movie's dummy query
    lengths = []
    for part, loader in (("valid", valid), ("test", test)):
        want = presplit(ml100k_root, part)
        got, _ = rows_by_user(loader)
        assert set(got) == set(want) and len(got) == 943
        for user, (history, target) in got.items():
            assert target == want[user][1]
            assert history[-50:] == want[user][0]  # ml-100k_mm's history is the last 50 of the whole one
            lengths.append(len(history))
    assert max(lengths) > 700 and np.mean(lengths) > 100  # not cut at 50 (nor at 100)
    # train_rows_per_user: each user's last 10 training rows, their histories whole
    got_train = train.dataset.inter_feat
    assert len(got_train) == 9430
    train_rows = presplit_train = {}
    with open(os.path.join(ml100k_root, "ml-100k_mm", "ml-100k_mm.train.inter"), encoding="utf-8") as f:
        f.readline()
        for line in f:
            user, _, item = line.rstrip("\n").split("\t")
            presplit_train.setdefault(user, []).append(item)
    _, batch = rows_by_user(train)
    users = train.dataset.id2token("user_id", batch["user_id"].numpy())
    items = train.dataset.id2token("item_id", batch["item_id"].numpy())
    for user in set(users):
        assert [i for u, i in zip(users, items) if u == user] == train_rows[user][-10:]
    valid_length = {u: len(h) for u, (h, _) in rows_by_user(valid)[0].items()}
    last = {u: int(n) for u, n in zip(users, batch["item_length"])}
    assert all(last[u] == valid_length[u] - 1 for u in last)  # the last training row's history: all but 2 ratings
