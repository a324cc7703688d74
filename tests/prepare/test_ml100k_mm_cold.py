"""The item cold-start split of ml-100k_mm: held-out items never reach training; built on first use."""

import os

import numpy as np
import pytest

from recbole_mm.data.utils import BUILDERS
from recbole_mm.prepare import ml100k_mm_cold
from recbole_mm.prepare.common import PrepareError


def test_cold_split_by_hand():
    held = np.zeros(10, dtype=bool)
    held[[2, 7]] = True
    sequences = [[0, 2, 1, 3, 7, 4], [2, 5, 6], [7, 2, 8]]
    splits = ml100k_mm_cold.cold_split(sequences, held, max_history=2)
    assert splits["train"][:4] == [(0, [0], 1), (0, [0, 1], 3), (0, [1, 3], 4), (1, [5], 6)]
    assert len(splits["train"]) == 4  # user 2 has one non-held-out item: no training row
    # test: the last held-out item with a history of non-held-out items before it, valid: the one before
    assert splits["test"] == [(0, [1, 3], 7)]  # history cut to max_history
    assert splits["valid"] == [(0, [0], 2)]
    # user 1's only held-out item has no history before it; user 2's held-out items precede its other items
    for rows in splits.values():
        for _, history, target in rows:
            assert not held[history].any()
    assert not any(held[t] for _, _, t in splits["train"])


def test_held_out_items_are_a_seeded_fifth():
    held = ml100k_mm_cold.held_out_items(1682)
    assert held.sum() == 336 and np.array_equal(held, ml100k_mm_cold.held_out_items(1682))


def test_build_on_first_use(ml100k_root, tmp_path):
    assert "ml-100k_mm_cold" in BUILDERS
    os.symlink(ml100k_root / "ml-100k_mm", tmp_path / "ml-100k_mm")  # the built ml-100k_mm, beside it
    BUILDERS["ml-100k_mm_cold"](str(tmp_path))
    target = tmp_path / "ml-100k_mm_cold"
    name = "ml-100k_mm_cold"
    cold = set(ml100k_mm_cold.read_cold_items(str(target)))
    assert len(cold) == 336
    with open(target / f"{name}.train.inter") as f:
        next(f)
        for line in f:
            _, history, item = line.rstrip("\n").split("\t")
            assert item not in cold and not cold.intersection(history.split())
    for part in ("valid", "test"):
        with open(target / f"{name}.{part}.inter") as f:
            next(f)
            rows = [line.rstrip("\n").split("\t") for line in f]
        assert len(rows) > 800 and all(item in cold and not cold.intersection(h.split()) for _, h, item in rows)
    assert os.path.isfile(target / f"{name}.yaml") and os.path.isfile(target / f"{name}.feat1CLS")
    with pytest.raises(PrepareError, match="already exists"):
        ml100k_mm_cold.build(str(tmp_path))
