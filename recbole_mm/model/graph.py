"""The graph family base: user-item recommenders that propagate over normalised sparse user-item operators.

:class:`GraphRecommender` builds, once, from the training interactions of the dataset it is given:

* ``ui_operator`` (``[U, I]``) and ``iu_operator`` (``[I, U]``): the binary interaction matrix ``R`` and its
  transpose, each scaled on its row side by ``(deg + eps)^-1/2`` (see :func:`row_normalised`), as torch sparse
  tensors (no dense ``U x I`` matrix is ever formed);
* the training interactions as CSR index buffers (``train_indptr``, ``train_items``), from which
  :meth:`GraphRecommender.observed_pairs` lists the observed items of a batch of users.

It offers the propagation helper (:func:`propagate`), users' preference rows over all items with the
observed items zeroed, computed in item chunks (:meth:`GraphRecommender.masked_preference_rows`), and full-sort
scoring from cached final embeddings (:meth:`GraphRecommender.full_sort_predict`). A model supplies
``compute_embeddings()`` returning ``(user_embeddings [U, d], item_embeddings [I, d])``.
"""

import warnings
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_mm.data.dataset import MultiModalDataset


def sparse_pairs(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """Binary ``[n_rows, n_cols]`` sparse COO matrix with ones at ``(rows[k], cols[k])`` (duplicates merged).

    Args:
        rows, cols: ``LongTensor [nnz]`` on any device.
    """
    indices = torch.stack([rows, cols]).long()
    if indices.shape[1]:
        flat = torch.unique(indices[0] * n_cols + indices[1])
        indices = torch.stack([flat // n_cols, flat % n_cols])
    values = torch.ones(indices.shape[1], dtype=torch.float32, device=rows.device)
    return torch.sparse_coo_tensor(indices, values, (n_rows, n_cols), check_invariants=False).coalesce()


def row_normalised(matrix: torch.Tensor, power: float = -0.5, eps: float = 1e-8) -> torch.Tensor:
    """``diag((rowsum + eps)^power) @ matrix`` for a sparse COO ``matrix [n, m]``: each row scaled by its degree
    to ``power`` (``-0.5``: the row-side half of a symmetric normalisation, as MMSSL scales its operators;
    ``-1``: a row mean). Empty rows stay zero.

    Returns:
        coalesced sparse COO ``[n, m]`` float32.
    """
    matrix = matrix.coalesce()
    rows = matrix.indices()[0]
    degree = torch.zeros(matrix.shape[0], dtype=torch.float64, device=matrix.device)
    degree.index_add_(0, rows, matrix.values().double())
    scale = (degree + eps).pow(power)
    values = (matrix.values().double() * scale[rows]).float()
    return torch.sparse_coo_tensor(matrix.indices(), values, matrix.shape, check_invariants=False).coalesce()


class _OperatorProduct(torch.autograd.Function):
    """``A @ x`` with ``A`` sparse CSR and its stored transpose for the backward (torch's sparse backward would
    transpose and coalesce ``A`` at every call)."""

    @staticmethod
    def forward(ctx, matrix, transposed, x):
        ctx.transposed = transposed
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.transposed @ grad


class SparseOperator(nn.Module):
    """A fixed sparse ``[n, m]`` operator ``A`` (no gradient), kept as CSR with its CSR transpose; calling it on
    ``x [m, d]`` gives ``A @ x`` ``[n, d]``, differentiable in ``x``.

    Constructor Args:
        matrix: sparse COO ``[n, m]`` float32.
    """

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        matrix = matrix.coalesce()
        self.shape = tuple(matrix.shape)
        with warnings.catch_warnings():  # torch marks sparse CSR as beta; products and transposes are stable
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            self.register_buffer("matrix", matrix.to_sparse_csr(), persistent=False)
            self.register_buffer("transposed", matrix.t().coalesce().to_sparse_csr(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            return self.matrix @ x
        return _OperatorProduct.apply(self.matrix, self.transposed, x)

    def to_dense(self) -> torch.Tensor:
        return self.matrix.to_dense()


def propagate(operator: SparseOperator, x: torch.Tensor) -> torch.Tensor:
    """One hop: ``operator [n, m] @ x [m, d] -> [n, d]``."""
    return operator(x)


class GraphRecommender(GeneralRecommender):
    """Base of the graph recommenders (pairwise BPR input).

    Attributes (rebuilt from the dataset, not saved in checkpoints):
        ui_operator: :class:`SparseOperator` ``[U, I]``, ``D_u^-1/2 R``.
        iu_operator: :class:`SparseOperator` ``[I, U]``, ``D_i^-1/2 R^T``.
        train_indptr: ``[U + 1]`` long, CSR row pointers of the training interactions.
        train_items: ``[nnz]`` long, CSR column indices (items of each user, sorted).

    Config keys read here: ``pref_chunk_items`` (items per chunk of :meth:`masked_preference_rows`).

    Class attributes read by :mod:`recbole_mm.registry`: ``dataset_class`` (the family's dataset) and
    ``trainer_class`` (None: RecBole's trainer; a model with its own loop names its class in
    :mod:`recbole_mm.trainer`).
    """

    input_type = InputType.PAIRWISE
    dataset_class = MultiModalDataset
    trainer_class = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        coo = dataset.inter_matrix(form="coo").astype(np.float32)
        users = torch.from_numpy(coo.row.astype(np.int64))
        items = torch.from_numpy(coo.col.astype(np.int64))
        ui = sparse_pairs(users, items, self.n_users, self.n_items)
        self.ui_operator = SparseOperator(row_normalised(ui))
        self.iu_operator = SparseOperator(row_normalised(ui.t()))
        csr = self.ui_operator.matrix
        self.register_buffer("train_indptr", csr.crow_indices().long(), persistent=False)
        self.register_buffer("train_items", csr.col_indices().long(), persistent=False)
        self.pref_chunk_items = int(config["pref_chunk_items"] or 4096)
        self._cache: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    # ----------------------------------------------------------------------------------------------- graph helpers
    def observed_pairs(self, users: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training items of ``users [B]``: ``(row, item)`` long tensors ``[nnz_B]``, ``row`` indexing ``users``."""
        starts, ends = self.train_indptr[users], self.train_indptr[users + 1]
        counts = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        offsets = torch.arange(int(counts.sum()), device=users.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        return rows, self.train_items[torch.repeat_interleave(starts, counts) + offsets]

    def masked_preference_rows(
        self, user_vectors: torch.Tensor, item_vectors: torch.Tensor, users: torch.Tensor
    ) -> torch.Tensor:
        """Users' preference rows over all items, observed (training) items and ``[PAD]`` zeroed, L2-normalised.

        ``s_u = normalize((user_vectors[u] . item_vectors^T) * (1 - R_u))``, computed ``pref_chunk_items`` items at
        a time; the interaction matrix is never densified (the observed entries are zeroed by index).

        Args:
            user_vectors: ``[B, d]`` (rows of ``users``).
            item_vectors: ``[I, d]``.
            users: ``[B]`` long, the user ids of the rows.

        Returns:
            ``[B, I]``, differentiable in both inputs.
        """
        scores = self.masked_scores(user_vectors, item_vectors, users, 0.0)
        return F.normalize(scores, p=2, dim=1)

    def masked_scores(
        self, user_vectors: torch.Tensor, item_vectors: torch.Tensor, users: torch.Tensor, fill: float
    ) -> torch.Tensor:
        """``[B, I]`` dot products ``user_vectors . item_vectors^T`` with the users' training items and the
        ``[PAD]`` item (id 0) set to ``fill``; written ``pref_chunk_items`` columns at a time into one output."""
        scores = user_vectors.new_empty(user_vectors.shape[0], item_vectors.shape[0])
        for start in range(0, item_vectors.shape[0], self.pref_chunk_items):
            end = start + self.pref_chunk_items
            scores[:, start:end] = user_vectors @ item_vectors[start:end].t()
        rows, items = self.observed_pairs(users)
        scores.index_put_((rows, items), scores.new_full((), fill))
        scores[:, 0] = fill
        return scores

    # -------------------------------------------------------------------------------------------------- scoring
    def compute_embeddings(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(user_embeddings [U, d], item_embeddings [I, d])``, the final representations scored by dot product."""
        raise NotImplementedError

    def train(self, mode: bool = True):
        self._cache = None  # parameters or graphs change in training; evaluation recomputes once
        return super().train(mode)

    def _final_embeddings(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            return self.compute_embeddings()
        if self._cache is None:
            with torch.no_grad():
                self._cache = self.compute_embeddings()
        return self._cache

    def predict(self, interaction):
        user_e, item_e = self._final_embeddings()
        return (user_e[interaction[self.USER_ID]] * item_e[interaction[self.ITEM_ID]]).sum(dim=-1)

    def full_sort_predict(self, interaction):
        """Scores ``[B * I]`` of every item for the batch's users (RecBole's flat layout), from embeddings
        computed once per evaluation (cached while the model stays in eval mode)."""
        user_e, item_e = self._final_embeddings()
        return (user_e[interaction[self.USER_ID]] @ item_e.t()).view(-1)
