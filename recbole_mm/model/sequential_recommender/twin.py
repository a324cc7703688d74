# -*- coding: utf-8 -*-
r"""
TWIN
################################################

Reference:
    Jianxin Chang et al. "TWIN: TWo-stage Interest Network for Lifelong User Behavior Modeling in CTR Prediction
    at Kuaishou." In KDD 2023 (arXiv 2302.02352); as implemented among the baselines of SEMINAR (Shen et al.,
    arXiv 2407.10714).

Reference code:
    https://github.com/paper-submission-coder/SEMINAR (``long_seq_models/base_model.py``, class ``TWIN``)

Consistency-preserving search: head ``h`` of the ESU ranks the history with its own ``W_q^h``/``W_k^h``
(the ESU's logits themselves) and attends over its own top-K, so there are ``num_heads`` sets per candidate.
The paper's split of behaviour features into inherent and cross parts is not in the reference and not here.

Departures: those of the family (:mod:`recbole_mm.model.long_sequence`); the logits are computed once and
shared by the search and the attention (the reference computes them twice, with equal values).
"""

from recbole_mm.model.long_sequence import LongSequenceRecommender, Retrieval


class TWIN(LongSequenceRecommender):
    r"""TWIN: per-head top-K with the ESU heads' own projections."""

    def gsu(self, history, items, tokens, target):
        logits = self.attention_logits(history.pairs, target)  # [B, C, H, L]
        # -inf at padding (B8) in place: the ESU masks padding anyway
        return Retrieval(select=self.top_k(logits, history.valid, in_place=True), logits=logits)
