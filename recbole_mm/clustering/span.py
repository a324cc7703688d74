"""Lloyd iterations in the span of the points: small problems (above all many at once, batched) in one kernel.

Every centroid Lloyd's algorithm produces is either an initial centroid or the mean of some of the points, so it
is a weighted sum ``c_j = sum_i w[i, j] y_i`` of the rows ``y`` of ``[points; initial centroids]``. Distances then
only need inner products of those rows: ``||y_i - c_j||^2 = G_ii - 2 (G w)_ij + w_j^T G w_j`` with the Gram matrix
``G = y y^T``. For a problem of ``n`` points with ``n + k <= MAX_SPAN`` (issue 3's batched regime: 100 points,
k = 8, 512 dims), ``G`` is at most 128 x 128: one Triton program per problem keeps it in shared memory and runs all
the iterations without touching the points again. The points are read to build ``G``, once more to turn the final
weights into centroids, and by the final labelling pass; the per-pass path reads them twice per iteration.

It runs the same updates as :func:`recbole_mm.clustering.lloyd.lloyd` (empty clusters kept, spherical centroids
re-normalised) for a fixed iteration count; tolerances and ``empty='farthest'`` stay on the per-pass path. The
distances differ from the per-pass path's in rounding only (``G`` and the kernel's products ``G w`` use the pass's
precision: TF32 by default on CUDA, three-pass TF32 for ``'highest'``), so labels can differ at near-ties. The
kernel has no atomics: for the same ``G`` it is deterministic.
"""

from functools import lru_cache
from typing import Optional

import torch
import torch.nn.functional as F

from recbole_mm.clustering import fused_assign
from recbole_mm.clustering.assign import matmul_precision

MAX_SPAN = 128  # points + centroids per problem (so k <= 64): G (M x M, float32) fits one program's shared memory
ENABLED = True  # use the span kernel where it applies (see applies); False forces the per-pass path


def _width(size: int) -> int:
    """Padded tile width: a power of two, at least 16 (``tl.dot``'s smallest operand)."""
    return max(16, 1 << (size - 1).bit_length())


def applies(x: torch.Tensor, centroids: torch.Tensor, *, tol: Optional[float], empty: str) -> bool:
    """Whether :func:`span_lloyd` runs this Lloyd call: :data:`ENABLED`, a fixed iteration count with
    ``empty='keep'``, ``n + k <= MAX_SPAN``, ``x`` already on the centroids' device, float32 and Triton available
    there (CUDA; CPU under ``TRITON_INTERPRET=1``)."""
    n_points, k = x.shape[1], centroids.shape[1]
    return (
        ENABLED
        and tol is None
        and empty == "keep"
        and n_points + k <= MAX_SPAN
        and x.device == centroids.device
        and x.dtype == torch.float32
        and fused_assign.available(centroids)
    )


@lru_cache(maxsize=None)
def _kernel():
    from recbole_mm.clustering.span_kernel import span_lloyd_kernel

    return span_lloyd_kernel


def span_lloyd(
    x: torch.Tensor, mask: Optional[torch.Tensor], centroids: torch.Tensor, *, n_iter: int, cosine: bool, precision: str
) -> torch.Tensor:
    """``n_iter`` Lloyd updates of every problem at once (see the module docstring; :func:`applies` must hold).

    Args:
        x: ``[B, n, d]`` float32 points on the centroids' device (padding may hold anything).
        mask: bool ``[B, n]`` real points, or ``None``.
        centroids: ``[B, k, d]`` initial centroids (unit rows in cosine mode).
        n_iter: number of updates.
        cosine: normalise the points and the centroids (spherical k-means).
        precision: ``'highest'`` (float32 Gram matrix, three-pass TF32 products in the kernel), or ``'tf32'`` /
            ``'bf16'`` (TF32 for both).

    Returns:
        ``[B, k, d]`` centroids after ``n_iter`` updates.
    """
    n_batch, n_points, _ = x.shape
    k = centroids.shape[1]
    span, width = _width(n_points + k), _width(k)
    points = F.normalize(x, dim=-1) if cosine else x
    if mask is not None:  # padding must not reach G or the final products (0 * nan is nan)
        points = points.masked_fill(~mask.to(x.device).unsqueeze(-1), 0.0)
    gram = torch.zeros(n_batch, span, span, dtype=x.dtype, device=x.device)
    with matmul_precision(precision, x.device):
        gram[:, :n_points, :n_points] = torch.bmm(points, points.transpose(1, 2))
        cross = torch.bmm(points, centroids.transpose(1, 2))
        gram[:, n_points : n_points + k, n_points : n_points + k] = torch.bmm(centroids, centroids.transpose(1, 2))
    gram[:, :n_points, n_points : n_points + k] = cross
    gram[:, n_points : n_points + k, :n_points] = cross.transpose(1, 2)
    weights = torch.zeros(n_batch, span, width, dtype=x.dtype, device=x.device)
    weights[:, n_points : n_points + k, :k] = torch.eye(k, dtype=x.dtype, device=x.device)  # c_j = initial c_j
    real = torch.zeros(n_batch, span, dtype=torch.int8, device=x.device)
    real[:, :n_points] = 1 if mask is None else mask.to(device=x.device, dtype=torch.int8)
    if n_iter:
        products = "tf32x3" if precision == "highest" else "tf32"  # 'bf16' asks for speed: TF32
        _kernel()[(n_batch,)](
            gram, weights, real, n_iter, k, PRECISION=products, COSINE=cosine, M=span, K=width, num_warps=8
        )
    with matmul_precision("highest", x.device):
        mixed = torch.bmm(weights[:, :n_points, :k].transpose(1, 2), points)
        return torch.baddbmm(mixed, weights[:, n_points : n_points + k, :k].transpose(1, 2), centroids)
