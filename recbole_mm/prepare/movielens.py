"""``movielens-1m``: MovieLens-1M (``ratings.dat``, ``movies.dat``) to a pre-split multi-modal dataset.

``ratings.dat`` lines are ``UserID::MovieID::Rating::Timestamp`` and ``movies.dat`` lines
``MovieID::Title::Genres`` (Latin-1, genres separated by ``|``). Every rating is an interaction (the
UniSRec/MISSRec convention for implicit feedback). Item text: ``"<Title (Year)>. <Genre, Genre>."``.
Posters, if any, are files ``<MovieID>.<ext>`` in a folder given to ``encode --images``.

Skipped and counted: lines that do not have the expected fields, ratings of movies missing from
``movies.dat``; then the same k-core / leave-one-out recipe as ``amazon``.
"""

import os
from typing import Dict, Tuple

import pandas as pd

from recbole_mm.data.atomic_files import chronological_sequences
from recbole_mm.prepare.common import PrepareError, SkipReport, drop_short_users, k_core


def _read_dat(path: str, fields: int, report: SkipReport, what: str):
    if not os.path.isfile(path):
        raise PrepareError(f"MovieLens file {path} does not exist")
    with open(path, encoding="latin-1") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != fields or not all(p.strip() for p in parts):
                report.skip(f"corrupt {what} lines", f"{os.path.basename(path)}:{number}")
                continue
            yield parts


def read_movies(path: str, report: SkipReport) -> Dict[str, str]:
    """``movie id -> text`` from ``movies.dat``."""
    movies = {}
    for movie_id, title, genres in _read_dat(path, 3, report, "movies.dat"):
        names = ", ".join(g for g in genres.split("|") if g)
        movies[movie_id] = f"{title.strip()}. {names}." if names else f"{title.strip()}."
    return movies


def read_ratings(path: str, report: SkipReport) -> pd.DataFrame:
    """``user_id, item_id, timestamp`` from ``ratings.dat`` (lines with a non-integer timestamp are counted)."""
    rows = list(_read_dat(path, 4, report, "ratings.dat"))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"], dtype=str)
    time = pd.to_numeric(frame["timestamp"], errors="coerce")
    report.skip("ratings.dat lines with a non-numeric timestamp", None, int(time.isna().sum()))
    ok = time.notna()
    return pd.DataFrame(
        {
            "user_id": frame.loc[ok, "user_id"],
            "item_id": frame.loc[ok, "item_id"],
            "timestamp": time[ok].astype("int64"),
        }
    )


def prepare_movielens(source_dir: str, name: str, k: int = 5) -> Tuple[dict, SkipReport]:
    """Read ``<source_dir>/{ratings,movies}.dat``; return the domain dict for ``write_dataset``."""
    report = SkipReport(f"movielens-1m {name}")
    movies = read_movies(os.path.join(source_dir, "movies.dat"), report)
    inter = read_ratings(os.path.join(source_dir, "ratings.dat"), report)
    n_read = len(inter)
    known = inter["item_id"].isin(movies.keys())
    report.skip(
        "ratings of movies missing from movies.dat",
        inter.loc[~known, "item_id"].iloc[0] if (~known).any() else None,
        int((~known).sum()),
    )
    inter = drop_short_users(k_core(inter[known], k, report), report)
    if inter.empty:
        raise PrepareError(f"movielens-1m: no rating is left after filtering ({report.line()})")
    sequences, user_ids, item_ids = chronological_sequences(inter)
    report.note(
        f"read {n_read:,} ratings and {len(movies):,} movies; "
        f"kept {len(user_ids):,} users, {len(item_ids):,} items, {len(inter):,} ratings"
    )
    return {
        "name": name,
        "sequences": sequences,
        "user_ids": user_ids,
        "item_ids": item_ids,
        "texts": [movies[i] for i in item_ids],
    }, report
