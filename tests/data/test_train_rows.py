"""``train_rows: windows`` on the real ml-100k_mm slice: the training part keeps each user's last row and every
``MAX_ITEM_LIST_LENGTH``-th row before it, so a loss over every position trains each transition once an epoch."""

import math
import os

import pandas as pd
import pytest

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore")


def train_part(root, **settings):
    config = Config(
        model="PMMRec",
        dataset="ml-100k_mm",
        config_dict={"data_path": str(root), "show_progress": False, "embedding_dim": 16, "fusion_heads": 2,
                     "train_neg_sample_args": None, **settings},
    )
    train, _, _ = data_preparation(config, create_dataset(config))
    return train._dataset


def file_rows(root):
    path = os.path.join(str(root), "ml-100k_mm", "ml-100k_mm.train.inter")
    return pd.read_csv(path, sep="\t", dtype=str)


def test_windows_keep_every_users_last_row_and_rows_a_history_length_apart(ml100k_slice):
    frame = file_rows(ml100k_slice)
    counts = frame.groupby(frame.columns[0], sort=False).size()
    prefixes = train_part(ml100k_slice, train_rows="prefixes", MAX_ITEM_LIST_LENGTH=20)
    assert len(prefixes) == len(frame)  # every prefix a row (RecBole's reading)
    # at most 10 prefixes per user, histories of 20: one row per user, the user's last (longest) one
    windows = train_part(ml100k_slice, MAX_ITEM_LIST_LENGTH=20)  # PMMRec's default: windows
    assert len(windows) == len(counts) == 40
    last_targets = frame.groupby(frame.columns[0], sort=False)[frame.columns[2]].last()
    users = windows.inter_feat["user_id"].numpy()
    targets = windows.inter_feat["item_id"].numpy()
    for user, target in zip(users, targets):
        token_user = windows.id2token("user_id", user)
        assert windows.id2token("item_id", target) == last_targets[token_user]
    # windows of 3: ceil(n_u / 3) rows per user (the last row and every third before it)
    threes = train_part(ml100k_slice, MAX_ITEM_LIST_LENGTH=3)
    assert len(threes) == sum(math.ceil(n / 3) for n in counts)


def test_an_unknown_train_rows_value_is_refused(ml100k_slice):
    with pytest.raises(ConfigError, match="train_rows: expected 'prefixes' or 'windows', found 'window'"):
        train_part(ml100k_slice, train_rows="window")
