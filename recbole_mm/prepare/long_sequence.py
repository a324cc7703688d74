"""The layout the long-sequence models (SIM, ETA, QIN, TWIN, SEMINAR) read, written by the ``amazon2018`` and
``kuaisar`` subcommands (see "Long-sequence data" in ``dataset/README.md``).

Files of a dataset ``<name>``:

- ``<name>.inter``: ``user_id:token  item_id:token  timestamp:float  query:token_seq``, one line per interaction
  (RecBole orders and splits them: every interaction after a user's first is a row, leave-one-out by time);
- ``<name>.item`` (when the items have dummy queries): ``item_id:token  dummy_query:token_seq``;
- ``<name>.user2index``, ``<name>.item2index``: ``raw_id<TAB>index``; tokens in the files are these indices, so
  ``python -m recbole_mm.prepare encode`` can add feature files (row ``i`` = item index ``i``);
- ``<name>.text`` (when the items have texts) for that encoder, and ``<name>.yaml``, the config preset.

Queries are space-separated keyword tokens (no tabs, no spaces inside a token); an empty query is an empty field.
"""

import os
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from recbole_mm.data.atomic_files import atomic_write, write_index_file
from recbole_mm.prepare.common import PrepareError, domain_files, publishing, start_dataset_dir, write_text_file

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\tquery:token_seq\n"
ITEM_HEADER = "item_id:token\tdummy_query:token_seq\n"
PRESET = """\
# Written by python -m recbole_mm.prepare: how to load this dataset for the long-sequence models
# (SIM, ETA, QIN, TWIN, SEMINAR); pass it with --config_files.
data_path: {data_path}
load_col:                                  # (dict) Fields read from each atomic file.
  inter: [user_id, item_id, timestamp, query]
{item_col}QUERY_FIELD: query                         # (str) Interaction field holding the query's keyword tokens.
query_max_tokens: 5                        # (int) Keywords per query; longer queries keep their first 5.
MAX_ITEM_LIST_LENGTH: {max_len}                # (int) History length L.
# Evaluation: the long-sequence family's protocol, defined once in the models' properties
# (recbole_mm/properties/model/<Model>.yaml: leave-one-out by time, the positive and 99 uniform negatives, uni99).
{features}"""


def keywords(text: Optional[str], limit: Optional[int] = None) -> str:
    """Whitespace-separated tokens of ``text`` (the first ``limit``), joined by single spaces; ``""`` for none."""
    if not text:
        return ""
    words = text.split()
    return " ".join(words[:limit] if limit is not None else words)


def write_long_sequence_dataset(
    data_path: str,
    name: str,
    inter: pd.DataFrame,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    dummy_queries: Optional[List[str]] = None,
    texts: Optional[List[Optional[str]]] = None,
    max_len: int = 100,
) -> tuple:
    """Write ``<data_path>/<name>/`` (or confirm an identical dataset is there).

    Args:
        inter: columns ``user`` / ``item`` (indices into ``user_ids`` / ``item_ids``), ``timestamp``, ``query``
            (keyword string), in the order to write.
        dummy_queries: per item index, or ``None`` (no ``.item`` file).
        texts: per item index (``None`` = no text), or ``None`` (no ``.text`` file).
        max_len: ``MAX_ITEM_LIST_LENGTH`` written to the preset.

    Returns:
        ``(directory, reused)``.

    Raises:
        PrepareError: the folder holds a different dataset, or a query token holds a tab.
    """
    target = os.path.join(data_path, name)
    if inter["query"].str.contains("\t", regex=False).any():
        raise PrepareError(f"{name}: a query holds a tab character, which would break the .inter file")
    expected = domain_files(name, user_ids, item_ids)
    work = start_dataset_dir(data_path, name, expected)
    if work is None:
        return target, True
    with publishing(work, target):
        with atomic_write(os.path.join(work, f"{name}.inter")) as f:
            f.write(INTER_HEADER)
            stamps = inter["timestamp"].to_numpy()
            as_int = np.issubdtype(stamps.dtype, np.integer)
            for u, i, t, q in zip(inter["user"].to_numpy(), inter["item"].to_numpy(), stamps, inter["query"]):
                f.write(f"{u}\t{i}\t{int(t) if as_int else float(t)}\t{q}\n")
        write_index_file(os.path.join(work, f"{name}.user2index"), user_ids)
        write_index_file(os.path.join(work, f"{name}.item2index"), item_ids)
        if dummy_queries is not None:
            with atomic_write(os.path.join(work, f"{name}.item")) as f:
                f.write(ITEM_HEADER)
                f.writelines(f"{i}\t{q}\n" for i, q in enumerate(dummy_queries))
        if texts is not None:
            write_text_file(os.path.join(work, f"{name}.text"), item_ids, texts)
    return target, False


def write_preset(directory: str, name: str, max_len: int) -> str:
    """``<directory>/<name>.yaml`` for the long-sequence models, with the feature files present (CLIP/MiniLM
    ``feat1CLS`` text, ``feat3CLS`` image) declared under ``mm_features``."""
    import json

    lines = []
    for suffix, modality in (("feat1CLS", "text"), ("feat3CLS", "image")):
        sidecar = os.path.join(directory, f"{name}.{suffix}.json")
        if os.path.isfile(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                lines.append(f"  {modality}: {{suffix: {suffix}, dim: {json.load(f)['dim']}}}\n")
    header = "mm_features:                               # (dict) Modality name -> {suffix, dim}.\n"
    features = header + "".join(lines) if lines else ""
    item_col = "  item: [item_id, dummy_query]\n" if os.path.isfile(os.path.join(directory, f"{name}.item")) else ""
    text = PRESET.format(
        data_path=os.path.dirname(os.path.abspath(directory)), item_col=item_col, max_len=max_len, features=features
    )
    path = os.path.join(directory, f"{name}.yaml")
    with atomic_write(path) as f:
        f.write(text)
    return path
