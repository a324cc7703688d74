"""RecBole's own models through recbole_mm's plugin path (``objective_function``: recbole_mm's Config, dataset
creation, dataloaders and trainers): one model per family, one epoch on a slice of MovieLens-100K, then evaluation.
A change in recbole_mm's trainers or data path that breaks RecBole's models fails here."""

import math

import pytest

from recbole_mm.quick_start import objective_function

# The first 4% of RecBole's ml-100k by time: 4,003 interactions, 49 users, 898 items (read from the recbole wheel).
SLICE = {"val_interval": {"timestamp": "[0,875269755]"}}
FAST = {"epochs": 1, "show_progress": False, "eval_batch_size": 4096, "train_batch_size": 512}
RANKING = {"metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10"}
SMALL = {"embedding_size": 16}

MODELS = {
    # general
    "Pop": {},
    "BPR": SMALL,
    # graph (a loss of shape [1]: what RecBole's graph models return)
    "LightGCN": {**SMALL, "n_layers": 1},
    "NGCF": {**SMALL, "hidden_size_list": [16]},
    # sequential
    "GRU4Rec": {**SMALL, "hidden_size": 16, "MAX_ITEM_LIST_LENGTH": 20},
    "SASRec": {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 20},
    "BERT4Rec": {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 20},
    # context-aware, with ml-100k's user and item features (RecBole's quick-start preset for ml-100k)
    "DeepFM": {**SMALL, "mlp_hidden_size": [16]},
}


def run(model, dataset, tmp_path, **extra):
    config = {"model": model, "dataset": dataset, "checkpoint_dir": str(tmp_path), **FAST, **extra}
    return objective_function(config_dict=config, saved=False)


def check_metrics(result, names):
    for label in ("best_valid_result", "test_result"):
        assert sorted(result[label]) == sorted(names), label
        for name, value in result[label].items():
            assert math.isfinite(float(value)) and 0 <= float(value) <= (1 if name != "logloss" else 100), (name, value)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_recbole_model_trains_and_evaluates(model, tmp_path):
    context = model == "DeepFM"
    extra = {**SLICE, **MODELS[model], **({} if context else RANKING)}
    result = run(model, "ml-100k", tmp_path, **extra)
    check_metrics(result, ["auc", "logloss"] if context else ["hit@10", "ndcg@10"])
    assert result["best_valid_score"] == result["best_valid_result"]["auc" if context else "ndcg@10"]
    if model == "Pop":  # one epoch counts every item: popularity is far above a random ranking's 10/898 hits
        assert result["test_result"]["hit@10"] > 5 * 10 / 898


def test_a_graph_model_on_the_demo_dataset(ml100k_slice, tmp_path):
    """``--model=LightGCN --dataset=ml-100k_mm`` (pre-split files with histories, read as user-item pairs)."""
    result = run("LightGCN", "ml-100k_mm", tmp_path, data_path=str(ml100k_slice), **SMALL, n_layers=1)
    check_metrics(result, ["hit@10", "hit@50", "ndcg@10", "ndcg@50"])
