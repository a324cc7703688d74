# -*- coding: utf-8 -*-
r"""
MMSRec
################################################

Reference:
    Kunzhe Song, Qingfeng Sun, Can Xu, Kai Zheng and Yaming Yang. "Self-Supervised Multi-Modal Sequential
    Recommendation." arXiv:2304.13277, 2023.

Reference code:
    https://github.com/kz-song/MMSRec

Every item is two tokens (image slot, then text slot, each a frozen feature through its own Linear + LayerNorm)
with a position and a modality-type embedding; a bidirectional post-LN Transformer reads the ``2 L`` tokens of a
sequence, a per-slot output Linear + LayerNorm follows and the two slots of a position are fused by an
element-wise max over the slots the item has. The same network, run on every item alone as a length-1
sequence, is the item tower; candidates are scored by cosine. Fine-tuning is Cloze (masked item prediction
with a full softmax over the item tower, temperature ``contrastive_temperature``); pre-training is the
combinatorial loss on single items.

Departures from the reference code:

* Histories are right-padded (RecBole's layout): the target, or the [MASK] appended at inference, sits at
  position ``item_length``, and position 0 is the oldest item (the reference left-pads to a fixed length).
  The position table has ``MAX_ITEM_LIST_LENGTH + 1`` rows.
* The [MASK] token is item id ``n_items`` (RecBole's BERT4Rec convention), not id 1; the unused [PROMPT] token
  is left out. Random replacements in Cloze masking draw from every real item (the reference never draws its
  last item).
* An item with no modality at all has both slots treated as present with zero features (the reference raises
  while loading data); an all-masked attention row (a single item in a pre-training view without that
  view's modality) attends to its padded keys instead of returning NaN, and the item is left out of that
  view's loss pairs, as the reference's pairs would have to be.
* Pre-training samples are the training rows' target items (any dataset's training file), so an item may
  occur more than once in a batch: occurrences of the same item are not each other's negatives (the reference
  iterates over unique items). Under torch.distributed every rank's views are gathered (with gradients) and
  every rank computes the global batch's loss, so the averaged gradient is the global batch's.
* The item tower is recomputed over the whole catalogue at every training step (exact, as the reference), but
  computed once per evaluation and cached: the cache is dropped whenever the model switches between train
  and eval mode or loads a state dict. Its cost grows with the catalogue: 1.42 s of CPU time per step for
  26,000 items at width 64, 55% of a step of 256 histories of 20; 29.8 s, 84%, at the reference's width 512
  (``bench/mmsrec_item_tower.py``, one thread of a 2-core CPU).
* ``train_candidates: seen`` restricts the training softmax to the items of the training data (an item cold-start
  setting, where held-out items exist in the catalogue but must not be trained as negatives); ``all`` (default)
  is the reference's whole catalogue.
* ``mask_history`` (default False, MMSRec's protocol) sets the scores of the history's items to ``-inf`` in
  full ranking (PMMRec's protocol); RecBole's sequential full ranking masks nothing itself. The PAD column
  is always ``-inf``.
* Evaluation scores are cosines without temperature, as the reference; ``predict`` gives the same cosines.
* Kept as in the reference: every Linear and Embedding weight, the input transform's included, starts from
  ``N(0, initializer_range)`` with zero biases (not the family's PyTorch-default adaptors: a missing modality is
  a masked slot here, never a zero vector under ``F.normalize``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_mm.memory import transformer_token_elements
from recbole_mm.model.distributed import gather_rows
from recbole_mm.model.multimodal_sequential import MultiModalSequentialRecommender

SLOTS = ("image", "text")  # the reference's order: vision is modality type 0, text type 1


class SlotTransform(nn.Module):
    r"""One ``Linear`` + ``LayerNorm`` per slot.

    Args:
        in_dims: input width per slot.
        out_dim: output width ``D``.
        eps: LayerNorm epsilon.

    Call Args:
        inputs: one ``[*S, in_dims[m]]`` tensor per slot, or one ``[*S, M, D_in]`` tensor.

    Returns:
        ``[*S, M, out_dim]``.
    """

    def __init__(self, in_dims, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(d, out_dim) for d in in_dims)
        self.norms = nn.ModuleList(nn.LayerNorm(out_dim, eps=eps) for _ in in_dims)

    def forward(self, inputs):
        if torch.is_tensor(inputs):
            inputs = inputs.unbind(dim=-2)
        return torch.stack([n(lin(x)) for x, lin, n in zip(inputs, self.linears, self.norms)], dim=-2)


def masked_max_fusion(hidden: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    r"""MMSRec's fusion: element-wise max over the slots an item has (absent slots count as ``-1e4``).

    Args:
        hidden: ``[*S, M, D]``.
        present: ``[*S, M]`` bool.

    Returns:
        ``[*S, D]`` (``-1e4`` everywhere where no slot is present).
    """
    return hidden.masked_fill(~present.unsqueeze(-1), -1.0e4).max(dim=-2).values


def symmetric_info_nce(a, a_valid, b, b_valid, temperature, same=None):
    r"""MMSRec's NormSoftmaxLoss: ``-mean_i log softmax_j(cos(a_i, b_j)/tau)[i]`` plus the same with ``a`` and
    ``b`` swapped, over the rows valid in both views.

    Args:
        a, b: ``[N, D]``.
        a_valid, b_valid: ``[N]`` bool; a pair ``(i, j)`` enters the softmax only if ``a_valid[i]`` and
            ``b_valid[j]`` (the reference fills the others with ``-1e4`` before the temperature).
        same: optional ``[N, N]`` bool, True where rows ``i != j`` are the same item (left out as negatives).

    Returns:
        scalar; 0 when no row is valid in both views.
    """
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    allowed = a_valid.unsqueeze(1) & b_valid.unsqueeze(0)
    if same is not None:
        allowed = allowed & ~(same & ~torch.eye(len(a), dtype=torch.bool, device=a.device))
    sim = sim.masked_fill(~allowed, -1.0e4) / temperature
    diagonal = torch.diagonal(allowed)
    count = diagonal.sum().clamp(min=1)
    loss_i = (torch.diagonal(sim.log_softmax(dim=1)) * diagonal).sum() / count
    loss_j = (torch.diagonal(sim.t().log_softmax(dim=1)) * diagonal).sum() / count
    return -loss_i - loss_j


class MMSRec(MultiModalSequentialRecommender):
    r"""Self-supervised multi-modal sequential recommendation (dual tower over a two-slot bidirectional
    Transformer, Cloze fine-tuning, combinatorial contrastive pre-training)."""

    TRAIN_STAGES = ("pretrain", "finetune")
    # everything of the fusion model but the position embedding (the reference drops it on transfer)
    TRANSFERRED = (
        "input_transform.",
        "embedding.modal_type_embeddings.",
        "embedding.mask_embeddings.",
        "embedding.layer_norm.",
        "encoder.",
        "output_transform.",
    )
    FROZEN = ()
    tokens_per_position = 2  # image and text slot: the Transformer reads 2 (L + 1) tokens of a history

    def __init__(self, config, dataset):
        super(MMSRec, self).__init__(config, dataset)
        self.hidden_size = config["fusion_embed_dim"]
        self.n_layers = config["fusion_layers"]
        self.n_heads = config["fusion_heads"]
        self.inner_size = config["fusion_feedforward_dim"]
        self.dropout_prob = config["fusion_dropout"]
        self.embed_dropout_prob = config["fusion_embed_dropout"]
        self.initializer_range = config["initializer_range"]
        self.temperature = config["contrastive_temperature"]
        self.mask_ratio = config["ce_mask_ratio"]
        self.replace_prob = config["mask_replace_prob"]
        self.keep_prob = config["mask_keep_prob"]
        self.mask_history = config["mask_history"]
        self.train_candidates = config["train_candidates"]
        self._check_config(config)
        self.features = self.feature_bank(dataset, SLOTS)
        self.mask_token = self.n_items  # one past the last item id

        self.input_transform = SlotTransform([self.features.dim(m) for m in SLOTS], self.hidden_size)
        self.embedding = nn.Module()
        self.embedding.position_embeddings = nn.Embedding(self.max_seq_length + 1, self.hidden_size)
        self.embedding.modal_type_embeddings = nn.Embedding(len(SLOTS), self.hidden_size)
        self.embedding.mask_embeddings = nn.Embedding(1, self.hidden_size)
        self.embedding.layer_norm = nn.LayerNorm(self.hidden_size)
        self.embedding.dropout = nn.Dropout(self.embed_dropout_prob)
        layer = nn.TransformerEncoderLayer(
            d_model=self.hidden_size,
            nhead=self.n_heads,
            dim_feedforward=self.inner_size,
            dropout=self.dropout_prob,
            activation="gelu",
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(
            layer, self.n_layers, norm=nn.LayerNorm(self.hidden_size), enable_nested_tensor=False
        )
        self.output_transform = SlotTransform([self.hidden_size] * len(SLOTS), self.hidden_size)
        self._tower_cache = None
        if self.train_candidates == "seen":  # items of the training data: the softmax's candidates
            self.register_buffer("seen", self._seen_items(dataset), persistent=False)

        self.init_weights()
        if config["pretrained_path"]:
            self.load_pretrained(config["pretrained_path"])

    # ------------------------------------------------------------------ set-up
    def _check_config(self, config):
        def bad(key, expected):
            self.bad_config(key, expected, config[key])

        if self.hidden_size % self.n_heads:
            bad("fusion_heads", f"a divisor of fusion_embed_dim ({self.hidden_size})")
        for key in ("ce_mask_ratio", "mask_replace_prob", "mask_keep_prob"):
            if not 0 <= config[key] <= 1:
                bad(key, "a probability in [0, 1]")
        if not config["contrastive_temperature"] > 0:
            bad("contrastive_temperature", "a positive float")
        if config["train_candidates"] not in ("all", "seen"):
            bad("train_candidates", "'all' or 'seen'")
        if config["loss_type"] != "CE":
            bad("loss_type", "'CE' (full softmax over the item tower)")

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def _seen_items(self, dataset):
        seen = torch.zeros(self.n_items, dtype=torch.bool)
        inter = dataset.inter_feat
        seen[inter[self.POS_ITEM_ID]] = True
        if self.ITEM_SEQ in inter:
            seen[inter[self.ITEM_SEQ].flatten()] = True
        seen[0] = False
        return seen

    def forget_item_tower(self) -> None:
        """Drop the item tower cached for evaluation: the next :meth:`all_items` recomputes it."""
        self._tower_cache = None

    def train(self, mode=True):
        self.forget_item_tower()  # parameters may change in training mode; an evaluation recomputes the tower
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self.forget_item_tower()
        super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ encoder
    def slot_presence(self, ids: torch.Tensor) -> torch.Tensor:
        r"""``[*S, 2]`` bool: the slots of each id; PAD none, [MASK] both, an item with no modality both."""
        real = ids.clamp(max=self.n_items - 1)
        present = torch.stack([self.features.present(m, real) for m in SLOTS], dim=-1)
        present = present | (~present.any(dim=-1, keepdim=True) & (ids != 0).unsqueeze(-1))
        return present

    def encode(self, ids: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        r"""The fusion encoder.

        Args:
            ids: ``[N, L]`` item ids (0 PAD, ``n_items`` [MASK]).
            present: ``[N, L, 2]`` bool, the slots each token may use (others are masked keys and left out of
                the max fusion).

        Returns:
            ``[N, L, D]`` fused outputs (``-1e4`` at positions without a present slot).
        """
        is_mask = ids == self.mask_token
        real = ids.masked_fill(is_mask, 0)
        hidden = self.input_transform([self.features(m, real) for m in SLOTS])  # [N, L, 2, D]
        hidden = torch.where(is_mask[..., None, None], self.embedding.mask_embeddings.weight[0], hidden)
        position = self.embedding.position_embeddings.weight[: ids.size(1)]  # rows as a slice: no lookup backward
        hidden = hidden + position[None, :, None] + self.embedding.modal_type_embeddings.weight[None, None]
        hidden = self.embedding.dropout(self.embedding.layer_norm(hidden))
        key_pad = ~present.flatten(1)
        key_pad = key_pad & ~key_pad.all(dim=1, keepdim=True)  # an all-masked row would give NaN: attend to all
        out = self.encoder(hidden.flatten(1, 2), src_key_padding_mask=key_pad).view_as(hidden)
        return masked_max_fusion(self.output_transform(out), present)

    def item_tower(self, item_ids: torch.Tensor = None) -> torch.Tensor:
        r"""Every item (or ``item_ids [C]``) run alone as a length-1 sequence: ``[C, D]``, not normalised.
        ``None``: all real items ``1 .. n_items - 1`` (in chunks of ``item_chunk_size``)."""
        if item_ids is None:
            ids = torch.arange(1, self.n_items, device=self.embedding.mask_embeddings.weight.device)
            return torch.cat([self.item_tower(chunk) for chunk in ids.split(self.item_chunk_size)])
        ids = item_ids.unsqueeze(1)
        return self.encode(ids, self.slot_presence(ids))[:, 0]

    def all_items(self) -> torch.Tensor:
        r"""``[n_items - 1, D]`` L2-normalised item-tower outputs of the real items; computed at every call in
        training, once per evaluation otherwise."""
        if self.training:
            return F.normalize(self.item_tower(), dim=-1)
        if self._tower_cache is None:
            with torch.no_grad():
                self._tower_cache = F.normalize(self.item_tower(), dim=-1)
        return self._tower_cache

    def forward(self, item_seq, item_seq_len):
        r"""The user tower at inference: ``[MASK]`` appended after the history; ``[B, D]`` L2-normalised."""
        ids = F.pad(item_seq, (0, 1)).scatter(1, item_seq_len.unsqueeze(1), self.mask_token)
        hidden = self.encode(ids, self.slot_presence(ids))
        return F.normalize(self.gather_indexes(hidden, item_seq_len), dim=-1)

    # ------------------------------------------------------------------ fine-tuning
    def cloze(self, item_seq, item_seq_len, target):
        r"""Cloze masking of ``history + [target]``.

        Each real position is masked with probability ``ce_mask_ratio``, the target's always; a masked position
        becomes a random item with probability ``mask_replace_prob``, then (independently, so it may override
        the replacement) is restored with probability ``mask_keep_prob``; the target is [MASK] in the end.

        Returns:
            ``(inputs [B, L+1], labels [B, L+1], masked [B, L+1] bool)``.
        """
        full = F.pad(item_seq, (0, 1)).scatter(1, item_seq_len.unsqueeze(1), target.unsqueeze(1))
        last = F.one_hot(item_seq_len, full.size(1)).bool()
        real = full != 0
        masked = (torch.rand(full.shape, device=full.device) < self.mask_ratio) & real | last
        inputs = full.masked_fill(masked, self.mask_token)
        replace = masked & (torch.rand(full.shape, device=full.device) < self.replace_prob)
        random_ids = torch.randint_like(full, 1, self.n_items)
        inputs = torch.where(replace, random_ids, inputs)
        keep = masked & (torch.rand(full.shape, device=full.device) < self.keep_prob)
        inputs = torch.where(keep, full, inputs).masked_fill(last, self.mask_token)
        return inputs, full, masked

    def calculate_loss(self, interaction):
        r"""Cloze cross-entropy over the whole catalogue: ``cos(h_masked, item_tower(all)) / tau``; or
        :meth:`pretrain_loss`.

        Under torch.distributed the sum over this rank's masked positions is divided by the global count times
        the world size, so that the averaged gradient is the global batch's mean."""
        if self.train_stage == "pretrain":
            return self.pretrain_loss(interaction)
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        inputs, labels, masked = self.cloze(item_seq, item_seq_len, interaction[self.POS_ITEM_ID])
        hidden = self.encode(inputs, self.slot_presence(inputs))[masked]  # [K, D]
        logits = F.normalize(hidden, dim=-1) @ self.all_items().t() / self.temperature
        if self.train_candidates == "seen":
            logits = logits.masked_fill(~self.seen[1:], float("-inf"))
        loss_sum = F.cross_entropy(logits, labels[masked] - 1, reduction="sum")
        share = self.rank_share(len(item_seq), item_seq.device)
        count = masked.sum().to(logits.dtype)
        if share.sizes is not None:
            total = count.detach().clone()
            torch.distributed.all_reduce(total)
            return loss_sum * share.world / total
        return loss_sum / count

    def activation_elements(self, batch: int, length: int) -> int:
        r"""Float32 values a Cloze step keeps beyond the history Transformer that :mod:`recbole_mm.memory` counts:
        the item tower over every item (2 tokens each, every layer) and the masked positions' logits over the
        catalogue (logits, softmax, gradient); ``length`` is the history length L."""
        per_token = transformer_token_elements(self.hidden_size, self.inner_size)
        tower = (self.n_items - 1) * len(SLOTS) * self.n_layers * per_token
        masked = batch * (self.mask_ratio * length + 1)
        return int(tower + 3 * masked * (self.n_items - 1))

    def _scores(self, seq_output):
        scores = seq_output @ self.all_items().t()
        return F.pad(scores, (1, 0), value=float("-inf"))  # PAD's column

    def full_sort_predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        scores = self._scores(self.forward(item_seq, interaction[self.ITEM_SEQ_LEN]))
        if self.mask_history:
            scores = scores.scatter(1, item_seq, float("-inf"))
        return scores

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        items = interaction[self.ITEM_ID]
        return (seq_output * self.all_items()[items - 1]).sum(dim=-1)

    # ------------------------------------------------------------------ pre-training
    def views(self, item_ids):
        r"""The six dropout views of the combinatorial loss for items ``[N]``: ``{name: (out [N, D], valid [N])}``
        for ``v1, v2`` (image only), ``t1, t2`` (text only), ``vt1, vt2`` (both)."""
        ids = item_ids.unsqueeze(1)
        present = self.slot_presence(ids)  # [N, 1, 2]
        keep = {"v": (True, False), "t": (False, True), "vt": (True, True)}
        out = {}
        for name in ("v1", "t1", "v2", "t2", "vt1", "vt2"):
            view = present & torch.tensor(keep[name[:-1]], device=ids.device)
            out[name] = (self.encode(ids, view)[:, 0], view.any(dim=-1)[:, 0] & (item_ids != 0))
        return out

    def combinatorial_loss(self, views, item_ids):
        r"""``1/4 [S(v1,v2) + S(v1,t1) + S(t1,t2) + S(vt1,vt2)]`` (:func:`symmetric_info_nce`)."""
        same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
        pairs = (("v1", "v2"), ("v1", "t1"), ("t1", "t2"), ("vt1", "vt2"))
        terms = [symmetric_info_nce(*views[a], *views[b], self.temperature, same) for a, b in pairs]
        return sum(terms) / len(terms)

    def pretrain_loss(self, interaction):
        r"""The combinatorial loss on the batch's target items (each a length-1 sequence). Under
        torch.distributed every rank's views are gathered with gradients and every rank computes the global
        batch's loss."""
        item_ids = interaction[self.POS_ITEM_ID]
        views = self.views(item_ids)
        share = self.rank_share(len(item_ids), item_ids.device)
        if share.sizes is not None:
            views = {
                k: (gather_rows(o, share.sizes, differentiable=True), gather_rows(v.long(), share.sizes, False).bool())
                for k, (o, v) in views.items()
            }
            item_ids = gather_rows(item_ids, share.sizes, differentiable=False)
        return self.combinatorial_loss(views, item_ids)
