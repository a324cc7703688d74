"""An item cold-start split of the demo dataset ``ml-100k_mm``, for inductive (features-only) scoring.

A fifth of the movies (chosen uniformly at random, seed 2020) are *held out*: they never occur in training,
neither as a target nor in a history. Every user's other ratings, in ``ml-100k_mm``'s time order, form the
training rows (every prefix predicts its next item, histories up to 50). The user's last rating of a held-out
movie is the test target and the one before it the validation target, each with the history of the user's
non-held-out ratings before it (last 50); users without one keep only training rows. Users are held out
nowhere: the same people train and are tested. A model that knows items only by their features can score
the held-out movies; one with an ID table has never trained their rows.

Files: ``ml-100k_mm``'s feature files, index files and the held-out list ``ml-100k_mm_cold.cold_items`` (one
item index per line), under the new name; ``ml-100k_mm_cold.yaml`` loads it.

    python -m recbole_mm.prepare.ml100k_mm_cold [--data-path dataset]
"""

import argparse
import os
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np

from recbole_mm.data.atomic_files import atomic_write, publish_dir, write_inter_files
from recbole_mm.prepare import ml100k_mm
from recbole_mm.prepare.common import PrepareError, read_index_file, write_config

NAME = "ml-100k_mm_cold"
HELD_OUT_FRACTION = 0.2
SEED = 2020
MAX_HISTORY = 50
COPIED = ("feat1CLS", "feat1CLS.json", "feat3CLS", "feat3CLS.json", "item2index", "user2index", "text")


def held_out_items(n_items: int, fraction: float = HELD_OUT_FRACTION, seed: int = SEED) -> np.ndarray:
    """``[n_items]`` bool: ``round(fraction * n_items)`` items drawn uniformly without replacement."""
    chosen = np.random.default_rng(seed).choice(n_items, size=int(round(fraction * n_items)), replace=False)
    held = np.zeros(n_items, dtype=bool)
    held[chosen] = True
    return held


def cold_split(
    sequences: Sequence[Sequence[int]], held: np.ndarray, max_history: int = MAX_HISTORY
) -> Dict[str, List[Tuple[int, List[int], int]]]:
    """Rows ``(user, history, target)`` of the cold-start split.

    Args:
        sequences: ``sequences[u]`` = item indices of user ``u``, oldest first.
        held: ``[n_items]`` bool, the held-out items.

    Returns:
        ``{"train", "valid", "test"}``: train rows are every prefix of the user's non-held-out items; test is
        the user's last held-out item with a non-empty history of non-held-out items before it, valid the one
        before that. No held-out item occurs in a training row; histories never contain one.
    """
    splits = {"train": [], "valid": [], "test": []}
    for user, seq in enumerate(sequences):
        warm = [i for i in seq if not held[i]]
        for j in range(1, len(warm)):
            splits["train"].append((user, warm[max(0, j - max_history) : j], warm[j]))
        cold = []
        seen = []
        for item in seq:
            if held[item]:
                if seen:
                    cold.append((seen[-max_history:], item))
            else:
                seen.append(item)
        for part, row in zip(("test", "valid"), reversed(cold[-2:])):
            splits[part].append((user, list(row[0]), row[1]))
    return splits


def build(data_path: str, source_data_path: str = None) -> str:
    """Build ``<data_path>/ml-100k_mm_cold`` from ``ml-100k_mm`` (built under ``source_data_path``, default
    ``data_path``, if missing); return its path.

    Raises:
        PrepareError: the target exists, or ``ml-100k_mm`` was built from other MovieLens files.
    """
    target = os.path.join(data_path, NAME)
    if os.path.exists(target):
        raise PrepareError(f"{target} already exists; remove it to rebuild {NAME}")
    source = ml100k_mm.ensure_built(source_data_path or data_path)
    inter, _ = ml100k_mm.load_source()
    sequences, _, item_ids = ml100k_mm.chronological_sequences(inter)
    built_items = read_index_file(os.path.join(source, f"{ml100k_mm.NAME}.item2index"))
    if built_items != item_ids:
        raise PrepareError(
            f"{source}: its item2index differs from the MovieLens-100K files in the installed recbole "
            f"({len(built_items)} items listed, {len(item_ids)} expected); rebuild {ml100k_mm.NAME}"
        )
    held = held_out_items(len(item_ids))
    os.makedirs(data_path, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{NAME}.", dir=data_path)
    try:
        write_inter_files(work, NAME, cold_split(sequences, held))
        for suffix in COPIED:
            src = os.path.join(source, f"{ml100k_mm.NAME}.{suffix}")
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(work, f"{NAME}.{suffix}"))
        with atomic_write(os.path.join(work, f"{NAME}.cold_items")) as f:
            f.writelines(f"{i}\n" for i in np.flatnonzero(held))
        publish_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    write_config(target, NAME)
    return target


def ensure_built(data_path: str) -> str:
    """The ``ml-100k_mm_cold`` folder under ``data_path``, built first if it is missing."""
    target = os.path.join(data_path, NAME)
    return target if os.path.isdir(target) else build(data_path)


def read_cold_items(directory: str) -> List[str]:
    """Tokens (item indices as written in the interaction files) of the held-out items."""
    with open(os.path.join(directory, f"{NAME}.cold_items"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", default="dataset", help="parent folder of the dataset folders")
    args = parser.parse_args(argv)
    print(build(args.data_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
