"""Memory of paired (item, query) histories at L = 1,000: ``LongSequenceDataset`` (one flat table, lists gathered per
batch) against RecBole's dense sequential augmentation (every ``<field>_list`` allocated ``[rows, L(, Q)]``).

A synthetic KuaiSAR-like ``.inter`` (``user_id item_id timestamp query``; half the interactions with an empty query,
the others 1-5 keywords from a vocabulary of 50,000; sequence lengths spread around ``--mean-length``) is written to a
temporary folder. Reported: the bytes the dataset holds after ``build()`` (its tensors), the peak resident memory of
loading and building it (RecBole's CSV loading included), the bytes of one batch of 256 rows, and the bytes RecBole's
augmentation allocates for the same data (its list tensors, computed from their shapes: ``rows x L x (8 + 4 + 8 Q)``
for ``item_id_list``, ``timestamp_list`` (RecBole keeps floats as float32) and ``query_list``).
``--check-fraction`` runs RecBole's own augmentation on that share of the users and compares the measured list bytes
with the formula.

    python bench/long_sequence_memory.py                        # 2,560 users (a tenth of KuaiSAR's), L = 1,000
    python bench/long_sequence_memory.py --users 256 --check-fraction 0.05   # smoke run
"""

import argparse
import gc
import os
import tempfile
import time

import numpy as np
import torch

Q = 5


def peak_reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def write_inter(path: str, users: int, mean_length: int, items: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.geometric(1 / mean_length, users), 4, 8 * mean_length)
    n = int(lengths.sum())
    user = np.repeat(np.arange(users), lengths)
    item = rng.integers(0, items, n)
    stamp = rng.integers(0, 10**9, n)
    n_words = np.where(rng.random(n) < 0.5, 0, rng.integers(1, Q + 1, n))
    words = rng.integers(1, 50_000, (n, Q))
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\tquery:token_seq\n")
        for u, i, t, k, w in zip(user, item, stamp, n_words, words):
            f.write(f"{u}\t{i}\t{t}\t{' '.join(map(str, w[:k]))}\n")
    return n


def tensor_bytes(inter) -> int:
    return sum(v.numel() * v.element_size() for v in inter.interaction.values())


def config_for(root: str, max_len: int):
    from recbole_mm.config import Config

    return Config(
        model="SASRec",
        dataset="synthetic",
        config_dict={
            "data_path": root,
            "checkpoint_dir": os.path.join(root, "saved"),
            "MAX_ITEM_LIST_LENGTH": max_len,
            "load_col": {"inter": ["user_id", "item_id", "timestamp", "query"]},
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "train_neg_sample_args": None,
            "show_progress": False,
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2560)
    parser.add_argument("--mean-length", type=int, default=250)
    parser.add_argument("--items", type=int, default=150_000)
    parser.add_argument("--max-len", type=int, default=1000)
    parser.add_argument("--check-fraction", type=float, default=0.02, help="share of users for RecBole's own run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from recbole.data.dataset import SequentialDataset

    from recbole_mm.data.long_sequence import LongSequenceDataset

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "synthetic"))
        n_inter = write_inter(
            os.path.join(root, "synthetic", "synthetic.inter"), args.users, args.mean_length, args.items, args.seed
        )
        config = config_for(root, args.max_len)
        gc.collect()
        before = rss("VmRSS")
        peak_reset()
        start = time.perf_counter()
        ds = LongSequenceDataset(config)
        parts = ds.build()
        seconds = time.perf_counter() - start
        peak = rss("VmHWM") - before
        rows = sum(len(p) for p in parts)
        held = tensor_bytes(ds.interactions) + tensor_bytes(ds.inter_feat) + ds.dummy_query.numel() * 8
        batch = parts[0][np.arange(min(256, len(parts[0])))]
        batch_bytes = tensor_bytes(batch)
        per_row = args.max_len * (8 + 4 + 8 * Q)  # item_id_list, timestamp_list (float32), query_list
        dense = rows * per_row
        print(
            f"synthetic KuaiSAR-like data: {args.users:,} users, {n_inter:,} interactions, {rows:,} rows, "
            f"L = {args.max_len:,}, Q = {Q}"
        )
        print(
            f"LongSequenceDataset: holds {held / 2**20:,.1f} MiB after build(); peak RSS of load + build "
            f"{peak / 2**20:,.1f} MiB; {seconds:.1f} s; one batch of {len(batch)} rows {batch_bytes / 2**20:,.1f} MiB"
        )
        print(
            f"RecBole dense augmentation: list tensors {dense / 2**30:,.2f} GiB ({per_row:,} bytes per row); "
            f"ratio dense / ours held {dense / held:,.0f}x"
        )
        del ds, parts, batch
        gc.collect()
        if args.check_fraction > 0:
            users = max(2, int(args.users * args.check_fraction))
            sub_root = os.path.join(root, "check")
            os.makedirs(os.path.join(sub_root, "synthetic"))
            path = os.path.join(sub_root, "synthetic", "synthetic.inter")
            write_inter(path, users, args.mean_length, args.items, args.seed)
            theirs = SequentialDataset(config_for(sub_root, args.max_len))
            their_parts = theirs.build()
            their_rows = sum(len(p) for p in their_parts)
            lists = sum(
                v.numel() * v.element_size() for k, v in theirs.inter_feat.interaction.items() if k.endswith("_list")
            )
            width = theirs.inter_feat["query_list"].shape[-1]
            formula = their_rows * args.max_len * (8 + 4 + 8 * width)
            print(
                f"check on {users} users ({their_rows:,} rows): RecBole's list tensors {lists / 2**20:,.1f} MiB, "
                f"formula {formula / 2**20:,.1f} MiB (query width {width})"
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
