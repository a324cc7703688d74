"""A dataset prepared from raw files in the real format loads with its features and trains with MISSRec
and SASRec through recbole_mm's quick start, with no manual step (the preset YAML is written by prepare)."""

import json
import os

import numpy as np
import pytest
import torch
from encoders.tiny_clip import save_tiny_hf_clip

from recbole_mm.prepare.cli import main

pytest.importorskip("PIL")


def write_synthetic_amazon(folder, n_users=40, n_items=15, per_user=7, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            lines.append(f"P{i:03d},U{u:03d},5.0,{1_500_000_000 + 1000 * t + u}")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    meta = [
        {"asin": f"P{i:03d}", "title": f"product {i}", "category": ["Lab", f"kind {i % 3}"], "brand": "B"}
        for i in range(n_items)
    ]
    (folder / "meta.json").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    return str(folder / "ratings.csv"), str(folder / "meta.json")


def test_prepared_dataset_loads_features_and_trains(tmp_path, images_for):
    ratings, meta = write_synthetic_amazon(tmp_path)
    images = images_for(tmp_path / "img", [f"P{i:03d}" for i in range(0, 15, 2)])  # odd items: no image
    model_dir = save_tiny_hf_clip(str(tmp_path / "clip"))
    data_path = tmp_path / "dataset"
    argv = [
        "amazon",
        "--domain",
        "Lab",
        ratings,
        meta,
        "--images",
        str(images),
        "--encoder",
        f"hf-clip:{model_dir}",
        "--data-path",
        str(data_path),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    preset = str(data_path / "Lab_mm_full" / "Lab_mm_full.yaml")

    from recbole_mm.config import Config
    from recbole_mm.data.dataset import MultiModalSequentialDataset

    config = Config(model="SASRec", dataset="Lab_mm_full", config_file_list=[preset])
    dataset = MultiModalSequentialDataset(config)
    assert set(dataset.mm_features) == {"text", "text_aug", "image"}
    image_rows = np.fromfile(data_path / "Lab_mm_full" / "Lab_mm_full.feat3CLS", dtype=np.float32).reshape(-1, 16)
    tokens = dataset.field2id_token["item_id"]
    raw_ids = [line.split("\t")[0] for line in open(data_path / "Lab_mm_full" / "Lab_mm_full.item2index")]
    for j in range(1, len(tokens)):
        assert torch.equal(dataset.mm_features["image"].table[j], torch.from_numpy(image_rows[int(tokens[j])]))
        has_image = int(raw_ids[int(tokens[j])][1:]) % 2 == 0
        assert bool(dataset.mm_features["image"].present[j]) == has_image

    from recbole_mm.quick_start import run_recbole_mm

    tiny = {
        "epochs": 1,
        "hidden_size": 8,
        "inner_size": 8,
        "n_layers": 2,
        "n_heads": 1,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "topk": [5],
        "metrics": ["Hit", "NDCG"],
        "valid_metric": "NDCG@5",
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
    }
    for model in ("MISSRec", "SASRec"):  # MISSRec reads the 16-d features through the preset's plm_size / img_size
        result = run_recbole_mm(
            model=model, dataset="Lab_mm_full", config_file_list=[preset], saved=False, config_dict=tiny
        )
        assert set(result["test_result"]) == {"hit@5", "ndcg@5"}
        assert 0.0 <= result["test_result"]["hit@5"] <= 1.0


def test_multi_domain_pretraining_set_loads_k_i_tokens(tmp_path):
    food, home = tmp_path / "food", tmp_path / "home"
    food.mkdir(), home.mkdir()
    model_dir = save_tiny_hf_clip(str(tmp_path / "clip"))
    argv = [
        "amazon",
        "--domain",
        "Food",
        *write_synthetic_amazon(food, n_users=12, seed=1),
        "--domain",
        "Home",
        *write_synthetic_amazon(home, n_users=15, seed=2),
        "--k",
        "3",
        "--encoder",
        f"hf-clip:{model_dir}",
        "--data-path",
        str(tmp_path / "pt"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    folder = tmp_path / "pt" / "FH_mm_full"
    assert sorted(f for f in os.listdir(folder) if "feat" in f and not f.endswith(".json")) == [
        "Food.feat1CLS",
        "Food.feat2CLS",
        "Home.feat1CLS",
        "Home.feat2CLS",
    ]

    from recbole_mm.config import Config
    from recbole_mm.data.dataset import MultiModalSequentialDataset

    config = Config(model="SASRec", dataset="FH_mm_full", config_file_list=[str(folder / "FH_mm_full.yaml")])
    dataset = MultiModalSequentialDataset(config)
    rows = {d: np.fromfile(folder / f"{d}.feat1CLS", dtype=np.float32).reshape(-1, 16) for d in ("Food", "Home")}
    tokens = dataset.field2id_token["item_id"][1:]
    assert {t.split("-")[0] for t in tokens} == {"0", "1"}
    for j, token in enumerate(tokens, start=1):
        k, row = token.split("-")
        expected = rows[("Food", "Home")[int(k)]][int(row)]
        assert torch.equal(dataset.mm_features["text"].table[j], torch.from_numpy(expected))
