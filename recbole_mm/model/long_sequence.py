# -*- coding: utf-8 -*-
r"""
LongSequenceRecommender
################################################

The family base of SIM, ETA, QIN, TWIN and SEMINAR: target-aware scoring of a candidate against a user's
long history of (item, query) pairs, in two stages. A *general search unit* (GSU, the part each model
supplies) picks ``K`` of the ``L`` history positions for every candidate; an *exact search unit* (ESU,
multi-head target attention, shared here) reads them; an MLP on ``[ESU output, candidate]`` gives the
logit, trained over the positive and ``N`` sampled negatives per row (BCE as the reference, or sampled softmax).

Reference:
    Shen et al. "SEMINAR: Search Enhanced Multi-modal Interest Network and Approximate Retrieval for Lifelong
    Sequential Recommendation." arXiv 2407.10714 (2024).

Reference code:
    https://github.com/paper-submission-coder/SEMINAR (``long_seq_models/base_model.py``)

What the base holds (as in the reference):

* item embedding = softmax-gated sum of the ID embedding and each modality's table through its own
  ``Linear(feature_dim, D)``; the gate is **global** (one learned vector through ``Linear(D, 1 + M)``);
* query embedding = sum of its keyword embeddings / ``query_max_tokens`` (the mean over the reference's five
  keyword slots, empty slots included; an empty query is the zero vector);
* pair = ``alpha * query + (1 - alpha) * item`` for every history position and every candidate;
* ESU: ``num_heads`` full-width heads (``Linear(D, D)`` each for Q, K, V), logits scaled by ``1/sqrt(D)``,
  output ``Linear(H*D, D)``; a GSU returns one set for all heads, or one set per head (TWIN, SEMINAR);
* head ``Linear(2D, mlp_hidden_size) -> ReLU -> Linear(., 1)`` (PyTorch's default init: the reference creates it
  after its N(0, 0.02) init), the reference training it with BCE over ``[positive logits; negative logits]``;
* queries (``query_mode``, the same in training and evaluation): a candidate's query is the request context,
  shared by the positive and every negative of a row. ``recommendation``: none (every candidate's query is
  empty); ``search``: the row's query (the query typed with the target interaction; refused where the queries are
  the items' own dummy queries, which would name the answer); ``pair``: each candidate its item's own dummy query,
  positive and negatives alike (needs the dataset's per-item ``dummy_query``). History positions always carry
  their own queries.

Departures (``reference_compat: True`` restores those marked *compat*):

* B6 (*compat*): the reference trains the positive with its own interaction's query (for dummy queries, the
  target's own words) and the negative with a query drawn from the user's history, then evaluates every candidate
  with an empty query (``recommendation``): the model learns that "the query names the item" and meets empty
  queries at test. Under compat the training candidates get that mix again (the negative's query drawn from the
  row's history) and evaluation follows ``query_mode``.
* Objective (``objective``): ``bce`` (the reference's) is pointwise BCE over the positive and the
  ``train_neg_sample_args.sample_num`` sampled negatives (one in the reference); ``sampled_softmax`` is the
  cross-entropy of the positive against those negatives. The history is encoded once per row and every candidate
  scored against it, as in evaluation: RecBole repeats each row once per negative, and only the first copy is read.

* Candidates are scored as a batch: the history is embedded and projected once per user, every candidate's
  retrieval is a top-K over a ``[B, C, G, L]`` score tensor, and the ESU reads its set through a mask over the
  ``L`` positions (the same softmax as over the gathered ``K``). The ESU's query projection is folded into the
  key side and its value projections into the output projection (``W_q^T W_k``, ``W_o^h W_v^h``: the same
  attention, the products associated differently), so a candidate costs two ``[H L]``-wide dot products. The
  reference loops over candidates in Python, re-projecting the history for each. ``batch_candidates: False`` scores one candidate at a time with the same
  code (for the speed comparison). Evaluation rows that share a history (RecBole's ``uniN`` layout) are
  grouped back into one user with ``C`` candidates.
* B1 (*compat*): the modality tables are the dataset's features. The reference's init overwrote its CLIP
  tables with N(0, 0.02) noise and kept them frozen; under compat the tables are that noise (drawn from a
  generator seeded with ``seed``, so a reloaded model has the same tables).
* B2 (*compat*): the ESU's Q/K/V layers are registered (``nn.ModuleList``), initialised N(0, 0.02) and
  trained. The reference kept them in Python lists: PyTorch's default init, never trained, not saved; under
  compat they keep the default init and are frozen (saved, so a checkpoint reproduces them).
* B8 (*compat*): padded history positions are excluded from every GSU top-K and masked in the ESU softmax.
  The reference ranks them with the real items, gathers them as zero vectors and lets them take attention
  weight (their keys equal the projection biases).
* B9: every tensor is created on the input's device.
* ``K`` larger than the padded history width is clamped to it; with fewer real items than ``K`` the set holds
  them all (padding masked). A candidate whose history has no real item reads a zero ESU output.
* Ties in evaluation are ranked pessimistically (``LongSequenceTrainer``): a positive tied with a negative
  does not win. The reference's argsort could rank a tied positive first.
* Full ranking works (``item_chunk_size`` candidates at a time) for comparison with full-ranking models;
  the family's protocol is RecBole's ``uni99`` (the positive and 99 sampled negatives).
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import FeatureType, InputType
from torch import nn

from recbole_mm.data.long_sequence import LongSequenceDataset
from recbole_mm.errors import ConfigError, DataFieldError
from recbole_mm.model.layers import ItemFeatureBank

QUERY_MODES = ("recommendation", "search", "pair")
OBJECTIVES = ("bce", "sampled_softmax")


@dataclass
class History:
    r"""One batch of user histories, embedded once and shared by every candidate.

    Attributes:
        items: ``[B, L]`` item ids (0 = padding).
        valid: ``[B, L]`` bool, True at real items.
        queries: ``[B, L, Q]`` keyword ids of each position's query (0 = padding / empty).
        pairs: ``[B, L, D]`` fused (item, query) embeddings (padding positions not zeroed).
    """

    items: torch.Tensor
    valid: torch.Tensor
    queries: torch.Tensor
    pairs: torch.Tensor


@dataclass
class Retrieval:
    r"""What a GSU returns for ``C`` candidates per user.

    Attributes:
        select: ``[B, C, G, L]`` bool, the retrieved positions; ``G = 1`` (every ESU head reads the same set) or
            ``G = num_heads`` (head ``h`` reads set ``h``).
        logits: optional ``[B, C, H, L]`` ESU logits the GSU already computed with the ESU's own projections
            (TWIN's consistency-preserving search); the ESU reuses them (and, without gradients, overwrites them).
        aux: optional ``[B, C]`` auxiliary logits trained with their own loss, the same objective (SIM's GSU loss).
    """

    select: torch.Tensor
    logits: Optional[torch.Tensor] = None
    aux: Optional[torch.Tensor] = None


def mlp_head(in_size: int, hidden_size: int) -> nn.Sequential:
    """``Linear(in_size, hidden_size) -> ReLU -> Linear(hidden_size, 1)``, PyTorch's default init."""
    return nn.Sequential(nn.Linear(in_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1))


class CandidateObjective:
    r"""Training over each row's positive and ``N`` sampled negatives, and the grouping of RecBole's evaluation rows
    by history: what the long-sequence family and ``LongSASRec`` share. A subclass calls :meth:`init_objective` in
    ``__init__`` and has RecBole's field names (``ITEM_SEQ``, ``POS_ITEM_ID``, ``NEG_ITEM_ID``) plus ``QUERY``,
    ``QUERY_SEQ`` and ``USER_ID``. Every model on it reads the long-sequence dataset and trains with its trainer."""

    dataset_class = LongSequenceDataset
    trainer_class = "LongSequenceTrainer"

    def init_objective(self, config, objectives, negatives_required: bool = True):
        r"""Read ``objective`` (one of ``objectives``) and ``N = train_neg_sample_args.sample_num``.

        Raises:
            ConfigError: an unknown objective, or no (or a non-positive) ``sample_num`` where negatives are needed.
        """
        name = type(self).__name__
        self.objective = config["objective"]
        if self.objective not in objectives:
            raise ConfigError(
                f"{name}: config key 'objective' must be one of {list(objectives)}, found {self.objective!r}"
            )
        neg = config["train_neg_sample_args"]
        num = neg.get("sample_num") if isinstance(neg, dict) else None
        self.train_negatives = num if isinstance(num, int) else None
        if not negatives_required:
            return
        if not neg or neg.get("distribution") in (None, "none") or not isinstance(num, int) or num < 1:
            raise ConfigError(
                f"{name}: objective '{self.objective}' trains each row's target against sampled negatives; config "
                f"key 'train_neg_sample_args' must be {{distribution: uniform, sample_num: N}} with N >= 1, found "
                f"{neg!r}"
            )

    @staticmethod
    def pair_bce(logits: torch.Tensor) -> torch.Tensor:
        r"""BCE of ``[B, 1 + N]`` logits (column 0 positive, the others negatives), the mean over all ``B (1 + N)``."""
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    @staticmethod
    def sampled_softmax(logits: torch.Tensor) -> torch.Tensor:
        r"""Cross-entropy of the positive (column 0) against the negatives of ``[B, 1 + N]`` logits, the mean over
        ``B``: ``mean(logsumexp(logits) - logits[:, 0])``."""
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()

    def candidate_loss(self, logits: torch.Tensor) -> torch.Tensor:
        r"""The configured ``objective`` of ``[B, 1 + N]`` logits (column 0 the positive)."""
        return self.pair_bce(logits) if self.objective == "bce" else self.sampled_softmax(logits)

    def training_candidates(self, interaction) -> Tuple[int, torch.Tensor]:
        r"""``(B, items [B, 1 + N])``: RecBole's training batch holds ``N`` copies of ``B`` rows, copy ``k`` with the
        ``k``-th negative (``train_neg_sample_args.sample_num = N``); the positive then the ``N`` negatives of each
        of the first ``B`` rows.

        Raises:
            DataFieldError: the batch is not laid out that way (rows not a multiple of ``N``, copies differing).
        """
        n = self.train_negatives
        pos, neg = interaction[self.POS_ITEM_ID], interaction[self.NEG_ITEM_ID]
        rows = pos.shape[0]
        if rows % n or not bool((pos.view(n, -1) == pos[: rows // n]).all()):
            raise DataFieldError(
                f"{type(self).__name__}: a training batch of {rows} rows is not {n} copies of its rows (RecBole's "
                f"layout for train_neg_sample_args.sample_num = {n}); the loader must repeat each row once per negative"
            )
        b = rows // n
        return b, torch.cat([pos[:b].unsqueeze(1), neg.view(n, b).t()], dim=1)

    def candidate_groups(self, interaction):
        r"""Rows sharing a history (consecutive, same user, item history and target query; without a user field, the
        same history queries too) as one user's candidates.

        Returns:
            ``(first [G], group [N], position [N])``: each group's first row, each row's group and its column.
        """
        keys = [interaction[self.ITEM_SEQ], interaction[self.QUERY]]
        if self.USER_ID in interaction:  # a user's rows with one item history share their queries too
            keys.append(interaction[self.USER_ID].unsqueeze(1))
        else:
            keys.append(interaction[self.QUERY_SEQ].flatten(1))
        n, device = keys[0].shape[0], keys[0].device
        differs = torch.zeros(max(n - 1, 0), dtype=torch.bool, device=device)
        for key in keys:
            differs |= (key[1:] != key[:-1]).any(dim=1)
        start = torch.cat([torch.ones(1, dtype=torch.bool, device=device), differs])
        first = torch.nonzero(start).squeeze(1)
        group = torch.cumsum(start.long(), dim=0) - 1
        position = torch.arange(n, device=group.device) - first[group]
        return first, group, position


class LongSequenceRecommender(CandidateObjective, SequentialRecommender):
    r"""Base of the long-sequence target-attention family; subclasses implement :meth:`gsu`.

    Batches carry ``item_id_list [B, L]``, ``item_length [B]``, ``<QUERY_FIELD>_list [B, L, Q]``, the target
    ``item_id [B]`` with its ``<QUERY_FIELD> [B, Q]``, and in training ``neg_item_id`` (RecBole's ``N`` copies of
    the ``B`` rows, one negative each). Candidates' own
    queries (``query_mode: pair``) come from the dataset's per-item ``dummy_query [n_items, Q]``.
    Its dataset and trainer (read by :mod:`recbole_mm.registry`, declared on :class:`CandidateObjective`):
    :class:`LongSequenceDataset`, :class:`recbole_mm.trainer.LongSequenceTrainer`.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super(LongSequenceRecommender, self).__init__(config, dataset)
        self.hidden_size = config["hidden_size"]  # D
        self.num_heads = config["num_heads"]  # H, full-width heads
        self.retrieve_topk = config["retrieve_topk"]  # K
        self.fusion_weight_query = config["fusion_weight_query"]  # alpha
        self.mlp_hidden_size = config["mlp_hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.query_max_tokens = config["query_max_tokens"]
        self.query_mode = config["query_mode"]
        self.batch_candidates = config["batch_candidates"]
        self.item_chunk_size = config["item_chunk_size"]
        self.reference_compat = config["reference_compat"]
        self.QUERY = config["QUERY_FIELD"]
        self.QUERY_SEQ = self.QUERY + config["LIST_SUFFIX"]
        self.USER_ID = config["USER_ID_FIELD"]
        self._check_config(config)
        self._check_query_fields(dataset)
        self._register_dummy_query(dataset)

        names = list(getattr(dataset, "mm_features", {})) if config["multi_modal"] else []
        self.features = ItemFeatureBank(dataset, names)
        self.modalities = list(self.features.names)
        D = self.hidden_size
        self.item_embedding = nn.Embedding(self.n_items, D, padding_idx=0)
        self.query_embedding = nn.Embedding(dataset.num(self.QUERY), D, padding_idx=0)
        self.modal_projection = nn.ModuleDict({m: nn.Linear(self.features.dim(m), D) for m in self.modalities})
        if self.modalities:
            self.gate_context = nn.Parameter(torch.empty(1, D))  # the reference's Linear(D, 1).weight
            self.gate = nn.Linear(D, 1 + len(self.modalities))
        self.w_q = nn.ModuleList([nn.Linear(D, D) for _ in range(self.num_heads)])
        self.w_k = nn.ModuleList([nn.Linear(D, D) for _ in range(self.num_heads)])
        self.w_v = nn.ModuleList([nn.Linear(D, D) for _ in range(self.num_heads)])
        self.w_o = nn.Linear(self.num_heads * D, D)
        self.head = mlp_head(2 * D, self.mlp_hidden_size)

        self.apply(self._init_weights)
        if self.modalities:
            bound = 1 / math.sqrt(D)  # PyTorch's default for Linear(D, 1).weight: the reference's init skips it
            nn.init.uniform_(self.gate_context, -bound, bound)
        for layer in self.head:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.reference_compat:
            self._reference_tables(config["seed"])
            for layer in [*self.w_q, *self.w_k, *self.w_v]:  # B2: default init, never trained
                layer.reset_parameters()
                layer.requires_grad_(False)

    # ------------------------------------------------------------------ set-up
    def _check_config(self, config):
        name = type(self).__name__

        def bad(key, expected):
            raise ConfigError(f"{name}: config key '{key}' must be {expected}, found {config[key]!r}")

        for key in ("hidden_size", "num_heads", "retrieve_topk", "mlp_hidden_size", "query_max_tokens"):
            if not isinstance(config[key], int) or config[key] < 1:
                bad(key, "a positive int")
        if not isinstance(self.fusion_weight_query, (int, float)) or not 0 <= self.fusion_weight_query <= 1:
            bad("fusion_weight_query", "a float in [0, 1]")
        if config["eval_query_mode"] is not None:
            raise ConfigError(
                f"{name}: config key 'eval_query_mode' is replaced by 'query_mode' (the same candidates' queries in "
                f"training and evaluation), found eval_query_mode: {config['eval_query_mode']!r}"
            )
        if self.query_mode not in QUERY_MODES:
            bad("query_mode", f"one of {list(QUERY_MODES)}")
        if not isinstance(self.item_chunk_size, int) or self.item_chunk_size < 1:
            bad("item_chunk_size", "a positive int")
        self.init_objective(config, OBJECTIVES)

    def _check_query_fields(self, dataset):
        name = type(self).__name__
        fields = getattr(dataset, "field2type", {})
        missing = [f for f in (self.QUERY, self.QUERY_SEQ) if f not in fields]
        if missing:
            raise DataFieldError(
                f"{name}: dataset '{dataset.dataset_name}' has no query field(s) {missing} (config QUERY_FIELD: "
                f"'{self.QUERY}'); found fields {sorted(fields)}. The model reads each interaction's search query: "
                f"add a '{self.QUERY}:token_seq' column of up to {self.query_max_tokens} keywords to the interaction "
                f"files (python -m recbole_mm.prepare writes it for the prepared datasets) and list '{self.QUERY}' "
                f"(and '{self.QUERY_SEQ}' for pre-split files) in load_col: inter"
            )
        if fields[self.QUERY] != FeatureType.TOKEN_SEQ:
            raise DataFieldError(
                f"{name}: field '{self.QUERY}' of dataset '{dataset.dataset_name}' must be token_seq (keyword ids), "
                f"found {fields[self.QUERY]}"
            )

    def _register_dummy_query(self, dataset):
        name = type(self).__name__
        table = getattr(dataset, "dummy_query", None)
        has_items = table is not None and bool(torch.as_tensor(table).any())
        if self.query_mode == "pair" and not has_items:
            raise DataFieldError(
                f"{name}: query_mode 'pair' gives every candidate (positive and negatives, in training and "
                f"evaluation) its item's own dummy query, but dataset '{dataset.dataset_name}' has no per-item query "
                f"table (a 'dummy_query:token_seq' column in its .item file); use 'recommendation' or 'search'"
            )
        if self.query_mode == "search" and not self.reference_compat and getattr(dataset, "queries_from_items", False):
            raise ConfigError(
                f"{name}: query_mode 'search' gives every candidate the row's query, but the queries of dataset "
                f"'{dataset.dataset_name}' are its items' own dummy queries: the row's query names the target. Use "
                f"'recommendation' (no query) or 'pair' (every candidate its own item's query)"
            )
        if table is None:
            table = torch.zeros(self.n_items, 1, dtype=torch.long)
        table = torch.as_tensor(table, dtype=torch.long)
        if table.dim() != 2 or table.shape[0] != self.n_items:
            raise DataFieldError(
                f"{name}: dataset.dummy_query must be [n_items={self.n_items}, Q], found {tuple(table.shape)}"
            )
        self._check_query_width(table, "dataset.dummy_query")
        self.register_buffer("dummy_query", table.clone(), persistent=False)

    def _reference_tables(self, seed):
        """B1 under compat: the modality tables become the reference's frozen N(0, initializer_range) noise."""
        generator = torch.Generator().manual_seed(int(seed))
        for m in self.modalities:
            table = getattr(self.features, m)
            table.copy_(torch.randn(table.shape, generator=generator) * self.initializer_range)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def _check_query_width(self, tokens: torch.Tensor, where: str):
        if tokens.shape[-1] > self.query_max_tokens:
            raise DataFieldError(
                f"{type(self).__name__}: {where} holds queries of {tokens.shape[-1]} keywords, more than "
                f"query_max_tokens = {self.query_max_tokens}; truncate the '{self.QUERY}' field when preparing the "
                f"data (or raise query_max_tokens)"
            )

    # ------------------------------------------------------------------ embeddings
    def gate_weights(self) -> torch.Tensor:
        r"""``[1 + M]`` softmax weights of the ID embedding and the ``M`` modalities (global, not per item)."""
        return torch.softmax(self.gate(self.gate_context), dim=-1).squeeze(0)

    def item_parts(self, items: torch.Tensor) -> List[torch.Tensor]:
        r"""``[ID embedding, projected modality 1, ...]``, each ``[*S, D]``, for item ids ``[*S]``."""
        return [self.item_embedding(items)] + [self.projected(m, items) for m in self.modalities]

    def projected(self, modality: str, items: torch.Tensor) -> torch.Tensor:
        r"""``Linear(feature_dim, D)`` of modality features of item ids ``[*S]``, ``[*S, D]``. When the ids
        outnumber the catalogue (a batch of histories) the whole table is projected once and gathered: the same
        values, ``n_items`` rows of arithmetic instead of ``|S|``."""
        projection = self.modal_projection[modality]
        if items.numel() > self.n_items:
            return projection(getattr(self.features, modality))[items]
        return projection(self.features(modality, items))

    def item_embed(self, items: torch.Tensor) -> torch.Tensor:
        r"""Gated multi-modal item embedding ``[*S, D]`` of item ids ``[*S]``. When the ids outnumber the catalogue
        (a batch of histories, or of users' candidates) the whole catalogue is embedded once and gathered: row-wise
        arithmetic, the same values."""
        if items.numel() > self.n_items:
            return self.item_embed(torch.arange(self.n_items, device=items.device))[items]
        parts = self.item_parts(items)
        if len(parts) == 1:
            return parts[0]
        gate = self.gate_weights()
        return sum(gate[k] * part for k, part in enumerate(parts))

    def query_embed(self, tokens: torch.Tensor) -> torch.Tensor:
        r"""Query embedding ``[*S, D]`` of keyword ids ``[*S, Q]``: keyword sum / ``query_max_tokens``."""
        summed = F.embedding_bag(tokens.reshape(-1, tokens.shape[-1]), self.query_embedding.weight, mode="sum")
        return summed.view(*tokens.shape[:-1], -1) / self.query_max_tokens

    def pair_embed(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        r"""Fused (item, query) pair ``alpha * query + (1 - alpha) * item``, ``[*S, D]``."""
        alpha = self.fusion_weight_query
        return alpha * self.query_embed(tokens) + (1.0 - alpha) * self.item_embed(items)

    def encode_history(self, items: torch.Tensor, queries: torch.Tensor) -> History:
        r"""Embed histories ``items [B, L]`` with their ``queries [B, L, Q]`` once, for all their candidates."""
        self._check_query_width(queries, f"field '{self.QUERY_SEQ}'")
        return History(items=items, valid=items > 0, queries=queries, pairs=self.pair_embed(items, queries))

    # ------------------------------------------------------------------ what a model may override
    def target_embed(self, history: History, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        r"""Candidates as the ESU and the head see them, ``[B, C, D]`` (default: the fused pair)."""
        return self.pair_embed(items, tokens)

    def history_values(self, history: History) -> torch.Tensor:
        r"""History as the ESU reads it, ``[B, L, D]``, zero at padding (default: the fused pairs)."""
        return history.pairs * history.valid.unsqueeze(-1)

    def gsu(self, history: History, items: torch.Tensor, tokens: torch.Tensor, target: torch.Tensor) -> Retrieval:
        r"""The general search unit: which history positions each candidate's ESU reads.

        Args:
            history: the batch's :class:`History`.
            items: ``[B, C]`` candidate ids.
            tokens: ``[B, C, Q]`` candidate queries.
            target: ``[B, C, D]`` :meth:`target_embed` of the candidates.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ shared search and attention
    def top_k(
        self, scores: torch.Tensor, valid: torch.Tensor, k: Optional[int] = None, in_place: bool = False
    ) -> torch.Tensor:
        r"""Boolean ``[B, C, G, L]`` mask of the top-``k`` (default ``retrieve_topk``) positions of ``scores``.

        Padding positions (``valid [B, L]`` False) rank last (B8); under ``reference_compat`` they compete with
        the real items. ``k`` is clamped to ``L``. ``in_place``: ``scores`` may be overwritten (-inf at padding)
        instead of copied.
        """
        k = min(self.retrieve_topk if k is None else k, scores.shape[-1])
        if not self.reference_compat:
            padding = ~valid[:, None, None, :]
            scores = scores.masked_fill_(padding, float("-inf")) if in_place else scores.masked_fill(padding, -math.inf)
        index = scores.topk(k, dim=-1, sorted=False).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, index, True)

    def folded_query_key(self) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""The ESU's query projection folded into its key projection: ``(weight [H (D+1), D], bias [H (D+1)])``.

        Head ``h`` contributes ``D + 1`` rows: ``A_h = W_q^h^T W_k^h`` with bias ``W_q^h^T b_k^h``, then the row
        ``(W_k^h^T b_q^h)^T`` with bias ``b_q^h . b_k^h``, all divided by ``sqrt(D)``. For a history vector ``s``
        the head's block ``m_h(s)`` satisfies ``[t, 1] . m_h(s) = (W_q^h t + b_q^h) . (W_k^h s + b_k^h) / sqrt(D)``:
        the candidates need no projection of their own.
        """
        weights, biases = [], []
        for q, k in zip(self.w_q, self.w_k):
            weights += [q.weight.t() @ k.weight, (k.weight.t() @ q.bias).unsqueeze(0)]
            biases += [q.weight.t() @ k.bias, (q.bias @ k.bias).unsqueeze(0)]
        scale = 1.0 / math.sqrt(self.hidden_size)
        return torch.cat(weights) * scale, torch.cat(biases) * scale

    def folded_value_output(self) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""The ESU's value projections folded into its output projection: ``(weight [H D, D], bias [H D])``, head
        ``h``'s block ``W_o^h W_v^h`` with bias ``W_o^h b_v^h`` (``W_o^h``: the columns of ``W_o`` that read head
        ``h``). Attention weights that sum to one give ``W_o [head_1; ...; head_H] = sum_h sum_l a_hl u_h(s_l)``
        (without ``b_o``)."""
        weights, biases = [], []
        for h, v in enumerate(self.w_v):
            out = self.w_o.weight[:, h * self.hidden_size : (h + 1) * self.hidden_size]  # [D, D]
            weights.append(out @ v.weight)
            biases.append(out @ v.bias)
        return torch.cat(weights), torch.cat(biases)

    def attention_logits(self, values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r"""Per-head target-attention logits ``(W_q^h t + b_q^h) . (W_k^h s_l + b_k^h) / sqrt(D)``, ``[B, C, H, L]``
        (contiguous), for ``values [B, L, D]`` and ``target [B, C, D]``.

        Computed as ``[t, 1] . m_h(s_l)`` (:meth:`folded_query_key`): the history side is projected once per user,
        and each user's candidates take one ``[C, D+1] x [D+1, H L]`` product.
        """
        batch, length, _ = values.shape
        heads = len(self.w_q)
        weight, bias = self.folded_query_key()
        keys = F.linear(values, weight, bias).view(batch, length, heads, -1)  # [B, L, H, D+1]
        keys = keys.permute(0, 3, 2, 1).reshape(batch, -1, heads * length)  # [B, D+1, H L]
        queries = F.pad(target, (0, 1), value=1.0)  # [B, C, D+1]
        return torch.bmm(queries, keys).view(batch, target.shape[1], heads, length)

    def esu(
        self,
        values: torch.Tensor,
        target: torch.Tensor,
        select: torch.Tensor,
        valid: torch.Tensor,
        logits: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        r"""Multi-head target attention over each candidate's retrieved set.

        Args:
            values: ``[B, L, D]`` history (zero at padding).
            target: ``[B, C, D]`` candidates.
            select: ``[B, C, G, L]`` bool retrieved sets (``G`` 1 or ``H``).
            valid: ``[B, L]`` bool real positions; padding is masked unless ``reference_compat``.
            logits: optional precomputed :meth:`attention_logits`; without gradients they are overwritten.

        Returns:
            ``[B, C, D]``: ``W_o [head_1; ...; head_H] + b_o``, ``head_h = sum_l softmax(logits)_l (W_v^h s_l + b_v^h)``
            over the set; a set without a real position reads ``head_h = 0``. Computed as one ``[C, H L] x [H L, D]``
            product per user with :meth:`folded_value_output`.
        """
        if logits is None:
            logits = self.attention_logits(values, target)
        batch, candidates, heads, length = logits.shape
        keep = select if self.reference_compat else select & valid[:, None, None, :]
        # dropped positions get exp(finfo.min - max) = 0 exactly, unless the set holds none of the positions
        low = torch.finfo(logits.dtype).min
        masked = logits.masked_fill(~keep, low) if logits.requires_grad else logits.masked_fill_(~keep, low)
        # [B, C, H, 1]: a set without a kept position (its softmax uniform) reads zeros; kept logits are finite
        empty = masked.amax(dim=-1, keepdim=True) == low
        weights = torch.softmax(masked, dim=-1)
        if bool(empty.any()):
            weights = weights.masked_fill(empty, 0.0) if weights.requires_grad else weights.masked_fill_(empty, 0.0)
        weight, bias = self.folded_value_output()
        outputs = F.linear(values, weight, bias).view(batch, length, heads, -1)  # [B, L, H, D]
        outputs = outputs.transpose(1, 2).reshape(batch, heads * length, -1)  # [B, H L, D]
        out = torch.bmm(weights.reshape(batch, candidates, heads * length), outputs)
        return out + self.w_o.bias

    def score(self, history: History, items: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, Retrieval]:
        r"""Logits ``[B, C]`` of ``C`` candidates per history (``items [B, C]``, ``tokens [B, C, Q]``), and the
        GSU's :class:`Retrieval`."""
        target = self.target_embed(history, items, tokens)
        retrieval = self.gsu(history, items, tokens, target)
        logits = None if self.reference_compat else retrieval.logits
        out = self.esu(self.history_values(history), target, retrieval.select, history.valid, logits)
        return self.head(torch.cat([out, target], dim=-1)).squeeze(-1), retrieval

    def score_candidates(self, history: History, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        r"""``[B, C]`` logits: all candidates in one pass, or (``batch_candidates: False``) one at a time."""
        if self.batch_candidates:
            return self.score(history, items, tokens)[0]
        columns = [self.score(history, items[:, c : c + 1], tokens[:, c : c + 1])[0] for c in range(items.shape[1])]
        return torch.cat(columns, dim=1)

    # ------------------------------------------------------------------ candidates' queries
    def candidate_queries(self, row_query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        r"""Candidates' queries ``[B, C, Q]`` under ``query_mode``, in training and evaluation alike:
        ``recommendation`` empty, ``search`` the row's query ``row_query [B, Q]`` for every candidate, ``pair`` each
        item's own dummy query."""
        if self.query_mode == "pair":
            return self.dummy_query[items]
        expanded = row_query.unsqueeze(1).expand(-1, items.shape[1], -1)
        return expanded if self.query_mode == "search" else torch.zeros_like(expanded)

    # ------------------------------------------------------------------ training
    def random_history_query(self, history: History) -> torch.Tensor:
        r"""``[B, Q]``: the query of a uniformly drawn real position of each history (histories are left-aligned)."""
        length = history.valid.sum(dim=1).clamp(min=1)
        pick = (torch.rand(length.shape, device=length.device) * length).long()
        return history.queries[torch.arange(len(pick), device=pick.device), pick]

    def training_logits(self, interaction) -> Tuple[torch.Tensor, Retrieval]:
        r"""Logits ``[B, 1 + N]`` of each row's positive and its ``N`` sampled negatives, and the retrieval; the
        history encoded once per row."""
        b, items = self.training_candidates(interaction)
        history = self.encode_history(interaction[self.ITEM_SEQ][:b], interaction[self.QUERY_SEQ][:b])
        row_query = interaction[self.QUERY][:b]
        if self.reference_compat:  # B6: the positive's own query, the negatives' drawn from the history
            drawn = [self.random_history_query(history) for _ in range(items.shape[1] - 1)]
            tokens = torch.stack([row_query, *drawn], dim=1)
        else:
            tokens = self.candidate_queries(row_query, items)
        return self.score(history, items, tokens)

    def calculate_loss(self, interaction):
        logits, retrieval = self.training_logits(interaction)
        loss = self.candidate_loss(logits)
        if retrieval.aux is None:
            return loss
        return loss, self.candidate_loss(retrieval.aux)

    # ------------------------------------------------------------------ evaluation
    def predict(self, interaction):
        r"""Scores ``[N]`` of RecBole's evaluation rows: rows sharing a history are scored as one batch of
        candidates against a single embedding of it."""
        first, group, position = self.candidate_groups(interaction)
        width = int(position.max()) + 1
        items = torch.zeros(len(first), width, dtype=torch.long, device=group.device)
        items[group, position] = interaction[self.ITEM_ID]
        history = self.encode_history(interaction[self.ITEM_SEQ][first], interaction[self.QUERY_SEQ][first])
        tokens = self.candidate_queries(interaction[self.QUERY][first], items)
        return self.score_candidates(history, items, tokens)[group, position]

    def full_sort_predict(self, interaction):
        r"""``[B, n_items]`` scores of every item, ``item_chunk_size`` candidates at a time."""
        history = self.encode_history(interaction[self.ITEM_SEQ], interaction[self.QUERY_SEQ])
        batch = history.items.shape[0]
        chunks = []
        for start in range(0, self.n_items, self.item_chunk_size):
            items = torch.arange(start, min(start + self.item_chunk_size, self.n_items), device=history.items.device)
            items = items.unsqueeze(0).expand(batch, -1)
            chunks.append(self.score_candidates(history, items, self.candidate_queries(interaction[self.QUERY], items)))
        return torch.cat(chunks, dim=1)
