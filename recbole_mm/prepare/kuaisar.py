"""``kuaisar``: KuaiSAR (``KuaiSAR_final``, kuaisar.github.io / Zenodo 8181109) to the long-sequence layout, the SEMINAR
reference's recipe: one time-ordered sequence of (item, query) pairs per user, search and recommendation merged.

Inputs (CSV with a header; other columns are ignored):

- ``src_inter.csv`` (search): ``user_id``, ``item_id``, ``keyword`` (a JSON list of keyword ids, e.g.
  ``[1979292, 2548186]``), ``click_cnt``, ``search_session_timestamp``. Rows with ``click_cnt > 0`` are search
  clicks; their query is the keyword ids (space-separated tokens); an empty or unreadable list gives an empty query
  (unreadable ones are counted).
- ``rec_inter.csv`` (recommendation): ``user_id``, ``item_id``, ``click``, ``timestamp``. Rows with ``click > 0`` are
  recommendation clicks, with an empty query.

Both are merged by time (a search click first where the times are equal, then file order); users with fewer than 4
interactions are dropped (the reference's user core 4, item core 0); exact duplicate rows are dropped and counted,
and so are rows with a missing or non-numeric field. Queries keep all their keywords in the file; the dataset keeps
the first ``query_max_tokens`` (5) and logs how many were cut. KuaiSAR has no item texts or images and no dummy
queries (candidates get the empty query, as in the reference). Histories: ``MAX_ITEM_LIST_LENGTH`` 1,000 in the
preset.
"""

import json
import os
from typing import Tuple

import pandas as pd

from recbole_mm.prepare.common import PrepareError, SkipReport

SEARCH_COLUMNS = ["user_id", "item_id", "keyword", "click_cnt", "search_session_timestamp"]
REC_COLUMNS = ["user_id", "item_id", "click", "timestamp"]
USER_CORE = 4
MAX_LEN = 1000


def read_csv(path: str, columns, report: SkipReport) -> pd.DataFrame:
    """The ``columns`` of a KuaiSAR CSV, as strings."""
    if not os.path.isfile(path):
        raise PrepareError(f"input file {path} does not exist")
    header = pd.read_csv(path, nrows=0).columns.tolist()
    missing = [c for c in columns if c not in header]
    if missing:
        raise PrepareError(f"{path}: expected the columns {columns}, {missing} are missing (found {header})")
    return pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False)


def keyword_query(value: str) -> Tuple[str, bool]:
    """``("k1 k2 ...", readable)`` from a JSON list of keyword ids."""
    try:
        parsed = json.loads(value) if value else []
    except ValueError:
        return "", False
    if not isinstance(parsed, list) or not all(isinstance(k, (int, str)) and str(k).strip() for k in parsed):
        return "", False
    return " ".join(str(k).strip().replace(" ", "_") for k in parsed), True


def _numeric(frame: pd.DataFrame, columns, report: SkipReport, what: str) -> pd.DataFrame:
    values = {c: pd.to_numeric(frame[c], errors="coerce") for c in columns}
    ok = pd.concat(values.values(), axis=1).notna().all(axis=1)
    ok &= frame["user_id"].str.len().gt(0) & frame["item_id"].str.len().gt(0)
    report.skip(f"{what} rows with a missing or non-numeric field", None, int((~ok).sum()))
    frame = frame[ok].copy()
    for c in columns:
        frame[c] = values[c][ok]
    return frame


def prepare_kuaisar(search_csv: str, rec_csv: str, name: str = "kuaisar") -> Tuple[dict, SkipReport]:
    """Merge the search and recommendation clicks; return the arguments of ``write_long_sequence_dataset``."""
    report = SkipReport(f"kuaisar {name}")
    search = read_csv(search_csv, SEARCH_COLUMNS, report)
    search = _numeric(search, ["click_cnt", "search_session_timestamp"], report, "src_inter")
    rec = _numeric(read_csv(rec_csv, REC_COLUMNS, report), ["click", "timestamp"], report, "rec_inter")
    n_search, n_rec = len(search), len(rec)
    search = search[search["click_cnt"] > 0]
    rec = rec[rec["click"] > 0]
    parsed = {v: keyword_query(v) for v in search["keyword"].unique()}
    unreadable = [v for v, (_, ok) in parsed.items() if not ok]
    report.skip(
        "unreadable keyword lists (empty query kept)",
        unreadable[0] if unreadable else None,
        int(search["keyword"].isin(unreadable).sum()),
    )
    merged = pd.concat(
        [
            pd.DataFrame(
                {
                    "user_id": search["user_id"],
                    "item_id": search["item_id"],
                    "timestamp": search["search_session_timestamp"],
                    "query": search["keyword"].map(lambda v: parsed[v][0]),
                    "source": 0,
                }
            ),
            pd.DataFrame(
                {
                    "user_id": rec["user_id"],
                    "item_id": rec["item_id"],
                    "timestamp": rec["timestamp"],
                    "query": "",
                    "source": 1,
                }
            ),
        ],
        ignore_index=True,
    )
    if (merged["timestamp"] % 1 == 0).all():
        merged["timestamp"] = merged["timestamp"].astype("int64")
    dup = merged.duplicated()
    report.skip("duplicate interactions (same user, item, time, query and source)", None, int(dup.sum()))
    merged = merged[~dup]
    counts = merged["user_id"].map(merged["user_id"].value_counts())
    short = counts < USER_CORE
    report.skip(f"users with fewer than {USER_CORE} interactions", None, int(merged.loc[short, "user_id"].nunique()))
    merged = merged[~short]
    if merged.empty:
        raise PrepareError(f"kuaisar {name}: no user has {USER_CORE} clicks or more ({report.line()})")
    # indices in order of first appearance in time; one line per interaction, users in index order, time order
    merged = merged.sort_values(["timestamp", "source"], kind="stable")
    user_ids = pd.unique(merged["user_id"]).tolist()
    item_ids = pd.unique(merged["item_id"]).tolist()
    merged = merged.assign(
        user=merged["user_id"].map({raw: u for u, raw in enumerate(user_ids)}),
        item=merged["item_id"].map({raw: i for i, raw in enumerate(item_ids)}),
    ).sort_values("user", kind="stable")
    long_queries = int(merged["query"].str.split().str.len().gt(5).sum())
    report.note(
        f"read {n_search:,} search rows and {n_rec:,} recommendation rows; kept {len(user_ids):,} users, "
        f"{len(item_ids):,} items, {len(merged):,} interactions ({int((merged['source'] == 0).sum()):,} search "
        f"clicks, {int((merged['source'] == 1).sum()):,} recommendation clicks; {long_queries:,} queries have more "
        f"than 5 keywords)"
    )
    dataset = {
        "inter": merged[["user", "item", "timestamp", "query"]].reset_index(drop=True),
        "user_ids": user_ids,
        "item_ids": item_ids,
        "dummy_queries": None,
        "texts": None,
        "max_len": MAX_LEN,
    }
    return dataset, report
