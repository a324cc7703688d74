"""k-means backends behind :func:`recbole_mm.clustering.kmeans` and the choice between them.

Optional backends are imported lazily: faiss only when ``backend='faiss'`` is used, CuPy only when
``backend='cupy'`` (or ``'auto'`` on CUDA) is used.
"""

import importlib
import logging

from recbole_mm.clustering.backends.torch_backend import torch_kmeans
from recbole_mm.clustering.result import ClusteringError

logger = logging.getLogger(__name__)
_INSTALL = {
    "faiss": "pip install faiss-cpu (extra recbole_mm[faiss])",
    "cupy": "pip install cupy-cuda12x or cupy-cuda13x (extra recbole_mm[gpu])",
}
_fallback_logged = set()


def available(module: str) -> bool:
    """Whether the optional module ``module`` (``'faiss'`` or ``'cupy'``) imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _load(name: str):
    return importlib.import_module(f"recbole_mm.clustering.backends.{name}_backend")


def resolve(backend: str, problem, k: int, options: dict):
    """The function that runs ``backend`` on ``problem``.

    A backend asked for by name must be installed and must support the options, else :class:`ClusteringError`.
    ``'auto'`` uses CuPy for batched CUDA problems it supports and logs one line (once per process) when CuPy is
    missing; everything else runs on torch.
    """
    if backend == "torch":
        return torch_kmeans
    if backend == "auto":
        if options["device"].type != "cuda" or not problem.batched:
            return torch_kmeans
        if not available("cupy"):
            if "cupy" not in _fallback_logged:
                _fallback_logged.add("cupy")
                logger.info("k-means: cupy is not installed, using the torch backend (%s)", _INSTALL["cupy"])
            return torch_kmeans
        module = _load("cupy")
        return module.cupy_kmeans if module.unsupported(problem, k, options) is None else torch_kmeans
    if not available(backend):
        raise ClusteringError(f"backend: '{backend}' was asked for but is not installed; {_INSTALL[backend]}")
    module = _load(backend)
    reason = module.unsupported(problem, k, options)
    if reason is not None:
        raise ClusteringError(f"backend: '{backend}' cannot run this problem: {reason}; use backend='torch'")
    return getattr(module, f"{backend}_kmeans")
