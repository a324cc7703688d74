# -*- coding: utf-8 -*-
r"""
SIM
################################################

Reference:
    Qi Pi et al. "Search-based User Interest Modeling with Lifelong Sequential Behavior Data for Click-Through
    Rate Prediction." In CIKM 2020 (arXiv 2006.05639); as implemented among the baselines of SEMINAR
    (Shen et al., arXiv 2407.10714).

Reference code:
    https://github.com/paper-submission-coder/SEMINAR (``long_seq_models/base_model.py``, class ``SIM``)

Soft search: ``r_l = (W_k s_l) . (W_q t)`` with SIM's own ``Linear(D, D)`` pair (PyTorch's default init, as the
reference creates them after its init), the top-K positions go to the shared single-set ESU; an auxiliary GSU
head on ``[u, t]``, ``u`` the search-weighted sum of the history, is trained with its own loss (the family's
objective; the SIM paper's GSU loss). Prediction uses the ESU logit only. The paper's hard search (category match) and time-interval
embeddings are not part of the reference and not implemented.

Departures (see :mod:`recbole_mm.model.long_sequence` for the family's):

* B8 (``reference_compat`` restores it): ``u = sum_l softmax(r)_l s_l`` over the real positions; the reference
  sums the raw scores times every position, padding included (no softmax).
"""

import torch
from torch import nn

from recbole_mm.model.long_sequence import LongSequenceRecommender, Retrieval, mlp_head


class SIM(LongSequenceRecommender):
    r"""SIM soft search over (item, query) pairs, plus the auxiliary GSU loss."""

    def __init__(self, config, dataset):
        super(SIM, self).__init__(config, dataset)
        self.search_q = nn.Linear(self.hidden_size, self.hidden_size)
        self.search_k = nn.Linear(self.hidden_size, self.hidden_size)
        self.gsu_head = mlp_head(2 * self.hidden_size, self.mlp_hidden_size)

    def search_scores(self, history, target):
        r"""``[B, C, L]`` soft-search scores ``(W_k s_l) . (W_q t)``."""
        return torch.einsum("bcd,bld->bcl", self.search_q(target), self.search_k(history.pairs))

    def gsu(self, history, items, tokens, target):
        scores = self.search_scores(history, target)
        if self.reference_compat:
            merged = torch.einsum("bcl,bld->bcd", scores, history.pairs)
        else:
            weights = torch.softmax(scores.masked_fill(~history.valid[:, None, :], float("-inf")), dim=-1)
            merged = torch.einsum("bcl,bld->bcd", weights, history.pairs * history.valid.unsqueeze(-1))
        aux = self.gsu_head(torch.cat([merged, target], dim=-1)).squeeze(-1)
        return Retrieval(select=self.top_k(scores.unsqueeze(2), history.valid), aux=aux)
