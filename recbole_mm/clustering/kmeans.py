"""k-means for interest discovery (MISSRec) and any other clustering in recbole_mm: one API on CPU and GPU.

``kmeans`` runs Lloyd's algorithm (Euclidean or spherical/cosine) with random or k-means++ seeding, a fixed
iteration count or a tolerance, an explicit empty-cluster policy, chunked distances under a memory budget,
an optional mini-batch mode and a batched mode for many small problems. Backends: ``torch`` (default, CPU and
CUDA), ``faiss`` (faiss-cpu, optional) and ``cupy`` (fused CUDA kernel for batched small problems, optional).

Determinism: on CPU the torch backend is bit-exact for a given seed, data and memory budget (the centroid sums
are accumulated sequentially; a different budget may change the rounding of the matrix products). On CUDA the
seeded initialisation is identical to CPU, but ``index_add_`` accumulates the centroid sums with float atomics,
so sums (and, at near-ties, labels) may differ in the last bits between runs unless
``torch.use_deterministic_algorithms(True)`` is set (PyTorch then uses a deterministic ``index_add_``). TF32
products (the CUDA default for float32) round the distances used for the assignment, not the reported inertia,
which is always measured exactly; the GPU tests check it stays within 0.5% of float64 Lloyd from the same start.
The CuPy backend is deterministic (fixed summation order, no atomics).
"""

from typing import Optional, Union

import torch

from recbole_mm.clustering import backends
from recbole_mm.clustering.result import ClusteringError, KMeansResult
from recbole_mm.clustering.validation import (
    PRECISIONS,
    check_choice,
    check_init,
    check_positive_int,
    check_problem,
)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    n_iter: int = 20,
    tol: Optional[float] = None,
    init: Union[str, torch.Tensor] = "random",
    distance: str = "euclidean",
    empty: str = "keep",
    seed: int = 0,
    backend: str = "torch",
    memory_budget_bytes: Optional[int] = None,
    minibatch_size: Optional[int] = None,
    mask: Optional[torch.Tensor] = None,
    precision: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` clusters.

    Args:
        x: ``[n, d]`` points, or ``[B, n, d]`` for ``B`` independent problems (batched mode), any device.
        k: clusters per problem, ``1 <= k <=`` number of (real) points.
        n_iter: maximum number of centroid updates (passes in mini-batch mode); exactly this many when ``tol``
            is ``None``.
        tol: stop when a pass lowers the inertia by at most ``tol`` times the previous pass's inertia.
        init: ``'random'`` (``k`` distinct points), ``'kmeans++'``, or initial centroids ``[k, d]``/``[B, k, d]``.
        distance: ``'euclidean'``, or ``'cosine'`` (spherical k-means: points and centroids unit-normalised; zero
            rows stay zero; inertia is the sum of ``1 - cos``).
        empty: ``'keep'`` (an empty cluster keeps its centroid) or ``'farthest'`` (the empty clusters of a step
            move to the points farthest from their centroids, the first empty cluster to the farthest point).
        seed: seeds a CPU generator for the initialisation and the mini-batch order.
        backend: ``'torch'``, ``'faiss'`` (CPU, single problem), ``'cupy'`` (CUDA, batched small problems) or
            ``'auto'`` (cupy where it applies and is installed, else torch, logging one line if cupy is missing).
        memory_budget_bytes: bytes of temporaries per block of the distance computation (default: 32 MiB on CPU,
            a quarter of free CUDA memory up to 4 GiB); the ``n x k`` matrix is never larger than this.
        minibatch_size: rows per mini-batch for mini-batch k-means; ``None`` runs full Lloyd passes.
        mask: bool ``[B, n]`` real points in batched mode (padding gets label ``-1`` and is ignored).
        precision: ``'highest'`` or ``'tf32'`` for the assignment products; default ``'highest'`` on CPU and
            ``'tf32'`` on CUDA float32 (CUDA float64 and the CPU always compute in full precision). A single CUDA
            float32 problem under ``'tf32'`` is assigned by the fused Triton kernel when Triton is installed
            (:mod:`recbole_mm.clustering.fused_assign`), else by cuBLAS products; the reported inertia is exact.
        device: compute device (default: ``x``'s); a CPU ``x`` with a CUDA device streams through the GPU.

    Returns:
        :class:`KMeansResult` ``(labels, centroids, inertia, n_iter)`` on the compute device.

    Raises:
        ClusteringError: bad input, or a backend asked for by name that is not installed or does not apply.
    """
    problem = check_problem(x, k, mask)
    check_positive_int("n_iter", n_iter, minimum=0)
    check_positive_int("minibatch_size", minibatch_size, optional=True)
    check_positive_int("memory_budget_bytes", memory_budget_bytes, optional=True)
    check_choice("distance", distance, ("euclidean", "cosine"))
    check_choice("empty", empty, ("keep", "farthest"))
    check_choice("backend", backend, ("torch", "faiss", "cupy", "auto"))
    check_choice("precision", precision, (None, *PRECISIONS))
    if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
        raise ClusteringError(f"tol: expected None or a number >= 0, found {tol!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ClusteringError(f"seed: expected an integer, found {seed!r}")
    explicit = check_init(init, problem, k)
    device = torch.device(device) if device is not None else problem.x.device
    if precision is None:
        precision = "tf32" if device.type == "cuda" and problem.dtype == torch.float32 else "highest"
    options = dict(
        n_iter=n_iter,
        tol=tol,
        init=init,
        cosine=distance == "cosine",
        empty=empty,
        seed=seed,
        budget=memory_budget_bytes,
        minibatch_size=minibatch_size,
        precision=precision,
        device=device,
    )
    run = backends.resolve(backend, problem, k, options)
    return run(problem, k, explicit, **options)
