# -*- coding: utf-8 -*-
r"""
QIN
################################################

Reference:
    Guo et al. "Query-dominant User Interest Network for Large-Scale Search Ranking." In CIKM 2023
    (arXiv 2310.06444); as implemented among the baselines of SEMINAR (Shen et al., arXiv 2407.10714).

Reference code:
    https://github.com/paper-submission-coder/SEMINAR (``long_seq_models/base_model.py``, class ``QIN``)

Two-stage relevance search on item-ID embeddings (the multi-modal gate and the queries are not in the keys):
the candidate's query embedding scores every history ID embedding with QIN's own ``W_q``/``W_k`` and keeps
the top ``qin_stage1_topk`` (K1); the candidate's ID embedding re-scores those with the same projections and
keeps the top ``retrieve_topk`` (K2). The shared single-set ESU then reads the history's ID embeddings with
the candidate's ID embedding as the query, and the head sees ``[ESU, candidate ID embedding]``. The paper's
fused attention unit is plain multi-head target attention here, as in the reference.

Departures (see :mod:`recbole_mm.model.long_sequence` for the family's):

* B8 (``reference_compat`` restores it): stage 2 ranks only real items of the stage-1 set; the reference's
  stage-2 mask is all ones, so padding gathered in stage 1 (zero vectors) competes.
* B9: the stage-2 mask lives on the input's device (the reference builds it on the CPU).
"""

import torch
from torch import nn

from recbole_mm.errors import ConfigError
from recbole_mm.model.long_sequence import LongSequenceRecommender, Retrieval


class QIN(LongSequenceRecommender):
    r"""QIN: query -> top-K1, then target ID -> top-K2, on ID embeddings."""

    def __init__(self, config, dataset):
        super(QIN, self).__init__(config, dataset)
        self.stage1_topk = config["qin_stage1_topk"]
        if not isinstance(self.stage1_topk, int) or self.stage1_topk < self.retrieve_topk:
            raise ConfigError(
                f"QIN: config key 'qin_stage1_topk' (K1) must be an int >= retrieve_topk (K2 = {self.retrieve_topk}), "
                f"found {self.stage1_topk!r}"
            )
        self.search_q = nn.Linear(self.hidden_size, self.hidden_size)
        self.search_k = nn.Linear(self.hidden_size, self.hidden_size)

    def target_embed(self, history, items, tokens):
        return self.item_embedding(items)

    def history_values(self, history):
        return self.item_embedding(history.items)  # PAD's row is zero

    def relevance(self, history, probe):
        r"""``[B, C, L]`` scores ``(W_k e_l) . (W_q probe)`` of the history ID embeddings ``e_l``."""
        return torch.einsum("bcd,bld->bcl", self.search_q(probe), self.search_k(self.history_values(history)))

    def gsu(self, history, items, tokens, target):
        query_scores = self.relevance(history, self.query_embed(tokens)).unsqueeze(2)
        stage1 = self.top_k(query_scores, history.valid, self.stage1_topk)
        scores = self.relevance(history, target).unsqueeze(2).masked_fill(~stage1, float("-inf"))
        # positions outside the stage-1 set are -inf; padding inside it competes only under reference_compat (B8)
        return Retrieval(select=self.top_k(scores, history.valid))
