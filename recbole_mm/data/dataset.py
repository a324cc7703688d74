"""Datasets that carry per-item multi-modal feature tables next to RecBole's interaction data.

``MultiModalSequentialDataset`` (pre-split ``benchmark_filename`` files with ``item_id_list``, or a
plain ``.inter`` that RecBole augments and splits itself) and ``MultiModalDataset`` (user-item) attach,
after RecBole has remapped every token, one :class:`ItemFeatures` per configured modality in
``dataset.mm_features``. Models copy the tables onto their device once (see
:class:`recbole_mm.model.layers.ItemFeatureBank`); batches carry item ids only.
"""

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import Dataset, SequentialDataset

from recbole_mm.data.features import feature_specs, field_table, file_table, presence
from recbole_mm.errors import ConfigError, FeatureFileError


@dataclass
class ItemFeatures:
    """One modality's table, aligned to internal item ids.

    Attributes:
        table: ``[n_items, dim]`` float32; row 0 (``[PAD]``) is zero.
        present: ``[n_items]`` bool; False where the row is all zero (PAD, or the modality is missing).
        source: the file or field the table was read from.
    """

    table: torch.Tensor
    present: torch.Tensor
    source: str

    @property
    def dim(self) -> int:
        return self.table.shape[1]


class MultiModalFeaturesMixin:
    """Builds ``self.mm_features`` from the config's ``mm_features`` / ``modalities``."""

    def _attach_mm_features(self):
        self.mm_features = {}
        item_tokens = np.asarray(self.field2id_token[self.iid_field][1:], dtype=object)
        for spec in feature_specs(self.config):
            if spec.field is None:
                table = file_table(spec, self.dataset_path, self.dataset_name, item_tokens)
                source = os.path.join(self.dataset_path, f"{self.dataset_name}.{spec.suffix}")
            else:
                table = self._float_seq_table(spec)
                source = f"{self.dataset_name}.item:{spec.field}"
            present = presence(table)
            self.mm_features[spec.name] = ItemFeatures(torch.from_numpy(table), torch.from_numpy(present), source)
            self.logger.info(
                f"modality [{spec.name}]: {table.shape[0] - 1} items x {table.shape[1]} from {source}, "
                f"{int(present[1:].sum())} present, {int((~present[1:]).sum())} missing (zero rows)"
            )

    def _float_seq_table(self, spec):
        """Rows of a ``float_seq`` field of the ``.item`` file (RecBole keeps it as a DataFrame until ``build``)."""
        where = os.path.join(self.dataset_path, f"{self.dataset_name}.item")
        if self.item_feat is None or spec.field not in self.item_feat.columns:
            loaded = [] if self.item_feat is None else list(self.item_feat.columns)
            raise FeatureFileError(
                f"{where}: mm_features.{spec.name} reads field '{spec.field}', which is not loaded "
                f"(loaded item fields: {loaded}); add it to load_col: item"
            )
        column = list(self.item_feat[spec.field])
        widths = sorted({len(v) for v in column} - {0})  # RecBole gives items without a row an empty value
        if widths != [spec.dim]:
            raise FeatureFileError(
                f"{where}: field '{spec.field}' (mm_features.{spec.name}) must hold {spec.dim} floats per item, "
                f"found rows of length {widths}"
            )
        filled = [k for k, v in enumerate(column) if len(v)]
        values = np.asarray([column[k] for k in filled], dtype=np.float32)
        ids = np.asarray(self.item_feat[self.iid_field], dtype=np.int64)[filled]
        table = field_table(spec, ids, values, self.item_num, where)
        # The table now lives with the model; drop the column so batches do not join it per row.
        self._del_col(self.item_feat, spec.field)
        return table


class MultiModalDataset(MultiModalFeaturesMixin, Dataset):
    """RecBole ``Dataset`` (user-item) with ``mm_features``.

    Pre-split sequential files (``benchmark_filename`` parts with an ``item_id_list`` field, as ml-100k_mm is
    stored) are read as their general view: each row's target item is an interaction of its part, the history
    items that are never a training target (the first item of each user's first training history) are added to
    the training part, and the history field is dropped. Sequential datasets read the files unchanged.
    """

    def __init__(self, config):
        super().__init__(config)
        self._attach_mm_features()

    def _load_inter_feat(self, token, dataset_path):
        super()._load_inter_feat(token, dataset_path)
        list_field = self.iid_field + self.config["LIST_SUFFIX"]
        if self.benchmark_filename_list is None or list_field not in self.inter_feat:
            return
        n_train = self.file_size_list[0]
        train = self.inter_feat.iloc[:n_train]
        history = train[[self.uid_field, list_field]].explode(list_field).dropna()
        history = history.rename(columns={list_field: self.iid_field}).drop_duplicates()
        seen = train[[self.uid_field, self.iid_field]].drop_duplicates()
        extra = history.merge(seen, how="left", indicator=True)
        extra = extra.loc[extra["_merge"] == "left_only", [self.uid_field, self.iid_field]]
        self.inter_feat = pd.concat([train, extra, self.inter_feat.iloc[n_train:]], ignore_index=True)
        self.file_size_list = [n_train + len(extra)] + list(self.file_size_list[1:])
        self._del_col(self.inter_feat, list_field)
        self.logger.info(
            f"{token}: general view of the pre-split sequential files: {len(extra)} first-history items added to "
            f"the training part, field {list_field} dropped"
        )

    def _init_alias(self):
        super()._init_alias()
        for name, fields in self.alias.items():  # a dropped history field leaves the item id's alias list
            self.alias[name] = fields[np.isin(fields, list(self.field2type))]


class MultiModalSequentialDataset(MultiModalFeaturesMixin, SequentialDataset):
    """RecBole ``SequentialDataset`` with ``mm_features``.

    Pre-split histories longer than ``MAX_ITEM_LIST_LENGTH`` keep their most recent items (RecBole leaves
    them as long as the file has them, which models sized by ``MAX_ITEM_LIST_LENGTH`` cannot embed).
    """

    def __init__(self, config):
        super().__init__(config)
        self._attach_mm_features()

    def build(self):
        """RecBole's split; with ``train_rows: windows`` the training part keeps non-overlapping windows only."""
        rows = self.config["train_rows"] or "prefixes"
        if rows not in ("prefixes", "windows"):
            raise ConfigError(f"train_rows: expected 'prefixes' or 'windows', found {rows!r}")
        datasets = super().build()
        if rows == "windows":
            datasets[0] = datasets[0].window_rows()
        return datasets

    def window_rows(self):
        """A copy holding each user's last row and every ``MAX_ITEM_LIST_LENGTH``-th row before it.

        A pre-split training file holds every prefix of a history as a row (chronological per user). A loss
        over every position of ``history + [target]`` trains a transition once per row that holds it; rows
        ``MAX_ITEM_LIST_LENGTH`` apart hold disjoint transitions, so one epoch trains each transition of the
        kept windows once (with histories cut to ``MAX_ITEM_LIST_LENGTH`` items and at most that many prefixes
        per user: one row per user).
        """
        users = pd.Series(self.inter_feat[self.uid_field].numpy())
        from_last = users.groupby(users, sort=False).cumcount(ascending=False).to_numpy()
        keep = np.flatnonzero(from_last % self.max_item_list_len == 0)
        self.logger.info(
            f"train_rows windows: {len(keep)} of {len(users)} training rows kept (each user's last row and every "
            f"{self.max_item_list_len}th before it)"
        )
        return self.copy(self.inter_feat[torch.from_numpy(keep)])

    def _benchmark_presets(self):
        super()._benchmark_presets()
        field, limit = self.item_id_list_field, self.max_item_list_len
        if self.field2seqlen[field] > limit:
            self.inter_feat[field] = [seq[-limit:] for seq in self.inter_feat[field]]
            self.inter_feat[self.item_list_length_field] = self.inter_feat[field].agg(len)
            self.field2seqlen[field] = limit
