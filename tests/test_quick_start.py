"""The plugin path end to end on real data: RecBole's SASRec through recbole_mm on ml-100k_mm."""

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

FAST_SASREC = {
    "n_layers": 1,
    "inner_size": 64,
    "epochs": 1,
    "train_batch_size": 1024,
    "eval_batch_size": 4096,
    "show_progress": False,
}


ANOMALY_MODE_PER_EPOCH = []  # torch.is_anomaly_enabled() seen by sasrec_run's epoch callback


@pytest.fixture(scope="module")
def sasrec_run(ml100k_root, tmp_path_factory):
    saved = tmp_path_factory.mktemp("saved")
    config = {"data_path": str(ml100k_root), "checkpoint_dir": str(saved), **FAST_SASREC}
    torch.autograd.set_detect_anomaly(True)  # as importing RecBole's SINE module leaves it
    try:
        return run_recbole_mm(
            model="SASRec",
            dataset="ml-100k_mm",
            config_dict=config,
            callback_fn=lambda epoch, score: ANOMALY_MODE_PER_EPOCH.append(torch.is_anomaly_enabled()),
        )
    finally:
        torch.autograd.set_detect_anomaly(False)


def popularity_ndcg_at_10(root) -> float:
    """NDCG@10 of ranking every item by its training-target count (no history masking, as the protocol)."""

    def read(part):
        frame = pd.read_csv(root / "ml-100k_mm" / f"ml-100k_mm.{part}.inter", sep="\t")
        return frame.iloc[:, 2].to_numpy()

    counts = np.bincount(read("train"), minlength=1682)
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    r = rank[read("test")]
    return float(np.mean(np.where(r < 10, 1.0 / np.log2(r + 2), 0.0)))


def test_sasrec_beats_popularity(sasrec_run, ml100k_root):
    pop = popularity_ndcg_at_10(ml100k_root)
    assert 0.005 < pop < 0.02  # sanity of the hand computation on this split
    assert set(sasrec_run["test_result"]) == {"hit@10", "hit@50", "ndcg@10", "ndcg@50"}
    assert sasrec_run["test_result"]["ndcg@10"] > pop
    assert sasrec_run["best_valid_score"] == sasrec_run["best_valid_result"]["ndcg@10"]


def test_runs_train_with_anomaly_detection_as_configured(sasrec_run):
    assert ANOMALY_MODE_PER_EPOCH == [False]  # detect_anomaly: False (the default) switched it off


def test_checkpoint_reload_reproduces_test_metrics(sasrec_run):
    from recbole.trainer import Trainer

    config, model, dataset, _, _, test_data = load_data_and_model(sasrec_run["saved_model_file"])
    assert config["model"] == "SASRec" and isinstance(model, torch.nn.Module) and not model.training
    result = Trainer(config, model).evaluate(test_data, load_best_model=False, show_progress=False)
    assert dict(result) == dict(sasrec_run["test_result"])


def test_allow_tf32_switches_cuda_matmul_precision():
    from recbole_mm.runtime import set_tf32_matmul

    matmul = torch.backends.cuda.matmul
    read = (lambda: matmul.fp32_precision == "tf32") if hasattr(matmul, "fp32_precision") else lambda: matmul.allow_tf32
    try:
        set_tf32_matmul(True)
        assert read()
        set_tf32_matmul(False)
        assert not read()
    finally:
        set_tf32_matmul(False)
