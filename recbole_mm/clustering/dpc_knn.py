"""Density-peak clustering with k-nearest-neighbour density (DPC-KNN), as MISSRec's reference code defines it.

MISSRec's code (gimpong/MM23-MISSRec) ships this alternative to k-means for interest discovery, commented out (the
released runs use k-means). With ``dist(i, j) = ||x_i - x_j|| / sqrt(d)``:

1. density ``rho_i = exp(-mean of dist(i, j)^2 over the local_size nearest j)`` (the point itself included);
2. ``delta_i`` = distance to the nearest point of strictly higher density; the largest distance of all for a
   point with none;
3. the ``k`` points of largest ``rho * delta`` are the centres, cluster ``c`` being the ``c``-th largest;
4. every point joins its nearest centre (the first on a tie), and a centre always joins its own cluster;
5. centroid ``c`` = ``sum of its points / (count + 1e-4)`` (the reference's weight normalisation).

The reference builds the whole ``n x n`` distance matrix; here it is computed in blocks of rows under a memory
budget (three passes), so the memory is ``O(rows x n)``; the arithmetic stays ``O(n^2 d)``.
"""

from typing import Optional, Union

import torch

from recbole_mm.clustering.assign import default_budget
from recbole_mm.clustering.result import ClusteringError, KMeansResult
from recbole_mm.clustering.validation import check_positive_int, check_problem

CENTROID_EPS = 1e-4  # added to each cluster's count before dividing (reference)


def dpc_knn(
    x: torch.Tensor,
    k: int,
    *,
    local_size: int,
    memory_budget_bytes: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` clusters with DPC-KNN (see the module docstring).

    Args:
        x: ``[n, d]`` points on any device (computed in float32, or float64 for float64 input).
        k: number of clusters (centres), ``1 <= k <= n``.
        local_size: neighbours (the point itself included) averaged for the density, ``1 <= local_size <= n``.
        memory_budget_bytes: bytes of distances per block of rows (default: 32 MiB on CPU, a quarter of free
            CUDA memory up to 4 GiB).
        device: compute device (default: ``x``'s).

    Returns:
        :class:`KMeansResult` with ``labels [n]``, ``centroids [k, d]``, the inertia of the points against their
        centroids (float64 sum of squared Euclidean distances) and ``n_iter = 1``.

    Raises:
        ClusteringError: bad ``x``, ``k`` or ``local_size``.
    """
    problem = check_problem(x, k)
    if problem.batched:
        raise ClusteringError(f"x: dpc_knn clusters one problem [n, d], found shape {tuple(x.shape)}")
    check_positive_int("local_size", local_size)
    check_positive_int("memory_budget_bytes", memory_budget_bytes, optional=True)
    n_points, dim = problem.x.shape[1:]
    if local_size > n_points:
        raise ClusteringError(f"local_size: expected at most the number of points {n_points}, found {local_size}")
    device = torch.device(device) if device is not None else problem.x.device
    tokens = problem.x[0].to(device=device, dtype=problem.dtype)
    budget = memory_budget_bytes or default_budget(device)
    rows = max(1, budget // (3 * n_points * tokens.element_size()))  # distances, their square / mask, the result
    blocks = [(r0, min(r0 + rows, n_points)) for r0 in range(0, n_points, rows)]
    scale = dim**0.5

    def distances(r0: int, r1: int) -> torch.Tensor:  # [r1 - r0, n]
        return torch.cdist(tokens[r0:r1], tokens) / scale

    density = torch.empty(n_points, dtype=tokens.dtype, device=device)
    largest = torch.zeros((), dtype=tokens.dtype, device=device)
    for r0, r1 in blocks:
        dist = distances(r0, r1)
        nearest = dist.topk(local_size, dim=1, largest=False).values
        density[r0:r1] = torch.exp(-nearest.pow(2).mean(dim=1))
        largest = torch.maximum(largest, dist.max())
    delta = torch.empty_like(density)
    for r0, r1 in blocks:
        higher = density.unsqueeze(0) > density[r0:r1].unsqueeze(1)  # [rows, n]: j denser than i
        delta[r0:r1] = torch.where(higher, distances(r0, r1), largest).min(dim=1).values
    centres = (density * delta).topk(k).indices  # [k], cluster c = c-th largest score

    labels = torch.empty(n_points, dtype=torch.long, device=device)
    centre_rows = max(1, budget // (2 * k * tokens.element_size()))
    for r0 in range(0, n_points, centre_rows):
        r1 = min(r0 + centre_rows, n_points)
        labels[r0:r1] = (torch.cdist(tokens[centres], tokens[r0:r1]) / scale).argmin(dim=0)
    labels[centres] = torch.arange(k, device=device)
    counts = torch.bincount(labels, minlength=k).to(tokens.dtype)
    weights = 1 / (counts[labels] + CENTROID_EPS)
    centroids = torch.zeros(k, dim, dtype=tokens.dtype, device=device).index_add_(0, labels, tokens * weights[:, None])
    inertia = float((tokens - centroids[labels]).double().pow(2).sum())
    return KMeansResult(labels, centroids, inertia, 1)
