"""Chunked nearest-centroid assignment: the one pass over the data every k-means step is made of.

The ``rows x k`` distance matrix is never materialised beyond ``memory_budget_bytes``: the data is cut into
blocks of problems and rows whose temporaries fit the budget. Blocks of data living on another device (for
example a CPU tensor clustered on CUDA) are copied to the centroids' device one at a time, so data larger than
device memory streams through. A single CUDA float32 problem under TF32 skips the matrix altogether: the fused
Triton kernel of :mod:`recbole_mm.clustering.fused_assign` does the products and the argmin in one pass.
"""

import contextlib
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from recbole_mm.clustering import fused_assign
from recbole_mm.runtime import tf32_switch

DEFAULT_CPU_BUDGET = 32 * 2**20
MAX_CUDA_BUDGET = 4 * 2**30


class PassResult(NamedTuple):
    """What one pass returns (fields not asked for are ``None``).

    Attributes:
        labels: ``LongTensor [B, n]`` nearest centroid (``-1`` at padding).
        sums: ``[B, k, d]`` per-cluster sums of the (normalised, in cosine mode) points.
        counts: ``[B, k]`` per-cluster point counts (same dtype as ``sums``).
        dist: ``[B, n]`` float64 exact squared distance of each point to its centroid (0 at padding).
    """

    labels: Optional[torch.Tensor]
    sums: Optional[torch.Tensor]
    counts: Optional[torch.Tensor]
    dist: Optional[torch.Tensor]


def default_budget(device: torch.device) -> int:
    """Bytes of temporaries allowed per block: a quarter of free CUDA memory (at most 4 GiB), 32 MiB on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, MAX_CUDA_BUDGET))
    return DEFAULT_CPU_BUDGET


def block_shape(n_batch: int, n_points: int, k: int, dim: int, itemsize: int, budget: int):
    """Problems and rows per block so that the block's distances, its copy and its norms fit ``budget`` bytes."""
    per_row = itemsize * (2 * k + 2 * dim + 4)
    rows = max(1, budget // per_row)
    if rows >= n_points:
        return max(1, min(n_batch, rows // n_points)), n_points
    return 1, rows


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device):
    """CUDA float32 matrix products inside the block in TF32 (``precision='tf32'``) or full float32
    (``'highest'``, whatever the process-wide setting); nothing changes on other devices."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    name, value = tf32_switch(precision == "tf32")
    saved = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, saved)


def padded_operands(centroids: torch.Tensor):
    """``(||c||^2 [B, k'], c^T [B, d, k'])`` with ``k`` padded to ``k'``, a multiple of 8 on CUDA.

    cuBLAS needs 16-byte aligned rows for its fast (tensor-core) kernels: an odd ``k`` (MISSRec's 17,879) made the
    products about 3x slower on an H100. Padding columns score ``+inf``, so they are never the minimum.
    """
    n_batch, k, dim = centroids.shape
    pad = (-k) % 8 if centroids.is_cuda else 0
    c_sq = centroids.pow(2).sum(-1)
    c_t = centroids.transpose(1, 2)
    if pad:
        c_sq = F.pad(c_sq, (0, pad), value=float("inf"))
        c_t = F.pad(c_t, (0, pad))
    return c_sq, c_t.contiguous()


def fused_applies(centroids: torch.Tensor, precision: str) -> bool:
    """Whether a pass can use the fused kernel: one problem, TF32 products allowed and Triton can run."""
    return centroids.shape[0] == 1 and precision == "tf32" and fused_assign.available(centroids)


def load_block(x: torch.Tensor, b0: int, b1: int, r0: int, r1: int, device, dtype, cosine: bool) -> torch.Tensor:
    """Rows ``r0:r1`` of problems ``b0:b1`` on ``device`` in ``dtype`` (unit-normalised in cosine mode)."""
    block = x[b0:b1, r0:r1].to(device=device, dtype=dtype, non_blocking=True)
    return F.normalize(block, dim=-1) if cosine else block


def assign_pass(
    x: torch.Tensor,
    centroids: torch.Tensor,
    mask: Optional[torch.Tensor],
    *,
    budget: int,
    precision: str = "highest",
    cosine: bool = False,
    rows: Optional[slice] = None,
    want_labels: bool = True,
    want_sums: bool = False,
    want_dist: bool = False,
    fused: bool = True,
) -> PassResult:
    """Assign the points of ``x`` to their nearest centroid, block by block.

    Args:
        x: ``[B, n, d]`` data on any device.
        centroids: ``[B, k, d]`` on the compute device (unit rows in cosine mode).
        mask: bool ``[B, n]`` real points, or ``None``.
        budget: bytes of temporaries allowed per block.
        precision: ``'highest'`` or ``'tf32'`` (CUDA float32 products only; a single CUDA float32 problem then
            uses the fused Triton kernel when :func:`fused_applies`).
        cosine: normalise the points (spherical k-means).
        rows: restrict the pass to these rows of every problem (mini-batch mode).
        want_labels, want_sums, want_dist: which outputs to compute.
        fused: use the fused kernel where :func:`fused_applies`; ``False`` runs cuBLAS products and ``min``
            instead (the benchmark's and the tests' comparison).

    Returns:
        :class:`PassResult` over the selected rows.
    """
    device, dtype = centroids.device, centroids.dtype
    n_batch, k, dim = centroids.shape
    r_start, r_stop = (0, x.shape[1]) if rows is None else (rows.start, rows.stop)
    n_rows = r_stop - r_start
    fused = fused and fused_applies(centroids, precision)
    fused_sums = fused and want_sums and mask is None  # the kernel adds the rows to their sums itself
    bb, rr = block_shape(n_batch, n_rows, 0 if fused else k, dim, centroids.element_size(), budget)  # fused: no scores
    c_sq, c_t = (centroids.pow(2).sum(-1), None) if fused else padded_operands(centroids)  # fused: no c^T copy
    labels = torch.empty(n_batch, n_rows, dtype=torch.long, device=device) if want_labels or want_dist else None
    dist = torch.zeros(n_batch, n_rows, dtype=torch.float64, device=device) if want_dist else None
    if want_sums:
        sums = torch.zeros(n_batch * k + 1, dim, dtype=dtype, device=device)
        counts = torch.zeros(n_batch * k + 1, dtype=torch.long, device=device)
    with matmul_precision(precision, device):
        for b0 in range(0, n_batch, bb):
            b1 = min(b0 + bb, n_batch)
            for r0 in range(r_start, r_stop, rr):
                r1 = min(r0 + rr, r_stop)
                block = load_block(x, b0, b1, r0, r1, device, dtype, cosine)
                # min(-1).indices: the first minimum, like argmin, and faster on CPU; the scores die at once
                if fused:
                    into = sums[:k] if fused_sums else None
                    found = fused_assign.fused_nearest(block[0], centroids[0], c_sq[0], into)
                    lab = found.labels.unsqueeze(0)
                elif b1 - b0 == 1:
                    lab = torch.addmm(c_sq[b0], block[0], c_t[b0], alpha=-2).min(-1).indices.unsqueeze(0)
                else:
                    lab = torch.baddbmm(c_sq[b0:b1, None, :], block, c_t[b0:b1], alpha=-2).min(-1).indices
                real = None if mask is None else mask[b0:b1, r0:r1].to(device)
                if labels is not None:
                    labels[b0:b1, r0 - r_start : r1 - r_start] = lab if real is None else lab.masked_fill(~real, -1)
                if want_dist:
                    gathered = torch.gather(centroids[b0:b1], 1, lab.unsqueeze(-1).expand(-1, -1, dim))
                    d = (block - gathered).pow(2).sum(-1).double()
                    dist[b0:b1, r0 - r_start : r1 - r_start] = d if real is None else d.masked_fill(~real, 0.0)
                if want_sums:
                    flat = lab + (torch.arange(b0, b1, device=device) * k).unsqueeze(1)
                    if real is not None:
                        flat = flat.masked_fill(~real, n_batch * k)
                    flat = flat.flatten()
                    if not fused_sums:
                        sums.index_add_(0, flat, block.reshape(-1, dim))
                    counts.index_add_(0, flat, torch.ones_like(flat))  # bincount would sync with the host on CUDA
    if not want_sums:
        return PassResult(labels, None, None, dist)
    return PassResult(labels, sums[:-1].view(n_batch, k, dim), counts[:-1].view(n_batch, k).to(dtype), dist)
