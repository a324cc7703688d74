"""Paired (item, query) histories: the lazy augmentation against RecBole's dense one, the per-item queries of
ml-100k_mm, and the bad-input rules (over-long queries, keywords unseen in training, no query field)."""

import os
import shutil

import numpy as np
import pytest
import torch
from recbole.data import data_preparation
from recbole.data.dataset import SequentialDataset

from recbole_mm.config import Config
from recbole_mm.data.dataset import MultiModalSequentialDataset
from recbole_mm.data.long_sequence import LongSequenceDataset, fixed_width
from recbole_mm.errors import DataFieldError
from recbole_mm.registry import get_model

# user -> [(item, time, query)], written out of time order on purpose; "k6" makes u1's third query 6 keywords long
EVENTS = {
    "u1": [("a", 3, "k1 k2"), ("b", 1, ""), ("c", 2, "k3"), ("d", 5, "k1 k2 k3 k4 k5 k6"), ("e", 4, "k2")],
    "u2": [("b", 10, "k4"), ("a", 11, ""), ("c", 12, "k1 k5"), ("a", 13, "k2")],
    "u3": [("c", 7, "k3 k3"), ("d", 8, ""), ("e", 9, "k4 k1"), ("b", 6, "k5"), ("a", 20, "k2"), ("c", 21, "k1")],
}
DUMMY = {"a": "k1 k2", "b": "", "c": "k3", "d": "k1 k7", "e": "k2"}


def write_plain(directory, name="toy", events=EVENTS, dummy=DUMMY):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\tquery:token_seq\n")
        for user, rows in events.items():
            f.writelines(f"{user}\t{item}\t{t}\t{q}\n" for item, t, q in rows)
    if dummy is not None:
        with open(os.path.join(directory, f"{name}.item"), "w") as f:
            f.write("item_id:token\tdummy_query:token_seq\n")
            f.writelines(f"{item}\t{q}\n" for item, q in dummy.items())


def config_for(tmp_path, name="toy", **extra):
    base = {
        "data_path": str(tmp_path),
        "checkpoint_dir": str(tmp_path / "saved"),
        "show_progress": False,
        "MAX_ITEM_LIST_LENGTH": 3,
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "query"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "train_neg_sample_args": None,
    }
    return Config(model="SASRec", dataset=name, config_dict={**base, **extra})


def all_rows(part):
    return part[np.arange(len(part))]


def test_fixed_width_pads_truncates_and_counts():
    table, cut = fixed_width([np.array([3, 4]), np.array([], dtype=np.int64), np.arange(1, 8)], 5)
    assert table.tolist() == [[3, 4, 0, 0, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]]
    assert cut == 1


def test_lazy_histories_equal_recbole_dense_augmentation(tmp_path):
    """Every split's rows and their item/query/timestamp histories equal RecBole's own (dense) augmentation."""
    write_plain(tmp_path / "toy", dummy={**DUMMY, "d": "k1"})  # no keyword outside the training queries
    ours = LongSequenceDataset(config_for(tmp_path))
    theirs = SequentialDataset(config_for(tmp_path))
    assert ours.num("query") == theirs.num("query")
    assert list(ours.field2id_token["query"]) == list(theirs.field2id_token["query"])
    for mine, ref in zip(ours.build(), theirs.build()):
        got, want = all_rows(mine), all_rows(ref)
        assert len(got) == len(want) > 0
        for field in ["user_id", "item_id", "item_length", "item_id_list", "timestamp_list"]:
            assert torch.equal(got[field], want[field]), field
        width = want["query_list"].shape[-1]  # RecBole's width is the longest query (6); ours is query_max_tokens
        assert got["query_list"].shape == want["query_list"].shape[:2] + (5,)
        assert torch.equal(got["query_list"], want["query_list"][..., :5])
        assert torch.equal(got["query"], want["query"][:, :5])
        assert width == 6
    assert ours.query_truncated == 1 and ours.query_unseen_tokens == 0


def test_rows_by_hand_and_dummy_queries(tmp_path):
    write_plain(tmp_path / "toy")
    ds = LongSequenceDataset(config_for(tmp_path))
    train, valid, test = ds.build()
    tok = ds.field2token_id["query"]
    item = ds.field2token_id["item_id"]
    # u1 in time order: b(""), c(k3), a(k1 k2), e(k2), d(6 keywords); test row: target d, history (L=3) c a e
    row = all_rows(test)
    u1 = int(np.flatnonzero(row["user_id"].numpy() == ds.field2token_id["user_id"]["u1"])[0])
    assert row["item_id"][u1] == item["d"] and row["item_length"][u1] == 3
    assert row["item_id_list"][u1].tolist() == [item["c"], item["a"], item["e"]]
    assert row["query_list"][u1].tolist() == [
        [tok["k3"], 0, 0, 0, 0],
        [tok["k1"], tok["k2"], 0, 0, 0],
        [tok["k2"], 0, 0, 0, 0],
    ]
    assert row["query"][u1].tolist() == [tok[k] for k in ["k1", "k2", "k3", "k4", "k5"]]  # 6th keyword cut
    assert ds.dummy_query.shape == (ds.item_num, 5) and ds.dummy_query[0].eq(0).all()
    assert ds.dummy_query[item["d"]].tolist() == [tok["k1"], tok["k7"], 0, 0, 0]
    assert ds.dummy_query[item["b"]].eq(0).all()
    assert "dummy_query" not in ds.item_feat  # the table lives with the model, batches carry ids only


def test_keyword_unseen_in_training_becomes_empty(tmp_path):
    events = {u: list(rows) for u, rows in EVENTS.items()}
    events["u2"] = events["u2"][:3] + [("a", 13, "k9 k2")]  # k9: only in u2's test target
    write_plain(tmp_path / "toy", events=events, dummy={**DUMMY, "d": "k1"})
    ds = LongSequenceDataset(config_for(tmp_path))
    train, valid, test = ds.build()
    tok = ds.field2token_id["query"]
    assert ds.query_unseen_tokens == 1 and test.query_unseen_tokens == 1
    row = all_rows(test)
    u2 = int(np.flatnonzero(row["user_id"].numpy() == ds.field2token_id["user_id"]["u2"])[0])
    assert row["query"][u2].tolist() == [0, tok["k2"], 0, 0, 0]
    assert not (all_rows(train)["query_list"] == tok["k9"]).any()


def test_dataset_without_query_field_says_how_to_add_it(tmp_path):
    write_plain(tmp_path / "toy", dummy=None)
    with open(tmp_path / "toy" / "toy.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\nu1\ta\t1\nu1\tb\t2\nu1\tc\t3\n")
    config = config_for(tmp_path, load_col={"inter": ["user_id", "item_id", "timestamp"]})
    expected = r"'query' \(QUERY_FIELD\).*toy\.inter have no 'query' column.*add a 'query:token_seq' column"
    with pytest.raises(DataFieldError, match=expected):
        LongSequenceDataset(config)
    with pytest.raises(DataFieldError, match=r"query_from: item, but .*toy\.item does not exist"):
        LongSequenceDataset(config_for(tmp_path, query_from="item"))


def test_loaders_carry_queries_for_training_and_uni100(tmp_path):
    write_plain(tmp_path / "toy")
    config = config_for(
        tmp_path,
        train_neg_sample_args={"distribution": "uniform", "sample_num": 1},
        loss_type="BPR",
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni2", "group_by": "user"},
        train_batch_size=4,
        eval_batch_size=30,
    )
    ds = LongSequenceDataset(config)
    train_data, valid_data, _ = data_preparation(config, ds)
    batch = next(iter(train_data))
    assert batch["query_list"].shape == batch["item_id_list"].shape + (5,)
    assert batch["query"].shape == (len(batch), 5)
    expected = ds.dummy_query[batch["item_id_list"]]  # per-item dummy != per-interaction query in this fixture
    assert not torch.equal(batch["query_list"], expected)
    inter, _, _, _ = next(iter(valid_data))
    assert inter["query_list"].shape == (len(inter), 3, 5) and len(inter) == 3 * 3  # 3 users x (1 pos + 2 neg)


def test_ml100k_mm_queries_are_the_items_dummy_queries(ml100k_root):
    config = Config(
        model="SASRec",
        dataset="ml-100k_mm",
        config_dict={"data_path": str(ml100k_root), "show_progress": False, "train_neg_sample_args": None},
    )
    ds = LongSequenceDataset(config)
    assert ds.query_from == "item"
    train, valid, test = ds.build()
    batch = test[np.arange(50)]
    assert torch.equal(batch["query_list"], ds.dummy_query[batch["item_id_list"]])
    assert torch.equal(batch["query"], ds.dummy_query[batch["item_id"]])
    tokens = ds.field2id_token["query"]
    words = lambda raw: [tokens[t] for t in ds.dummy_query[ds.field2token_id["item_id"][raw]].tolist() if t]
    raw_ids = (ml100k_root / "ml-100k_mm" / "ml-100k_mm.item2index").read_text().split()[::2]
    index = {raw: str(i) for i, raw in enumerate(raw_ids)}
    assert words(index["1"]) == ["toy", "story"]  # "Toy Story"
    assert words(index["286"]) == ["english", "patient", "the"]  # "English Patient, The"
    # other models read ml-100k_mm as before: its preset loads no item file (checked on a copy of its files below)
    assert "item" not in config["load_col"]
    assert get_model("SEMINAR").dataset_class is LongSequenceDataset  # the family base declares it


def test_other_models_do_not_load_the_dummy_queries(tmp_path):
    """A pre-split dataset with an ``.item`` of dummy queries, read with ml-100k_mm's ``load_col`` (inter only): the
    multi-modal dataset of the other models neither loads the file nor gains a query field."""
    folder = tmp_path / "toy"
    folder.mkdir()
    parts = {"train": ("a b", "c"), "valid": ("a b c", "d"), "test": ("a b c d", "e")}
    for part, (history, target) in parts.items():
        header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
        (folder / f"toy.{part}.inter").write_text(f"{header}u\t{history}\t{target}\n")
    dummy = "".join(f"{i}\tk{i}\n" for i in "abcde")
    (folder / "toy.item").write_text("item_id:token\tdummy_query:token_seq\n" + dummy)
    presplit = {
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
    }
    other = MultiModalSequentialDataset(config_for(tmp_path, **presplit))
    assert other.item_feat is None and "query" not in other.field2type and "dummy_query" not in other.field2type
    ours = LongSequenceDataset(config_for(tmp_path, **presplit))
    assert ours.query_from == "item" and ours.dummy_query.ne(0).sum() == 5


def test_ml100k_mm_folder_built_before_the_queries_gets_them(ml100k_root, tmp_path):
    from recbole_mm.prepare import ml100k_mm

    old = tmp_path / "ml-100k_mm"
    shutil.copytree(ml100k_root / "ml-100k_mm", old)
    (old / "ml-100k_mm.item").unlink()
    before = sorted(p.name for p in old.iterdir())
    assert ml100k_mm.ensure_built(str(tmp_path)) == str(old)
    assert sorted(p.name for p in old.iterdir()) == sorted(before + ["ml-100k_mm.item"])
    assert (old / "ml-100k_mm.item").read_text() == (ml100k_root / "ml-100k_mm" / "ml-100k_mm.item").read_text()
    for name in before:  # nothing else rewritten
        assert (old / name).read_bytes() == (ml100k_root / "ml-100k_mm" / name).read_bytes()


def test_plain_inter_without_queries_takes_the_items_dummy_queries(tmp_path):
    events = {u: [(i, t, "") for i, t, _ in rows] for u, rows in EVENTS.items()}
    write_plain(tmp_path / "toy", events=events)
    with open(tmp_path / "toy" / "toy.inter") as f:  # drop the query column
        lines = [line.rstrip("\n").split("\t")[:3] for line in f]
    with open(tmp_path / "toy" / "toy.inter", "w") as f:
        f.writelines("\t".join(line) + "\n" for line in lines)
    ds = LongSequenceDataset(config_for(tmp_path, load_col={"inter": ["user_id", "item_id", "timestamp"]}))
    assert ds.query_from == "item"
    rows = all_rows(ds.build()[0])
    assert rows["query_list"].shape == rows["item_id_list"].shape + (5,)
    assert torch.equal(rows["query_list"], ds.dummy_query[rows["item_id_list"]])
    assert torch.equal(rows["query"], ds.dummy_query[rows["item_id"]])
    assert rows["query"].ne(0).any() and rows["query_list"].ne(0).any()
