"""MISSRec's k-means, reproduced behaviour for behaviour (reference-compatible mode).

MISSRec clusters its item-modality tokens with a modified copy of TorchPQ's ``MinibatchKMeans`` (v0.3.0.6,
``torchpq/clustering/MinibatchKMeans.py`` of gimpong/MM23-MISSRec). This module reproduces what that code does, not
what k-means should do:

1. ``batch_size <= k`` becomes ``int(1.1 * k)``;
2. one pass over sequential, unshuffled minibatches; when the rows left after a batch are at most ``k`` they are
   merged into that batch, which ends the pass (the reference's convergence error is computed after the
   centroids were overwritten, so it is always 0 and the pass is never repeated);
3. the initial centroids are ``k`` rows of the *first minibatch* chosen like numpy's
   ``random.choice(n_first, k, replace=False)`` (legacy ``RandomState(seed)``);
4. per-cluster counts start at 1; each batch assigns its rows to the nearest centroid in effect (signed
   values), takes per-cluster means ``delta`` over ``|x|`` (the reference squares and square-roots its buffers
   in place, so the means are of absolute values and every centroid is non-negative) with **empty clusters -> 0**,
   then ``c <- c * (1 - 1/n_k) + delta / n_k`` with the count before the batch (the first batch therefore sets
   every centroid to its batch mean, and clusters empty in it to 0), and ``n_k += batch count``;
5. the final labels are the nearest returned centroid of each signed row.

Departures: the caller's tensor is never modified (the reference also abs-es the input during its predict
step); the sums are taken with ``index_add_`` instead of CuPy float atomics or a Python loop.
"""

import numpy as np
import torch

from recbole_mm.clustering.assign import assign_pass, default_budget
from recbole_mm.clustering.result import ClusteringError, KMeansResult
from recbole_mm.clustering.validation import (
    PRECISIONS,
    check_choice,
    check_positive_int,
    check_problem,
)


def reference_batches(n_points: int, k: int, batch_size: int):
    """The reference's minibatch row ranges ``[(start, stop), ...]`` (steps 1 and 2 above)."""
    if batch_size <= k:
        batch_size = int(1.1 * k)
    bounds, start = [], 0
    while start < n_points:
        stop = start + batch_size
        if n_points - stop <= k:
            stop = n_points
        bounds.append((start, stop))
        start = stop
    return bounds


def kmeans_reference(
    x: torch.Tensor, k: int, *, batch_size: int = 2048, seed: int = 0, precision: str = "highest"
) -> KMeansResult:
    """MISSRec/TorchPQ-compatible minibatch k-means (Euclidean), quirks included (see the module docstring).

    Args:
        x: ``[n, d]`` tokens on any device (computed there, float32 unless float64).
        k: number of clusters, ``1 <= k <= n``.
        batch_size: the reference's minibatch size (MISSRec uses 2048).
        seed: seeds the choice of initial rows in the first minibatch.
        precision: ``'highest'`` (float32 products, as the reference's kernels) or ``'tf32'`` (CUDA float32
            only: TF32 products through the fused assignment kernel; near-tie rows may take the other centroid;
            elsewhere the same as ``'highest'``).

    Returns:
        :class:`KMeansResult` with ``labels [n]``, non-negative ``centroids [k, d]``, the exact inertia of the
        signed rows against them, and ``n_iter = 1`` (one pass).
    """
    problem = check_problem(x, k)
    if problem.batched:
        raise ClusteringError(f"x: kmeans_reference clusters one problem [n, d], found shape {tuple(x.shape)}")
    check_positive_int("batch_size", batch_size)
    check_choice("precision", precision, PRECISIONS)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ClusteringError(f"seed: expected an integer, found {seed!r}")
    tokens = problem.x.to(problem.dtype)
    device = tokens.device
    budget = default_budget(device)
    bounds = reference_batches(tokens.shape[1], k, batch_size)
    first = np.random.RandomState(seed).choice(bounds[0][1] - bounds[0][0], k, replace=False)
    centroids = tokens[:, torch.as_tensor(first, device=device)]
    counts = torch.ones(k, dtype=problem.dtype, device=device)
    for start, stop in bounds:
        rows = slice(start, stop)
        labels = assign_pass(tokens, centroids, None, budget=budget, precision=precision, rows=rows).labels[0]
        block = tokens[0, rows].abs()
        sums = torch.zeros(k, block.shape[1], dtype=block.dtype, device=device).index_add_(0, labels, block)
        ones = torch.ones_like(labels, dtype=block.dtype)
        batch_counts = torch.zeros(k, dtype=block.dtype, device=device).index_add_(0, labels, ones)  # no host sync
        delta = sums / batch_counts.clamp(min=1).unsqueeze(1)
        weights = (1 / counts).unsqueeze(1)
        centroids = (centroids.abs()[0] * (1 - weights) + delta * weights).unsqueeze(0)
        counts += batch_counts
    final = assign_pass(tokens, centroids, None, budget=budget, precision=precision, want_dist=True)
    return KMeansResult(final.labels[0], centroids[0], float(final.dist.sum()), 1)
