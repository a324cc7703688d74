"""Shared fixtures: the real ml-100k_mm demo dataset (built once per session), a clean sys.argv, no anomaly mode, a
slice of ml-100k_mm, a dataset folder in MISSRec's downloaded layout."""

import os
import shutil

import numpy as np
import pytest

from recbole_mm.prepare import ml100k_mm


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory):
    """A data_path holding a freshly built ``ml-100k_mm`` (real MovieLens-100K, real MiniLM features)."""
    root = tmp_path_factory.mktemp("data")
    ml100k_mm.build(str(root))
    return root


@pytest.fixture(scope="session")
def ml100k_slice(ml100k_root, tmp_path_factory):
    """A data_path holding ``ml-100k_mm`` cut to its first 40 users (histories cut to their last 20 items, the last 10
    training rows per user; the feature files, ``.item`` and indices copied whole)."""
    name, root = "ml-100k_mm", tmp_path_factory.mktemp("slice")
    n_users, max_history, train_rows = 40, 20, 10
    source, target = os.path.join(str(ml100k_root), name), root / name
    target.mkdir()
    for part in ("train", "valid", "test"):
        per_user = {}
        with open(os.path.join(source, f"{name}.{part}.inter"), encoding="utf-8") as src:
            header = src.readline()
            for line in src:
                user, history, item = line.rstrip("\n").split("\t")
                if int(user) < n_users:
                    short = " ".join(history.split()[-max_history:])
                    per_user.setdefault(user, []).append(f"{user}\t{short}\t{item}\n")
        with open(target / f"{name}.{part}.inter", "w", encoding="utf-8") as dst:
            dst.write(header)
            for lines in per_user.values():
                dst.writelines(lines[-train_rows:])
    for entry in os.listdir(source):
        if not entry.endswith(".inter"):
            shutil.copy(os.path.join(source, entry), target / entry)
    return root


@pytest.fixture(scope="session", autouse=True)
def plain_argv():
    """RecBole's Config reads ``--key=value`` pairs from sys.argv; pytest's own options must not leak in."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["pytest"])
        yield


@pytest.fixture(autouse=True)
def no_anomaly_mode():
    """Test modules import RecBole's sequential models at collection, and RecBole's SINE module switches autograd
    anomaly detection on at import (see ``recbole_mm.runtime.keeping_anomaly_mode``); tests run without it, as
    recbole_mm runs do."""
    import torch

    torch.autograd.set_detect_anomaly(False)
    yield


def _write_reference_layout(folder, name, n_users=16, n_items=24, dim=8, seed=0):
    """A dataset folder as MISSRec's downloads hold it: pre-split leave-one-out ``<name>.{train,valid,test}.inter``
    (user_id, item_id_list, item_id) and raw float32 ``<name>.feat1CLS`` / ``.feat3CLS`` rows (row i = item token i),
    no yaml. ``dim`` is small here (the downloads have 512): runs pass ``--plm_size``/``--img_size``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    parts = {"train": [], "valid": [], "test": []}
    for user in range(n_users):
        seq = [str(i) for i in rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(4, 9)), replace=False)]
        for j in range(1, len(seq) - 2):
            parts["train"].append((user, seq[:j], seq[j]))
        parts["valid"].append((user, seq[:-2], seq[-2]))
        parts["test"].append((user, seq[:-1], seq[-1]))
    for part, rows in parts.items():
        with open(os.path.join(folder, f"{name}.{part}.inter"), "w") as f:
            f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            f.writelines(f"{u}\t{' '.join(h)}\t{t}\n" for u, h, t in rows)
    for suffix in ("feat1CLS", "feat3CLS"):
        rng.standard_normal((n_items + 1, dim)).astype(np.float32).tofile(os.path.join(folder, f"{name}.{suffix}"))


@pytest.fixture
def write_reference_layout():
    """``write_reference_layout(folder, name, n_users=16, n_items=24, dim=8, seed=0)`` writes a tiny dataset folder
    in MISSRec's downloaded layout."""
    return _write_reference_layout
