"""faiss-cpu backend: faiss's Lloyd iterations on CPU, seeded with the same initial centroids as the torch
backend, over all points (``max_points_per_centroid`` is lifted so faiss does not subsample).

faiss re-seeds an empty cluster by splitting a large one (its own policy, whatever ``empty`` says); the backend
accepts only ``empty='keep'`` and its result differs from the torch backend's once a cluster empties.
"""

from typing import Optional

import numpy as np
import torch

from recbole_mm.clustering.assign import default_budget
from recbole_mm.clustering.backends.torch_backend import final_assignment, initial_centroids


def unsupported(problem, k: int, options) -> Optional[str]:
    """Why faiss cannot run these options, or ``None``."""
    if problem.batched:
        return "batched input [B, n, d] (faiss clusters one problem)"
    if options["device"].type != "cpu" or problem.x.device.type != "cpu":
        return "data or device not on CPU (faiss-cpu)"
    if options["minibatch_size"] is not None:
        return "minibatch_size (faiss runs full Lloyd passes)"
    if options["tol"] is not None:
        return "tol (faiss runs a fixed number of iterations)"
    if options["empty"] != "keep":
        return "empty='farthest' (faiss splits large clusters instead)"
    return None


def faiss_kmeans(
    problem, k, explicit, *, n_iter, tol, init, cosine, empty, seed, budget, minibatch_size, precision, device
):
    """Run ``faiss.Kmeans`` from the torch backend's initial centroids; labels and inertia are measured like
    the torch backend's (nearest returned centroid, exact float64 inertia)."""
    import faiss

    dtype = torch.float32
    budget = budget or default_budget(device)
    generator = torch.Generator().manual_seed(seed)
    start = initial_centroids(problem, k, init, explicit, generator, device, dtype, cosine, budget)[0]
    points = problem.x[0].to(dtype)
    if cosine:
        points = torch.nn.functional.normalize(points, dim=-1)
    data = np.ascontiguousarray(points.numpy())
    if n_iter == 0:
        centroids = start
    else:
        model = faiss.Kmeans(
            data.shape[1],
            k,
            niter=n_iter,
            seed=seed,
            spherical=cosine,
            max_points_per_centroid=len(data) + 1,
            min_points_per_centroid=1,
            verbose=False,
        )
        model.train(data, init_centroids=np.ascontiguousarray(start.numpy()))
        centroids = torch.from_numpy(model.centroids.copy())
    return final_assignment(problem, centroids.unsqueeze(0), n_iter, cosine=cosine, budget=budget, precision="highest")
