"""Writers for pre-split atomic datasets in the UniSRec/MISSRec layout.

Files of a dataset ``<name>`` (see ``dataset/README.md``):

- ``<name>.{train,valid,test}.inter``: ``user_id:token  item_id_list:token_seq  item_id:token``,
  chronological leave-one-out, every training prefix a row, history truncated to ``max_history``;
- ``<name>.user2index``, ``<name>.item2index``: ``raw_id<TAB>index`` (tokens in the inter files are the
  0-based indices);
- ``<name>.<suffix>``: raw float32 row-major feature files, row ``i`` = item index ``i``, each with a
  ``<name>.<suffix>.json`` sidecar (encoder, dim, item count, sha256).

Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted build never leaves a half-written file under the final name.
"""

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import pandas as pd

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_dir(tmp_dir: str, target: str) -> None:
    """Give a ``tempfile.mkdtemp`` directory the usual permissions and rename it to ``target``."""
    os.chmod(tmp_dir, 0o777 & ~_umask())
    os.replace(tmp_dir, target)


@contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def chronological_sequences(inter: pd.DataFrame) -> Tuple[List[List[int]], List[str], List[str]]:
    """Per-user item-index sequences in time order, with the raw ids behind the indices.

    Args:
        inter: columns ``user_id``, ``item_id`` (raw ids: strings, or ints to break ties numerically)
            and ``timestamp`` (numeric).

    Returns:
        ``(sequences, user_ids, item_ids)``: indices follow the order of first appearance in the global
        time order; ties in time are broken by user id, then item id, so the result does not depend on
        the order of the input rows. Each user's sequence keeps that order.
    """
    inter = inter.sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    user_ids = inter["user_id"].drop_duplicates().tolist()
    item_ids = inter["item_id"].drop_duplicates().tolist()
    ui = inter["user_id"].map({raw: k for k, raw in enumerate(user_ids)}).to_numpy()
    ii = inter["item_id"].map({raw: k for k, raw in enumerate(item_ids)}).to_numpy()
    order = np.argsort(ui, kind="stable")  # group by user, keeping the global (time, user, item) order
    ui, ii = ui[order], ii[order]
    bounds = np.flatnonzero(np.diff(ui)) + 1
    sequences = [chunk.tolist() for chunk in np.split(ii, bounds)] if len(ii) else []
    return sequences, user_ids, item_ids


def leave_one_out(
    sequences: Sequence[Sequence[int]], max_history: int = 50
) -> Dict[str, List[Tuple[int, List[int], int]]]:
    """Split chronological per-user item sequences into leave-one-out rows.

    Args:
        sequences: ``sequences[u]`` = item indices of user ``u``, oldest first (at least 3 each).
        max_history: keep the last ``max_history`` items of every history.

    Returns:
        ``{"train": rows, "valid": rows, "test": rows}``, each row ``(user, history, target)``. For a user
        with items ``t_1..t_n``: train rows ``(t_1..t_{j-1} -> t_j)`` for ``j = 2..n-2``; valid
        ``(t_1..t_{n-2} -> t_{n-1})``; test ``(t_1..t_{n-1} -> t_n)``.
    """
    splits = {"train": [], "valid": [], "test": []}
    for user, seq in enumerate(sequences):
        seq = list(seq)
        if len(seq) < 3:
            raise ValueError(f"user index {user} has {len(seq)} interactions; leave-one-out needs at least 3")
        n = len(seq)
        for j in range(1, n - 2):
            splits["train"].append((user, seq[max(0, j - max_history) : j], seq[j]))
        splits["valid"].append((user, seq[max(0, n - 2 - max_history) : n - 2], seq[n - 2]))
        splits["test"].append((user, seq[max(0, n - 1 - max_history) : n - 1], seq[n - 1]))
    return splits


def write_inter_files(directory: str, name: str, splits: Dict[str, List[Tuple[int, List[int], int]]]) -> None:
    """Write ``<name>.<split>.inter`` for each split."""
    for split, rows in splits.items():
        with atomic_write(os.path.join(directory, f"{name}.{split}.inter")) as f:
            f.write(INTER_HEADER)
            f.writelines(f"{u}\t{' '.join(map(str, hist))}\t{t}\n" for u, hist, t in rows)


def write_index_file(path: str, raw_ids: Sequence[str]) -> None:
    """Write ``raw_id<TAB>index`` lines, index = position in ``raw_ids``."""
    with atomic_write(path) as f:
        f.writelines(f"{raw}\t{i}\n" for i, raw in enumerate(raw_ids))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_feature_file(path: str, features: np.ndarray, encoder: str, extra: Dict = None) -> None:
    """Write ``features`` as raw float32 row-major, then its ``.json`` sidecar (both atomically)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"{path}: features must be 2-D [items, dim], got shape {features.shape}")
    with atomic_write(path, "wb") as f:
        features.tofile(f)
    sidecar = {
        "encoder": encoder,
        "dim": int(features.shape[1]),
        "items": int(features.shape[0]),
        "dtype": "float32",
        "layout": "raw row-major, row i = item index i",
        "sha256": file_sha256(path),
        **(extra or {}),
    }
    with atomic_write(path + ".json") as f:
        json.dump(sidecar, f, indent=2, sort_keys=True)
        f.write("\n")


def link_files(source: str, target: str, keep=lambda name: True) -> None:
    """Hard-link (or copy, across file systems) every file of folder ``source`` whose name ``keep`` accepts into
    the existing folder ``target``."""
    for entry in os.listdir(source):
        if keep(entry):
            try:
                os.link(os.path.join(source, entry), os.path.join(target, entry))
            except OSError:
                shutil.copy(os.path.join(source, entry), os.path.join(target, entry))
