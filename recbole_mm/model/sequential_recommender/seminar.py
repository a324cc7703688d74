# -*- coding: utf-8 -*-
r"""
SEMINAR
################################################

Reference:
    Kaiming Shen et al. "SEMINAR: Search Enhanced Multi-modal Interest Network and Approximate Retrieval for
    Lifelong Sequential Recommendation." arXiv 2407.10714 (2024).

Reference code:
    https://github.com/paper-submission-coder/SEMINAR (``long_seq_models/seminar.py``)

A *pre-training search unit* (PSU) learns the item-ID, query and modality embeddings with three tasks; bias-free
projections ``G`` (one ``Linear(D, D)`` per ID, query and modality) carry them into TWIN's search: the item is
the gated sum of ``G_id E_id`` and ``G_m P_m(features_m)``, the pair ``alpha G_q q + (1 - alpha) item``, and each
ESU head ranks the history with its own projections and attends over its own top-K.

``train_stage: pretrain`` trains the PSU loss ``w_next L_next + w_align L_align + w_qi L_qi``:

* ``L_next``: the next (query, item) pair against the row's sampled negatives with the TWIN search and the family's
  ``objective`` (modalities through ``P_m`` only, as in the reference's pre-training path; ID and query through
  ``G``). The candidates' queries follow ``query_mode`` as in fine-tuning: the positive never carries a query
  that names it unless every negative carries its own (``pair``); under ``reference_compat`` the positive keeps
  its own query (B6);
* ``L_align``: symmetric contrastive alignment of every pair of channels among ``E_id`` and ``P_m(features_m)``
  (before ``G``), L2-normalised, temperature ``psu_temperature``, over chunks of ``align_chunk_size`` positions;
* ``L_qi``: each position's query against its own item (the gated PSU item embedding, before ``G``), cosine /
  temperature, against ``psu_qi_negatives`` items of other positions of the same history.

A fine-tuning run (``train_stage: finetune``) with ``pretrained_path`` loads a SEMINAR checkpoint (every
parameter, by name and shape, as the reference's strict load), then freezes ``G`` (``freeze_psu_projection``),
the ID and query tables (``freeze_psu_embedding``) and the modality projections
(``freeze_multi_modal_projection``) as asked.

``gsu: pq`` replaces the exact search at inference (training stays exact) by multi-modal product quantisation
(:mod:`recbole_mm.model.retrieval`): the history pair is ``s_l = sum_j w_j k_{l,j}`` over the modalities
``query, id, <mm_features>`` (``k`` the G-projected vectors, ``w = [alpha, (1 - alpha) * gate]``), and head ``h``'s
search score is ``<u_h, s_l>`` plus a term constant in ``l``, ``u_h = W_k^h^T (W_q^h t + b_q^h)``. Each history
vector is replaced by its codewords (per-modality, per-sub-space k-means codebooks; the query modality's codebook
is trained on the items' dummy queries and each history query is encoded when scored), so the score is
``sum_j w_j sum_s <u_h^s, C_j^s[code]>``, the look-up-table sum of the index (computed here as ``u_h`` against the
weighted codeword reconstruction, the same numbers). The ESU then attends exactly over the retrieved sets. The
index comes from ``pq_index_path`` (refused when built for another model or other tables) or is built from the
current weights at the first evaluation after training (and again after more training).

Departures (see :mod:`recbole_mm.model.long_sequence` for the family's; ``reference_compat`` restores those
marked *compat*):

* B3 (*compat*): ``L_align`` uses identity targets (InfoNCE in both directions). The reference's soft targets
  ``softmax(((a a^T + b b^T) / 2) * tau)`` multiply by ``tau`` where they should divide, which makes them almost
  uniform. Its chunk count is fixed (1000, so the chunk size is 0 and the loss NaN below 1000 positions); the
  chunk size is fixed here, in both modes.
* B4 (*compat*): ``L_qi`` is InfoNCE, ``-log(e^pos / (e^pos + sum e^neg))``. The reference minimises
  ``mean(e^pos / sum e^neg)``, which pushes each query away from its item.
* B8 (*compat*): ``L_align`` and ``L_qi`` use real positions only (non-empty queries for ``L_qi``; negatives at
  padding dropped); the reference includes padding.
* Freezing applies to loaded weights only (``pretrained_path`` set); the reference also freezes a randomly
  initialised ``G`` when fine-tuning from scratch.
* The reference's ``lsh`` search option is not carried over; its ``multi_pq`` placeholder (a random, untrained codebook
  with a bit-match count) is replaced by the trained product quantisation above.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

from recbole_mm.errors import ConfigError, RecBoleMMError
from recbole_mm.model.long_sequence import Retrieval
from recbole_mm.model.retrieval import ProductQuantizer
from recbole_mm.model.sequential_recommender.twin import TWIN

TRAIN_STAGES = ("pretrain", "finetune")
GSU_MODES = ("exact", "pq")


class SEMINAR(TWIN):
    r"""SEMINAR: TWIN's search on PSU embeddings through the bias-free projections ``G``; PSU pre-training."""

    def __init__(self, config, dataset):
        super(SEMINAR, self).__init__(config, dataset)
        self.train_stage = config["train_stage"]
        self.temperature = config["psu_temperature"]
        self.loss_weights = (config["psu_next_pair_weight"], config["psu_align_weight"], config["psu_qi_weight"])
        self.qi_negatives = config["psu_qi_negatives"]
        self.align_chunk_size = config["align_chunk_size"]
        if self.train_stage not in TRAIN_STAGES:
            raise ConfigError(
                f"SEMINAR: config key 'train_stage' must be one of {list(TRAIN_STAGES)}, found {self.train_stage!r}"
            )
        for key in ("psu_qi_negatives", "align_chunk_size"):
            if not isinstance(config[key], int) or config[key] < 1:
                raise ConfigError(f"SEMINAR: config key '{key}' must be a positive int, found {config[key]!r}")
        self.gsu_mode = config["gsu"]
        if self.gsu_mode not in GSU_MODES:
            raise ConfigError(f"SEMINAR: config key 'gsu' must be one of {list(GSU_MODES)}, found {self.gsu_mode!r}")
        self.pq_settings = (config["pq_subspaces"], config["pq_codewords"], config["pq_iterations"], config["seed"])
        self.kmeans_backend = config["kmeans_backend"]
        self.pq_index = None  # ProductQuantizer of the current weights (built or loaded on first use)
        self._pq_loaded = False
        D = self.hidden_size
        self.G_item_id = nn.Linear(D, D, bias=False)  # PyTorch's default init: created after the base's init
        self.G_query = nn.Linear(D, D, bias=False)
        self.G_modal = nn.ModuleDict({m: nn.Linear(D, D, bias=False) for m in self.modalities})
        if config["pretrained_path"]:
            self.load_pretrained(config["pretrained_path"])
            self.freeze(config)
        if config["pq_index_path"]:
            self.load_pq_index(config["pq_index_path"])

    # ------------------------------------------------------------------ embeddings through G
    def psu_parts(self, items):
        r"""PSU embeddings ``[E_id, P_1(features_1), ...]`` (before ``G``), each ``[*S, D]``."""
        return super(SEMINAR, self).item_parts(items)

    def item_parts(self, items):
        parts = self.psu_parts(items)
        out = [self.G_item_id(parts[0])]
        for m, part in zip(self.modalities, parts[1:]):
            out.append(part if self.train_stage == "pretrain" else self.G_modal[m](part))
        return out

    def psu_query(self, tokens):
        r"""PSU query embedding (before ``G``), ``[*S, D]``."""
        return super(SEMINAR, self).query_embed(tokens)

    def query_embed(self, tokens):
        return self.G_query(self.psu_query(tokens))

    def gated(self, parts):
        r"""Gated sum of ``[ID, modality 1, ...]`` parts, ``[*S, D]``."""
        if len(parts) == 1:
            return parts[0]
        gate = self.gate_weights()
        return sum(gate[k] * part for k, part in enumerate(parts))

    # ------------------------------------------------------------------ pre-training losses
    def alignment_loss(self, channels, valid):
        r"""``L_align`` over ``channels`` (list of ``[B, L, D]``), positions ``valid [B, L]``.

        Each pair of channels ``(a, b)``: rows L2-normalised, split into chunks of ``align_chunk_size`` positions
        (the rest dropped; one chunk when fewer), logits ``b a^T / tau`` per chunk, cross-entropy both ways;
        targets the identity, or under ``reference_compat`` ``softmax(((a a^T + b b^T)/2) * tau)`` over every
        position (padding included). The mean over pairs, chunks and rows. 0 with a single channel.
        """
        if len(channels) < 2:
            return channels[0].new_zeros(())
        if self.reference_compat:
            rows = [c.flatten(0, 1) for c in channels]
        else:
            rows = [c[valid] for c in channels]
        n = rows[0].shape[0]
        size = min(self.align_chunk_size, n)
        chunks = n // size
        rows = [F.normalize(r[: chunks * size], dim=-1).view(chunks, size, -1) for r in rows]
        losses = []
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                a, b = rows[i], rows[j]
                logits = b @ a.transpose(1, 2) / self.temperature  # [chunks, size, size]
                if self.reference_compat:
                    sim = (a @ a.transpose(1, 2) + b @ b.transpose(1, 2)) / 2
                    targets = torch.softmax(sim * self.temperature, dim=-1)
                else:
                    targets = torch.eye(size, device=a.device, dtype=a.dtype).expand(chunks, -1, -1)
                forward = -(targets * torch.log_softmax(logits, dim=-1)).sum(-1)
                backward = -(targets.transpose(1, 2) * torch.log_softmax(logits.transpose(1, 2), dim=-1)).sum(-1)
                losses.append(((forward + backward) / 2).mean())
        return torch.stack(losses).mean()

    def negative_positions(self, length, device):
        r"""``[L, n]`` long: for each position, ``n = min(psu_qi_negatives, L - 1)`` other positions drawn without
        replacement (the same for every row of the batch, as in the reference)."""
        n = min(self.qi_negatives, length - 1)
        noise = torch.rand(length, length, device=device)
        noise.fill_diagonal_(float("inf"))
        return noise.argsort(dim=1)[:, :n]

    def query_item_loss(self, query, item, valid, has_query, negatives):
        r"""``L_qi`` of queries ``[B, L, D]`` against items ``[B, L, D]``, negatives ``[L, n]`` positions.

        ``pos = cos(q_l, i_l) / tau``, ``neg_j = cos(q_l, i_{negatives[l, j]}) / tau``. InfoNCE averaged over real
        positions with a query, negatives at padding dropped; under ``reference_compat`` the reference's
        ``mean(exp(pos) / sum_j exp(neg_j))`` over every position.
        """
        q = F.normalize(query, dim=-1)
        i = F.normalize(item, dim=-1)
        pos = (q * i).sum(-1) / self.temperature  # [B, L]
        neg = torch.einsum("bld,blnd->bln", q, i[:, negatives]) / self.temperature  # [B, L, n]
        if self.reference_compat:
            return (pos.exp() / neg.exp().sum(-1)).mean()
        neg = neg.masked_fill(~valid[:, negatives], float("-inf"))
        loss = torch.logsumexp(torch.cat([pos.unsqueeze(-1), neg], dim=-1), dim=-1) - pos
        used = (valid & has_query).to(loss.dtype)
        return (loss * used).sum() / used.sum().clamp(min=1)

    def pretrain_loss(self, interaction):
        r"""``(w_next L_next, w_align L_align, w_qi L_qi)``."""
        w_next, w_align, w_qi = self.loss_weights
        logits, _ = self.training_logits(interaction)
        b = logits.shape[0]  # the first of RecBole's copies of each row (one per negative)
        items, tokens = interaction[self.ITEM_SEQ][:b], interaction[self.QUERY_SEQ][:b]
        valid = items > 0
        parts = self.psu_parts(items)
        align = self.alignment_loss(parts, valid)
        negatives = self.negative_positions(items.shape[1], items.device)
        qi = self.query_item_loss(self.psu_query(tokens), self.gated(parts), valid, (tokens > 0).any(-1), negatives)
        return w_next * self.candidate_loss(logits), w_align * align, w_qi * qi

    def calculate_loss(self, interaction):
        if self.train_stage == "pretrain":
            return self.pretrain_loss(interaction)
        return super(SEMINAR, self).calculate_loss(interaction)

    # ------------------------------------------------------------------ product-quantised search (gsu: pq)
    def pq_modalities(self):
        r"""The index's modalities: ``query``, ``id``, then the dataset's (``mm_features`` order)."""
        return ["query", "id"] + self.modalities

    def modality_weights(self):
        r"""``[M]`` weights ``w`` with ``pair = sum_j w_j k_j``: ``[alpha, (1 - alpha) * gate]``."""
        alpha = self.fusion_weight_query
        gate = self.gate_weights() if self.modalities else torch.ones(1, device=self.item_embedding.weight.device)
        return torch.cat([gate.new_tensor([alpha]), (1.0 - alpha) * gate])

    @torch.no_grad()
    def pq_tables(self):
        r"""modality -> ``[n_items, D]`` G-projected item tables (the query modality: the items' dummy queries)."""
        items = torch.arange(self.n_items, device=self.item_embedding.weight.device)
        parts = self.item_parts(items)
        tables = {"query": self.query_embed(self.dummy_query), "id": parts[0]}
        tables.update({m: part for m, part in zip(self.modalities, parts[1:])})
        return {m: t.float().cpu() for m, t in tables.items()}

    def build_pq_index(self):
        r"""Train the product quantiser on the current tables (``pq_subspaces`` x ``pq_codewords``, k-means)."""
        subspaces, codewords, iterations, seed = self.pq_settings
        self.pq_index = ProductQuantizer.fit(
            self.pq_tables(), subspaces, codewords, seed, n_iter=iterations, model=type(self).__name__,
            backend=self.kmeans_backend,
        )
        self._pq_loaded = False
        return self.pq_index

    def load_pq_index(self, path):
        r"""Load an index built for SEMINAR on tables of this model's shapes (else ``RetrievalIndexError``)."""
        shapes = {m: (self.n_items, self.hidden_size) for m in self.pq_modalities()}
        self.pq_index = ProductQuantizer.load(path, model=type(self).__name__, table_shapes=shapes)
        self._pq_loaded = True
        return self.pq_index

    def train(self, mode=True):
        if mode and not self._pq_loaded:
            self.pq_index = None  # the weights will change: a built index is rebuilt at the next evaluation
        return super(SEMINAR, self).train(mode)

    def quantised_history(self, history):
        r"""``[B, L, D]`` history pairs from codewords: ``sum_j w_j C_j(code_{l,j})`` (query codes encoded here)."""
        index = self.pq_index
        device = history.items.device
        query_codes = index.encode({"query": self.query_embed(history.queries).flatten(0, 1).cpu()})
        codes = index.codes.to(device)[history.items]  # [B, L, M, S] (the query column is the item's dummy query)
        codes[:, :, 0] = query_codes.view(history.items.shape + (-1,)).to(device=device, dtype=codes.dtype)
        words = index.reconstruct(codes.flatten(0, 1).cpu()).to(device)  # [B*L, M, D]
        merged = torch.einsum("nmd,m->nd", words, self.modality_weights().to(words.dtype))
        return merged.view(history.items.shape + (-1,))

    def pq_scores(self, history, target):
        r"""``[B, C, H, L]`` quantised search scores ``<u_h, s_hat_l>``, ``u_h = W_k^h^T (W_q^h t + b_q^h)``."""
        q = torch.einsum("bcd,hed->bche", target, torch.stack([layer.weight for layer in self.w_q]))
        q = q + torch.stack([layer.bias for layer in self.w_q])
        u = torch.einsum("bche,hef->bchf", q, torch.stack([layer.weight for layer in self.w_k]))
        return torch.einsum("bchf,blf->bchl", u, self.quantised_history(history))

    def gsu(self, history, items, tokens, target):
        if self.gsu_mode == "exact" or self.training:
            return super(SEMINAR, self).gsu(history, items, tokens, target)
        if self.pq_index is None:
            self.build_pq_index()
        return Retrieval(select=self.top_k(self.pq_scores(history, target), history.valid))

    # ------------------------------------------------------------------ loading and freezing
    def load_pretrained(self, path):
        r"""Load every parameter of a SEMINAR checkpoint (RecBole's ``{"config", "state_dict", ...}``).

        Raises:
            RecBoleMMError: no such file, not a SEMINAR checkpoint, or a missing / extra / mis-shaped parameter.
        """
        if not os.path.isfile(path):
            raise RecBoleMMError(f"SEMINAR: config key 'pretrained_path' points to {path}, which does not exist")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # trusted local checkpoint
        saved = checkpoint.get("config") if isinstance(checkpoint, dict) else None
        model = saved["model"] if saved is not None and "model" in saved else None
        if model != "SEMINAR" or "state_dict" not in checkpoint:
            raise RecBoleMMError(f"SEMINAR: {path} is not a SEMINAR checkpoint (model: {model!r})")
        state = checkpoint["state_dict"]
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        shapes = [
            f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            for k in own
            if k in state and state[k].shape != own[k].shape
        ]
        if missing or extra or shapes:
            raise RecBoleMMError(
                f"SEMINAR: {path} does not fit this model (same dataset, hidden_size, num_heads and modalities "
                f"needed): missing {missing}, unexpected {extra}, shape mismatches {shapes}"
            )
        self.load_state_dict(state)

    def freeze(self, config):
        r"""Freeze the loaded parts the config names."""
        if config["freeze_psu_projection"]:
            for layer in [self.G_item_id, self.G_query, *self.G_modal.values()]:
                layer.requires_grad_(False)
        if config["freeze_psu_embedding"]:
            self.item_embedding.requires_grad_(False)
            self.query_embedding.requires_grad_(False)
        if config["freeze_multi_modal_projection"]:
            self.modal_projection.requires_grad_(False)
