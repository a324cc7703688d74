# -*- coding: utf-8 -*-
r"""
ETA
################################################

Reference:
    Qiwei Chen et al. "Efficient Long Sequential User Data Modeling for Click-Through Rate Prediction."
    arXiv 2209.12212 (2022); as implemented among the baselines of SEMINAR (Shen et al., arXiv 2407.10714).

Reference code:
    https://github.com/paper-submission-coder/SEMINAR (``long_seq_models/base_model.py``, class ``ETA``)

SimHash search: a frozen random projection ``Linear(D, hash_bits)`` (PyTorch's default init) signs the fused
candidate and every history pair; the ``K`` positions with the most equal bits go to the shared single-set
ESU. No gradient flows through the hash.

Departures (see :mod:`recbole_mm.model.long_sequence` for the family's):

* B10 (``reference_compat`` restores it): the projection has no bias, so the hyperplanes pass through the origin
  (pure SimHash, as in the paper); the reference's has a non-zero bias.
* Ties in the bit-match count go to the more recent position (the reference's ``topk`` leaves their order
  unspecified).
* ``hash_bits`` is configurable (the reference fixes 16).
"""

import torch
from torch import nn

from recbole_mm.errors import ConfigError
from recbole_mm.model.long_sequence import LongSequenceRecommender, Retrieval


class ETA(LongSequenceRecommender):
    r"""ETA: locality-sensitive hashing (SimHash) top-K over (item, query) pairs."""

    def __init__(self, config, dataset):
        super(ETA, self).__init__(config, dataset)
        self.hash_bits = config["hash_bits"]
        if not isinstance(self.hash_bits, int) or self.hash_bits < 1:
            raise ConfigError(f"ETA: config key 'hash_bits' must be a positive int, found {self.hash_bits!r}")
        self.hash_projection = nn.Linear(self.hidden_size, self.hash_bits, bias=self.reference_compat)
        self.hash_projection.requires_grad_(False)

    def signatures(self, x):
        r"""``[*S, hash_bits]`` float 0/1 signs of the projections of ``x [*S, D]`` (1 where positive)."""
        with torch.no_grad():
            return (self.hash_projection(x) > 0).to(x.dtype)

    def bit_matches(self, history, target):
        r"""``[B, C, L]`` number of equal signature bits between each candidate and each history pair."""
        t, s = self.signatures(target), self.signatures(history.pairs)
        return torch.einsum("bcn,bln->bcl", t, s) + torch.einsum("bcn,bln->bcl", 1 - t, 1 - s)

    def gsu(self, history, items, tokens, target):
        matches = self.bit_matches(history, target)
        length = matches.shape[-1]
        recency = torch.arange(length, device=matches.device, dtype=matches.dtype) / length  # < 1: breaks ties only
        return Retrieval(select=self.top_k((matches + recency).unsqueeze(2), history.valid))
