"""Every recbole_mm model (``recbole_mm.registry.list_models()``, read when the tests are collected) is built and
trained for one epoch on a slice of ml-100k_mm through the plugin path (``objective_function``: Config, dataset,
dataloaders, the model's trainer, evaluation), as RecBole-GNN's test_model.py does for its models. A model without
an entry in :data:`SETTINGS` fails with a message saying to add one, so no model lands untested."""

import math

import pytest

from recbole_mm.config import Config
from recbole_mm.model.long_sequence import CandidateObjective
from recbole_mm.quick_start import objective_function
from recbole_mm.registry import get_model, list_models

FAST = {"epochs": 1, "show_progress": False, "MAX_ITEM_LIST_LENGTH": 20, "seed": 2020}
LONG_SEQUENCE = {
    "hidden_size": 8,
    "num_heads": 2,
    "retrieve_topk": 3,
    "mlp_hidden_size": 8,
    "train_batch_size": 128 * 10,  # 128 rows x the family's 10 sampled negatives
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni20", "group_by": "user"},
    "eval_batch_size": 21 * 40,
    "topk": [1, 5, 10],
}

# Config overrides of each model's one-epoch run on the slice (every run is on ml-100k_mm), by family base, then by
# model for what is its own; the metrics each reports come from its own defaults. A new model adds its entry here.
FAMILY_SETTINGS = {CandidateObjective: LONG_SEQUENCE}
SETTINGS = {
    "MISSRec": {"hidden_size": 16, "inner_size": 16, "train_batch_size": 128},
    "MMSSL": {"embedding_size": 16, "train_batch_size": 256},
    "MMSRec": {"fusion_embed_dim": 16, "fusion_heads": 2, "fusion_feedforward_dim": 16, "train_batch_size": 128},
    "PMMRec": {"embedding_dim": 16, "fusion_heads": 2, "train_batch_size": 128},
    "SIM": {},
    "ETA": {"hash_bits": 6},
    "QIN": {"qin_stage1_topk": 5},
    "TWIN": {},
    "SEMINAR": {},
    "LongSASRec": {"n_heads": 2, "inner_size": 8, "train_batch_size": 128},
}


def settings(model: str) -> dict:
    """The family's overrides, then the model's own."""
    family = [v for base, v in FAMILY_SETTINGS.items() if issubclass(get_model(model), base)]
    return {k: v for part in family + [SETTINGS[model]] for k, v in part.items()}


@pytest.mark.parametrize("model", list_models())
def test_model_trains_one_epoch_and_evaluates(model, ml100k_slice, tmp_path):
    if model not in SETTINGS:
        pytest.fail(
            f"{model} has no entry in SETTINGS of tests/model/test_all_models.py: add one (the config overrides "
            f"that size its one-epoch run on the ml-100k_mm slice)"
        )
    config = {
        "model": model,
        "dataset": "ml-100k_mm",
        "data_path": str(ml100k_slice),
        "checkpoint_dir": str(tmp_path),
        **FAST,
        **settings(model),
    }
    valid_metric = Config(config_dict=config)["valid_metric"].lower()
    result = objective_function(config_dict=config, saved=False)
    for label in ("best_valid_result", "test_result"):
        assert result[label], (label, result)
        for name, value in result[label].items():
            assert math.isfinite(float(value)) and 0 <= float(value) <= 1, (label, name, value)
    assert result["best_valid_score"] == result["best_valid_result"][valid_metric]
