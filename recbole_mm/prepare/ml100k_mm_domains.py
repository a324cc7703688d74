"""Two domains cut from the demo dataset ``ml-100k_mm`` by genre, for a real-data transfer demo of
MISSRec (pre-train on one domain, fine-tune features-only on the other).

- Domain A, ``ml-100k_mm_A`` (pre-training): the movies whose MovieLens genres include **Drama or
  Romance** (873 of the 1,682 movies, 51% of the ratings).
- Domain B, ``ml-100k_mm_B`` (fine-tuning): every other movie, those with genre "unknown" included.

The item sets are disjoint; the users are the same people. Each domain keeps every user's ratings of
its movies in ``ml-100k_mm``'s time order and drops users left with fewer than 3; item and user indices
follow ``ml-100k_mm``'s order (first appearance in time). Both are written in the single-domain
pre-split layout by :func:`recbole_mm.prepare.common.write_dataset` (leave-one-out, history 50);
pre-training reads only ``ml-100k_mm_A.train.inter`` (``benchmark_filename: [train]``), so A's last
two ratings per user are never seen. Features are ``ml-100k_mm``'s rows of the same movies
(``feat1CLS`` text, ``feat3CLS`` genre description in the image slot); domain A also gets ``feat2CLS``,
MISSRec's word-drop augmentation: "title (year)" with each word dropped with probability 0.15
(seed 2020), encoded by the same MiniLM encoder. Each folder gets its ``<name>.yaml``
(:func:`recbole_mm.prepare.common.write_config`), so runs need no dataset preset.

    python -m recbole_mm.prepare.ml100k_mm_domains [--data-path dataset]
"""

import argparse
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from recbole_mm.data.atomic_files import atomic_write, link_files, publish_dir, write_feature_file
from recbole_mm.data.features import open_feature_file
from recbole_mm.prepare import ml100k_mm
from recbole_mm.prepare.common import PrepareError, read_index_file, write_config, write_dataset
from recbole_mm.prepare.encode import word_drop

NAME_A = "ml-100k_mm_A"
NAME_B = "ml-100k_mm_B"
DOMAIN_A_GENRES = frozenset({"Drama", "Romance"})
WORD_DROP = 0.15
WORD_DROP_SEED = 2020
SUFFIXES = (ml100k_mm.TEXT_SUFFIX, ml100k_mm.GENRE_SUFFIX)


def in_domain_a(genres: str) -> bool:
    """True for a movie whose space-separated MovieLens genres include Drama or Romance."""
    return bool(DOMAIN_A_GENRES.intersection(genres.split()))


def cut_domain(sequences: Sequence[Sequence[int]], user_ids: Sequence[str], item_ids: Sequence[str], keep: np.ndarray):
    """One domain of a set of chronological sequences.

    Args:
        sequences: ``sequences[u]`` = item indices of user ``u``, oldest first.
        user_ids, item_ids: raw ids behind the user and item indices.
        keep: ``[n_items]`` bool, the items of the domain.

    Returns:
        dict with ``sequences`` (re-indexed, users with fewer than 3 items dropped), ``user_ids``,
        ``item_ids`` (raw ids in the new index order, which keeps the old one) and ``source_rows``
        (``[n_domain_items]`` old item index of each new index).
    """
    kept_users, kept_sequences = [], []
    for user, seq in enumerate(sequences):
        seq = [i for i in seq if keep[i]]
        if len(seq) >= 3:
            kept_users.append(user)
            kept_sequences.append(seq)
    used = np.zeros(len(item_ids), dtype=bool)
    for seq in kept_sequences:
        used[seq] = True
    source_rows = np.flatnonzero(used)
    new_index = np.full(len(item_ids), -1, dtype=np.int64)
    new_index[source_rows] = np.arange(len(source_rows))
    return {
        "sequences": [new_index[seq].tolist() for seq in kept_sequences],
        "user_ids": [user_ids[u] for u in kept_users],
        "item_ids": [item_ids[i] for i in source_rows],
        "source_rows": source_rows,
    }


def _read_features(source: str) -> Dict[str, np.ndarray]:
    tables = {}
    for suffix in SUFFIXES:
        path = os.path.join(source, f"{ml100k_mm.NAME}.{suffix}")
        with open(path + ".json", encoding="utf-8") as f:
            tables[suffix] = open_feature_file(path, json.load(f)["dim"])
    return tables


def _write_domain(data_path: str, name: str, domain: dict, texts: List[Optional[str]], tables, encoder=None) -> str:
    """Write one domain into a temporary folder, add its feature files, then rename it into place."""
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=data_path)
    try:
        directory, _ = write_dataset(work, name, [{"name": name, **domain, "texts": texts}])
        meta = {"source": f"rows of {ml100k_mm.NAME}.<suffix> for the items of {name}"}
        for suffix, table in tables.items():
            write_feature_file(
                os.path.join(directory, f"{name}.{suffix}"), table[domain["source_rows"]], "copied", meta
            )
        if encoder is not None:
            dropped = word_drop(texts, WORD_DROP, WORD_DROP_SEED)
            write_feature_file(
                os.path.join(directory, f"{name}.feat2CLS"),
                ml100k_mm.encode_optional(encoder, dropped, f"{name}: word-dropped text"),
                encoder.name,
                {"content": f"title (year), words dropped with p={WORD_DROP} (seed {WORD_DROP_SEED})"},
            )
        target = os.path.join(data_path, name)
        publish_dir(directory, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_config(target, name)
    return target


def build(data_path: str, source_data_path: Optional[str] = None, encoder=None) -> List[str]:
    """Build ``<data_path>/ml-100k_mm_A`` and ``<data_path>/ml-100k_mm_B``; return their paths.

    Args:
        data_path: parent folder of the new dataset folders.
        source_data_path: parent folder of ``ml-100k_mm`` (default ``data_path``; built there if missing).
        encoder: text encoder of the word-dropped texts (default MiniLM, the one ``ml-100k_mm`` uses).

    Raises:
        PrepareError: a target folder exists, or ``ml-100k_mm`` was built from other MovieLens files.
    """
    for name in (NAME_A, NAME_B):
        if os.path.exists(os.path.join(data_path, name)):
            raise PrepareError(f"{os.path.join(data_path, name)} already exists; remove it to rebuild {name}")
    source = ml100k_mm.ensure_built(source_data_path or data_path)
    inter, items = ml100k_mm.load_source()
    sequences, user_ids, item_ids = ml100k_mm.chronological_sequences(inter)
    built_items = read_index_file(os.path.join(source, f"{ml100k_mm.NAME}.item2index"))
    if built_items != item_ids:
        raise PrepareError(
            f"{source}: its item2index differs from the MovieLens-100K files in the installed recbole "
            f"({len(built_items)} items listed, {len(item_ids)} expected); rebuild {ml100k_mm.NAME}"
        )
    tables = _read_features(source)
    texts, _ = ml100k_mm.item_descriptions(items, item_ids)
    genres = items.set_index("item_id").loc[item_ids, "class"]
    keep_a = np.array([in_domain_a(g) for g in genres])
    if encoder is None:
        from recbole_mm.encoders.text import MiniLMEncoder

        encoder = MiniLMEncoder()
    os.makedirs(data_path, exist_ok=True)
    paths = []
    for name, keep, enc in ((NAME_A, keep_a, encoder), (NAME_B, ~keep_a, None)):
        domain = cut_domain(sequences, user_ids, item_ids, keep)
        domain_texts = [texts[i] for i in domain["source_rows"]]
        paths.append(_write_domain(data_path, name, domain, domain_texts, tables, enc))
    return paths


def ensure_built(data_path: str, source_data_path: Optional[str] = None) -> List[str]:
    """The two domain folders under ``data_path``, built first if either is missing."""
    paths = [os.path.join(data_path, name) for name in (NAME_A, NAME_B)]
    if all(os.path.isdir(p) for p in paths):
        return paths
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path)  # one half of an interrupted build: rebuild both
    return build(data_path, source_data_path)


def copy_slice(source_data_path: str, data_path: str, name: str, n_users: int, max_rows: int) -> str:
    """A small copy of the pre-split dataset ``name`` for quick checks: feature, index and preset files
    hard-linked (or copied across file systems), the interaction files cut to the users with index
    below ``n_users`` and each one's last ``max_rows`` rows per file. Returns the new folder."""
    source, target = os.path.join(source_data_path, name), os.path.join(data_path, name)
    os.makedirs(target)
    link_files(source, target, keep=lambda entry: not entry.endswith(".inter"))
    for part in ("train", "valid", "test"):
        path = os.path.join(source, f"{name}.{part}.inter")
        if os.path.isfile(path):
            frame = pd.read_csv(path, sep="\t", dtype=str)
            frame = frame[frame.iloc[:, 0].astype(int) < n_users]
            frame = frame.groupby(frame.columns[0], sort=False).tail(max_rows)
            with atomic_write(os.path.join(target, f"{name}.{part}.inter")) as f:
                frame.to_csv(f, sep="\t", index=False)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", default="dataset", help="parent folder of the dataset folders")
    args = parser.parse_args(argv)
    for path in build(args.data_path):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
