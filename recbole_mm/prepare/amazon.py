"""``amazon``: Amazon Review Data (2018) to a pre-split multi-modal dataset, UniSRec's recipe.

Inputs per category: the interactions, either the ratings CSV (``item,user,rating,timestamp``, no
header) or the review JSON lines (``reviewerID``, ``asin``, ``unixReviewTime``), plain or ``.gz``; and
the metadata JSON lines (``asin``, ``title``, ``category``, ``brand``, image URLs in ``imageURLHighRes``
/ ``imageURL`` / ``image``). Lines in Python-literal form (the 2014 release) are read too.

Recipe: drop interactions whose item has no metadata; with ``subset`` also items lacking a modality
(no text, or no image: no file in the image folder, or without a folder no image URL); drop exact
duplicate rows; k-core filtering to a fixed point; order each user's interactions by time;
leave-one-out with every training prefix, histories truncated to 50. Item text = cleaned
``title``, ``category``, ``brand`` (HTML entities and tags removed, each field ending with one period,
fields of 2,000 characters or more left out, as UniSRec does).

Skipped: corrupt lines (unparseable, or missing a field), duplicate metadata records (the first is
kept), duplicate interactions, interactions of items without metadata. All are counted in the
summary line.
"""

import ast
import gzip
import html
import io
import json
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import pandas as pd
from tqdm import tqdm

from recbole_mm.data.atomic_files import chronological_sequences
from recbole_mm.prepare.common import PrepareError, SkipReport, drop_short_users, k_core
from recbole_mm.prepare.encode import IMAGE_EXTENSIONS

TEXT_FIELDS = ("title", "category", "brand")
IMAGE_FIELDS = ("imageURLHighRes", "imageURL", "image")
MAX_FIELD_CHARS = 2000
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def open_text(path: str) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file (by its magic bytes, not its name)."""
    if not os.path.isfile(path):
        raise PrepareError(f"input file {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def json_lines(path: str, report: SkipReport, desc: str) -> Iterator[dict]:
    """Records of a JSON-lines file; Python-literal lines are accepted; corrupt lines are counted."""
    with open_text(path) as f:
        for number, line in enumerate(tqdm(f, desc=desc, unit=" lines", mininterval=2), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                try:
                    record = ast.literal_eval(line.strip())
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    report.skip("corrupt JSON lines", f"{os.path.basename(path)}:{number}")
                    continue
            if not isinstance(record, dict):
                report.skip("corrupt JSON lines", f"{os.path.basename(path)}:{number}")
                continue
            yield record


def clean_field(value) -> str:
    """One metadata field as text: lists joined, HTML unescaped and untagged, one final period."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    elif not isinstance(value, str):
        value = str(value)
    value = _TAG.sub(" ", html.unescape(value)).replace('"', "")
    value = _SPACE.sub(" ", value).strip().rstrip(".").strip()
    if not value or len(value) >= MAX_FIELD_CHARS:
        return ""
    return value + "."


def item_text(record: dict) -> Optional[str]:
    """``title category brand`` of a metadata record, cleaned; ``None`` when all are empty."""
    parts = [clean_field(record[key]) for key in TEXT_FIELDS if key in record]
    text = " ".join(p for p in parts if p)
    return text or None


def image_url(record: dict) -> Optional[str]:
    """The first image URL of a metadata record (high resolution first)."""
    for key in IMAGE_FIELDS:
        urls = record.get(key)
        if isinstance(urls, str):
            urls = [urls]
        for url in urls or []:
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                return url
    return None


def read_metadata(path: str, report: SkipReport, describe=None) -> Dict[str, dict]:
    """``asin -> describe(record)`` from a metadata file (first record of a duplicated asin kept; records without an
    asin skipped and counted). The default ``describe`` gives ``{"text", "image_url"}``."""
    describe = describe or (lambda record: {"text": item_text(record), "image_url": image_url(record)})
    meta = {}
    for record in json_lines(path, report, f"metadata {os.path.basename(path)}"):
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin:
            report.skip("metadata records without asin")
            continue
        if asin in meta:
            report.skip("duplicate metadata records (first kept)", asin)
            continue
        meta[asin] = describe(record)
    return meta


def _count_lines(path: str) -> int:
    with open_text(path) as f:
        return sum(1 for line in f if line.strip())


def read_ratings_csv(path: str, report: SkipReport) -> pd.DataFrame:
    """``user_id, item_id, timestamp`` from a 2018 ratings CSV (``item,user,rating,timestamp``)."""
    with open_text(path) as f:
        frame = pd.read_csv(
            f,
            header=None,
            names=["item_id", "user_id", "rating", "timestamp"],
            dtype=str,
            on_bad_lines="skip",
            engine="c",
            skip_blank_lines=True,
        )
    bad_shape = _count_lines(path) - len(frame)
    report.skip("corrupt CSV lines (wrong number of fields)", None, bad_shape)
    return _valid_rows(frame, report, "CSV")


def read_reviews_json(path: str, report: SkipReport) -> pd.DataFrame:
    """``user_id, item_id, timestamp`` from a review JSON-lines file."""
    users, items, times = [], [], []
    for record in json_lines(path, report, f"reviews {os.path.basename(path)}"):
        users.append(record.get("reviewerID"))
        items.append(record.get("asin"))
        times.append(record.get("unixReviewTime"))
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times}, dtype=object)
    return _valid_rows(frame, report, "review")


def _valid_rows(frame: pd.DataFrame, report: SkipReport, kind: str) -> pd.DataFrame:
    """Keep rows with a user, an item and a numeric timestamp; count the others."""
    time = pd.to_numeric(frame["timestamp"], errors="coerce")
    ok = time.notna() & frame["user_id"].notna() & frame["item_id"].notna()
    ok &= frame["user_id"].astype(str).str.len().gt(0) & frame["item_id"].astype(str).str.len().gt(0)
    report.skip(f"{kind} rows without user, item or numeric timestamp", None, int((~ok).sum()))
    return pd.DataFrame(
        {
            "user_id": frame.loc[ok, "user_id"].astype(str),
            "item_id": frame.loc[ok, "item_id"].astype(str),
            "timestamp": time[ok].astype("int64"),
        }
    ).reset_index(drop=True)


def read_interactions(path: str, report: SkipReport) -> pd.DataFrame:
    """Ratings CSV or review JSON, told apart by the first non-blank character (``{`` = JSON)."""
    with open_text(path) as f:
        first = next((line for line in f if line.strip()), "")
    if first.lstrip().startswith("{"):
        return read_reviews_json(path, report)
    return read_ratings_csv(path, report)


def has_image_file(image_dir: str) -> set:
    """Raw ids with an image file ``<id>.<ext>`` in ``image_dir``."""
    if not os.path.isdir(image_dir):
        raise PrepareError(f"image directory {image_dir} does not exist")
    return {os.path.splitext(f)[0] for f in os.listdir(image_dir) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS}


def filter_items(
    inter: pd.DataFrame,
    meta: Dict[str, dict],
    report: SkipReport,
    subset: bool = False,
    image_ids: Optional[set] = None,
) -> pd.DataFrame:
    """Drop duplicate rows and interactions of items without metadata (or, with ``subset``, lacking a modality)."""
    dup = inter.duplicated(["user_id", "item_id", "timestamp"])
    report.skip("duplicate interactions (same user, item and time)", None, int(dup.sum()))
    inter = inter[~dup]
    known = inter["item_id"].isin(meta.keys())
    report.skip(
        f"interactions of {inter.loc[~known, 'item_id'].nunique():,} items without metadata",
        inter.loc[~known, "item_id"].iloc[0] if (~known).any() else None,
        int((~known).sum()),
    )
    inter = inter[known]
    if subset:
        items = inter["item_id"].unique()
        complete = {
            i
            for i in items
            if meta[i]["text"] and (i in image_ids if image_ids is not None else meta[i]["image_url"] is not None)
        }
        lacking = ~inter["item_id"].isin(complete)
        report.skip(
            f"interactions of {len(items) - len(complete):,} items lacking a modality (--subset)",
            None,
            int(lacking.sum()),
        )
        inter = inter[~lacking]
    return inter


def prepare_domain(
    name: str, interactions: str, metadata: str, k: int = 5, subset: bool = False, image_dir: Optional[str] = None
) -> Tuple[dict, SkipReport]:
    """Read and filter one category; return the domain dict for :func:`~recbole_mm.prepare.common.write_dataset`."""
    report = SkipReport(f"amazon {name}")
    meta = read_metadata(metadata, report)
    if not meta:
        raise PrepareError(f"{metadata}: no usable metadata record (expected JSON lines with an 'asin')")
    inter = read_interactions(interactions, report)
    n_read = len(inter)
    inter = filter_items(inter, meta, report, subset, has_image_file(image_dir) if (subset and image_dir) else None)
    inter = drop_short_users(k_core(inter, k, report), report)
    if inter.empty:
        raise PrepareError(f"amazon {name}: no interaction is left after filtering ({report.line()})")
    sequences, user_ids, item_ids = chronological_sequences(inter)
    texts = [meta[i]["text"] for i in item_ids]
    report.note(
        f"read {n_read:,} interactions and {len(meta):,} metadata records; kept {len(user_ids):,} users, "
        f"{len(item_ids):,} items, {len(inter):,} interactions ({sum(t is None for t in texts):,} items without text)"
    )
    return {"name": name, "sequences": sequences, "user_ids": user_ids, "item_ids": item_ids, "texts": texts}, report


def image_urls(metadata: List[str], report: SkipReport) -> Dict[str, str]:
    """``asin -> first image URL`` over metadata files."""
    urls = {}
    for path in metadata:
        for asin, entry in read_metadata(path, report).items():
            if entry["image_url"] and asin not in urls:
                urls[asin] = entry["image_url"]
    return urls
