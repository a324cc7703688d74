"""The two genre domains cut from ml-100k_mm, and MISSRec's transfer on them: pre-train on domain A,
fine-tune features-only (``inductive_ft`` + ``pretrained_path``, the PT1 recipe) on domain B.

Real parts throughout: MovieLens-100K from the recbole wheel, MiniLM features, RecBole's datasets,
dataloaders, trainer and evaluator (its metrics are checked against a float64 recomputation).
"""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.encoders.text import MiniLMEncoder
from recbole_mm.model.sequential_recommender.missrec import MISSRec
from recbole_mm.prepare import ml100k_mm
from recbole_mm.prepare.common import PrepareError, read_index_file
from recbole_mm.prepare.encode import word_drop
from recbole_mm.prepare.ml100k_mm_domains import NAME_A, NAME_B, build, copy_slice, in_domain_a
from recbole_mm.trainer import PretrainTrainer

N_USERS, TRAIN_ROWS = 60, 15  # the slice the training test uses: users 0..59, last 15 rows each


@pytest.fixture(scope="module")
def domains(ml100k_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    encoder = MiniLMEncoder()
    build(str(root), source_data_path=str(ml100k_root), encoder=encoder)
    return root, encoder


def files(root, name, suffix):
    return os.path.join(root, name, f"{name}.{suffix}")


def features(root, name, suffix):
    return np.fromfile(files(root, name, suffix), dtype=np.float32).reshape(-1, 384)


def test_domains_split_items_by_genre_and_copy_rows(domains, ml100k_root):
    root, encoder = domains
    inter, items = ml100k_mm.load_source()
    genres = items.set_index("item_id")["class"]
    source_items = read_index_file(files(ml100k_root, ml100k_mm.NAME, "item2index"))
    row_of = {raw: k for k, raw in enumerate(source_items)}
    items_a = read_index_file(files(root, NAME_A, "item2index"))
    items_b = read_index_file(files(root, NAME_B, "item2index"))
    assert not set(items_a) & set(items_b)
    assert all(in_domain_a(genres[i]) for i in items_a) and not any(in_domain_a(genres[i]) for i in items_b)
    assert sorted(items_a + items_b, key=int) == sorted(genres.index, key=int)  # every movie has a domain
    assert in_domain_a("Comedy Romance") and not in_domain_a("Comedy Thriller") and not in_domain_a("unknown")

    for name, raw_items in ((NAME_A, items_a), (NAME_B, items_b)):
        rows = [row_of[i] for i in raw_items]
        for suffix in ("feat1CLS", "feat3CLS"):
            assert np.array_equal(features(root, name, suffix), features(ml100k_root, ml100k_mm.NAME, suffix)[rows])
        # the test target of each user = the user's last rating of a movie of the domain (pandas reference)
        mine = inter.assign(
            user=inter.user_id.astype(int), item=inter.item_id.astype(int), time=inter.timestamp.astype(float)
        )
        mine = mine[mine.item_id.isin(set(raw_items))].sort_values(["user", "time", "item"])
        counts = mine.groupby("user").size()
        last = mine.groupby("user").item_id.last()[counts >= 3]
        users = read_index_file(files(root, name, "user2index"))
        test = pd.read_csv(files(root, name, "test.inter"), sep="\t", dtype=str)
        found = {users[int(u)]: raw_items[int(t)] for u, t in zip(test.iloc[:, 0], test.iloc[:, 2])}
        assert found == {str(u): i for u, i in last.items()}

    # feat2CLS (domain A only): the word-dropped text through the same encoder
    assert not os.path.exists(files(root, NAME_B, "feat2CLS"))
    texts, _ = ml100k_mm.item_descriptions(items, items_a)
    dropped = word_drop(texts, 0.15, 2020)
    changed = [k for k, (t, d) in enumerate(zip(texts, dropped)) if t is not None and t != d]
    same = [k for k, (t, d) in enumerate(zip(texts, dropped)) if t is not None and t == d]
    aug, text = features(root, NAME_A, "feat2CLS"), features(root, NAME_A, "feat1CLS")
    assert changed and same
    np.testing.assert_allclose(aug[same[:5]], text[same[:5]], atol=1e-5)
    np.testing.assert_allclose(aug[changed[:3]], encoder.encode([dropped[k] for k in changed[:3]]), atol=1e-5)
    with open(files(root, NAME_A, "yaml"), encoding="utf-8") as f:
        preset = f.read()
    assert "text_aug: {suffix: feat2CLS, dim: 384}" in preset and "plm_size: 384" in preset
    with open(files(root, NAME_B, "feat1CLS.json"), encoding="utf-8") as f:
        assert json.load(f)["items"] == len(items_b)
    with pytest.raises(PrepareError, match="already exists"):
        build(str(root), source_data_path=str(ml100k_root), encoder=encoder)


TINY = {
    "hidden_size": 32,
    "inner_size": 32,
    "n_heads": 2,
    "interest_ratio": 0.1,
    "train_batch_size": 128,
    "eval_batch_size": 256,
    "show_progress": False,
    "use_gpu": False,
    "seed": 2020,
}


def recomputed_metrics(model, loader, cutoffs=(10, 50)):
    """``{"hit@k": .., "ndcg@k": ..}`` over ``loader`` from the model's full-sort scores, in float64."""
    ranks = []
    model.eval()
    with torch.no_grad():
        for interaction, history, _, positive_i in loader:
            assert history is None  # pre-split sequential files: nothing is masked but the padding item
            scores = model.full_sort_predict(interaction).double().view(len(positive_i), -1)
            scores[:, 0] = -math.inf
            target = scores[torch.arange(len(positive_i)), positive_i].unsqueeze(1)
            ranks += ((scores > target).sum(dim=1) + 1).tolist()
    ranks = np.array(ranks, dtype=np.float64)
    metrics = {}
    for k in cutoffs:
        metrics[f"hit@{k}"] = float(np.mean(ranks <= k))
        metrics[f"ndcg@{k}"] = float(np.mean(np.where(ranks <= k, 1 / np.log2(ranks + 1), 0.0)))
    return metrics


def test_pretrain_on_a_then_features_only_finetune_on_b(domains, tmp_path):
    root, _ = domains
    data_path = tmp_path / "data"
    for name in (NAME_A, NAME_B):
        copy_slice(str(root), str(data_path), name, N_USERS, TRAIN_ROWS)
    common = {**TINY, "data_path": str(data_path), "checkpoint_dir": str(tmp_path / "saved")}

    pretrain = Config(
        model="MISSRec",
        dataset=NAME_A,
        config_dict={
            **common,
            "train_stage": "pretrain",
            "benchmark_filename": ["train"],
            "modalities": ["text", "image", "text_aug"],
            "pretrain_epochs": 1,
            "save_step": 1,
        },
    )
    train_a, _, _ = data_preparation(pretrain, create_dataset(pretrain))
    torch.manual_seed(0)
    PretrainTrainer(pretrain, MISSRec(pretrain, train_a.dataset)).fit(train_a, None, verbose=False)
    checkpoint = tmp_path / "saved" / f"MISSRec-{NAME_A}-1.pth"
    pretrained = torch.load(checkpoint, weights_only=False)["state_dict"]

    finetune = Config(
        model="MISSRec",
        dataset=NAME_B,
        config_dict={
            **common,
            "train_stage": "inductive_ft",
            "pretrained_path": str(checkpoint),
            "epochs": 1,
            "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["HIT", "NDCG"],
            "topk": [10, 50],
            "valid_metric": "NDCG@10",
        },
    )
    train_b, valid_b, test_b = data_preparation(finetune, create_dataset(finetune))
    model = MISSRec(finetune, train_b.dataset)
    trainer = PretrainTrainer(finetune, model)
    trainer.fit(train_b, valid_b, verbose=False, saved=False)
    result = trainer.evaluate(test_b, load_best_model=False)

    after = model.state_dict()
    frozen = [k for k in pretrained if k.startswith(("trm_model.", "position_embedding."))]
    assert frozen and all(torch.equal(after[k], pretrained[k]) for k in frozen)  # PT1: loaded, then frozen
    for key in ("text_adaptor.weight", "img_adaptor.weight"):
        assert (after[key] - pretrained[key]).abs().max() > 1e-4, key  # the adaptors were fine-tuned
    assert set(result) == {"hit@10", "hit@50", "ndcg@10", "ndcg@50"}
    assert all(math.isfinite(v) for v in result.values()) and result["hit@50"] > 0
    expected = recomputed_metrics(model, test_b)
    assert all(abs(result[k] - expected[k]) < 1e-4 for k in expected), (result, expected)
