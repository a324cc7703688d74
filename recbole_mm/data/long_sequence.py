"""Paired (item, query) histories for the long-sequence models (SIM, ETA, QIN, TWIN, SEMINAR).

Every interaction carries a query: up to ``query_max_tokens`` (default 5) keyword tokens, empty allowed. Batches
hold, per row (RecBole's names and layout; ``L = MAX_ITEM_LIST_LENGTH``, ``Q = query_max_tokens``):

- ``item_id_list`` ``[B, L]`` long, the history left-aligned, zeros after ``item_length`` ``[B]``;
- ``query_list`` ``[B, L, Q]`` long, the query of each history interaction (0 = padding / empty);
- ``item_id`` ``[B]`` the target and ``query`` ``[B, Q]`` the target interaction's query.

``dataset.dummy_query`` (LongTensor ``[n_items, Q]``, row 0 zero) is the per-item query used for candidates and
negatives; ``dataset.num(config["QUERY_FIELD"])`` is the keyword vocabulary (0 = padding), shared by ``query`` and
the dummy queries. Multi-modal tables come through ``dataset.mm_features`` as for every recbole_mm dataset.

Where the queries come from (config ``query_from``; unset = the first that applies):

- ``inter``: a plain ``<dataset>.inter`` with a ``query:token_seq`` column (Amazon 2018, KuaiSAR). RecBole's
  sequential augmentation would allocate every ``<field>_list`` densely, ``[rows, L]`` and ``[rows, L, Q]``
  (at ``L = 1,000`` that does not fit for KuaiSAR-sized data). Here rows keep their scalar fields, the length
  and the position of their target in one time-sorted table of all interactions (``[n_inter]`` per field,
  ``[n_inter, Q]`` for the query); ``item_id_list``, ``query_list``, the target ``query`` and the other
  ``<field>_list`` are gathered per batch in ``dataset[index]``. Memory grows with ``n_inter``, not ``rows x L``.
- ``item``: the query of an interaction is its item's dummy query (``ml-100k_mm``, whose pre-split files carry
  ``item_id_list``): ``query_list = dummy_query[item_id_list]`` and ``query = dummy_query[item_id]``, per batch.

Dummy queries are read from ``<dataset>.item`` (``item_id:token  dummy_query:token_seq``), which this dataset
loads itself (the column is added to ``load_col``); without that column every dummy query is empty.

Bad input: a query longer than ``Q`` tokens keeps its first ``Q`` (the count is logged and kept in
``query_truncated``); keyword ids that occur in no training interaction's query and in no dummy query are set to 0
(empty) in the validation and test rows (count in ``query_unseen_tokens``), so no untrained embedding row is read;
a dataset with neither a ``query`` nor a ``dummy_query`` column is a :class:`DataFieldError` that says how to add one.

The training loader on the device (``train_data_on_device``) copies ``inter_feat`` and skips ``dataset[index]``;
it is not supported for these datasets.
"""

import os
from typing import List

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils.enum_type import FeatureSource, FeatureType

from recbole_mm.data.dataset import MultiModalSequentialDataset
from recbole_mm.errors import DataFieldError

DUMMY_QUERY_FIELD = "dummy_query"
HISTORY_END_FIELD = "history_end"  # row -> position of its target in the time-sorted table of interactions
QUERY_SOURCES = ("inter", "item")


def _header(path: str, separator: str) -> List[str]:
    """Field names (without types) of an atomic file's header, ``[]`` if the file does not exist."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [col.split(":")[0] for col in f.readline().rstrip("\n").split(separator)]


def fixed_width(column, width: int):
    """Token sequences (a list of int arrays, one per row) to a zero-padded ``[rows, width]`` int64 array.

    Returns:
        ``(table, truncated)``: sequences longer than ``width`` keep their first ``width`` tokens; ``truncated``
        counts them.
    """
    n = len(column)
    lengths = np.fromiter((len(v) for v in column), dtype=np.int64, count=n)
    table = np.zeros((n, width), dtype=np.int64)
    if n == 0 or lengths.sum() == 0:
        return table, 0
    flat = np.concatenate([np.asarray(v, dtype=np.int64) for v in column])
    keep = np.minimum(lengths, width)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(n), keep)
    cols = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
    table[rows, cols] = flat[np.repeat(starts, keep) + cols]
    return table, int((lengths > width).sum())


def history_positions(end: torch.Tensor, length: torch.Tensor, max_len: int):
    """Positions in the flat table of each row's history, RecBole's layout.

    Args:
        end: ``[B]`` position of the target (the history is ``end - length .. end - 1``).
        length: ``[B]`` history lengths (``<= max_len``).

    Returns:
        ``(positions, valid)``, both ``[B, max_len]``: positions (0 where not valid) and the mask of real entries.
    """
    offsets = torch.arange(max_len, dtype=torch.long)
    valid = offsets.unsqueeze(0) < length.unsqueeze(1)
    positions = (end - length).unsqueeze(1) + offsets.unsqueeze(0)
    return torch.where(valid, positions, torch.zeros_like(positions)), valid


class LongSequenceDataset(MultiModalSequentialDataset):
    """``MultiModalSequentialDataset`` whose rows carry paired (item, query) histories (see the module docstring).

    Attributes:
        dummy_query: LongTensor ``[n_items, Q]``, row 0 zero.
        query_from: ``'inter'`` or ``'item'``.
        query_truncated: number of queries (interactions and dummy queries) cut to ``Q`` tokens.
        query_unseen_tokens: number of keyword ids set to 0 because no training interaction or dummy query has them.
        queries_from_items: True when every interaction's query is its item's dummy query (``query_from: item``, or
            a ``.inter`` whose queries all equal them): the queries describe items, not requests.
    """

    def __init__(self, config):
        self.query_field = config["QUERY_FIELD"] or "query"
        self.query_width = int(config["query_max_tokens"] or 5)
        if self.query_width < 1:
            raise DataFieldError(f"config key 'query_max_tokens' must be a positive int, found {self.query_width}")
        self.query_truncated = 0
        self.query_unseen_tokens = 0
        self._flat = None  # the time-sorted interactions (query_from: inter), filled by data_augmentation
        self._inter_query = None  # [n_inter, Q] queries aligned to inter_feat's rows until build()
        self.query_from = self._query_source(config)
        self.train_rows_per_user = config["train_rows_per_user"]
        if self.train_rows_per_user is not None and (
            not isinstance(self.train_rows_per_user, int) or self.train_rows_per_user < 1
        ):
            raise DataFieldError(
                f"config key 'train_rows_per_user' must be a positive int or None, found {self.train_rows_per_user!r}"
            )
        super().__init__(config)
        self._attach_queries()

    # ------------------------------------------------------------------ where the queries come from
    def _query_source(self, config) -> str:
        directory, name, sep = config["data_path"], config["dataset"], config["field_separator"]
        if config["benchmark_filename"]:
            inter_paths = [os.path.join(directory, f"{name}.{part}.inter") for part in config["benchmark_filename"]]
        else:
            inter_paths = [os.path.join(directory, f"{name}.inter")]
        item_path = os.path.join(directory, f"{name}.item")
        in_inter = all(self.query_field in _header(p, sep) for p in inter_paths)
        self._dummy_in_item_file = DUMMY_QUERY_FIELD in _header(item_path, sep)
        wanted = config["query_from"]
        if wanted is not None and wanted not in QUERY_SOURCES:
            raise DataFieldError(
                f"config key 'query_from' must be one of {list(QUERY_SOURCES)} or unset, found {wanted!r}"
            )
        item_state = (
            f"{item_path} has no '{DUMMY_QUERY_FIELD}:token_seq' column"
            if os.path.isfile(item_path)
            else f"{item_path} does not exist"
        )
        source = wanted or ("inter" if in_inter else "item" if self._dummy_in_item_file else None)
        how = (
            f"add a '{self.query_field}:token_seq' column to the interactions (up to {self.query_width} keyword tokens "
            f"per interaction, space-separated, empty allowed; see 'Long-sequence data' in dataset/README.md), or a "
            f"'{DUMMY_QUERY_FIELD}:token_seq' column to {item_path} (then each interaction's query is its item's)"
        )
        if source is None:
            raise DataFieldError(
                f"model {config['model']} needs the query field '{self.query_field}' (QUERY_FIELD): "
                f"{', '.join(inter_paths)} have no '{self.query_field}' column and {item_state}; {how}"
            )
        if source == "inter":
            if not in_inter:
                raise DataFieldError(
                    f"query_from: inter, but {', '.join(inter_paths)} have no '{self.query_field}' column; {how}"
                )
            if config["benchmark_filename"]:
                raise DataFieldError(
                    f"query_from: inter needs a plain {name}.inter (queries of a history cannot be written in "
                    f"pre-split files); use query_from: item with a '{DUMMY_QUERY_FIELD}' column in {item_path}, "
                    f"or the plain file"
                )
        elif not self._dummy_in_item_file:
            raise DataFieldError(f"query_from: item, but {item_state}; {how}")
        return source

    def _get_load_and_unload_col(self, source):
        """Load the query columns this dataset needs even where ``load_col`` does not list them."""
        load_col, unload_col = super()._get_load_and_unload_col(source)
        value = source.value if isinstance(source, FeatureSource) else source
        if load_col is not None:
            if value == FeatureSource.ITEM.value and self._dummy_in_item_file:
                load_col = load_col | {self.iid_field, DUMMY_QUERY_FIELD}
            if value == FeatureSource.INTERACTION.value and self.query_from == "inter":
                load_col = load_col | {self.query_field}
        return load_col, unload_col

    def _init_alias(self):
        """``query`` and ``dummy_query`` share one keyword vocabulary (one remapping)."""
        super()._init_alias()
        group = [f for f in (self.query_field, DUMMY_QUERY_FIELD) if f in self.field2type]
        for field in group:
            if self.field2type[field] != FeatureType.TOKEN_SEQ:
                raise DataFieldError(
                    f"{self.dataset_name}: field '{field}' must be token_seq (keyword tokens separated by spaces), "
                    f"found {self.field2type[field].value}"
                )
        if len(group) == 2:
            self.alias["query"] = np.array(group)
            self._rest_fields = np.setdiff1d(self._rest_fields, group, assume_unique=True)

    # ------------------------------------------------------------------ tables
    def _attach_queries(self):
        q, width = self.query_field, self.query_width
        if self.query_from == "item" and q not in self.field2type:
            # the interaction's query is its item's: register the field with the dummy queries' vocabulary
            self.set_field_property(q, FeatureType.TOKEN_SEQ, FeatureSource.INTERACTION, width)
            self.field2id_token[q] = self.field2id_token[DUMMY_QUERY_FIELD]
            self.field2token_id[q] = self.field2token_id[DUMMY_QUERY_FIELD]
        self.dummy_query = torch.zeros((self.item_num, width), dtype=torch.long)
        if self.item_feat is not None and DUMMY_QUERY_FIELD in self.item_feat:
            column = list(self.item_feat[DUMMY_QUERY_FIELD])
            ids = np.asarray(self.item_feat[self.iid_field], dtype=np.int64)
            table, cut = fixed_width(column, width)
            self.dummy_query[torch.from_numpy(ids)] = torch.from_numpy(table)
            self.dummy_query[0] = 0
            self.query_truncated += cut
            self._del_col(self.item_feat, DUMMY_QUERY_FIELD)  # the table lives with the model, not in batches
        self.queries_from_items = self.query_from == "item"
        if self.query_from == "inter":
            self._inter_query, cut = fixed_width(list(self.inter_feat[q]), width)
            self.query_truncated += cut
            items = torch.as_tensor(np.asarray(self.inter_feat[self.iid_field], dtype=np.int64))
            own = self.dummy_query[items].numpy()
            self.queries_from_items = bool(own.any()) and bool((own == self._inter_query).all())
            self.inter_feat = self.inter_feat.drop(columns=[q])
        self.field2seqlen[q] = width
        if self.query_truncated:
            self.logger.warning(
                f"{self.dataset_name}: {self.query_truncated} queries (field '{q}' / '{DUMMY_QUERY_FIELD}') had more "
                f"than query_max_tokens = {width} keyword tokens and were cut to their first {width}"
            )
        self.logger.info(
            f"queries of {self.dataset_name}: from {'the interactions' if self.query_from == 'inter' else 'the items'} "
            f"(query_from: {self.query_from}), {self.num(q) - 1} keywords, up to {width} per query"
        )

    # ------------------------------------------------------------------ RecBole hooks
    def _change_feat_format(self):
        Dataset._change_feat_format(self)
        if self._inter_query is not None:
            self.inter_feat[self.query_field] = torch.from_numpy(self._inter_query)
            self._inter_query = None
        if self.config["benchmark_filename"] is None:
            self.data_augmentation()
        else:
            self.set_field_property(
                self.query_field + self.config["LIST_SUFFIX"],
                FeatureType.TOKEN_SEQ,
                FeatureSource.INTERACTION,
                (self.max_item_list_len, self.query_width),
            )

    def data_augmentation(self):
        """RecBole's augmentation (one row per interaction after a user's first, history of the at most ``L``
        interactions before it), with the ``<field>_list`` left to :meth:`__getitem__`."""
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        flat = self.inter_feat
        uid = flat[self.uid_field].numpy()
        n = len(uid)
        first = np.ones(n, dtype=bool)
        first[1:] = uid[1:] != uid[:-1]
        user_start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
        targets = np.flatnonzero(~first)
        lengths = np.minimum(targets - user_start[targets], self.max_item_list_len)
        index = torch.from_numpy(targets)
        rows = {k: v[index] for k, v in flat.interaction.items() if v.dim() == 1}
        rows[self.item_list_length_field] = torch.from_numpy(lengths.astype(np.int64))
        rows[HISTORY_END_FIELD] = index.clone()
        self._flat = flat
        self._list_fields = [(f, getattr(self, f"{f}_list_field")) for f in flat.interaction if f != self.uid_field]
        self.inter_feat = Interaction(rows)

    @property
    def interactions(self):
        """The time-sorted table of all interactions the histories are gathered from (an ``Interaction``); None
        before ``data_augmentation`` and for pre-split files, whose rows hold their histories."""
        return self._flat

    def build(self):
        datasets = super().build()
        if self.train_rows_per_user is not None and datasets:
            self._keep_last_train_rows(datasets[0], self.train_rows_per_user)
        if self.query_from == "inter" and datasets:
            self.query_unseen_tokens = self._zero_unseen_tokens(datasets[0])
            for part in datasets:
                part.query_unseen_tokens = self.query_unseen_tokens
        return datasets

    def _keep_last_train_rows(self, train, keep: int) -> None:
        """Keep each user's last ``keep`` training rows (``train_rows_per_user``); histories are not cut (they are
        gathered from the table of all interactions), and validation and test keep every row."""
        if self._flat is None:
            raise DataFieldError(
                f"config key 'train_rows_per_user' cuts the rows of a plain {self.dataset_name}.inter; pre-split "
                f"files (benchmark_filename) are cut when written"
            )
        uid = train.inter_feat[self.uid_field].numpy()
        end = train.inter_feat[HISTORY_END_FIELD].numpy()
        order = np.lexsort((end, uid))
        sorted_uid = uid[order]
        last = np.ones(len(uid), dtype=bool)
        last[:-1] = sorted_uid[1:] != sorted_uid[:-1]
        ends = np.flatnonzero(last)
        counts = np.diff(np.concatenate([[-1], ends]))
        rank_from_end = np.repeat(ends, counts) - np.arange(len(uid))
        kept = np.sort(order[rank_from_end < keep])
        before = len(train.inter_feat)
        train.inter_feat = train.inter_feat[torch.from_numpy(kept)]
        self.logger.info(
            f"{self.dataset_name}: train_rows_per_user = {keep}: {len(kept)} of {before} training rows kept (each "
            f"user's last), histories whole"
        )

    def _zero_unseen_tokens(self, train) -> int:
        """Set to 0 the keyword ids that no training interaction and no dummy query has (they would read an
        untrained embedding row at evaluation)."""
        n = len(self._flat)
        end = train.inter_feat[HISTORY_END_FIELD].numpy()
        length = train.inter_feat[self.item_list_length_field].numpy()
        cover = np.zeros(n + 1, dtype=np.int64)
        np.add.at(cover, end - length, 1)
        np.add.at(cover, end, -1)
        used = np.cumsum(cover[:n]) > 0
        used[end] = True
        queries = self._flat[self.query_field]
        vocab = self.num(self.query_field)
        seen = np.zeros(vocab, dtype=bool)
        seen[queries[torch.from_numpy(used)].numpy().ravel()] = True
        seen[self.dummy_query.numpy().ravel()] = True
        occurs = np.zeros(vocab, dtype=bool)
        occurs[queries.numpy().ravel()] = True
        occurs[0] = False
        unseen = np.flatnonzero(occurs & ~seen)
        if len(unseen) == 0:
            return 0
        lut = torch.arange(vocab, dtype=torch.long)
        lut[torch.from_numpy(unseen)] = 0
        hit = int((~torch.from_numpy(seen)[queries]).any(dim=1).sum())
        queries.copy_(lut[queries])  # in place: every split shares this table
        self.logger.warning(
            f"{self.dataset_name}: {len(unseen)} keyword ids of field '{self.query_field}' occur in no training "
            f"interaction and no dummy query; they are set to 0 (empty) in the {hit} validation/test interactions "
            f"that have them"
        )
        return len(unseen)

    def __getitem__(self, index, join=True):
        df = self.inter_feat[index]
        self.attach_histories(df)
        return self.join(df) if join else df

    def attach_histories(self, df: Interaction) -> Interaction:
        """Add ``item_id_list``/``query_list``/``query`` (and the other ``<field>_list``) to rows ``df`` in place."""
        q, q_list = self.query_field, self.query_field + self.config["LIST_SUFFIX"]
        if self.query_from == "item":
            if self._flat is None:  # pre-split: the history ids are in the row
                df[q_list] = self.dummy_query[df[self.item_id_list_field]]
                df[q] = self.dummy_query[df[self.iid_field]]
                return df
        end, length = df[HISTORY_END_FIELD], df[self.item_list_length_field]
        positions, valid = history_positions(end, length, self.max_item_list_len)
        for field, list_field in self._list_fields:
            values = self._flat[field][positions]
            mask = valid.view(valid.shape + (1,) * (values.dim() - 2))
            df[list_field] = values * mask.to(values.dtype)
        if self.query_from == "inter":
            df[q] = self._flat[q][df[HISTORY_END_FIELD]]
        else:
            df[q_list] = self.dummy_query[df[self.item_id_list_field]]
            df[q] = self.dummy_query[df[self.iid_field]]
        return df

