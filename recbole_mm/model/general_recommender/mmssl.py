# -*- coding: utf-8 -*-
r"""
MMSSL
################################################

Reference:
    Wei Wei, Chao Huang, Lianghao Xia, Chuxu Zhang. "Multi-Modal Self-Supervised Learning for
    Recommendation." In WWW 2023.

Reference code:
    https://github.com/HKUDS/MMSSL

The model, on :class:`~recbole_mm.model.graph.GraphRecommender` (torch.sparse operators, no DGL):

* each modality's item features are projected (Linear, xavier weights) with dropout, then propagated one hop
  over the user-item operators: ``h_u^m = P_ui f^m``, ``h_i^m = P_iu h_u^m``;
* the generated modality graphs ``G^m`` (the training graph at start) give modality ID views
  ``g_u^m = G_ui^m E_item``, ``g_i^m = G_iu^m E_user``, fused across modalities by attention into ``z``;
* ``e^(0) = E + id_cat_rate * normalize(z)``, then ``n_layers`` alternating hops (users from items, then items
  from the new users; softmax over the feature axis on the last hop), readout = mean of all layers;
* ``u* = mean_ID + model_cat_rate * sum_m normalize(h_u^m)`` (items alike), scored by dot product;
* a WGAN-GP critic (its own Adam optimiser, one critic step then one recommender step per batch, see
  :class:`recbole_mm.trainer.MMSSLTrainer`) tells Gumbel-softmaxed interaction rows plus the scaled fused
  preference row ("real") from the modality preference rows ("fake"); the recommender gets ``G_rate * -D(fake)``;
* a cross-modal InfoNCE (cosine, ``tau``, in-batch user negatives in both views) between ``g_u^m`` and ``u*``;
* loss = BPR + embedding L2 + feature L2 + ``cl_rate`` InfoNCE + ``G_rate`` adversarial term.

``reference_compat: true`` reproduces the reference code's behaviour; ``false`` (default) fixes it. The flag
switches exactly these behaviours:

* Graph pairing: the reference tiles the user ids of a batch (``repeat``) against row-major top-k item ids, so
  for ``k > 1`` items are credited to the wrong users; fixed: ``repeat_interleave``.
* ``k = int(n_items * m_topk_rate)``: the reference lets it be 0 (Baby: every generated graph empty after the
  first rebuild, which disables the branch); fixed: ``k >= 1``.
* Graph regeneration: the reference rebuilds the graphs every ``graph_rebuild_period`` batches from the top-k rows
  of the previous batches' users only (all other users get empty rows); fixed: regenerated for every user with
  training interactions once per epoch (after the epoch's batches, in chunks of ``regen_chunk_users`` users), top-k
  over the unobserved items only (the reference's zeroed observed entries can outrank negative scores).
* Cross-modal attention: the reference's multi-head attention collapses (keys built from queries, softmax over the
  key modality while the values are the query modality's) to one learned linear map of each view,
  ``g^m @ sum_h W_cat[h]``; fixed: true multi-head attention across the modalities (queries, keys, values, output
  projection), ``head_num`` heads.
* Batches and the gradient penalty: the reference draws ``train_batch_size`` distinct random users per batch (one
  positive, one uniform negative each; ``n_train // train_batch_size + 1`` batches per epoch) and sizes the
  interpolation weights ``alpha`` for ``2 x train_batch_size`` rows; compat mode does both (a dataset with fewer
  users is refused). Fixed: RecBole's interaction batches and negative sampler; the critic, the adversarial term
  and the InfoNCE use the batch's distinct users, ``alpha`` is sized from them, and a batch with fewer than 2
  distinct users (the critic's batch norm needs 2) skips the critic step and the adversarial term (counted in the log).

Departures in both modes (one line each):

* No DGL, visdom, tensorboard, pickled ``train_mat``, multiprocessing evaluator, dead arguments or helpers.
* Memory: preference rows are computed for the batch's users only, ``pref_chunk_items`` items at a time, observed
  items zeroed by index; the interaction matrix is never densified (the reference keeps dense ``U x I`` graphs).
* The embedding L2 is divided by the batch's row count (the reference divides by the configured batch size).
* The unused learning-rate scheduler is dropped; AdamW keeps its 0.01 decoupled weight decay (``weight_decay``).
* Evaluation is RecBole's full ranking and metrics (standard NDCG); at test RecBole also masks validation items.
* The modality-ID views and the critic accept any number of modalities (the reference: image and text).
* Per-dataset defaults of the reference (``dataset_presets`` in MMSSL.yaml, a layer of
  :class:`recbole_mm.config.Config`) apply by dataset name unless set explicitly.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from torch import nn

from recbole_mm.errors import ConfigError, RecBoleMMError
from recbole_mm.model.graph import GraphRecommender, SparseOperator, propagate, row_normalised, sparse_pairs
from recbole_mm.model.layers import ItemFeatureBank


class MMSSLBatchError(RecBoleMMError):
    """A training batch does not fit what the critic or the reference sampler needs."""


class MMSSLTrainingError(RecBoleMMError):
    """Training diverged (a non-finite gradient penalty or loss); names the epoch and step."""


# ------------------------------------------------------------------------------------------------- building blocks
def gumbel_real_rows(
    observed: torch.Tensor, cf_rows: torch.Tensor, noise: torch.Tensor, scale: float, tau: float, cf_weight: float
) -> torch.Tensor:
    """The critic's "real" rows: ``normalize(softmax((R_u + scale * gumbel) / tau) + cf_weight * cf_rows)``.

    Args:
        observed: ``[B, I]`` binary rows of the interaction matrix for the batch users.
        cf_rows: ``[B, I]`` fused-model preference rows (masked, L2-normalised), detached.
        noise: ``[B, I]`` uniform(0, 1) draws; ``gumbel = -log(-log(noise + 1e-8) + 1e-8)``.

    Returns:
        ``[B, I]`` L2-normalised rows.
    """
    logits = noise.add(1e-8).log_().neg_().add_(1e-8).log_().neg_()  # Gumbel noise, in place: [B, I] rows are large
    logits.mul_(scale).add_(observed).div_(tau)
    soft = torch.softmax(logits, dim=1)
    del logits
    return F.normalize(soft.add_(cf_rows, alpha=cf_weight), p=2, dim=1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP term ``0.3 * mean((||grad_x D(x_hat)||_2 - 1)^2)``, ``x_hat = alpha real + (1 - alpha) fake``
    (the reference's inner factor 0.3).

    Args:
        real, fake: ``[N, I]`` (detached here).
        alpha: ``[N, 1]`` interpolation weights.
    """
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(mixed)
    (grad,) = torch.autograd.grad(out, mixed, grad_outputs=torch.ones_like(out), create_graph=True)
    return 0.3 * ((grad.norm(2, dim=1) - 1) ** 2).mean()


def cross_view_infonce(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """GRACE-style InfoNCE with ``z1`` as anchor: positive = the same row of ``z2``; negatives = the other rows of
    ``z2`` and of ``z1`` (cosine similarities, temperature ``tau``); ``-log(pos / (all - self) + 1e-8)``, mean.

    Args:
        z1, z2: ``[B, d]``.
    """
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    refl = torch.exp(a @ a.t() / tau)
    between = torch.exp(a @ b.t() / tau)
    return -torch.log(between.diag() / (refl.sum(1) + between.sum(1) - refl.diag()) + 1e-8).mean()


class ModalityAttention(nn.Module):
    """Fuses ``M`` modality views of the same nodes into one: ``[M, N, d] -> [N, d]`` (mean over the ``M`` outputs).

    ``compat=True``: the reference's collapsed attention, ``views @ sum_h W_cat[h]`` (``W_cat``: ``[heads * d, d]``).
    ``compat=False``: multi-head attention across the modalities of each node (softmax over the ``M`` keys), then an
    output projection.
    """

    def __init__(self, dim: int, heads: int, compat: bool):
        super().__init__()
        if dim % heads:
            raise ConfigError(
                f"config key 'head_num': embedding_size {dim} must be divisible by head_num, found {heads}"
            )
        self.dim, self.heads, self.compat = dim, heads, compat
        init = nn.init.xavier_uniform_
        if compat:
            self.w_cat = nn.Parameter(init(torch.empty(heads * dim, dim)))
        else:
            self.w_q, self.w_k, self.w_v, self.w_o = (nn.Parameter(init(torch.empty(dim, dim))) for _ in range(4))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if self.compat:
            return (views @ self.w_cat.view(self.heads, self.dim, self.dim).sum(0)).mean(0)
        m, n, d = views.shape
        split = (m, n, self.heads, d // self.heads)
        q, k, v = ((views @ w).view(split) for w in (self.w_q, self.w_k, self.w_v))
        weights = torch.softmax(torch.einsum("qnhc,knhc->nhqk", q, k) / math.sqrt(d // self.heads), dim=-1)
        out = torch.einsum("nhqk,knhc->qnhc", weights, v).reshape(m, n, d) @ self.w_o
        return out.mean(0)


class Critic(nn.Module):
    """MMSSL's discriminator on ``[N, I]`` preference rows -> ``[N]`` in ``(0, 100)``:
    Linear(I, I/4) -> LeakyReLU -> BatchNorm -> Dropout -> Linear(I/4, I/8) -> LeakyReLU -> BatchNorm -> Dropout ->
    Linear(I/8, 1) -> sigmoid, times 100. Kaiming-normal weights, zero biases. ``slope`` 1.0 is the reference's
    ``LeakyReLU(True)`` (an identity)."""

    def __init__(self, n_items: int, drop1: float, drop2: float, slope: float):
        super().__init__()
        wide, narrow = max(n_items // 4, 1), max(n_items // 8, 1)
        self.net = nn.Sequential(
            nn.Linear(n_items, wide),
            nn.LeakyReLU(slope),
            nn.BatchNorm1d(wide),
            nn.Dropout(drop1),
            nn.Linear(wide, narrow),
            nn.LeakyReLU(slope),
            nn.BatchNorm1d(narrow),
            nn.Dropout(drop2),
            nn.Linear(narrow, 1),
            nn.Sigmoid(),
        )
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return 100 * self.net(rows.float()).view(-1)


def topk_pairs(rows: torch.Tensor, users: torch.Tensor, k: int, pairing_bug: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(user, item)`` pairs of the top-``k`` items of each row of ``rows [B, I]`` for ``users [B]``.

    ``pairing_bug=True`` pairs as the reference does: user ids tiled (``users.repeat(k)``) against the row-major
    item ids, so item ``j`` of row ``b`` goes to ``users[(b * k + j) % B]``.
    """
    if k == 0:
        empty = users.new_zeros(0)
        return empty, empty
    items = torch.topk(rows, k, dim=1).indices.reshape(-1)
    owners = users.repeat(k) if pairing_bug else users.repeat_interleave(k)
    return owners, items


# ----------------------------------------------------------------------------------------------------------- model
class MMSSL(GraphRecommender):
    r"""MMSSL on RecBole: see the module docstring for the model, the ``reference_compat`` switches and departures.

    Trained by :class:`recbole_mm.trainer.MMSSLTrainer` (critic step, recommender step, graph regeneration).
    """

    trainer_class = "MMSSLTrainer"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.compat = bool(config["reference_compat"])
        self.dim = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.feat_hops = config["feat_layers"]
        self.model_cat_rate = config["model_cat_rate"]
        self.id_cat_rate = config["id_cat_rate"]
        self.cl_rate, self.tau = config["cl_rate"], config["tau"]
        self.G_rate, self.gp_rate = config["G_rate"], config["gp_rate"]
        self.real_data_tau, self.log_log_scale = config["real_data_tau"], config["log_log_scale"]
        self.ui_pre_scale = config["ui_pre_scale"]
        self.emb_reg_weight, self.feat_reg_decay = config["emb_reg_weight"], config["feat_reg_decay"]
        self.rebuild_period = config["graph_rebuild_period"]
        self.regen_chunk_users = config["regen_chunk_users"]
        self.batch_users = config["train_batch_size"]
        k = int((self.n_items - 1) * config["m_topk_rate"])  # the reference's n_items has no [PAD]
        self.topk = k if self.compat else max(1, k)

        self.features = ItemFeatureBank(dataset, config["modalities"])
        self.modalities: List[str] = list(self.features.names)
        if not self.modalities:
            raise ConfigError(
                f"MMSSL needs at least one modality; dataset '{dataset.dataset_name}' attaches none "
                "(declare mm_features and modalities in the config)"
            )
        self.projections = nn.ModuleDict({m: nn.Linear(self.features.dim(m), self.dim) for m in self.modalities})
        for layer in self.projections.values():
            nn.init.xavier_uniform_(layer.weight)
        self.dropout = nn.Dropout(config["drop_rate"])
        self.user_embedding = nn.Embedding(self.n_users, self.dim)
        self.item_embedding = nn.Embedding(self.n_items, self.dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.attention = ModalityAttention(self.dim, config["head_num"], self.compat)
        self.critic = Critic(self.n_items, config["G_drop1"], config["G_drop2"], config["critic_leaky_slope"])

        # generated graphs: (user, item) pairs per modality; None = the training graph
        self.generated: Dict[str, Optional[Tuple[torch.Tensor, torch.Tensor]]] = {m: None for m in self.modalities}
        self._operators: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._collected: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in self.modalities}
        self._last_rows: Optional[Tuple[torch.Tensor, Dict[str, torch.Tensor]]] = None
        self.skipped_critic_batches = 0

    def recommender_parameters(self):
        """Every parameter except the critic's (the recommender's optimiser)."""
        return [p for name, p in self.named_parameters() if not name.startswith("critic.")]

    # ------------------------------------------------------------------------------------------ generated graphs
    def install_graph(self, modality: str, users: Optional[torch.Tensor], items: Optional[torch.Tensor]) -> None:
        """Make the binary graph of ``(users, items)`` pairs (None: the training graph) modality ``m``'s generated
        graph, row-normalised like the training operators."""
        self.generated[modality] = None if users is None else (users.long().cpu(), items.long().cpu())
        self._operators.pop(modality, None)
        self._cache = None

    def graph_operators(self, modality: str) -> Tuple[SparseOperator, SparseOperator]:
        """``(G_ui [U, I], G_iu [I, U])`` of ``modality``, built once per installed graph."""
        if self.generated[modality] is None:
            return self.ui_operator, self.iu_operator
        if modality not in self._operators:
            users, items = (t.to(self.train_items.device) for t in self.generated[modality])
            graph = sparse_pairs(users, items, self.n_users, self.n_items)
            self._operators[modality] = (
                SparseOperator(row_normalised(graph)),
                SparseOperator(row_normalised(graph.t())),
            )
        return self._operators[modality]

    def get_extra_state(self):
        return {"generated": self.generated}

    def set_extra_state(self, state):
        for modality, pairs in state["generated"].items():
            self.install_graph(modality, *(pairs if pairs is not None else (None, None)))

    def _apply(self, fn, *args, **kwargs):
        self._operators.clear()  # rebuilt on the new device
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------------------------------------- forward
    def forward(self) -> Dict[str, object]:
        """All representations: ``user``/``item`` (fused, ``[U, d]``/``[I, d]``), ``feat_user``/``feat_item``
        (per modality ``[U, d]``/``[I, d]``), ``id_user``/``id_item`` (modality ID views)."""
        feat_user, feat_item, id_user, id_item = {}, {}, {}, {}
        for m in self.modalities:
            x = self.dropout(self.projections[m](getattr(self.features, m)))
            for _ in range(self.feat_hops):
                feat_user[m] = propagate(self.ui_operator, x)
                x = feat_item[m] = propagate(self.iu_operator, feat_user[m])
            g_ui, g_iu = self.graph_operators(m)
            id_user[m] = propagate(g_ui, self.item_embedding.weight)
            id_item[m] = propagate(g_iu, self.user_embedding.weight)
        z_user = self.attention(torch.stack([id_user[m] for m in self.modalities]))
        z_item = self.attention(torch.stack([id_item[m] for m in self.modalities]))
        users = self.user_embedding.weight + self.id_cat_rate * F.normalize(z_user, p=2, dim=1)
        items = self.item_embedding.weight + self.id_cat_rate * F.normalize(z_item, p=2, dim=1)
        user_layers, item_layers = [users], [items]
        for layer in range(self.n_layers):
            users = propagate(self.ui_operator, items)
            if layer == self.n_layers - 1:
                users = torch.softmax(users, dim=-1)
            items = propagate(self.iu_operator, users)
            if layer == self.n_layers - 1:
                items = torch.softmax(items, dim=-1)
            user_layers.append(users)
            item_layers.append(items)
        user = torch.stack(user_layers).mean(0)
        item = torch.stack(item_layers).mean(0)
        for m in self.modalities:
            user = user + self.model_cat_rate * F.normalize(feat_user[m], p=2, dim=1)
            item = item + self.model_cat_rate * F.normalize(feat_item[m], p=2, dim=1)
        return {
            "user": user,
            "item": item,
            "feat_user": feat_user,
            "feat_item": feat_item,
            "id_user": id_user,
            "id_item": id_item,
        }

    def compute_embeddings(self):
        out = self.forward()
        return out["user"], out["item"]

    # ------------------------------------------------------------------------------------------------- training
    def modality_rows(self, out: Dict[str, object], users: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{m: [B, I]}`` masked, normalised preference rows of ``users`` in each modality's feature space."""
        return {
            m: self.masked_preference_rows(out["feat_user"][m][users], out["feat_item"][m], users)
            for m in self.modalities
        }

    def batch_user_set(self, users: torch.Tensor) -> torch.Tensor:
        """The users of the critic, the adversarial term and the InfoNCE: the batch's distinct users (compat: the
        reference's batch, distinct users in the order drawn, which its graph pairing depends on)."""
        return users if self.compat else torch.unique(users)

    def observed_rows(self, users: torch.Tensor) -> torch.Tensor:
        """``[B, I]`` binary training rows of ``users`` (the batch's rows only)."""
        rows, items = self.observed_pairs(users)
        dense = torch.zeros(len(users), self.n_items, device=users.device)
        dense[rows, items] = 1.0
        return dense

    def critic_loss(self, interaction) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The critic's WGAN-GP loss on the batch's distinct users: ``(loss, gradient_penalty)``, or None when the
        batch has fewer than 2 distinct users. The recommender's representations are computed without gradient.

        Raises:
            MMSSLBatchError: in compat mode, a batch whose rows differ from the ``2 x train_batch_size`` the
                reference sizes ``alpha`` for.
        """
        users = self.batch_user_set(interaction[self.USER_ID])
        if len(users) < 2:
            return None
        with torch.no_grad():
            out = self.forward()
            fake = torch.cat(list(self.modality_rows(out, users).values()))
            cf = self.masked_preference_rows(out["user"][users], out["item"], users)
            noise = torch.rand(len(users), self.n_items, device=users.device)
            real = gumbel_real_rows(
                self.observed_rows(users), cf, noise, self.log_log_scale, self.real_data_tau, self.ui_pre_scale
            ).repeat(len(self.modalities), 1)
            del cf, noise
        rows = len(self.modalities) * (self.batch_users if self.compat else len(users))
        if rows != real.shape[0]:
            raise MMSSLBatchError(
                f"critic batch: reference_compat sizes the gradient penalty's alpha for {rows} rows "
                f"({len(self.modalities)} x train_batch_size), the batch has {real.shape[0]} "
                f"({len(users)} distinct users)"
            )
        alpha = torch.rand(rows, 1, device=users.device)
        gp = gradient_penalty(self.critic, real, fake, alpha)
        loss = -self.critic(real).mean() + self.critic(fake).mean() + self.gp_rate * gp
        return loss, gp

    def calculate_loss(self, interaction):
        """The recommender's loss terms ``(bpr, emb_reg, feat_reg, cl, adversarial)`` (summed by the trainer)."""
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        out = self.forward()
        u, p, n = out["user"][user], out["item"][pos], out["item"][neg]
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        emb_reg = self.emb_reg_weight * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(user)
        feat = sum(out["feat_item"][m].pow(2).sum() + out["feat_user"][m].pow(2).sum() for m in self.modalities)
        feat_reg = self.feat_reg_decay * 0.5 * feat / self.n_items
        users = self.batch_user_set(user)
        cl = self.cl_rate * sum(
            cross_view_infonce(out["id_user"][m][users], out["user"][users], self.tau) for m in self.modalities
        )
        rows = self.modality_rows(out, users)
        self._last_rows = (users, {m: r.detach() for m, r in rows.items()})
        if len(users) < 2:
            self.skipped_critic_batches += 1
            adversarial = bpr.new_zeros(())
        else:
            self.critic.requires_grad_(False)  # the term trains the recommender only: no critic weight gradients
            try:
                adversarial = -self.G_rate * self.critic(torch.cat(list(rows.values()))).mean()
            finally:
                self.critic.requires_grad_(True)
        return bpr, emb_reg, feat_reg, cl, adversarial

    def after_batch(self, step: int) -> None:
        """Compat mode: the reference's graph schedule at batch ``step`` of the epoch (rebuild from the collected
        pairs when ``step % period == 0 and step > 0``, else collect the batch's top-k with the pairing bug)."""
        if not self.compat or self._last_rows is None:
            return
        users, rows = self._last_rows
        if step % self.rebuild_period == 0 and step != 0:
            for m in self.modalities:
                pairs = self._collected[m]
                self.install_graph(
                    m,
                    torch.cat([u for u, _ in pairs]) if pairs else users.new_zeros(0),
                    torch.cat([i for _, i in pairs]) if pairs else users.new_zeros(0),
                )
                self._collected[m] = []
        else:
            for m in self.modalities:
                self._collected[m].append(topk_pairs(rows[m], users, self.topk, pairing_bug=True))

    @torch.no_grad()
    def regenerate_graphs(self) -> None:
        """Fixed mode: every user with training interactions gets the top-``k`` unobserved items of each modality's
        preference row as its generated graph row (users in chunks of ``regen_chunk_users``; dropout off)."""
        if self.compat:
            return
        was_training = self.training
        self.eval()
        out = self.forward()
        degree = self.train_indptr[1:] - self.train_indptr[:-1]
        active = torch.nonzero(degree > 0).view(-1)
        pairs = {m: ([], []) for m in self.modalities}
        for start in range(0, len(active), self.regen_chunk_users):
            users = active[start : start + self.regen_chunk_users]
            for m in self.modalities:
                scores = self.masked_scores(out["feat_user"][m][users], out["feat_item"][m], users, float("-inf"))
                k = min(self.topk, self.n_items - 1)
                owners, items = topk_pairs(scores, users, k, pairing_bug=False)
                row = torch.arange(len(users), device=users.device).repeat_interleave(k)
                keep = torch.isfinite(scores[row, items])  # users with fewer than k unobserved items
                pairs[m][0].append(owners[keep])
                pairs[m][1].append(items[keep])
        for m in self.modalities:
            self.install_graph(m, torch.cat(pairs[m][0]), torch.cat(pairs[m][1]))
        self.train(was_training)

    def reference_batches(self, generator: torch.Generator):
        """Compat mode's batches, as the reference draws them: ``n_train // train_batch_size + 1`` batches of
        ``train_batch_size`` distinct random users with training interactions, one random positive and one uniform
        unobserved negative each.

        Raises:
            MMSSLBatchError: fewer users with training interactions than ``train_batch_size``.
        """
        degree = (self.train_indptr[1:] - self.train_indptr[:-1]).cpu()
        active = torch.nonzero(degree > 0).view(-1)
        size = self.batch_users
        if len(active) < size:
            raise MMSSLBatchError(
                f"reference_compat draws train_batch_size={size} distinct users per batch; the training data has "
                f"{len(active)} users with interactions (lower train_batch_size or set reference_compat: false)"
            )
        indptr, items = self.train_indptr.cpu(), self.train_items.cpu()
        keys = torch.repeat_interleave(torch.arange(self.n_users), degree) * self.n_items + items
        n_batches = len(items) // size + 1
        for _ in range(n_batches):
            users = active[torch.randperm(len(active), generator=generator)[:size]]
            offset = (torch.rand(size, generator=generator) * degree[users]).long()
            pos = items[indptr[users] + offset]
            neg = torch.randint(1, self.n_items, (size,), generator=generator)
            while True:
                key = users * self.n_items + neg
                hit = keys[torch.searchsorted(keys, key).clamp(max=len(keys) - 1)] == key
                if not hit.any():
                    break
                neg[hit] = torch.randint(1, self.n_items, (int(hit.sum()),), generator=generator)
            yield Interaction({self.USER_ID: users, self.ITEM_ID: pos, self.NEG_ITEM_ID: neg})
