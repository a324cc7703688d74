"""Fixtures of the sweep tests: a tiny synthetic sequential dataset (every user walks the item catalogue
in steps of +1, so SASRec learns it within a few epochs) and one Ray session shared by the module."""

import numpy as np
import pytest
import yaml

from recbole_mm.data.atomic_files import leave_one_out, write_inter_files

DATASET = "cycle"
N_ITEMS, N_USERS, SEQ_LEN = 30, 80, 12


def write_cycle_dataset(root) -> None:
    """``root/cycle/cycle.{train,valid,test}.inter``: user u's items are s_u, s_u+1, ... (mod N_ITEMS)."""
    starts = np.random.default_rng(0).integers(0, N_ITEMS, size=N_USERS)
    sequences = [[(int(s) + k) % N_ITEMS + 1 for k in range(SEQ_LEN)] for s in starts]
    (root / DATASET).mkdir(parents=True, exist_ok=True)
    write_inter_files(str(root / DATASET), DATASET, leave_one_out(sequences, max_history=10))


# A tiny SASRec, full ranking, NDCG@10 selection; 3 epochs, no early stop.
TINY_SASREC = {
    "benchmark_filename": ["train", "valid", "test"],
    "alias_of_item_id": ["item_id_list"],
    "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
    "MAX_ITEM_LIST_LENGTH": 10,
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "epochs": 3,
    "stopping_step": 10,
    "train_batch_size": 64,
    "eval_batch_size": 256,
    "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "show_progress": False,
    "worker": 0,
}


@pytest.fixture(scope="module")
def cycle_data(tmp_path_factory):
    """``(data_path, config_file, dataset name)``: the synthetic dataset and the tiny SASRec configuration."""
    root = tmp_path_factory.mktemp("data")
    write_cycle_dataset(root)
    config_file = root / "tiny_sasrec.yaml"
    config_file.write_text(yaml.safe_dump(TINY_SASREC))
    return root, config_file, DATASET


@pytest.fixture(scope="module")
def ray_session():
    """One local 2-CPU Ray session for the module (run_sweep reuses it and leaves it open)."""
    ray = pytest.importorskip("ray")
    from recbole_mm.tuning.ray_tool import WORKER_ENV

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    yield ray
    ray.shutdown()
