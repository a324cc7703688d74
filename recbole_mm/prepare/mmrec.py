"""``mmrec``: datasets in the MMSSL / LATTICE or MMRec layout to atomic files for the graph models.

Accepted source folders:

- MMSSL: ``train.json``, ``val.json``, ``test.json`` (each ``{"<user id>": [item id, ...]}``, 0-based ids),
  ``image_feat.npy``, ``text_feat.npy`` (row ``i`` = item ``i``); LATTICE: the same, with the json files in a
  ``<k>-core/`` folder (e.g. ``5-core/``) beside the ``.npy`` files;
- MMRec: ``<name>.inter`` (tab-separated, header with ``userID itemID ... x_label``; ``x_label`` 0 =
  train, 1 = valid, 2 = test), with the same two ``.npy`` files.

Output ``<data_path>/<name>/``: ``<name>.{train,valid,test}.inter`` (``user_id:token item_id:token``,
the original ids as tokens), and ``<name>.v_feat`` / ``<name>.t_feat`` (raw float32 row-major, row
``i`` = item ``i``, with ``.json`` sidecars). Load them with ``benchmark_filename: [train, valid, test]``
and ``mm_features: {image: {suffix: v_feat, dim: <d_v>}, text: {suffix: t_feat, dim: <d_t>}}``.

As in MMRec, validation and test users that have no training interaction are dropped (counted), and
users with an empty list are skipped. Each feature file must have one row per item of the interactions
(``1 + `` the largest item id over the three splits).
"""

import glob
import json
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from recbole_mm.data.atomic_files import atomic_write, publish_dir, write_feature_file
from recbole_mm.prepare.common import PrepareError, SkipReport

SPLITS = (("train", "train.json", 0), ("valid", "val.json", 1), ("test", "test.json", 2))
FEATURES = (("v_feat", "image_feat.npy"), ("t_feat", "text_feat.npy"))
HEADER = "user_id:token\titem_id:token\n"


def _read_json_split(path: str) -> List[Tuple[int, int]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as err:
        raise PrepareError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: expected a JSON object {{user id: [item ids]}}, found {type(data).__name__}")
    pairs = []
    for user, items in data.items():
        if (
            not isinstance(items, list)
            or not all(isinstance(i, int) and i >= 0 for i in items)
            or not str(user).isdigit()
        ):
            raise PrepareError(
                f"{path}: user {user!r}: expected a non-negative integer id mapped to a list of "
                f"non-negative integer item ids, found {str(items)[:60]}"
            )
        pairs.extend((int(user), i) for i in items)
    return pairs


def read_splits(source_dir: str, name: str) -> Dict[str, List[Tuple[int, int]]]:
    """``{split: [(user, item), ...]}`` from the json files or from ``<name>.inter`` with ``x_label``."""
    inter_path = os.path.join(source_dir, f"{name}.inter")
    json_dirs = [source_dir] + sorted(glob.glob(os.path.join(glob.escape(source_dir), "*-core")))
    found = [d for d in json_dirs if all(os.path.isfile(os.path.join(d, file)) for _, file, _ in SPLITS)]
    if len(found) > 1:
        raise PrepareError(f"{source_dir}: split files in several folders {found}; point --source at one layout")
    if found:
        return {split: _read_json_split(os.path.join(found[0], file)) for split, file, _ in SPLITS}
    if not os.path.isfile(inter_path):
        raise PrepareError(
            f"{source_dir}: expected train.json, val.json and test.json (there or in a <k>-core folder), "
            f"or {name}.inter with an x_label column"
        )
    frame = pd.read_csv(inter_path, sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    needed = ["userID", "itemID", "x_label"]
    if any(c not in frame.columns for c in needed):
        raise PrepareError(f"{inter_path}: expected columns {needed}, found {list(frame.columns)}")
    numbers = frame[needed].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().any(axis=1) | (numbers < 0).any(axis=1) | ~numbers["x_label"].isin([0, 1, 2])
    if bad.any():
        raise PrepareError(
            f"{inter_path}: rows {(np.flatnonzero(bad)[:5] + 2).tolist()} need non-negative integer ids "
            "and x_label 0, 1 or 2"
        )
    numbers = numbers.astype("int64")
    return {
        split: list(
            zip(numbers.loc[numbers["x_label"] == label, "userID"], numbers.loc[numbers["x_label"] == label, "itemID"])
        )
        for split, _, label in SPLITS
    }


def convert_mmrec(source_dir: str, data_path: str, name: str) -> Tuple[str, SkipReport]:
    """Convert ``source_dir`` into ``<data_path>/<name>/``; return the directory and the report."""
    report = SkipReport(f"mmrec {name}")
    splits = read_splits(source_dir, name)
    n_items = 1 + max(i for rows in splits.values() for _, i in rows)  # the item set, cold users' items included
    train_users = {u for u, _ in splits["train"]}
    for split in ("valid", "test"):
        cold = [(u, i) for u, i in splits[split] if u not in train_users]
        report.skip(f"{split} interactions of users without training data", cold[0][0] if cold else None, len(cold))
        splits[split] = [(u, i) for u, i in splits[split] if u in train_users]
    features = {}
    for suffix, file in FEATURES:
        path = os.path.join(source_dir, file)
        if not os.path.isfile(path):
            raise PrepareError(f"{path} does not exist (expected a float array [items, dim])")
        matrix = np.load(path)
        if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
            raise PrepareError(
                f"{path}: expected a 2-D numeric array [items, dim], found shape {matrix.shape} dtype {matrix.dtype}"
            )
        if matrix.shape[0] != n_items:
            raise PrepareError(
                f"{path}: {matrix.shape[0]} rows, but the item set of the interactions has {n_items} items "
                f"(ids 0..{n_items - 1}); expected one row per item"
            )
        if not np.isfinite(matrix).all():
            raise PrepareError(
                f"{path}: NaN or inf in rows {np.flatnonzero(~np.isfinite(matrix).all(axis=1))[:5].tolist()}"
            )
        features[suffix] = (matrix, file)
    target = os.path.join(data_path, name)
    if os.path.exists(target):
        raise PrepareError(f"{target} already exists; remove it or choose another --name (nothing was overwritten)")
    os.makedirs(data_path, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=data_path)
    try:
        for split, rows in splits.items():
            with atomic_write(os.path.join(work, f"{name}.{split}.inter")) as f:
                f.write(HEADER)
                f.writelines(f"{u}\t{i}\n" for u, i in rows)
        for suffix, (matrix, file) in features.items():
            write_feature_file(
                os.path.join(work, f"{name}.{suffix}"),
                matrix,
                f"copied from {file}",
                {"source": os.path.abspath(os.path.join(source_dir, file))},
            )
        publish_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    dims = {s: m.shape[1] for s, (m, _) in features.items()}
    report.note(
        f"{len(train_users):,} users, {n_items:,} items, {sum(len(r) for r in splits.values()):,} interactions "
        f"(train {len(splits['train']):,} / valid {len(splits['valid']):,} / test {len(splits['test']):,}); "
        f"features v_feat {dims['v_feat']}-d, t_feat {dims['t_feat']}-d"
    )
    return target, report
