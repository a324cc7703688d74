# -*- coding: utf-8 -*-
r"""
LongSASRec
################################################

Reference:
    Wang-Cheng Kang and Julian McAuley. "Self-Attentive Sequential Recommendation." In ICDM 2018.

RecBole's ``SASRec`` on the long-sequence family's data (:class:`~recbole_mm.data.long_sequence.LongSequenceDataset`:
whole histories gathered per batch, ``train_rows_per_user``), so that it runs beside SIM, ETA, QIN, TWIN and SEMINAR
at the same history length ``L`` and width. ``objective`` picks the training loss:

* ``full_softmax``: RecBole's SASRec cross-entropy over all items (``loss_type: CE``, no sampled negatives);
* ``sampled_softmax`` / ``bce``: the long-sequence family's objectives over the positive and the
  ``train_neg_sample_args.sample_num`` sampled negatives (``loss_type: BPR`` for RecBole's sampler), the history
  encoded once per row; this separates the objective from the architecture.

Departures from RecBole's SASRec: evaluation rows sharing a history (RecBole's ``uniN`` layout) are encoded once
per user and scored against all its candidates (the same scores as RecBole's per-row ``predict``); ties are ranked
pessimistically by the family's trainer. The model ignores the queries.
"""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType

from recbole_mm.errors import ConfigError
from recbole_mm.model.long_sequence import OBJECTIVES, CandidateObjective

SASREC_OBJECTIVES = ("full_softmax",) + OBJECTIVES


class LongSASRec(CandidateObjective, SASRec):
    r"""SASRec with the full softmax or the long-sequence family's sampled objectives."""

    input_type = InputType.PAIRWISE  # negatives as RecBole's neg_item_id copies (used by the sampled objectives)

    def __init__(self, config, dataset):
        super(LongSASRec, self).__init__(config, dataset)
        self.QUERY = config["QUERY_FIELD"]
        self.QUERY_SEQ = self.QUERY + config["LIST_SUFFIX"]
        self.USER_ID = config["USER_ID_FIELD"]
        sampled = config["objective"] != "full_softmax"
        self.init_objective(config, SASREC_OBJECTIVES, negatives_required=sampled)
        expected = "BPR" if sampled else "CE"
        if self.loss_type != expected:
            raise ConfigError(
                f"LongSASRec: objective '{self.objective}' needs loss_type '{expected}' (RecBole's "
                f"{'sampler of train_neg_sample_args' if sampled else 'cross-entropy over all items, no negatives'}),"
                f" found loss_type {self.loss_type!r}"
            )

    def calculate_loss(self, interaction):
        if self.objective == "full_softmax":
            return super(LongSASRec, self).calculate_loss(interaction)
        b, items = self.training_candidates(interaction)
        seq_output = self.forward(interaction[self.ITEM_SEQ][:b], interaction[self.ITEM_SEQ_LEN][:b])  # [B, D]
        logits = torch.einsum("bd,bcd->bc", seq_output, self.item_embedding(items))
        return self.candidate_loss(logits)

    def predict(self, interaction):
        r"""Scores ``[N]`` of RecBole's evaluation rows, each history encoded once for all its rows."""
        first, group, _ = self.candidate_groups(interaction)
        seq_output = self.forward(interaction[self.ITEM_SEQ][first], interaction[self.ITEM_SEQ_LEN][first])
        return (seq_output[group] * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)
