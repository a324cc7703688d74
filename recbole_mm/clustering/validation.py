"""Input checks for k-means: every bad input becomes a :class:`ClusteringError` naming the argument, what was
expected and what was found."""

from typing import NamedTuple, Optional

import torch

from recbole_mm.clustering.result import ClusteringError


class Problem(NamedTuple):
    """Validated data as ``B`` problems.

    Attributes:
        x: ``[B, n, d]`` view of the input (``B = 1`` for a single problem), on the caller's device.
        mask: bool ``[B, n]`` on ``x``'s device marking real points, or ``None`` when every point is real.
        sizes: ``LongTensor [B]`` (CPU) number of real points per problem.
        batched: whether the caller passed ``[B, n, d]``.
        dtype: computation dtype (float32 for half-precision input).
    """

    x: torch.Tensor
    mask: Optional[torch.Tensor]
    sizes: torch.Tensor
    batched: bool
    dtype: torch.dtype


def check_problem(x, k, mask=None) -> Problem:
    """Validate ``x`` (``[n, d]`` or ``[B, n, d]``), ``k`` and ``mask`` (bool ``[B, n]``, batched mode only)."""
    if not isinstance(x, torch.Tensor):
        raise ClusteringError(f"x: expected a torch.Tensor of shape [n, d] or [B, n, d], found {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ClusteringError(f"x: expected shape [n, d] or [B, n, d], found {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ClusteringError(f"x: expected a floating-point tensor, found dtype {x.dtype}")
    if x.numel() == 0:
        raise ClusteringError(
            f"x: expected at least one point with at least one dimension, found shape {tuple(x.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ClusteringError(f"k: expected an integer >= 1, found {k!r}")
    batched = x.dim() == 3
    x3 = x if batched else x.unsqueeze(0)
    n_batch, n_points = x3.shape[:2]
    if mask is not None:
        if not batched:
            raise ClusteringError(
                "mask: only valid with batched x of shape [B, n, d]; x has shape " f"{tuple(x.shape)}"
            )
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            found = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ClusteringError(
                f"mask: expected a bool tensor of shape [B, n] = {[n_batch, n_points]}, found {found}"
            )
        if tuple(mask.shape) != (n_batch, n_points):
            raise ClusteringError(
                f"mask: expected shape [B, n] = {[n_batch, n_points]} to match x {tuple(x.shape)}, "
                f"found {tuple(mask.shape)}"
            )
        mask = mask.to(x.device)
        sizes = mask.sum(1).cpu()
    else:
        sizes = torch.full((n_batch,), n_points, dtype=torch.long)
    real = x3 if mask is None else x3[mask]
    if not bool(torch.isfinite(real).all()):
        raise ClusteringError(
            "x: expected finite values, found NaN or inf"
            + (" among the real (masked) points" if mask is not None else "")
        )
    too_small = (sizes < k).nonzero().flatten()
    if len(too_small):
        b = int(too_small[0])
        where = f"problem {b} has " if batched else "x has "
        raise ClusteringError(f"k: expected k <= number of points, but {where}{int(sizes[b])} points and k = {k}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return Problem(x3, mask, sizes, batched, dtype)


def check_init(init, problem: Problem, k: int) -> Optional[torch.Tensor]:
    """Return explicit initial centroids as ``[B, k, d]`` (or ``None`` for a named init method)."""
    if isinstance(init, str):
        if init not in ("random", "kmeans++"):
            raise ClusteringError(f"init: expected 'random', 'kmeans++' or a tensor of centroids, found {init!r}")
        return None
    if not isinstance(init, torch.Tensor):
        raise ClusteringError(
            f"init: expected 'random', 'kmeans++' or a tensor of centroids, found {type(init).__name__}"
        )
    n_batch, _, dim = problem.x.shape
    expected = (n_batch, k, dim) if problem.batched else (k, dim)
    if tuple(init.shape) != expected:
        raise ClusteringError(f"init: expected centroids of shape {list(expected)}, found {tuple(init.shape)}")
    if not init.is_floating_point() or not bool(torch.isfinite(init).all()):
        raise ClusteringError("init: expected finite floating-point centroids")
    return init.reshape(n_batch, k, dim)


def check_choice(name: str, value, allowed) -> None:
    """Raise unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ClusteringError(f"{name}: expected one of {list(allowed)}, found {value!r}")


PRECISIONS = ("highest", "tf32")  # of the assignment products


def check_positive_int(name: str, value, minimum: int = 1, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= ``minimum`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ClusteringError(f"{name}: expected an integer >= {minimum}, found {value!r}")
