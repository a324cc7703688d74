"""bench/reference converters: the reference layouts written from ml-100k_mm hold exactly its splits, and the SEMINAR
files read back into recbole_mm's layout give the same sequences, queries and fixed negatives."""

import argparse
import json
import os
import pickle

import numpy as np
import torch

from bench.reference import mmssl, seminar
from bench.reference.common import recbole_metrics


def _rows(path):
    with open(path, encoding="utf-8") as f:
        f.readline()
        return [line.rstrip("\n").split("\t") for line in f]


def test_mmssl_convert_holds_the_split(ml100k_slice, tmp_path):
    src = os.path.join(str(ml100k_slice), "ml-100k_mm")
    out = tmp_path / "ref" / "s"
    mmssl.convert(
        argparse.Namespace(
            dataset_dir=src,
            name="ml-100k_mm",
            out=str(out),
            image_suffix="feat3CLS",
            text_suffix="feat1CLS",
            ours_data_path=None,
        )
    )
    users = json.loads((out / "user_tokens.json").read_text())
    train = json.loads((out / "train.json").read_text())
    test = json.loads((out / "test.json").read_text())
    for user, history, item in _rows(os.path.join(src, "ml-100k_mm.test.inter")):
        uid = str(users.index(user))
        assert test[uid] == [int(item)]
        # the test history minus the validation target is training data, and no held-out item is
        assert set(map(int, history.split()[:-1])) <= set(train[uid])
        assert int(item) not in train[uid]
    mat = pickle.loads((out / "train_mat").read_bytes())
    assert mat.nnz == sum(len(v) for v in train.values())
    assert np.load(out / "image_feat.npy").shape == (1682, 384)


def test_seminar_round_trip_and_fixed_negatives(ml100k_slice, tmp_path):
    src = os.path.join(str(ml100k_slice), "ml-100k_mm")
    ref = tmp_path / "ref"
    seminar.convert(
        argparse.Namespace(
            dataset_dir=src,
            source_name="ml-100k_mm",
            name="d",
            out=str(ref),
            image_suffix="feat3CLS",
            text_suffix="feat1CLS",
            seed=1,
            ours_data_path=str(tmp_path / "ours"),
            max_len=20,
        )
    )
    seqs = {line.split()[0]: line.split()[1:] for line in (ref / "d.txt").read_text().splitlines()}
    valid = {
        u: h.split() + [i]
        for u, h, i in _rows(os.path.join(src, "ml-100k_mm.valid.inter"))
    }
    for uid, user in enumerate(json.loads((ref / "d_user_tokens.json").read_text()), start=1):
        seq = [int(i) - 1 for i in seqs[str(uid)]]
        assert seq[-len(valid[user]) - 1 : -1] == list(
            map(int, valid[user])
        )  # the file's history ends the same
        negs = [
            int(i) for i in (ref / "d_sample.txt").read_text().splitlines()[uid - 1].split()[1:]
        ]
        assert (
            len(negs) == 99
            and not set(negs) & set(seqs[str(uid)])
            and len(set(negs)) == 99
        )
    inter = _rows(tmp_path / "ours" / "d" / "d.inter")
    assert len(inter) == sum(len(s) for s in seqs.values())
    queries = {
        line.split()[0]: line.split()[1:] for line in (ref / "d_queries.txt").read_text().splitlines()
    }
    user, item, pos, words = inter[3]
    ref_query = queries[str(int(user) + 1)][int(pos)]
    assert int(item) + 1 == int(seqs[str(int(user) + 1)][int(pos)])
    assert words.split() == [w for w in ref_query.split(",") if w != "0"]


def test_recbole_metrics_on_hand_ranks():
    # ranks 0 and 2 among 100 candidates: HIT@1 = 1/2, NDCG@5 = (1 + 1/log2(4)) / 2, MRR@5 = (1 + 1/3) / 2
    hits = torch.zeros(2, 5, dtype=torch.bool)
    hits[0, 0] = hits[1, 2] = True
    out = recbole_metrics(
        hits, torch.ones(2, dtype=torch.long), ["Hit", "NDCG", "MRR"], [1, 5]
    )
    assert (
        out["hit@1"] == 0.5
        and out["ndcg@5"] == round((1 + 0.5) / 2, 4)
        and out["mrr@5"] == round(2 / 3, 4)
    )


def test_missrec_convert_keeps_the_first_users_whole(ml100k_slice, tmp_path):
    from bench.reference import missrec

    src = os.path.join(str(ml100k_slice), "ml-100k_mm")
    missrec.convert(argparse.Namespace(dataset_dir=src, source_name=None, out=str(tmp_path), name="s", users=3))
    first = []
    for user, _, _ in _rows(os.path.join(src, "ml-100k_mm.train.inter")):
        if user not in first:
            first.append(user)
    for part in ("train", "valid", "test"):
        kept = [r for r in _rows(os.path.join(src, f"ml-100k_mm.{part}.inter")) if r[0] in first[:3]]
        assert _rows(tmp_path / "s" / f"s.{part}.inter") == kept
    assert (tmp_path / "s" / "s.feat1CLS").read_bytes() == open(os.path.join(src, "ml-100k_mm.feat1CLS"), "rb").read()


def test_bounded_loader_restarts_and_counts_rows():
    from bench.reference.common import BoundedLoader

    loader = BoundedLoader([[1, 2, 3], [4]], 5, len)
    assert list(loader) == [[1, 2, 3], [4], [1, 2, 3], [4], [1, 2, 3]]
    assert len(loader) == 5 and loader.rows == 3 + 1 + 3 + 1 + 3


class _Event:
    def __init__(self, name, total, self_time, parent=None):
        self.name, self.cpu_time_total, self.self_cpu_time_total, self.cpu_parent = name, total, self_time, parent


def test_op_shares_by_phase_on_a_hand_built_tree():
    from bench.reference.common import op_shares

    data = _Event("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", 20, 15)
    fwd = _Event("aten::linear", 30, 5)
    engine = _Event("autograd::engine::evaluate_function: MmBackward0", 26, 1)
    events = [
        data,
        _Event("aten::cat", 5, 5, data),  # inside the data span: counted there only
        fwd,
        _Event("aten::addmm", 25, 25, fwd),  # nested: its parent's 30 already hold it
        engine,
        _Event("aten::mm", 25, 25, engine),
        _Event("aten::add_", 10, 10, _Event("Optimizer.step#Adam.step", 12, 2)),
    ]
    shares, top = op_shares(events, 100.0)
    assert shares == {
        "tensor ops, forward and loss": 0.30,
        "tensor ops, backward": 0.25,
        "tensor ops, optimizer": 0.10,
        "data loading and sampling": 0.20,
        "Python and other": 0.15,
    }
    assert top[0] == ["aten::addmm", 0.25] and ["aten::cat", 0.05] in top
