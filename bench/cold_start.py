"""Item cold start on ml-100k_mm_cold: how each model ranks the held-out items it never trained on.

A fifth of ml-100k_mm's movies never occur in training (``recbole_mm.prepare.ml100k_mm_cold``); every test target
is one of them. For each model this trains on a slice of the split (the first ``--users`` users, their last
``--rows`` training rows) and reports, on the test rows, the target's percentile rank among the held-out items
(0 best, 0.5 chance) and its HIT@10 among them (chance ``10 / held-out items``), before and after training, plus
RecBole's full-ranking test metrics. A features-only model scores a held-out item from its features; an ID model
(SASRec) has never trained that item's row, so it ranks held-out items by their initial random embeddings.

    python bench/cold_start.py                        # PMMRec, MMSRec (softmax over seen items), SASRec
    python bench/cold_start.py --models PMMRec --epochs 1
"""

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole.utils import init_seed  # noqa: E402

from recbole_mm.config import Config  # noqa: E402
from recbole_mm.data.utils import create_dataset, data_preparation  # noqa: E402
from recbole_mm.prepare import ml100k_mm_cold  # noqa: E402
from recbole_mm.prepare.ml100k_mm_domains import copy_slice  # noqa: E402
from recbole_mm.registry import get_model, get_trainer  # noqa: E402

MODELS = {  # width 32 for every model; SASRec reads its pre-split histories unshortened (up to 50)
    "PMMRec": {"embedding_dim": 32, "fusion_heads": 2, "mask_history": False},
    "MMSRec": {"fusion_embed_dim": 32, "fusion_heads": 2, "fusion_feedforward_dim": 64, "train_candidates": "seen"},
    "SASRec": {"hidden_size": 32, "inner_size": 64, "n_heads": 2, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50},
}


def cold_ranks(model, test_data, cold):
    """``(mean percentile rank, HIT@10)`` of the test targets among the held-out items ``cold`` (ids)."""
    model.eval()
    percentiles = []
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)[:, cold]
            target = (cold[None, :] == interaction["item_id"][:, None]).float().argmax(dim=1)
            own = scores.gather(1, target[:, None])
            ties = (scores == own).sum(dim=1).float() - 1
            percentiles.append(((scores > own).sum(dim=1).float() + ties / 2) / (len(cold) - 1))
    percentile = torch.cat(percentiles)
    return float(percentile.mean()), float((percentile * (len(cold) - 1) < 10).float().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--data-path", default="dataset", help="folder holding (or to hold) ml-100k_mm_cold")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line: keep these out
    torch.set_num_threads(1)
    source = ml100k_mm_cold.ensure_built(args.data_path)
    held_out = set(ml100k_mm_cold.read_cold_items(source))
    with tempfile.TemporaryDirectory() as directory:
        copy_slice(args.data_path, directory, ml100k_mm_cold.NAME, n_users=args.users, max_rows=args.rows)
        for name in args.models:
            settings = {
                "data_path": directory,
                "checkpoint_dir": os.path.join(directory, "saved"),
                "MAX_ITEM_LIST_LENGTH": 20,
                "train_batch_size": 128,
                "learning_rate": 1e-3,
                "epochs": args.epochs,
                "stopping_step": args.epochs,
                "train_neg_sample_args": None,
                "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
                "metrics": ["HIT", "NDCG"],
                "topk": [10, 50],
                "valid_metric": "NDCG@10",
                "show_progress": False,
                "seed": 2020,
                **MODELS[name],
            }
            config = Config(model=name, dataset=ml100k_mm_cold.NAME, config_dict=settings)
            init_seed(config["seed"], True)
            train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
            tokens = test_data.dataset.field2id_token["item_id"]
            cold = torch.tensor([i for i, t in enumerate(tokens) if t in held_out])
            model = get_model(name)(config, train_data.dataset)
            trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)
            before = cold_ranks(model, test_data, cold)
            trainer.fit(train_data, valid_data, verbose=False, saved=False)
            after = cold_ranks(model, test_data, cold)
            test = trainer.evaluate(test_data, load_best_model=False)
            print(
                f"{name}: {len(train_data.dataset)} training rows, {len(cold)} held-out items (chance: percentile "
                f"0.5, HIT@10 {10 / len(cold):.3f}); untrained percentile {before[0]:.3f} HIT@10 {before[1]:.3f}; "
                f"trained percentile {after[0]:.3f} HIT@10 {after[1]:.3f}; full ranking NDCG@10 "
                f"{test['ndcg@10']:.4f} HIT@50 {test['hit@50']:.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
