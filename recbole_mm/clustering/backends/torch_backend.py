"""The torch backend: Lloyd or mini-batch k-means on any torch device (the default backend)."""

import torch

from recbole_mm.clustering.assign import assign_pass, default_budget
from recbole_mm.clustering.init import kmeanspp_init, random_init
from recbole_mm.clustering.lloyd import lloyd, minibatch
from recbole_mm.clustering.result import KMeansResult
from recbole_mm.clustering.validation import Problem


def initial_centroids(problem: Problem, k, init, explicit, generator, device, dtype, cosine, budget):
    """Initial centroids ``[B, k, d]``: the explicit ones, or seeded by ``init`` from ``generator``."""
    if explicit is not None:
        centroids = explicit.to(device=device, dtype=dtype)
        return torch.nn.functional.normalize(centroids, dim=-1) if cosine else centroids
    if init == "kmeans++":
        return kmeanspp_init(problem.x, problem.mask, k, generator, device, dtype, cosine, budget)
    return random_init(problem.x, problem.mask, k, generator, device, dtype, cosine)


def final_assignment(problem: Problem, centroids, n_done, *, cosine, budget, precision) -> KMeansResult:
    """Label every point with its nearest centroid and measure the inertia exactly; shape the result like x."""
    last = assign_pass(
        problem.x, centroids, problem.mask, budget=budget, precision=precision, cosine=cosine, want_dist=True
    )
    inertia = last.dist.sum(1) / 2 if cosine else last.dist.sum(1)
    if problem.batched:
        return KMeansResult(last.labels, centroids, inertia, n_done)
    return KMeansResult(last.labels[0], centroids[0], float(inertia[0]), n_done)


def torch_kmeans(
    problem: Problem,
    k: int,
    explicit,
    *,
    n_iter,
    tol,
    init,
    cosine,
    empty,
    seed,
    budget,
    minibatch_size,
    precision,
    device
) -> KMeansResult:
    """The torch backend on validated input (see :func:`kmeans`)."""
    generator = torch.Generator().manual_seed(seed)
    dtype = problem.dtype
    if budget is None:
        budget = default_budget(device)
    centroids = initial_centroids(problem, k, init, explicit, generator, device, dtype, cosine, budget)
    common = dict(n_iter=n_iter, tol=tol, empty=empty, cosine=cosine, budget=budget, precision=precision)
    if minibatch_size is None:
        centroids, done = lloyd(problem.x, problem.mask, centroids, **common)
    else:
        centroids, done = minibatch(
            problem.x, problem.mask, centroids, batch_rows=minibatch_size, generator=generator, **common
        )
    return final_assignment(problem, centroids, done, cosine=cosine, budget=budget, precision=precision)
