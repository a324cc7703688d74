"""The embedded demo dataset ``ml-100k_mm``, built on first use from the MovieLens-100K files that ship
inside the recbole wheel (``recbole/dataset_example/ml-100k``); nothing is downloaded.

- Interactions: every rating is an interaction; each user's ratings are ordered by time (ties by item
  id), then split leave-one-out into pre-split files in MISSRec's format, history truncated to 50.
  Item and user indices follow the order of first appearance in the global time order.
- Text modality (``feat1CLS``, 384-d): "<title> (<year>)" encoded by all-MiniLM-L6-v2.
- "Image" modality (``feat3CLS``, 384-d): MovieLens-100K has no images, so this slot holds the genre
  description ("Genres: Action, Sci-Fi.") through the same encoder. Items whose genre is "unknown" get a
  zero row, so missing-modality handling runs on real data; the one item whose title is "unknown" gets
  a zero text row for the same reason.
- Dummy queries (``ml-100k_mm.item``, ``item_id:token  dummy_query:token_seq``, item tokens = indices) for the
  long-sequence models, as the SEMINAR reference builds Amazon's: the first 5 words of the item's text. Here
  the text is the title without the year, split on whitespace, lower-cased, with punctuation stripped from the
  ends of each word ("English Patient, The" -> ``english patient the``); an unknown title gives an empty query.
  MovieLens has no search log, so each interaction's query is its item's dummy query (the dataset builds the
  query histories from the item ids). Other models do not load this file. A folder built before the file
  existed gets it from ``ensure_built``.
"""

import importlib.util
import os
import re
import shutil
import tempfile
from typing import Optional

import numpy as np
import pandas as pd
from tqdm import tqdm

from recbole_mm.data import atomic_files
from recbole_mm.data.atomic_files import (
    atomic_write,
    leave_one_out,
    publish_dir,
    write_feature_file,
    write_index_file,
    write_inter_files,
)

NAME = "ml-100k_mm"
MAX_HISTORY = 50
TEXT_SUFFIX = "feat1CLS"
GENRE_SUFFIX = "feat3CLS"
UNKNOWN = {"unknown", "unkonwn", ""}  # the second spelling is MovieLens-100K's own
QUERY_WORDS = 5
QUERY_HEADER = "item_id:token\tdummy_query:token_seq\n"
_EDGE_PUNCTUATION = re.compile(r"^[^\w]+|[^\w]+$")


def recbole_ml100k_dir() -> str:
    """Directory of the MovieLens-100K atomic files inside the installed recbole package."""
    return os.path.join(os.path.dirname(importlib.util.find_spec("recbole").origin), "dataset_example", "ml-100k")


def load_source(source_dir: Optional[str] = None):
    """Read ``(interactions, items)`` DataFrames from RecBole's ml-100k atomic files."""
    source_dir = source_dir or recbole_ml100k_dir()
    inter = pd.read_csv(os.path.join(source_dir, "ml-100k.inter"), sep="\t", dtype=str)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    items = pd.read_csv(os.path.join(source_dir, "ml-100k.item"), sep="\t", dtype=str, keep_default_na=False)
    items.columns = [c.split(":")[0] for c in items.columns]
    return inter, items


def chronological_sequences(inter: pd.DataFrame):
    """Per-user item-index sequences in time order, with the raw ids behind the indices (ties broken by
    the numeric user, then item id)."""
    numeric = inter.assign(
        user_id=inter["user_id"].astype(int),
        item_id=inter["item_id"].astype(int),
        timestamp=inter["timestamp"].astype(float),
    )
    sequences, user_ids, item_ids = atomic_files.chronological_sequences(numeric)
    return sequences, [str(u) for u in user_ids], [str(i) for i in item_ids]


def item_descriptions(items: pd.DataFrame, item_ids):
    """``(texts, genre_texts)`` aligned to ``item_ids``; ``None`` marks a missing modality."""
    by_id = items.set_index("item_id")
    texts, genres = [], []
    for raw in item_ids:
        row = by_id.loc[raw]
        title, year = row["movie_title"].strip(), row["release_year"].strip()
        texts.append(
            None if title.lower() in UNKNOWN else (f"{title} ({year})" if year.lower() not in UNKNOWN else title)
        )
        names = [g for g in row["class"].split() if g.lower() not in UNKNOWN]
        genres.append(f"Genres: {', '.join(names)}." if names else None)
    return texts, genres


def dummy_queries(items: pd.DataFrame, item_ids):
    """The dummy query of each item in ``item_ids``: the first ``QUERY_WORDS`` words of its title (see the module
    docstring), space-joined; ``""`` where the title is unknown."""
    titles = items.set_index("item_id")["movie_title"]
    queries = []
    for raw in item_ids:
        title = titles.loc[raw].strip()
        words = [] if title.lower() in UNKNOWN else [_EDGE_PUNCTUATION.sub("", w).lower() for w in title.split()]
        queries.append(" ".join([w for w in words if w][:QUERY_WORDS]))
    return queries


def write_queries(directory: str, source_dir: Optional[str] = None) -> str:
    """Write ``<directory>/ml-100k_mm.item`` (the dummy queries) for the items of ``ml-100k_mm.item2index``; item
    tokens are the indices, as in the interaction files."""
    with open(os.path.join(directory, f"{NAME}.item2index"), encoding="utf-8") as f:
        item_ids = [line.split("\t")[0] for line in f if line.strip()]
    _, items = load_source(source_dir)
    path = os.path.join(directory, f"{NAME}.item")
    with atomic_write(path) as f:
        f.write(QUERY_HEADER)
        f.writelines(f"{index}\t{query}\n" for index, query in enumerate(dummy_queries(items, item_ids)))
    return path


def encode_optional(encoder, texts, desc: str) -> np.ndarray:
    """Encode the non-``None`` texts; ``None`` rows stay zero."""
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    keep = [k for k, t in enumerate(texts) if t is not None]
    out[keep] = encoder.encode([texts[k] for k in keep], progress=True, desc=desc)
    return out


def build(data_path: str, encoder=None, source_dir: Optional[str] = None) -> str:
    """Build ``<data_path>/ml-100k_mm`` and return its path.

    The files are written into a temporary directory beside the target, which is renamed into place
    at the end: an interrupted build leaves no partial dataset behind.
    """
    os.makedirs(data_path, exist_ok=True)
    target = os.path.join(data_path, NAME)
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; remove it to rebuild {NAME}")
    steps = tqdm(total=4, desc=f"building {NAME}", unit="step")
    inter, items = load_source(source_dir)
    sequences, user_ids, item_ids = chronological_sequences(inter)
    texts, genres = item_descriptions(items, item_ids)
    steps.update()
    if encoder is None:
        from recbole_mm.encoders.text import MiniLMEncoder

        encoder = MiniLMEncoder()
    work = tempfile.mkdtemp(prefix=f".{NAME}.", dir=data_path)
    try:
        write_inter_files(work, NAME, leave_one_out(sequences, MAX_HISTORY))
        write_index_file(os.path.join(work, f"{NAME}.user2index"), user_ids)
        write_index_file(os.path.join(work, f"{NAME}.item2index"), item_ids)
        with atomic_write(os.path.join(work, f"{NAME}.text")) as f:
            f.write("item_id:token\ttext:token_seq\n")
            f.writelines(f"{raw}\t{text or ''}\n" for raw, text in zip(item_ids, texts))
        write_queries(work, source_dir)
        steps.update()
        meta = {"source": "MovieLens-100K from the recbole wheel"}
        write_feature_file(
            os.path.join(work, f"{NAME}.{TEXT_SUFFIX}"),
            encode_optional(encoder, texts, "text: title (year)"),
            encoder.name,
            {**meta, "content": "title (year)"},
        )
        steps.update()
        write_feature_file(
            os.path.join(work, f"{NAME}.{GENRE_SUFFIX}"),
            encode_optional(encoder, genres, "image slot: genres"),
            encoder.name,
            {**meta, "content": "genre description in the image slot (MovieLens-100K has no images)"},
        )
        publish_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    steps.update()
    steps.close()
    return target


def ensure_built(data_path: str) -> str:
    """Return the ``ml-100k_mm`` directory under ``data_path``, building it first if it is missing (a folder built
    before the dummy queries existed gets ``ml-100k_mm.item`` added; nothing else is rebuilt)."""
    target = os.path.join(data_path, NAME)
    if not os.path.isdir(target):
        return build(data_path)
    if not os.path.isfile(os.path.join(target, f"{NAME}.item")):
        write_queries(target)
    return target
