"""Multi-modal product quantisation for the general search unit of the long-sequence models (SEMINAR's fast search).

SEMINAR (arXiv 2407.10714) scores a history item ``k`` against a target ``q`` over ``M`` modalities (query, id,
text, image, each ``d``-dimensional) with modality weights ``w``::

    score(q, k) = < sum_i w_i q_i , sum_j w_j k_j > = sum_ij w_i w_j <q_i, k_j>

Product quantisation splits every ``d``-vector into ``S`` sub-vectors of ``d / S`` dimensions and replaces sub-vector
``s`` of modality ``j`` by one of ``C`` codewords ``C_j^s[c]`` (k-means on that modality's item table, per sub-space,
with :func:`recbole_mm.clustering.kmeans`). The score becomes a sum of codeword inner products::

    score(q, k) ~ sum_ij w_i w_j sum_s < C_i^s[code_q(i, s)], C_j^s[code_k(j, s)] >

(the reference's offline study: ``inference/eval_seminar_recall.py`` of paper-submission-coder/SEMINAR; its
model-side ``multi_pq`` path is a placeholder with an untrained random codebook). For one target, the tables
``T[j, s, c] = w_j < sum_i w_i C_i^s[code_q(i, s)], C_j^s[c] >`` (``M x S x C`` numbers) turn the score of every
history item into ``M * S`` table look-ups of its stored codes: no ``d``-vector of a history item is read. With
the target's exact vectors instead of its codes (asymmetric distance), ``sum_i w_i q_i^s`` replaces the codeword
sum; both are offered.

Cost: building the tables is ``O(M * C * d)`` per target; scoring is ``M * S`` look-ups per history item, against
``M * d`` multiply-adds and ``4 * M * d`` bytes read per item for the exact score. Storage: ``M * S`` codes per item
(one byte each for ``C <= 256``), plus ``4 * M * S`` bytes per item for the int32 look-up positions cached when
scoring.

An index records the class name of the model it was built for and the shape of every table; loading it for
another model or for tables of other shapes raises :class:`RetrievalIndexError`.
"""

import os
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from recbole_mm.clustering import kmeans
from recbole_mm.errors import RecBoleMMError

INDEX_FORMAT = "recbole_mm.ProductQuantizer/1"
Query = Union[torch.Tensor, Mapping[str, torch.Tensor]]


class RetrievalIndexError(RecBoleMMError):
    """A product-quantisation index that does not fit: another model, other tables, other modalities, or bad input."""


def merged_query(vectors: Mapping[str, torch.Tensor], modalities: Sequence[str], weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i q_i``: ``[B, d]`` from ``vectors[m]`` ``[B, d]`` and ``weights`` ``[M]`` or ``[B, M]``."""
    stacked = torch.stack([vectors[m] for m in modalities], dim=1)  # [B, M, d]
    w = weights if weights.dim() == 2 else weights.unsqueeze(0).expand(stacked.shape[0], -1)
    return torch.einsum("bm,bmd->bd", w.to(stacked.dtype), stacked)


def exact_scores(
    tables: Mapping[str, torch.Tensor],
    query: Mapping[str, torch.Tensor],
    history_ids: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The exact score ``< sum_i w_i q_i, sum_j w_j k_j >`` of every history item: ``[B, L]``.

    Args:
        tables: modality -> ``[n_items, d]`` item table (the order of the keys is the modality order).
        query: modality -> ``[B, d]`` target vectors.
        history_ids: ``[B, L]`` item ids.
        weights: ``[M]`` or ``[B, M]`` modality weights.
    """
    modalities = list(tables)
    q = merged_query(query, modalities, weights)  # [B, d]
    w = weights if weights.dim() == 2 else weights.unsqueeze(0).expand(q.shape[0], -1)
    out = None
    for j, m in enumerate(modalities):  # sum_j w_j <q, k_j>: one gather of d floats per modality and item
        part = torch.bmm(F.embedding(history_ids, tables[m]), q.unsqueeze(-1)).squeeze(-1)  # [B, L]
        part = part * w[:, j : j + 1].to(part.dtype)
        out = part if out is None else out + part
    return out


class ProductQuantizer:
    """Per-modality product quantiser over item tables, scoring histories by table look-ups.

    Attributes:
        modalities: modality names, in the order of the tables given to :meth:`fit`.
        codebooks: ``[M, S, C, d / S]`` float32 codewords.
        codes: ``[n_items, M, S]`` codes of every item (uint8 for ``C <= 256``, else int16 / int32).
        model: class name of the model the index was built for (or ``None``).
        table_shapes: modality -> ``(n_items, d)`` of the tables the index was built from.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        codebooks: torch.Tensor,
        codes: torch.Tensor,
        model: Optional[str] = None,
        table_shapes: Optional[Mapping[str, Tuple[int, int]]] = None,
    ):
        if codebooks.dim() != 4 or codebooks.shape[0] != len(modalities):
            raise RetrievalIndexError(
                f"codebooks: expected [M={len(modalities)}, S, C, d/S], found {tuple(codebooks.shape)}"
            )
        if codes.dim() != 3 or tuple(codes.shape[1:]) != tuple(codebooks.shape[:2]):
            raise RetrievalIndexError(
                f"codes: expected [n_items, {codebooks.shape[0]}, {codebooks.shape[1]}], found {tuple(codes.shape)}"
            )
        self.modalities = list(modalities)
        self.codebooks = codebooks.float()
        self.codes = codes
        self.model = model
        self.table_shapes = {m: tuple(s) for m, s in (table_shapes or {}).items()}
        self._positions = None  # cached int32 [n_items, M*S]: code + C * (j*S + s)

    # ------------------------------------------------------------------ sizes
    @property
    def n_subspaces(self) -> int:
        return self.codebooks.shape[1]

    @property
    def n_codewords(self) -> int:
        return self.codebooks.shape[2]

    @property
    def dim(self) -> int:
        return self.codebooks.shape[1] * self.codebooks.shape[3]

    # ------------------------------------------------------------------ training and encoding
    @classmethod
    def fit(
        cls,
        tables: Mapping[str, torch.Tensor],
        n_subspaces: int = 16,
        n_codewords: int = 256,
        seed: int = 0,
        *,
        n_iter: int = 20,
        max_train_rows: Optional[int] = 65536,
        init: str = "kmeans++",
        model: Optional[str] = None,
        backend: str = "torch",
    ) -> "ProductQuantizer":
        """Train one codebook per modality and sub-space with k-means, then encode every item.

        Args:
            tables: modality -> ``[n_items, d]`` item table, row 0 the padding item (not used for training); every
                table has the same ``n_items`` and ``d``, and ``d`` is a multiple of ``n_subspaces``. The codebooks
                are trained on the tables' device; the index (codebooks, codes) lives on the CPU.
            n_subspaces: ``S``, sub-vectors per vector.
            n_codewords: ``C``, codewords per sub-space (at most the number of training rows).
            seed: seeds the row sample and the k-means initialisation.
            n_iter: k-means iterations.
            max_train_rows: train on a uniform sample of this many rows (``None``: all rows but the padding).
            init: k-means initialisation, ``'kmeans++'`` or ``'random'``.
            model: class name of the model whose tables these are (recorded, checked by :meth:`load`).
            backend: k-means backend (:func:`recbole_mm.clustering.kmeans`): ``'torch'``, ``'faiss'``, ``'cupy'``
                (CUDA; the sub-spaces are a batch of small problems) or ``'auto'``.
        """
        if not tables:
            raise RetrievalIndexError("fit: no tables given (expected modality -> [n_items, d])")
        shapes = {m: tuple(t.shape) for m, t in tables.items()}
        first = next(iter(shapes.values()))
        if any(len(s) != 2 or s != first for s in shapes.values()):
            raise RetrievalIndexError(f"fit: every table must be [n_items, d] with the same shape, found {shapes}")
        n, d = first
        if n_subspaces < 1 or d % n_subspaces:
            raise RetrievalIndexError(f"fit: n_subspaces must divide the table width {d}, found {n_subspaces}")
        rows = torch.arange(1, n)
        if max_train_rows is not None and len(rows) > max_train_rows:
            g = torch.Generator().manual_seed(seed)
            rows = rows[torch.randperm(len(rows), generator=g)[:max_train_rows]].sort().values
        if not 1 <= n_codewords <= len(rows):
            raise RetrievalIndexError(
                f"fit: n_codewords must be between 1 and the {len(rows)} training rows (items but the padding row 0), "
                f"found {n_codewords}"
            )
        books = []
        for k, (name, table) in enumerate(tables.items()):
            x = table.detach()[rows.to(table.device)].float()  # k-means runs where the table lives
            x = x.reshape(len(rows), n_subspaces, d // n_subspaces).transpose(0, 1)
            result = kmeans(x.contiguous(), n_codewords, n_iter=n_iter, seed=seed + k, init=init, backend=backend)
            books.append(result.centroids.float().cpu())
        codebooks = torch.stack(books)  # [M, S, C, d/S]
        index = cls(list(tables), codebooks, torch.zeros((0, len(tables), n_subspaces), dtype=torch.uint8), model)
        index.table_shapes = shapes
        index.codes = index.encode(tables)
        return index

    def encode(self, vectors: Mapping[str, torch.Tensor], chunk_rows: int = 16384) -> torch.Tensor:
        """Nearest codeword of every sub-vector: ``[n, M', S]`` codes for the given modalities, in index order.

        Args:
            vectors: modality -> ``[n, d]`` (a subset of the index's modalities, e.g. only ``query``).
        """
        unknown = [m for m in vectors if m not in self.modalities]
        if unknown:
            raise RetrievalIndexError(f"encode: modalities {unknown} are not in the index ({self.modalities})")
        names = [m for m in self.modalities if m in vectors]
        dtype = torch.uint8 if self.n_codewords <= 256 else torch.int16 if self.n_codewords <= 32768 else torch.int32
        out = []
        for name in names:
            x = vectors[name].detach().float().cpu()
            if x.dim() != 2 or x.shape[1] != self.dim:
                raise RetrievalIndexError(f"encode: '{name}' must be [n, {self.dim}], found {tuple(x.shape)}")
            book = self.codebooks[self.modalities.index(name)]  # [S, C, d/S]
            sq = (book * book).sum(-1)  # [S, C]
            codes = torch.empty((x.shape[0], self.n_subspaces), dtype=dtype)
            for start in range(0, x.shape[0], chunk_rows):
                sub = x[start : start + chunk_rows].reshape(-1, self.n_subspaces, book.shape[-1]).transpose(0, 1)
                dist = sq.unsqueeze(1) - 2 * torch.bmm(sub, book.transpose(1, 2))  # [S, rows, C] (+|x|^2, constant)
                codes[start : start + chunk_rows] = dist.argmin(-1).t().to(dtype)
            out.append(codes)
        return torch.stack(out, dim=1)

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[n, M, S]`` to the quantised vectors ``[n, M, d]``."""
        m = torch.arange(len(self.modalities)).view(1, -1, 1)
        s = torch.arange(self.n_subspaces).view(1, 1, -1)
        words = self.codebooks[m, s, codes.long()]  # [n, M, S, d/S]
        return words.reshape(codes.shape[0], len(self.modalities), self.dim)

    # ------------------------------------------------------------------ scoring
    def _weights(self, weights, batch: int) -> torch.Tensor:
        w = torch.as_tensor(weights, dtype=torch.float32)
        if w.dim() == 1:
            w = w.unsqueeze(0).expand(batch, -1)
        if w.shape != (batch, len(self.modalities)):
            raise RetrievalIndexError(
                f"weights: expected [{len(self.modalities)}] or [{batch}, {len(self.modalities)}] "
                f"(modalities {self.modalities}), found {tuple(w.shape)}"
            )
        return w

    def lookup_tables(self, query: Query, weights) -> torch.Tensor:
        """``T[b, j, s, c] = w_j < sum_i w_i q_i^s, C_j^s[c] >``: ``[B, M, S, C]`` float32.

        Args:
            query: codes ``[B, M, S]`` of the targets (symmetric: ``q_i^s`` is the codeword), or modality ->
                ``[B, d]`` exact target vectors (asymmetric).
            weights: ``[M]`` or ``[B, M]``.
        """
        if isinstance(query, torch.Tensor):
            if query.dim() != 3 or tuple(query.shape[1:]) != (len(self.modalities), self.n_subspaces):
                raise RetrievalIndexError(
                    f"query codes: expected [B, {len(self.modalities)}, {self.n_subspaces}], found {tuple(query.shape)}"
                )
            w = self._weights(weights, query.shape[0])
            words = self.reconstruct(query).reshape(query.shape[0], len(self.modalities), self.n_subspaces, -1)
            merged = torch.einsum("bm,bmsk->bsk", w, words)  # [B, S, d/S]
        else:
            missing = [m for m in self.modalities if m not in query]
            if missing:
                raise RetrievalIndexError(f"query vectors: modalities {missing} missing (index has {self.modalities})")
            batch = query[self.modalities[0]].shape[0]
            w = self._weights(weights, batch)
            merged = merged_query({m: query[m].float() for m in self.modalities}, self.modalities, w)
            merged = merged.reshape(batch, self.n_subspaces, -1)
        dots = torch.einsum("bsk,jsck->bjsc", merged, self.codebooks)
        return dots * w.view(w.shape[0], -1, 1, 1)

    def positions(self) -> torch.Tensor:
        """Cached int32 ``[n_items, M * S]``: the position of each item's code in a flattened look-up table."""
        if self._positions is None:
            offsets = torch.arange(len(self.modalities) * self.n_subspaces, dtype=torch.int32) * self.n_codewords
            self._positions = self.codes.reshape(self.codes.shape[0], -1).to(torch.int32) + offsets
        return self._positions

    def scores(self, query: Query, history_ids: torch.Tensor, weights, history_codes=None) -> torch.Tensor:
        """Quantised scores of the history items: ``[B, L]`` float32.

        Args:
            query: target codes ``[B, M, S]`` or modality -> ``[B, d]`` target vectors (see :meth:`lookup_tables`).
            history_ids: ``[B, L]`` item ids (their codes are the index's).
            weights: ``[M]`` or ``[B, M]`` modality weights.
            history_codes: optional ``[B, L, M, S]`` codes used instead of the items' (e.g. with a per-interaction
                query modality encoded by :meth:`encode`).
        """
        tables = self.lookup_tables(query, weights)  # [B, M, S, C]
        batch, width = tables.shape[0], len(self.modalities) * self.n_subspaces
        if history_ids.dim() != 2 or history_ids.shape[0] != batch:
            raise RetrievalIndexError(f"history_ids: expected [{batch}, L], found {tuple(history_ids.shape)}")
        if history_codes is None:
            n_items = self.codes.shape[0]
            if history_ids.numel() and (int(history_ids.max()) >= n_items or int(history_ids.min()) < 0):
                raise RetrievalIndexError(
                    f"history_ids: item ids must be in [0, {n_items}) (the index's items), found "
                    f"[{int(history_ids.min())}, {int(history_ids.max())}]"
                )
        length = history_ids.shape[1]
        lut = tables.reshape(batch, -1)
        out = torch.empty((batch, length), dtype=torch.float32)
        if history_codes is None:
            positions = self.positions()
        else:
            offsets = torch.arange(width, dtype=torch.int32) * self.n_codewords
            hc = history_codes.reshape(batch, length, width).to(torch.int32) + offsets
        for b in range(batch):  # one fused gather-and-sum per target: no [L, M*S] float temporary
            idx = positions.index_select(0, history_ids[b]) if history_codes is None else hc[b]
            out[b] = F.embedding_bag(idx, lut[b].unsqueeze(1), mode="sum").squeeze(1)
        return out

    def topk(
        self, query: Query, history_ids: torch.Tensor, weights, k: int, mask: Optional[torch.Tensor] = None, **kw
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best history positions by quantised score: ``(values [B, k], indices [B, k])``.

        Args:
            mask: ``[B, L]`` bool, True for real history entries (default: ``history_ids > 0``); masked positions
                score ``-inf``.
        """
        scores = self.scores(query, history_ids, weights, **kw)
        mask = history_ids > 0 if mask is None else mask
        scores = scores.masked_fill(~mask, float("-inf"))
        return scores.topk(min(k, scores.shape[1]), dim=1)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Write the index (codebooks, codes, model name, table shapes) to ``path`` atomically."""
        state = {
            "format": INDEX_FORMAT,
            "model": self.model,
            "modalities": self.modalities,
            "table_shapes": {m: list(s) for m, s in self.table_shapes.items()},
            "codebooks": self.codebooks,
            "codes": self.codes,
        }
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(
        cls, path: str, model: Optional[str] = None, table_shapes: Optional[Mapping[str, Tuple[int, int]]] = None
    ) -> "ProductQuantizer":
        """Read an index; with ``model`` / ``table_shapes`` given, check it was built for them.

        Raises:
            RetrievalIndexError: not an index file, built for another model, or for tables of other shapes or
                other modalities.
        """
        if not os.path.isfile(path):
            raise RetrievalIndexError(f"product-quantisation index {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != INDEX_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise RetrievalIndexError(f"{path}: not a product-quantisation index ({INDEX_FORMAT}), found {found!r}")
        if model is not None and state["model"] != model:
            raise RetrievalIndexError(
                f"{path}: the index was built for model {state['model']!r}, not {model!r}; build one for {model} "
                f"(ProductQuantizer.fit on its item tables)"
            )
        shapes = {m: tuple(s) for m, s in state["table_shapes"].items()}
        if table_shapes is not None:
            wanted = {m: tuple(s) for m, s in table_shapes.items()}
            if list(wanted) != list(shapes) or wanted != shapes:
                raise RetrievalIndexError(
                    f"{path}: the index was built for tables {shapes}, the model has {wanted}; rebuild the index "
                    f"(other modalities, widths or item counts)"
                )
        return cls(state["modalities"], state["codebooks"], state["codes"], state["model"], shapes)


def two_stage_topk(
    index: ProductQuantizer,
    tables: Mapping[str, torch.Tensor],
    query: Mapping[str, torch.Tensor],
    history_ids: torch.Tensor,
    weights: torch.Tensor,
    k: int,
    candidates: int,
    mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Quantised top-``candidates``, re-ranked by the exact score: ``(values [B, k], indices [B, k])`` into ``L``."""
    _, cand = index.topk(query, history_ids, weights, candidates, mask=mask)  # [B, K']
    ids = history_ids.gather(1, cand)
    exact = exact_scores(tables, query, ids, weights)
    keep = mask.gather(1, cand) if mask is not None else ids > 0
    exact = exact.masked_fill(~keep, float("-inf"))
    values, best = exact.topk(min(k, exact.shape[1]), dim=1)
    return values, cand.gather(1, best)


__all__ = ["ProductQuantizer", "RetrievalIndexError", "exact_scores", "merged_query", "two_stage_topk"]
