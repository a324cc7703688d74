"""``ml-100k_mm_long``: ml-100k_mm's long-sequence twin, built on first use from the same MovieLens-100K files in
the recbole wheel and from the ``ml-100k_mm`` folder beside it (nothing is downloaded or encoded again).

ml-100k_mm's pre-split files stop each history at 50 items; MovieLens-100K's users rated 106 movies on average
(at most 737). The twin keeps every history whole, in the layout ``prepare amazon2018`` writes
(:mod:`recbole_mm.prepare.long_sequence`):

- ``ml-100k_mm_long.inter``: ``user_id:token  item_id:token  timestamp:float  query:token_seq``, one line per
  rating, each user's ratings in ml-100k_mm's order (time, ties by item id). ``timestamp`` is the rating's position
  in that order (0, 1, ...): the raw timestamps have ties, which RecBole's sort would order differently. ``query`` is
  the movie's dummy query (ml-100k_mm's, the first five title words);
- ``ml-100k_mm_long.item`` (the dummy queries), ``.feat1CLS`` / ``.feat3CLS`` (+ ``.json``), ``.text``,
  ``.user2index``, ``.item2index``: ml-100k_mm's files, hard-linked (copied across file systems).

Users, items, indices and features are ml-100k_mm's; RecBole's leave-one-out split by time of this file gives each
user the validation and test targets of ml-100k_mm's ``valid``/``test`` files, with histories that are not cut.
Loaded with ``recbole_mm/properties/dataset/ml-100k_mm_long.yaml``; the long-sequence family (and ``LongSASRec``)
reads it through :class:`~recbole_mm.data.long_sequence.LongSequenceDataset` (``train_rows_per_user`` cuts the
training rows, never the histories).
"""

import os
import shutil
import tempfile

from recbole_mm.data.atomic_files import atomic_write, link_files, publish_dir
from recbole_mm.prepare import ml100k_mm
from recbole_mm.prepare.long_sequence import INTER_HEADER

NAME = "ml-100k_mm_long"
SHARED = ("item", "feat1CLS", "feat1CLS.json", "feat3CLS", "feat3CLS.json", "text", "user2index", "item2index")


def build(data_path: str) -> str:
    """Build ``<data_path>/ml-100k_mm_long`` (building ``ml-100k_mm`` first if it is missing); return its path.

    Raises:
        FileExistsError: the folder exists.
        ValueError: ml-100k_mm's item indices are not the ones the MovieLens files give (a foreign folder).
    """
    target = os.path.join(data_path, NAME)
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; remove it to rebuild {NAME}")
    source = ml100k_mm.ensure_built(data_path)
    inter, items = ml100k_mm.load_source()
    sequences, user_ids, item_ids = ml100k_mm.chronological_sequences(inter)
    for kind, ids in (("item", item_ids), ("user", user_ids)):
        with open(os.path.join(source, f"{ml100k_mm.NAME}.{kind}2index"), encoding="utf-8") as f:
            found = [line.split("\t")[0] for line in f if line.strip()]
        if found != ids:
            raise ValueError(
                f"{source}/{ml100k_mm.NAME}.{kind}2index does not hold the {kind} indices MovieLens-100K gives "
                f"({len(found)} vs {len(ids)} ids, or another order); rebuild ml-100k_mm"
            )
    queries = ml100k_mm.dummy_queries(items, item_ids)
    work = tempfile.mkdtemp(prefix=f".{NAME}.", dir=data_path)
    try:
        with atomic_write(os.path.join(work, f"{NAME}.inter")) as f:
            f.write(INTER_HEADER)
            for user, sequence in enumerate(sequences):
                f.writelines(f"{user}\t{item}\t{t}\t{queries[item]}\n" for t, item in enumerate(sequence))
        link_files(source, work, keep=lambda entry: entry.split(".", 1)[-1] in SHARED)
        for entry in os.listdir(work):
            if entry.startswith(f"{ml100k_mm.NAME}."):
                os.rename(os.path.join(work, entry), os.path.join(work, NAME + entry[len(ml100k_mm.NAME) :]))
        publish_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def ensure_built(data_path: str) -> str:
    """The ``ml-100k_mm_long`` folder under ``data_path``, built first if missing."""
    target = os.path.join(data_path, NAME)
    return target if os.path.isdir(target) else build(data_path)
