"""``amazon2018``: an Amazon Review Data (2018) category to the long-sequence layout with dummy queries, the SEMINAR
reference's Movies_and_TV recipe.

Inputs: the 5-core reviews (``<Category>_5.json.gz``: ``reviewerID``, ``asin``, ``unixReviewTime``; the ratings
CSV works too) and the metadata (``meta_<Category>.json.gz``: ``asin``, ``title``, ``description`` (a list of
strings), image URLs). Plain or gzipped JSON lines; Python-literal lines are read too.

Recipe (as the reference): every rating is an interaction (exact duplicate rows dropped and counted); users and
items filtered to a ``k``-core (5) at a fixed point; the **dummy query** of an item is the first 5 whitespace tokens
of its first ``description`` string (HTML entities and tags removed), and every interaction's query is its item's
dummy query, also written per item to ``<name>.item``. Items without metadata or without a description keep their
interactions and get an empty query (the reference writes the token ``<empty>`` instead; here empty means the
padding id 0). The item text for the encoders is the first 20 words of the title (the reference's CLIP text), so
``python -m recbole_mm.prepare encode --encoder hf-clip:DIR --images DIR`` adds the CLIP ViT-B/32 features.
Histories: ``MAX_ITEM_LIST_LENGTH`` 100 in the preset.

The dummy query largely names the item: at training time the target's query reveals it (the reference's leak,
documented in ``dataset/README.md``); the models zero the target query in their default evaluation mode.
"""

from typing import Dict, Tuple

from recbole_mm.data.atomic_files import chronological_sequences
from recbole_mm.prepare.amazon import clean_field, image_url, read_interactions, read_metadata
from recbole_mm.prepare.common import PrepareError, SkipReport, k_core
from recbole_mm.prepare.long_sequence import keywords

QUERY_WORDS = 5
TITLE_WORDS = 20
MAX_LEN = 100


def description_query(record: dict) -> str:
    """The dummy query of a metadata record: the first ``QUERY_WORDS`` tokens of its first description string."""
    description = record.get("description")
    if isinstance(description, str):
        description = [description]
    if not isinstance(description, list) or not description:
        return ""
    first = next((d for d in description if isinstance(d, str)), "")
    return keywords(clean_field(first).rstrip(".") if first else "", QUERY_WORDS)


def describe_item(record: dict) -> dict:
    """``{"query", "title", "image_url"}`` of one metadata record."""
    title = clean_field(record.get("title", "")).rstrip(".")
    return {
        "query": description_query(record),
        "title": keywords(title, TITLE_WORDS) or None,
        "image_url": image_url(record),
    }


def read_meta(path: str, report: SkipReport) -> Dict[str, dict]:
    """``asin -> {"query", "title", "image_url"}`` (first record of a duplicated asin kept)."""
    return read_metadata(path, report, describe_item)


def prepare_amazon2018(reviews: str, metadata: str, name: str, k: int = 5) -> Tuple[dict, SkipReport]:
    """Read and filter one category; return the arguments of ``write_long_sequence_dataset`` and the report."""
    report = SkipReport(f"amazon2018 {name}")
    meta = read_meta(metadata, report)
    inter = read_interactions(reviews, report)
    n_read = len(inter)
    dup = inter.duplicated(["user_id", "item_id", "timestamp"])
    report.skip("duplicate interactions (same user, item and time)", None, int(dup.sum()))
    inter = k_core(inter[~dup], k, report)
    if inter.empty:
        raise PrepareError(f"amazon2018 {name}: no interaction is left after the {k}-core ({report.line()})")
    _, user_ids, item_ids = chronological_sequences(inter)  # indices in order of first appearance in time
    no_meta = [i for i in item_ids if i not in meta]
    queries = [meta[i]["query"] if i in meta else "" for i in item_ids]
    texts = [meta[i]["title"] if i in meta else None for i in item_ids]
    # one line per interaction, users in index order, each user's interactions in time order
    user_index = {raw: u for u, raw in enumerate(user_ids)}
    item_index = {raw: i for i, raw in enumerate(item_ids)}
    ordered = inter.assign(user=inter["user_id"].map(user_index), item=inter["item_id"].map(item_index))
    ordered = ordered.sort_values(["user", "timestamp", "item"], kind="stable")
    ordered = ordered.assign(query=[queries[i] for i in ordered["item"]])
    report.note(
        f"read {n_read:,} interactions and {len(meta):,} metadata records; kept {len(user_ids):,} users, "
        f"{len(item_ids):,} items, {len(ordered):,} interactions; {sum(1 for q in queries if not q):,} items with an "
        f"empty dummy query ({len(no_meta):,} without metadata)"
    )
    dataset = {
        "inter": ordered[["user", "item", "timestamp", "query"]].reset_index(drop=True),
        "user_ids": user_ids,
        "item_ids": item_ids,
        "dummy_queries": queries,
        "texts": texts,
        "max_len": MAX_LEN,
    }
    return dataset, report

