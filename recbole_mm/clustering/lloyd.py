"""Torch k-means: Lloyd iterations (full passes) or mini-batch passes, batched over problems.

One iteration is one pass of :func:`recbole_mm.clustering.assign.assign_pass` that assigns every point to
the nearest current centroid and accumulates the per-cluster sums in the same sweep, then one centroid update.
After the last update a final pass labels every point with its nearest *returned* centroid and measures the
inertia exactly (``||x - c||^2`` of the assigned pair, accumulated in float64).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from recbole_mm.clustering.assign import assign_pass


def _finish(centroids: torch.Tensor, cosine: bool) -> torch.Tensor:
    return F.normalize(centroids, dim=-1) if cosine else centroids


def reseed_farthest(x, mask, centroids, empty: torch.Tensor, dist: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Move the empty clusters of each problem onto its farthest points.

    Args:
        x: ``[B, n, d]`` data.
        mask: bool ``[B, n]`` real points, or ``None``.
        centroids: ``[B, k, d]`` updated centroids (rows of empty clusters are replaced).
        empty: bool ``[B, k]``.
        dist: ``[B, n]`` float64 squared distance of each point to the centroid it was assigned to (0 at padding).

    Returns:
        centroids where the ``j``-th empty cluster (in index order) of problem ``b`` is the point of ``b`` with the
        ``j``-th largest distance (ties: lower index first); the clusters that lose those points keep their means.
    """
    n_empty = empty.sum(1)
    most = int(n_empty.max())
    if most == 0:
        return centroids
    if mask is not None:
        dist = dist.masked_fill(~mask.to(dist.device), -1.0)  # padding is never chosen
    # stable descending order: ties broken by the lower point index
    order = torch.sort(dist, dim=1, descending=True, stable=True).indices[:, :most]
    b_idx, c_idx = empty.nonzero(as_tuple=True)
    rank = (empty.cumsum(1) - 1)[b_idx, c_idx]
    points = order[b_idx, rank]
    rows = x[b_idx.to(x.device), points.to(x.device)].to(device=centroids.device, dtype=centroids.dtype)
    centroids = centroids.clone()
    centroids[b_idx, c_idx] = F.normalize(rows, dim=-1) if cosine else rows
    return centroids


def _update(centroids, sums, counts, empty_policy, x, mask, dist, cosine):
    """Lloyd update: mean of each non-empty cluster; empty ones kept or re-seeded."""
    empty = counts == 0
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    updated = _finish(torch.where(empty.unsqueeze(-1), centroids, means), cosine)
    if empty_policy == "farthest":
        updated = reseed_farthest(x, mask, updated, empty, dist, cosine)
    return updated


def _converged(previous: Optional[torch.Tensor], current: torch.Tensor, tol: Optional[float]) -> bool:
    """Relative inertia decrease at most ``tol`` in every problem."""
    if tol is None or previous is None:
        return False
    return bool(((previous - current) <= tol * previous).all())


def _pass_settings(empty, tol, cosine, budget, precision, fused) -> dict:
    """Keyword arguments of :func:`assign_pass` for an update pass: sums always, distances when needed."""
    want_dist = empty == "farthest" or tol is not None
    return dict(
        budget=budget,
        precision=precision,
        cosine=cosine,
        want_labels=False,
        want_sums=True,
        want_dist=want_dist,
        fused=fused,
    )


def lloyd(x, mask, centroids, *, n_iter, tol, empty, cosine, budget, precision, fused=True):
    """Full-batch Lloyd from ``centroids [B, k, d]``, one :func:`assign_pass` per update; returns
    ``(centroids, n_iter_done)``. ``fused=False`` keeps the passes off the fused kernel (see :func:`assign_pass`).
    """
    settings = _pass_settings(empty, tol, cosine, budget, precision, fused)
    want_dist = settings["want_dist"]
    previous = None
    done = 0
    for _ in range(n_iter):
        step = assign_pass(x, centroids, mask, **settings)
        current = step.dist.sum(1) if want_dist else None
        if _converged(previous, current, tol):
            break
        centroids = _update(centroids, step.sums, step.counts, empty, x, mask, step.dist, cosine)
        previous = current
        done += 1
    return centroids, done


def minibatch(x, mask, centroids, *, n_iter, tol, empty, cosine, budget, precision, batch_rows, generator):
    """Mini-batch k-means: ``n_iter`` passes over the rows in blocks of ``batch_rows``.

    The blocks of a pass are visited in an order drawn from ``generator``. Each block moves every centroid it
    touches to the running mean of all points ever assigned to it (per-centre learning rate ``b_k / n_k``,
    Sculley 2010; cosine mode re-normalises after each block). After a pass, clusters that received no point in
    that pass are kept or re-seeded on the pass's farthest points (their running count restarts at 0).
    Returns ``(centroids, n_iter_done)``.
    """
    n_batch, n_points, _ = x.shape
    totals = torch.zeros(n_batch, centroids.shape[1], dtype=centroids.dtype, device=centroids.device)
    starts = list(range(0, n_points, batch_rows))
    settings = _pass_settings(empty, tol, cosine, budget, precision, fused=True)
    want_dist = settings["want_dist"]
    previous = None
    done = 0
    for _ in range(n_iter):
        seen = torch.zeros_like(totals)
        dist = torch.zeros(n_batch, n_points, dtype=torch.float64, device=centroids.device) if want_dist else None
        for i in torch.randperm(len(starts), generator=generator).tolist():
            rows = slice(starts[i], min(starts[i] + batch_rows, n_points))
            step = assign_pass(x, centroids, mask, rows=rows, **settings)
            totals += step.counts
            seen += step.counts
            touched = (step.counts > 0).unsqueeze(-1)
            moved = centroids + (step.sums - step.counts.unsqueeze(-1) * centroids) / totals.clamp(min=1).unsqueeze(-1)
            centroids = _finish(torch.where(touched, moved, centroids), cosine)
            if want_dist:
                dist[:, rows] = step.dist
        current = dist.sum(1) if want_dist else None
        if empty == "farthest":
            centroids = reseed_farthest(x, mask, centroids, seen == 0, dist, cosine)
            totals = totals.masked_fill(seen == 0, 0)  # a re-seeded centre starts a fresh running mean
        done += 1
        if _converged(previous, current, tol):
            break
        previous = current
    return centroids, done
