# -*- coding: utf-8 -*-
r"""
PMMRec
################################################

Reference:
    Youhua Li, Hanwen Du, Yongxin Ni, Pengpeng Zhao, Qi Guo, Fajie Yuan and Xiaofang Zhou. "Multi-Modality is
    All You Need for Transferable Recommender Systems." In ICDE 2024 (arXiv:2312.09602).

Reference code:
    https://github.com/ICDE24/PMMRec (the transfer / fine-tuning stage only; the pre-training objectives are not
    released)

Three loosely coupled parts, each saved and loaded alone: item encoders (one projection per modality of a
frozen feature), the fusion (one BERT-style layer over the item's modality tokens, masked mean pool) and the user
encoder (SASRec: learned positions, 2 post-LN blocks of 2-head bias-free attention and a ReLU FFN, causal).
Scores are dot products. Training is an in-batch softmax over every item of the batch with logQ popularity
correction, a user's own other items masked as false negatives. Pre-training adds NICL, NID and RCL.

Departures from the reference code:

* Frozen pre-extracted features instead of end-to-end XLM-R / CLIP: ``text_proj`` and ``cv_proj`` are
  trainable projections of the feature vectors (the reference fine-tunes the top two backbone blocks), and the
  fusion layer attends over 2 tokens (text, image) instead of 50 + 50.
* The pre-training objectives are reconstructions from the paper's description, details UNVERIFIED (no code
  exists): NICL (next-item enhanced cross-modal InfoNCE on the L2-normalised modality projections, positives the
  item's other modality and both modalities of the user's next item, negatives both modalities of the items of
  the batch's other users), NID (a fraction of positions replaced by random in-batch items, a linear head
  detects them, per-position BCE) and RCL (InfoNCE between the user vectors of the original and the noised
  sequence, other users as negatives). Means over anchors, not sums.
* ``loss_positions: all`` trains every position of ``history + [target]``, ``last`` only the target. RecBole's
  training file holds one row per prefix of a history; ``train_rows: windows`` keeps rows ``MAX_ITEM_LIST_LENGTH``
  apart, so an epoch trains each transition once (the reference: one row per user).
* The false-negative mask is vectorised (the reference loops over the batch in Python); same masked set.
* ``pretrain_part: user_encoder`` loads the user encoder (the reference strips no key prefix and silently loads
  nothing); an unknown part, a checkpoint of another model and mismatching widths are errors.
* Histories are right-padded (RecBole's layout): position 0 is the oldest item; a causal mask alone keeps pads
  away from real positions.
* Item popularity for logQ counts the training file's targets and first history items, plus one (so an item
  unseen in training has a finite correction).
* An item with no modality at all uses both modality tokens (zero features); a missing modality is otherwise a
  masked token. Under torch.distributed every rank's rows are gathered (with gradients) and every rank computes
  the global batch's loss, so the averaged gradient is the global batch's.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import xavier_normal_, xavier_uniform_

from recbole_mm.memory import transformer_token_elements
from recbole_mm.model.distributed import gather_rows
from recbole_mm.model.multimodal_sequential import MultiModalSequentialRecommender

ITEM_TOWERS = {"modal": ("text", "image"), "text-only": ("text",), "CV-only": ("image",)}
PROJ = {"text": "text_proj", "image": "cv_proj"}
ITEM_ENCODER = ("text_proj.", "cv_proj.", "fusion.")
USER_ENCODER = ("user_encoder.",)
PRETRAIN_PARTS = {"full": ITEM_ENCODER + USER_ENCODER, "item_encoder": ITEM_ENCODER, "user_encoder": USER_ENCODER}


class SASRecBlock(nn.Module):
    r"""PMMRec's user-encoder block: post-LN multi-head self-attention (bias-free projections) then a post-LN
    ReLU feed-forward of width ``4 d``; LayerNorm eps 1e-6.

    Call Args:
        x: ``[B, L, d]``; attn_mask: ``[L, L]`` bool, True where attention is forbidden.

    Returns:
        ``[B, L, d]``.
    """

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(d, n_heads, dropout=dropout, bias=False, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(d, eps=1e-6)
        self.w_1 = nn.Linear(d, 4 * d)
        self.w_2 = nn.Linear(4 * d, d)
        self.ffn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x, attn_mask):
        attended, _ = self.attention(x, x, x, attn_mask=attn_mask, need_weights=False)
        x = self.attn_norm(x + self.attn_dropout(attended))
        return self.ffn_norm(x + self.ffn_dropout(self.w_2(F.relu(self.w_1(x)))))


class UserEncoder(nn.Module):
    r"""SASRec user encoder: ``LN(items + positions)``, dropout, causal blocks.

    Call Args:
        item_embs: ``[B, L, d]`` (right-padded).

    Returns:
        ``[B, L, d]``: position ``l`` has read items ``0..l``.
    """

    def __init__(self, max_len: int, d: int, n_heads: int, n_blocks: int, dropout: float):
        super().__init__()
        self.position_embedding = nn.Embedding(max_len, d)
        self.layer_norm = nn.LayerNorm(d, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(d, n_heads, dropout) for _ in range(n_blocks))

    def forward(self, item_embs):
        length = item_embs.size(1)
        x = self.dropout(self.layer_norm(item_embs + self.position_embedding.weight[:length]))
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        for block in self.blocks:
            x = block(x, causal)
        return x


def in_batch_logits(user, row, label_col, cand, cand_ids, log_pop, member, valid_cand):
    r"""PMMRec's in-batch next-item logits with logQ correction and the same-user false-negative mask.

    Args:
        user: ``[K, d]`` user vectors of the trained positions.
        row: ``[K]`` the batch row (user) of each position.
        label_col: ``[K]`` the candidate column of each position's true next item.
        cand: ``[C, d]`` candidate item embeddings (every position of every row of the batch).
        cand_ids: ``[C]`` their item ids.
        log_pop: ``[n_items]`` log popularity.
        member: ``[B, n_items]`` bool, the items of each row's sequence.
        valid_cand: ``[C]`` bool, False for padded candidates.

    Returns:
        ``[K, C]``: ``user . cand - log p(cand)``, ``-1e4`` at padded candidates and at candidates whose item
        is in the position's own row, except the position's label column.
    """
    logits = user @ cand.t() - log_pop[cand_ids]
    reject = (member[:, cand_ids] | ~valid_cand)[row]  # [K, C]
    reject[torch.arange(len(row), device=row.device), label_col] = False
    return logits.masked_fill(reject, -1.0e4)


def nicl_loss(text, image, text_ok, image_ok, user, has_next, temperature=1.0):
    r"""Next-item enhanced cross-modal contrastive loss (UNVERIFIED reconstruction, see the module docstring).

    Args:
        text, image: ``[N, d]`` L2-normalised modality projections of ``N`` item positions (a row's positions
            consecutive).
        text_ok, image_ok: ``[N]`` bool, the modality exists at the position (False at PAD).
        user: ``[N]`` the row (user) of each position.
        has_next: ``[N]`` bool, position ``i + 1`` is the same row's next item.
        temperature: tau of ``exp(a . b / tau)``.

    Returns:
        scalar: the mean over anchors (each modality of each position with at least one positive) of
        ``-log(sum_pos e / (sum_pos e + sum_neg e))``; positives of ``t_i``: ``v_i``, ``t_{i+1}``, ``v_{i+1}``
        (likewise for ``v_i``); negatives: both modalities of every position of other rows.
    """
    n = text.size(0)
    anchors = torch.cat([text, image])  # [2N, d]
    ok = torch.cat([text_ok, image_ok])
    sim = anchors @ anchors.t() / temperature  # [2N, 2N]
    owner = torch.cat([user, user])
    index = torch.arange(n, device=text.device)
    pos = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=text.device)
    pos[index, index + n] = True  # t_i -> v_i
    pos[index + n, index] = True  # v_i -> t_i
    nxt = index[has_next]
    for a in (nxt, nxt + n):  # both modalities of the next item, for both anchors
        pos[a, nxt + 1] = True
        pos[a, nxt + 1 + n] = True
    pos &= ok.unsqueeze(0) & ok.unsqueeze(1)
    neg = (owner.unsqueeze(0) != owner.unsqueeze(1)) & ok.unsqueeze(0) & ok.unsqueeze(1)
    anchor = pos.any(dim=1)
    positive = torch.logsumexp(sim.masked_fill(~pos, float("-inf")), dim=1)
    everything = torch.logsumexp(sim.masked_fill(~(pos | neg), float("-inf")), dim=1)
    loss = (everything - positive).masked_fill(~anchor, 0.0)
    return loss.sum() / anchor.sum().clamp(min=1)


def nid_loss(logits, noised, valid):
    r"""Noised item detection: mean BCE of per-position ``logits [B, L]`` against ``noised [B, L]`` over ``valid``."""
    bce = F.binary_cross_entropy_with_logits(logits, noised.to(logits.dtype), reduction="none")
    return (bce * valid).sum() / valid.sum().clamp(min=1)


def rcl_loss(original, noised, temperature):
    r"""Robustness-aware contrastive loss: symmetric InfoNCE of cosine similarities between each user's original
    and noised sequence vectors ``[B, d]``, the batch's other users as negatives."""
    sim = F.normalize(original, dim=-1) @ F.normalize(noised, dim=-1).t() / temperature
    labels = torch.arange(sim.size(0), device=sim.device)
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2


class PMMRec(MultiModalSequentialRecommender):
    r"""Transferable multi-modal sequential recommender: item encoders -> fusion -> SASRec user encoder."""

    TRAIN_STAGES = ("pretrain", "finetune")
    TRANSFERRED = PRETRAIN_PARTS["item_encoder"]  # replaced by pretrain_part in __init__
    FROZEN = ()

    def __init__(self, config, dataset):
        super(PMMRec, self).__init__(config, dataset)
        self.d = config["embedding_dim"]
        self.n_heads = config["num_attention_heads"]
        self.n_blocks = config["transformer_block"]
        self.dropout_prob = config["drop_rate"]
        self.fusion_heads = config["fusion_heads"]
        self.item_tower_type = config["item_tower"]
        self.pretrain_part = config["pretrain_part"]
        self.loss_positions = config["loss_positions"]
        self.mask_history = config["mask_history"]
        self.noise_ratio = config["noise_ratio"]
        self.nicl_weight = config["nicl_weight"]
        self.nid_weight = config["nid_weight"]
        self.rcl_weight = config["rcl_weight"]
        self.nicl_temperature = config["nicl_temperature"]
        self.rcl_temperature = config["rcl_temperature"]
        self._check_config(config)
        self.modalities = ITEM_TOWERS[self.item_tower_type]
        self.features = self.feature_bank(dataset, self.modalities)

        for modality in self.modalities:
            setattr(self, PROJ[modality], nn.Linear(self.features.dim(modality), self.d))
        if len(self.modalities) > 1:  # merge attention: one BERT-style layer over the modality tokens
            self.fusion = nn.TransformerEncoderLayer(
                self.d, self.fusion_heads, 4 * self.d, self.dropout_prob, "gelu", 1e-12, batch_first=True
            )
        self.user_encoder = UserEncoder(self.max_seq_length, self.d, self.n_heads, self.n_blocks, self.dropout_prob)
        if self.train_stage == "pretrain":
            self.nid_head = nn.Linear(self.d, 1)
        self.register_buffer("log_pop", self._log_popularity(dataset))
        self._tower_cache = None

        self.init_weights()
        self.TRANSFERRED = PRETRAIN_PARTS[self.pretrain_part]
        if config["pretrained_path"]:
            self.load_pretrained(config["pretrained_path"])

    # ------------------------------------------------------------------ set-up
    def _check_config(self, config):
        def bad(key, expected):
            self.bad_config(key, expected, config[key])

        if self.item_tower_type not in ITEM_TOWERS:
            bad("item_tower", f"one of {list(ITEM_TOWERS)} (the reference's ID tower is RecBole's SASRec)")
        if self.pretrain_part not in PRETRAIN_PARTS:
            bad("pretrain_part", f"one of {list(PRETRAIN_PARTS)}")
        if self.loss_positions not in ("all", "last"):
            bad("loss_positions", "'all' or 'last'")
        if self.d % self.n_heads:
            bad("num_attention_heads", f"a divisor of embedding_dim ({self.d})")
        if self.d % self.fusion_heads:
            bad("fusion_heads", f"a divisor of embedding_dim ({self.d})")
        if not 0 <= self.noise_ratio <= 1:
            bad("noise_ratio", "a probability in [0, 1]")
        if config["fusion_method"] != "merge_attn":
            bad("fusion_method", "'merge_attn' (the one fusion the reference's model builds)")

    def _log_popularity(self, dataset):
        counts = torch.ones(self.n_items, dtype=torch.float64)
        inter = dataset.inter_feat
        if inter is not None and self.POS_ITEM_ID in inter:
            counts += torch.bincount(inter[self.POS_ITEM_ID], minlength=self.n_items).double()
            if self.ITEM_SEQ in inter:
                first = inter[self.ITEM_SEQ][inter[self.ITEM_SEQ_LEN] == 1, 0]
                counts += torch.bincount(first, minlength=self.n_items).double()
        counts[0] = 1.0
        return (counts / counts.sum()).log().float()

    def _init_weights(self, module):
        # the reference: Xavier for the projections and the user encoder, BERT's normal(0.02) for the fusion layer
        if isinstance(module, (nn.Linear, nn.Embedding)):
            xavier_normal_(module.weight.data)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def init_weights(self):
        super().init_weights()
        for modality in self.modalities:
            xavier_uniform_(getattr(self, PROJ[modality]).weight)
        if hasattr(self, "fusion"):
            for name, param in self.fusion.named_parameters():
                if name.endswith("weight") and param.dim() == 2:
                    param.data.normal_(0.0, 0.02)

    def reset_user_encoder(self):
        r"""Re-initialise the user encoder (``pretrain_part: item_encoder`` after loading)."""
        self.user_encoder.apply(self._init_weights)

    def load_pretrained(self, path, transferred=None, frozen=None):
        loaded = super().load_pretrained(path, transferred, frozen)
        if self.pretrain_part == "item_encoder" and transferred is None:
            self.reset_user_encoder()  # the reference loads everything, then re-initialises the user encoder
        return loaded

    def train(self, mode=True):
        self._tower_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._tower_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ item side
    def modality_embeddings(self, item_ids):
        r"""``({modality: [*S, d]}, {modality: [*S] bool present})``; an item with no modality at all counts as
        having every one (zero features)."""
        present = {m: self.features.present(m, item_ids) for m in self.modalities}
        none = ~torch.stack(list(present.values())).any(dim=0) & (item_ids != 0)
        embs = {m: getattr(self, PROJ[m])(self.features(m, item_ids)) for m in self.modalities}
        return embs, {m: p | none for m, p in present.items()}

    def item_embedding(self, item_ids):
        r"""``[*S, d]``: the fused item embedding (merge attention + masked mean pool; one modality: its
        projection)."""
        embs, present = self.modality_embeddings(item_ids)
        if len(self.modalities) == 1:
            return embs[self.modalities[0]]
        shape = item_ids.shape
        tokens = torch.stack([embs[m] for m in self.modalities], dim=-2).reshape(-1, len(self.modalities), self.d)
        keep = torch.stack([present[m] for m in self.modalities], dim=-1).reshape(-1, len(self.modalities))
        key_pad = ~keep & ~(~keep).all(dim=1, keepdim=True)  # PAD: attend to both (its output is never used)
        hidden = self.fusion(tokens, src_key_padding_mask=key_pad)
        weight = (~key_pad).to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weight).sum(dim=1) / weight.sum(dim=1)
        return pooled.view(*shape, self.d)

    def all_items(self):
        r"""``[n_items, d]`` item embeddings of the catalogue (PAD included); cached in evaluation."""
        if self.training or self._tower_cache is None:
            device = self.log_pop.device
            ids = torch.arange(self.n_items, device=device)
            with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
                table = torch.cat([self.item_embedding(chunk) for chunk in ids.split(self.item_chunk_size)])
            if self.training:
                return table
            self._tower_cache = table
        return self._tower_cache

    # ------------------------------------------------------------------ user side
    def forward(self, item_seq, item_seq_len):
        r"""``[B, d]``: the user vector after the last history item."""
        output = self.user_encoder(self.item_embedding(item_seq))
        return self.gather_indexes(output, item_seq_len - 1)

    def full_sort_predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        scores = self.forward(item_seq, interaction[self.ITEM_SEQ_LEN]) @ self.all_items().t()
        scores[:, 0] = float("-inf")
        if self.mask_history:
            scores = scores.scatter(1, item_seq, float("-inf"))  # the reference's protocol
        return scores

    def predict(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (user * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    # ------------------------------------------------------------------ training
    def _rows(self, interaction):
        """``(full [B, L+1], lengths [B])``: history + target, right-padded."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        full = F.pad(item_seq, (0, 1)).scatter(1, item_seq_len.unsqueeze(1), interaction[self.POS_ITEM_ID][:, None])
        return full, item_seq_len

    def next_item_loss(self, user, item_embs, full, lengths):
        r"""In-batch softmax of every trained position over all ``B (L+1)`` items of the (global) batch.

        Args:
            user: ``[B, L, d]`` user-encoder outputs; item_embs: ``[B, L+1, d]``; full: ``[B, L+1]`` ids;
            lengths: ``[B]`` history lengths.
        """
        n_rows, width = full.shape
        positions = torch.arange(width - 1, device=full.device).unsqueeze(0)
        if self.loss_positions == "all":
            trained = positions < lengths.unsqueeze(1)
        else:
            trained = positions == (lengths - 1).unsqueeze(1)
        member = torch.zeros(n_rows, self.n_items, dtype=torch.bool, device=full.device)
        member[torch.arange(n_rows, device=full.device).unsqueeze(1), full] = True
        cand_ids = full.flatten()
        label_col = torch.arange(n_rows, device=full.device).unsqueeze(1) * width + positions + 1  # [B, L]
        row = torch.arange(n_rows, device=full.device).unsqueeze(1).expand_as(trained)[trained]
        cand = item_embs.flatten(0, 1)
        valid = cand_ids != 0
        logits = in_batch_logits(user[trained], row, label_col[trained], cand, cand_ids, self.log_pop, member, valid)
        return F.cross_entropy(logits, label_col[trained])

    @staticmethod
    def _gather(share, *tensors):
        """Every rank's rows of each tensor in rank order (floating tensors with gradients); unchanged without
        torch.distributed."""
        if share.sizes is None:
            return tensors
        gathered = []
        for t in tensors:
            if t.dtype == torch.bool:
                gathered.append(gather_rows(t.long(), share.sizes, differentiable=False).bool())
            else:
                gathered.append(gather_rows(t, share.sizes, differentiable=t.is_floating_point()))
        return tuple(gathered)

    def calculate_loss(self, interaction):
        r"""Next-item in-batch softmax (fine-tuning), plus ``nicl_weight NICL + nid_weight NID + rcl_weight RCL``
        in pre-training."""
        full, lengths = self._rows(interaction)
        item_embs = self.item_embedding(full)  # [B, L+1, d]
        user = self.user_encoder(item_embs[:, :-1])
        share = self.rank_share(len(full), full.device)
        g_user, g_items, g_full, g_len = self._gather(share, user, item_embs, full, lengths)
        loss = self.next_item_loss(g_user, g_items, g_full, g_len)
        if self.train_stage != "pretrain":
            return loss
        return loss + self.pretrain_terms(full, lengths, user, share)

    def activation_elements(self, batch: int, length: int) -> int:
        r"""Float32 values a training step keeps beyond the user encoder that :mod:`recbole_mm.memory` counts: the
        fusion layer over the modality tokens of every item of ``history + [target]`` (one BERT-style layer,
        feed-forward 4 d) and the in-batch logits of every position over every item of the batch (logits, softmax,
        gradient); ``length`` is the history length L."""
        items = batch * (length + 1)
        per_token = transformer_token_elements(self.d, 4 * self.d)
        fusion = items * len(self.modalities) * per_token if len(self.modalities) > 1 else 0
        return fusion + 3 * items * items

    def noise(self, item_seq, item_seq_len):
        r"""``(noised [B, L], flags [B, L] bool)``: each history position replaced, with probability
        ``noise_ratio``, by an item drawn uniformly from the batch's history positions; flagged where the item
        changed."""
        real = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0) < item_seq_len.unsqueeze(1)
        pool = item_seq[real]
        draw = torch.rand(item_seq.shape, device=item_seq.device) < self.noise_ratio
        picks = pool[torch.randint(len(pool), item_seq.shape, device=item_seq.device)]
        noised = torch.where(draw & real, picks, item_seq)
        return noised, (noised != item_seq) & real

    def pretrain_terms(self, full, lengths, user, share):
        r"""``nicl_weight NICL + nid_weight NID + rcl_weight RCL`` of the (global) batch."""
        embs, present = self.modality_embeddings(full)
        n_rows, width = full.shape
        valid = full != 0
        text_ok = present.get("text", torch.zeros_like(valid)) & valid
        image_ok = present.get("image", torch.zeros_like(valid)) & valid
        zeros = torch.zeros(n_rows, width, self.d, device=full.device)
        text = F.normalize(embs["text"], dim=-1) if "text" in embs else zeros
        image = F.normalize(embs["image"], dim=-1) if "image" in embs else zeros

        item_seq = full[:, :-1]
        noised, flags = self.noise(item_seq, lengths)
        noised_out = self.user_encoder(self.item_embedding(noised))
        original_last = self.gather_indexes(user, lengths - 1)
        noised_last = self.gather_indexes(noised_out, lengths - 1)
        text, image, text_ok, image_ok, g_full, noised_out, flags, g_len, original_last, noised_last = self._gather(
            share, text, image, text_ok, image_ok, full, noised_out, flags, lengths, original_last, noised_last
        )
        n_rows, width = g_full.shape
        owner = torch.arange(n_rows, device=full.device).repeat_interleave(width)
        has_next = F.pad(g_full[:, 1:] != 0, (0, 1)).flatten()  # position k of a row has a next item in the row
        loss = self.nicl_weight * nicl_loss(
            text.flatten(0, 1),
            image.flatten(0, 1),
            text_ok.flatten(),
            image_ok.flatten(),
            owner,
            has_next,
            self.nicl_temperature,
        )
        real = torch.arange(width - 1, device=full.device).unsqueeze(0) < g_len.unsqueeze(1)
        loss = loss + self.nid_weight * nid_loss(self.nid_head(noised_out).squeeze(-1), flags, real)
        return loss + self.rcl_weight * rcl_loss(original_last, noised_last, self.rcl_temperature)
