# -*- coding: utf-8 -*-
r"""
MISSRec
################################################

Reference:
    Jinpeng Wang et al. "MISSRec: Pre-training and Transferring Multi-modal Interest-aware Sequence
    Representation for Recommendation." In ACM MM 2023.

Reference code:
    https://github.com/gimpong/MM23-MISSRec

Departures from the reference code (each keeps the reported numbers' computation unless said):

* Interest discovery clusters on the model's device with :mod:`recbole_mm.clustering`.
  ``kmeans_faithful: True`` (default) reproduces the reference's TorchPQ minibatch k-means with its quirks
  (one pass, random init from the first minibatch, unshuffled batches, empty cluster -> 0, non-negative
  centroids); ``False`` runs proper Lloyd k-means (``kmeans_iters`` iterations, signed centroids, on the
  ``kmeans_backend`` of :func:`recbole_mm.clustering.kmeans`).
  The faithful k-means can collapse the interests: its single pass leaves every cluster that gets no token in
  its first assignment at a zero centroid, and a signed token is mostly nearer to zero than to a mean of
  absolute values. On ml-100k_mm (1,682 movies, 215 distinct genre texts; K = 1,682 of T = 3,364 tokens) at
  the default width 300, about 650 clusters end empty and all 3,364 tokens share one interest, whose centroid
  is zero, at the discovery before epoch 0 (torch seeds 0-2; 1 to 64 interests at width 32): every
  sequence's encoder input is then zero vectors and the interest branch a constant. Lloyd's k-means keeps
  about 1,050 interests there. The default stays ``True``, chosen on validation: under the CPU results protocol
  (``results/sequential.md``, 3 seeds) valid NDCG@10 was 0.0563 +- 0.0019 faithful against 0.0529 +- 0.0013 Lloyd
  (test 0.0357 against 0.0370, within one standard deviation).
  ``interest_clustering: dpc_knn`` runs the reference's DPC-KNN instead (commented out in its code, perhaps what
  the paper describes), with ``max(ceil(knn_local_ratio * T), 1)`` neighbours as the reference sizes it; it costs
  ``O(T^2)`` arithmetic (blocked, so not ``O(T^2)`` memory), fine downstream, not at pre-training size.
* Interest deduplication is vectorised (sort, drop repeats, compact); same output as the reference's
  per-sequence ``torch.unique``: sorted ids, 0 first when present, right-padded with 0.
* Full ranking scores the catalogue in chunks of ``item_chunk_size`` items. The chunks' ID embeddings and the
  position embedding are read as slices of their weights (same values and gradients, PAD's row frozen): an
  embedding lookup's backward on CUDA reads a count back to the host.
* Feature tables are buffers of an :class:`~recbole_mm.model.layers.ItemFeatureBank` (not saved in
  checkpoints, rebuilt from the dataset); interest tables are persistent buffers (saved).
* Pre-training does the augmentation on the model device (the per-batch coin on the CPU generator). Item drop
  compacts the kept items without the UniSRec scatter quirk, and the augmented view uses the image features of
  its own (item-dropped) sequence, where the reference re-uses the original sequence's image features and interests.
* Multi-process training really all-reduces gradients (the reference's DDP trains each rank alone; its
  fine-tuning is single-GPU), clusters once on rank 0, then broadcasts, and scales each rank's loss terms so
  that the averaged gradient is the global batch's; pre-training gathers in-batch negatives across ranks.
* In training, interest tokens are padded to a width fixed at each discovery, at least the most a training
  sequence can have: ``modalities x`` the longest history of the dataset the model was built with (``+ 1`` for
  PAD's 0 when that is shorter than ``MAX_ITEM_LIST_LENGTH``), or the number of interest ids in use, PAD's 0
  included, rounded up to a power of two, whichever is smaller. The reference pads to the batch's widest set:
  here shapes stay static within an epoch and no training step reads a count back to the host (a device-side
  assertion guards the bound). Evaluation pads to the batch's widest set, as the reference does (its histories
  can be longer than the training ones). Padded tokens are masked as keys, so the sequence
  output is the reference's. The regulariser, kept as the reference computes it (padded positions
  included, so it depends on the width), sums the columns up to the reference's width, the batch's
  largest number of distinct ids (under torch.distributed, the global batch's), and gives its value.
* The single-modality pre-training branch works (the reference's has a ``pos_items_emb`` typo).
* ``pretrained_path`` loads the Transformer, position embedding, LayerNorm, adaptors and fusion factor
  by name and shape (the reference's 0-dim shared fusion factor becomes the ``[1]`` one here); a checkpoint
  of another model, or a shape mismatch, is an error.
* The k-means of epoch ``e`` is seeded with ``seed + e`` (the reference draws from numpy's global RNG).
  A model evaluated before any training epoch clusters once on first use.
* Kept as in the reference: the adaptors keep PyTorch's default ``nn.Linear`` init (the reference creates
  them after applying its N(0, 0.02) / zero-bias init), so PAD and an item missing a modality (zero features),
  represented by the adaptor bias alone, are non-zero vectors before ``F.normalize``; with a zero bias their
  cosines' gradients reach about 1e8 at the first step (ml-100k_mm) and Adam freezes the biases.
  The ID embedding's PAD row is zero, as in the reference. ``attn_dropout_prob`` is read nowhere.
  Also kept: the interest encoder's LayerNorm (eps 1e-12) normalises a zero vector wherever dropout drops all
  attention weights of a padded interest position, or all of a sequence's interests have zero centroids; its
  bias gradients then reach about 1e11 (Lloyd) to 2e15 (collapsed faithful k-means) in a first step on
  ml-100k_mm at the defaults; Adam absorbs them.
* ``seq_mm_fusion: contextual`` (the reference's alternative to ``add``; the released runs use ``add``): each
  item gives one decoder token per modality (modality-major, ``M x L`` tokens, position and ID added to each), a
  token whose item lacks that modality is masked as a key, and the output is read at the first modality's last
  item, as in the reference. Departure: a sequence none of whose items has any modality would have every key
  masked (NaN attention in the reference); its real items' tokens stay unmasked instead.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_mm.clustering import dpc_knn, kmeans, kmeans_reference
from recbole_mm.model.abstract_recommender import MultiModalSequentialRecommender
from recbole_mm.model.distributed import broadcast_from_rank0, is_rank0

MODAL_TYPES = {"img_text": ("text", "image"), "text": ("text",), "img": ("image",)}
ITEM_FUSIONS = ("static", "dynamic_shared", "dynamic_instance")
SEQ_FUSIONS = ("add", "contextual")
INTEREST_CLUSTERINGS = ("kmeans", "dpc_knn")
# Reference parameter/buffer names per modality (kept so state_dict keys match the reference's).
PREFIX = {"text": ("text", "plm"), "image": ("img", "img")}


class MISSRec(MultiModalSequentialRecommender):
    r"""Multi-modal interest-aware sequence representation.

    Items are the sum of linearly adapted text and image features (+ position, + ID when transductive);
    a non-causal Transformer decoder reads them with cross-attention to an encoder over the user's
    *interest tokens* (centroids of a global clustering of all item-modality tokens, re-clustered before
    every epoch). Candidates are scored by a dynamic fusion of per-modality cosine logits.
    """

    TRAIN_STAGES = ("pretrain", "transductive_ft", "inductive_ft")
    # what fine-tuning takes from a pre-trained checkpoint, and freezes among it
    TRANSFERRED = ("position_embedding.", "trm_model.", "LayerNorm.", "text_adaptor.", "img_adaptor.", "fusion_factor")
    FROZEN = ("position_embedding", "trm_model")

    def __init__(self, config, dataset):
        super(MISSRec, self).__init__(config, dataset)  # train_stage, pretrained_path, item_chunk_size
        self.n_layers = config["n_layers"]  # encoder + decoder layers
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.temperature = config["temperature"]
        self.gamma = config["gamma"]  # interest regulariser weight
        self.lam = config["lambda"]  # pre-training L_ss weight
        self.item_drop_ratio = config["item_drop_ratio"]
        self.item_drop_coefficient = config["item_drop_coefficient"]
        self.word_drop_ratio = 0.2  # reference: fixed probability of the word-dropped text per position
        self.interest_ratio = config["interest_ratio"]
        self.kmeans_faithful = config["kmeans_faithful"]
        self.kmeans_iters = config["kmeans_iters"]
        self.kmeans_backend = config["kmeans_backend"]
        self.interest_clustering = config["interest_clustering"]
        self.knn_local_ratio = config["knn_local_ratio"]
        self.item_mm_fusion = config["item_mm_fusion"]
        self.seq_mm_fusion = config["seq_mm_fusion"]
        self.seed = config["seed"]
        self.modal_type = config["modal_type"]
        self._check_config(config)
        self.modalities = MODAL_TYPES[self.modal_type]
        self.use_id = self.train_stage == "transductive_ft" and config["id_type"] != "none"
        why = f"modal_type '{self.modal_type}' and train_stage '{self.train_stage}'"
        self.features = self.feature_bank(dataset, self._needed_modalities(), why)

        # sequence side
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        for modality in self.modalities:
            adaptor = self.new_adaptor(self.features.dim(modality), self.hidden_size)  # PyTorch init, as reference
            setattr(self, f"{PREFIX[modality][0]}_adaptor", adaptor)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0) if self.use_id else None
        self.trm_model = nn.Transformer(
            d_model=self.hidden_size,
            nhead=self.n_heads,
            num_encoder_layers=self.n_layers // 2,
            num_decoder_layers=self.n_layers // 2,
            dim_feedforward=self.inner_size,
            dropout=self.hidden_dropout_prob,
            activation=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            batch_first=True,
            norm_first=False,
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        if len(self.modalities) > 1:
            size = self.n_items if self.item_mm_fusion == "dynamic_instance" else 1
            self.fusion_factor = nn.Parameter(torch.zeros(size))  # 0 = plain mean of the modality logits

        # interests: K centroids (+ row 0 for padding) and each item-modality token's interest id
        n_tokens = (self.n_items - 1) * len(self.modalities)
        self.n_interests = max(math.ceil(self.interest_ratio * n_tokens), 1)
        self.knn_local_size = max(math.ceil(self.knn_local_ratio * n_tokens), 1)  # DPC-KNN neighbours
        self.register_buffer("interest_embeddings", torch.zeros(self.n_interests + 1, self.hidden_size))
        for modality in self.modalities:
            self.register_buffer(self.lookup_name(modality), torch.zeros(self.n_items, dtype=torch.long))
        self.register_buffer("interest_epoch", torch.tensor(-1))  # epoch of the last discovery, -1: never
        self._clustered = False  # mirrors interest_epoch >= 0 without reading the buffer back every step
        self.interest_width = None  # training width, set by every discovery (see _interests_changed)
        lengths = dataset.inter_feat[self.ITEM_SEQ_LEN] if self.ITEM_SEQ_LEN in dataset.inter_feat else None
        longest = self.max_seq_length if lengths is None or len(lengths) == 0 else int(lengths.max())
        self.longest_history = min(longest, self.max_seq_length)

        self.init_weights()
        if self.pretrained_path:
            self.load_pretrained(self.pretrained_path)

    # ------------------------------------------------------------------ set-up
    def _check_config(self, config):
        def bad(key, expected):
            self.bad_config(key, expected, config[key])

        if not isinstance(self.n_layers, int) or self.n_layers < 2 or self.n_layers % 2:
            bad("n_layers", "an even int >= 2 (n_layers/2 encoder and n_layers/2 decoder layers)")
        if config["modal_type"] not in MODAL_TYPES:
            bad("modal_type", f"one of {sorted(MODAL_TYPES)}")
        if config["id_type"] not in ("id", "none"):
            bad("id_type", "'id' or 'none'")
        if self.seq_mm_fusion not in SEQ_FUSIONS:
            bad("seq_mm_fusion", f"one of {list(SEQ_FUSIONS)}")
        if self.item_mm_fusion not in ITEM_FUSIONS:
            bad("item_mm_fusion", f"one of {list(ITEM_FUSIONS)}")
        if not 0 < self.interest_ratio <= 1:
            bad("interest_ratio", "a float in (0, 1]")
        if self.interest_clustering not in INTEREST_CLUSTERINGS:
            bad("interest_clustering", f"one of {list(INTEREST_CLUSTERINGS)}")
        if not 0 < self.knn_local_ratio <= 1:
            bad("knn_local_ratio", "a float in (0, 1]")
        if config["loss_type"] != "CE":
            bad("loss_type", "'CE'")

    def _needed_modalities(self):
        if self.train_stage == "pretrain" and "text" in self.modalities:
            return list(self.modalities) + ["text_aug"]  # the word-dropped text of the augmented view
        return list(self.modalities)

    @staticmethod
    def lookup_name(modality):
        """Name of the ``[n_items]`` buffer mapping each item's ``modality`` token to its interest id."""
        return f"{PREFIX[modality][1]}_interest_lookup_table"

    def adaptor(self, modality):
        return getattr(self, f"{PREFIX[modality][0]}_adaptor")

    def adapt_pretrained_state(self, state):
        """The reference's ``dynamic_shared`` fusion factor is a 0-dim tensor: it becomes this model's ``[1]``."""
        factor = state.get("fusion_factor")
        if factor is not None and factor.dim() == 0 and self.fusion_factor.shape == (1,):
            state = {**state, "fusion_factor": factor.reshape(1)}
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._interests_changed()

    def _interests_changed(self):
        r"""After a discovery or a load: whether interests exist, and ``interest_width``, the interest tokens per
        training sequence. That is at least the most a training sequence can hold: ``modalities x`` its longest
        history (``+ 1`` for PAD's 0 when that history is shorter than ``MAX_ITEM_LIST_LENGTH``), or fewer when
        fewer interest ids are in use (PAD's 0 included; the reference-compatible k-means leaves many clusters
        empty). The count in use is rounded up to a power of two, so that a compiled loss sees few distinct
        widths over a run. Setting ``interest_width`` to None pads to the batch's widest set instead, as the
        reference does (a host sync per step); evaluation always does."""
        self._clustered = int(self.interest_epoch) >= 0
        tables = torch.cat([getattr(self, self.lookup_name(m)) for m in self.modalities])
        in_use = int(tables.unique().numel())
        most = len(self.modalities) * self.longest_history + int(self.longest_history < self.max_seq_length)
        self.interest_width = min(most, 1 << (in_use - 1).bit_length())

    # ------------------------------------------------------------------ interests
    def on_epoch_start(self, epoch: int) -> None:
        """Before every training epoch: :meth:`discover_interests` with the current adaptors."""
        self.discover_interests(epoch)

    @torch.no_grad()
    def item_tokens(self, modality, item_ids=None):
        r"""Adapted features ``[n, hidden]`` of ``item_ids`` (all items without PAD when None)."""
        table = getattr(self.features, modality)
        rows = table[1:] if item_ids is None else table[item_ids]
        return self.adaptor(modality)(rows)

    @torch.no_grad()
    def discover_interests(self, epoch=0):
        r"""Cluster every item-modality token (current adaptors) into ``n_interests`` interests.

        Fills ``interest_embeddings[1:]`` with the centroids and the per-modality lookup tables with
        ``1 + cluster id`` (row 0, PAD, stays interest 0). Under torch.distributed, rank 0 clusters and
        broadcasts the tables.
        """
        if is_rank0():
            was_training = self.training
            self.eval()
            tokens = torch.cat([self.item_tokens(m) for m in self.modalities], dim=0)  # [T, hidden]
            self.train(was_training)
            seed = self.seed + epoch
            if self.interest_clustering == "dpc_knn":
                result = dpc_knn(tokens, self.n_interests, local_size=self.knn_local_size)
            elif self.kmeans_faithful:
                result = kmeans_reference(tokens, self.n_interests, seed=seed)
            else:
                iters, backend = self.kmeans_iters, self.kmeans_backend
                result = kmeans(tokens, self.n_interests, n_iter=iters, seed=seed, backend=backend)
            self.interest_embeddings[1:] = result.centroids.to(self.interest_embeddings)
            labels = result.labels.to(self.interest_embeddings.device).view(len(self.modalities), -1) + 1
            for modality, ids in zip(self.modalities, labels):
                getattr(self, self.lookup_name(modality))[1:] = ids
        names = ["interest_embeddings"] + [self.lookup_name(m) for m in self.modalities]
        broadcast_from_rank0(getattr(self, name) for name in names)
        self.interest_epoch.fill_(epoch)
        self._interests_changed()

    def interest_ids(self, item_seq, width=None):
        r"""Sorted unique interest ids of each sequence over all modalities, right-padded with 0.

        Args:
            item_seq: ``[B, L]`` item ids (0 = PAD).
            width: number of columns, at least the batch's largest number of distinct ids (no host sync; a
                device-side assertion fails otherwise); None: that largest number, as the reference pads (read
                back to the host).

        Returns:
            ``[B, Nq]`` long; ``Nq`` is ``width``, or the largest number of distinct ids in the batch.
        """
        ids = torch.cat([getattr(self, self.lookup_name(m))[item_seq] for m in self.modalities], dim=1)
        ids, _ = ids.sort(dim=1)
        repeat = torch.zeros_like(ids, dtype=torch.bool)
        repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
        order = torch.argsort(repeat.to(torch.int8), dim=1, stable=True)  # distinct ids first, in order
        n_unique = (~repeat).sum(dim=1)  # [B]
        if width is None:
            width = int(n_unique.max())
        else:
            torch._assert_async(n_unique.max() <= width, "MISSRec: a sequence has more interests than interest_width")
        order = F.pad(order, (0, max(width - order.size(1), 0)), value=0)
        compact = ids.gather(1, order[:, :width])
        position = torch.arange(width, device=ids.device).unsqueeze(0)
        return compact.masked_fill(position >= n_unique.unsqueeze(1), 0)

    @staticmethod
    def reference_width(memory_pad):
        r"""The width the reference pads a batch's interest tokens to: the largest number of distinct ids of a
        sequence, PAD's 0 included (``[]`` long tensor). ``memory_pad``: ``[B, Nq]``, True at id 0; a sequence
        holds 0 exactly when its first column is 0, the ids being sorted."""
        return ((~memory_pad).sum(dim=1) + memory_pad[:, 0]).max()

    def interest_regularizer(self, memory, memory_pad, width=None):
        r"""The reference's "interest orthogonal regularization".

        ``R = sum_b ||w_b * sum_{j < W} memory[b, j]||^2 / hidden`` with ``w_b`` = non-pad interests / ``W``,
        ``W`` the reference's width (:meth:`reference_width` of this batch, or ``width``): the sum runs over
        padded positions too, as in the reference, up to the width the reference pads to.
        """
        if width is None:
            width = self.reference_width(memory_pad)
        columns = (torch.arange(memory_pad.size(1), device=memory.device) < width).to(memory.dtype)  # [Nq]
        weight = (~memory_pad).sum(dim=1, keepdim=True).to(memory.dtype) / width  # [B, 1]
        pooled = weight * torch.einsum("bjh,j->bh", memory, columns)  # [B, hidden]
        return pooled.pow(2).sum() / self.hidden_size

    # ------------------------------------------------------------------ sequence encoder
    def forward(self, item_seq, item_seq_len, text_aug_mask=None):
        r"""Encode sequences.

        Args:
            item_seq: ``[B, L]`` item ids.
            item_seq_len: ``[B]`` lengths.
            text_aug_mask: optional ``[B, L]`` bool; where True the word-dropped text feature replaces the text.

        Returns:
            ``(seq_output [B, hidden] L2-normalised, memory [B, Nq, hidden], memory_pad [B, Nq] bool)``,
            ``Nq = interest_width`` in training (see :meth:`_interests_changed`), the batch's widest set in
            evaluation.
        """
        if not self._clustered:  # never clustered (an untrained model): cluster once now
            self.discover_interests()
        interest_ids = self.interest_ids(item_seq, self.interest_width if self.training else None)
        memory_pad = interest_ids == 0
        memory = self.trm_model.encoder(self.interest_embeddings[interest_ids], src_key_padding_mask=memory_pad)

        tokens, key_pad = self.decoder_tokens(item_seq, text_aug_mask)
        tokens = self.dropout(self.LayerNorm(tokens))
        output = self.trm_model.decoder(
            tokens, memory, tgt_key_padding_mask=key_pad, memory_key_padding_mask=memory_pad
        )
        seq_output = self.gather_indexes(output, item_seq_len - 1)  # contextual: the first modality's token
        return F.normalize(seq_output, dim=-1), memory, memory_pad

    def decoder_tokens(self, item_seq, text_aug_mask=None):
        r"""The decoder's item tokens (before LayerNorm and dropout) and their key padding mask.

        ``add``: ``position + sum of adapted modality features (+ ID)`` per item, ``[B, L, hidden]``, masked at PAD.
        ``contextual``: one token per modality and item, modality-major, ``[B, M*L, hidden]``, position (and ID)
        added to each; masked at PAD and where the item lacks the modality (unless that masks a whole sequence).

        Returns:
            ``(tokens, key_pad)``: ``[B, L or M*L, hidden]`` and bool ``[B, L or M*L]``.
        """
        position = self.embedding_rows(self.position_embedding, slice(0, item_seq.size(1))).unsqueeze(0)  # [1, L, h]
        pad = item_seq == 0
        adapted = []
        for modality in self.modalities:
            features = self.features(modality, item_seq)
            if modality == "text" and text_aug_mask is not None:
                features = torch.where(text_aug_mask.unsqueeze(-1), self.features("text_aug", item_seq), features)
            adapted.append(self.adaptor(modality)(features))
        item_id = self.item_embedding(item_seq) if self.use_id else None
        if self.seq_mm_fusion == "add":
            tokens = position
            for part in adapted:
                tokens = tokens + part
            return (tokens if item_id is None else tokens + item_id), pad
        tokens = torch.stack(adapted, dim=1) + position.unsqueeze(1)  # [B, M, L, hidden]
        if item_id is not None:
            tokens = tokens + item_id.unsqueeze(1)
        absent = torch.stack([~self.features.present(m, item_seq) for m in self.modalities], dim=1)  # [B, M, L]
        key_pad = (pad.unsqueeze(1) | absent).flatten(1)
        key_pad = torch.where(key_pad.all(dim=1, keepdim=True), pad.repeat(1, len(self.modalities)), key_pad)
        return tokens.flatten(1, 2), key_pad

    # ------------------------------------------------------------------ candidate scoring
    def _fused_logits(self, seq_output, item_ids, pairwise=False):
        r"""Fused cosine logits (before 1/tau) of sequences ``[B, hidden]``.

        Args:
            item_ids: candidates, ``[C]`` or a ``slice`` of item ids (result ``[B, C]``) or, with ``pairwise``,
                ``[B]`` (result ``[B]``). A slice reads the ID embedding rows without a lookup, whose backward on
                CUDA would read a count back to the host.
        """

        def cosine(item_emb):
            item_emb = F.normalize(item_emb, dim=-1)
            return (seq_output * item_emb).sum(dim=-1) if pairwise else seq_output @ item_emb.t()

        if len(self.modalities) == 1:
            item = self.adaptor(self.modalities[0])(self.features(self.modalities[0], item_ids))
            if self.use_id:
                item = item + self.embedding_rows(self.item_embedding, item_ids)
            return cosine(item)
        logits = torch.stack([cosine(self.adaptor(m)(self.features(m, item_ids))) for m in self.modalities], dim=-1)
        if self.item_mm_fusion == "static":
            fused = logits.mean(dim=-1)
        else:  # softmax over modalities of alpha * logit; alpha shared (a scalar) or per candidate item
            alpha = self.fusion_factor if self.item_mm_fusion == "dynamic_shared" else self.fusion_factor[item_ids]
            weights = torch.softmax(alpha.unsqueeze(-1) * logits, dim=-1)
            fused = (weights * logits).sum(dim=-1)
        if self.use_id:
            fused = (cosine(self.embedding_rows(self.item_embedding, item_ids)) + 2 * fused) / 3
        return fused

    def item_logits(self, seq_output, item_ids=None):
        r"""``[B, C]`` logits / temperature; all items (PAD included) in chunks when ``item_ids`` is None."""
        if item_ids is not None:
            return self._fused_logits(seq_output, item_ids) / self.temperature
        return self.score_all_items(seq_output, lambda items: self._fused_logits(seq_output, items)) / self.temperature

    # ------------------------------------------------------------------ losses and prediction
    def calculate_loss(self, interaction):
        r"""``CE(logits over all items, target) + gamma * R`` (fine-tuning), or :meth:`pretrain_loss`.

        Under torch.distributed (each rank holding a shard of the global batch, gradients averaged over the
        ranks) the terms are scaled as in :meth:`pretrain_loss`, so the averaged gradient is the global batch's.
        """
        if self.train_stage == "pretrain":
            return self.pretrain_loss(interaction)
        seq_output, memory, memory_pad = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        loss = F.cross_entropy(self.item_logits(seq_output), interaction[self.POS_ITEM_ID])
        width = self.reference_width(memory_pad)
        share = self.rank_share(seq_output.size(0), seq_output.device)
        share.all_reduce_max(width)
        return share.scale * loss + self.gamma * share.world * self.interest_regularizer(memory, memory_pad, width)

    def predict(self, interaction):
        seq_output, _, _ = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self._fused_logits(seq_output, interaction[self.ITEM_ID], pairwise=True) / self.temperature

    def full_sort_predict(self, interaction):
        seq_output, _, _ = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.item_logits(seq_output)

    # ------------------------------------------------------------------ pre-training
    def augment(self, item_seq, item_seq_len):
        r"""The augmented view of a batch: item drop (probability ``item_drop_coefficient``) or word drop.

        Returns:
            ``(item_seq [B, L], item_seq_len [B], text_aug_mask [B, L] bool or None)``.
        """
        device = item_seq.device
        if float(torch.rand(())) < self.item_drop_coefficient:  # the coin on the CPU generator: no device sync
            position = torch.arange(item_seq.size(1), device=device).unsqueeze(0)
            keep = torch.rand(item_seq.shape, device=device) >= self.item_drop_ratio
            keep = (keep | (position == 0)) & (item_seq != 0)
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept items first, in order
            new_len = keep.sum(dim=1)
            new_seq = item_seq.gather(1, order).masked_fill(position >= new_len.unsqueeze(1), 0)
            return new_seq, new_len, None
        if "text" not in self.modalities:
            return item_seq, item_seq_len, None
        return item_seq, item_seq_len, torch.rand(item_seq.shape, device=device) < self.word_drop_ratio

    def pretrain_loss(self, interaction):
        r"""``L_si + lambda * L_ss + gamma * (R + R_aug)`` with in-batch negatives.

        Under torch.distributed each rank holds a shard of the global batch: the positives and augmented
        views of all ranks are gathered (the views with gradients) as candidates, and each term is scaled so
        that the ranks' losses average to the loss of the global batch (CE terms by ``n_rank * W / N``; the
        regulariser, a sum over the batch, by ``W``). The regulariser of a sequence depends on the width the
        reference pads to, which is the global batch's there.
        """
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        pos_items = interaction[self.POS_ITEM_ID]
        aug_seq, aug_len, aug_mask = self.augment(item_seq, item_seq_len)
        seq_output, memory, memory_pad = self.forward(item_seq, item_seq_len)
        aug_output, aug_memory, aug_pad = self.forward(aug_seq, aug_len, aug_mask)
        share = self.rank_share(seq_output.size(0), seq_output.device)
        widths = torch.stack([self.reference_width(memory_pad), self.reference_width(aug_pad)])
        share.all_reduce_max(widths)
        reg = self.interest_regularizer(memory, memory_pad, widths[0])
        reg = reg + self.interest_regularizer(aug_memory, aug_pad, widths[1])

        labels = torch.arange(seq_output.size(0), device=seq_output.device) + share.offset
        pos_items = share.gather(pos_items, differentiable=False)
        aug_output = share.gather(aug_output, differentiable=True)
        loss_si = F.cross_entropy(self._fused_logits(seq_output, pos_items) / self.temperature, labels)
        loss_ss = F.cross_entropy(seq_output @ aug_output.t() / self.temperature, labels)
        return share.scale * (loss_si + self.lam * loss_ss) + self.gamma * share.world * reg

