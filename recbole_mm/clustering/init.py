"""Seeded k-means initialisation (random points and k-means++), batched over problems.

All random draws come from a CPU ``torch.Generator`` seeded with ``seed``, so the chosen points are the
same on every device for the same data.
"""

from typing import Optional

import torch

from recbole_mm.clustering.assign import load_block


def _real_keys(keys: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Random keys ``[B, n]`` with padded positions pushed past every real key."""
    if mask is None:
        return keys
    return keys.masked_fill(~mask.cpu(), 2.0)


def _gather_rows(x: torch.Tensor, index: torch.Tensor, device, dtype, cosine: bool) -> torch.Tensor:
    """``x[b, index[b, j]]`` as ``[B, m, d]`` on ``device``."""
    rows = torch.gather(x, 1, index.to(x.device).unsqueeze(-1).expand(-1, -1, x.shape[2]))
    return load_block(rows, 0, rows.shape[0], 0, rows.shape[1], device, dtype, cosine)


def random_init(x, mask, k: int, generator: torch.Generator, device, dtype, cosine: bool) -> torch.Tensor:
    """``k`` distinct real points per problem, uniformly at random: ``[B, k, d]``.

    Each point gets a float64 uniform key; the ``k`` smallest keys of the real points win, in key order.
    """
    n_batch, n_points, _ = x.shape
    keys = _real_keys(torch.rand(n_batch, n_points, generator=generator, dtype=torch.float64), mask)
    index = keys.topk(k, dim=1, largest=False, sorted=True).indices
    return _gather_rows(x, index, device, dtype, cosine)


def _sample(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row of ``weights [B, n]`` (non-negative, float64), the index drawn with probability proportional to
    its weight, using the uniform draws ``u [B]``."""
    cum = weights.cumsum(1)
    target = (u.to(weights.device) * cum[:, -1]).unsqueeze(1)
    return torch.searchsorted(cum, target, right=True).clamp_(max=weights.shape[1] - 1).squeeze(1)


def kmeanspp_init(x, mask, k: int, generator: torch.Generator, device, dtype, cosine: bool, budget: int):
    """k-means++ (D^2 sampling, one candidate per step) per problem: ``[B, k, d]``.

    The first centre is a uniform real point; each next one is drawn with probability proportional to the
    squared distance to the nearest centre chosen so far. When every real point coincides with a centre
    (all distances 0) the draw is uniform over the real points.
    """
    n_batch, n_points, dim = x.shape
    real = (
        torch.ones(n_batch, n_points, dtype=torch.float64, device=device) if mask is None else mask.to(device).double()
    )
    rows = max(1, budget // (dim * 8 * 3))
    first = _real_keys(torch.rand(n_batch, n_points, generator=generator, dtype=torch.float64), mask).argmin(1)
    centres = [_gather_rows(x, first.unsqueeze(1), device, dtype, cosine)]
    nearest = torch.full((n_batch, n_points), float("inf"), dtype=torch.float64, device=device)
    for _ in range(1, k):
        last = centres[-1]
        for r0 in range(0, n_points, rows):
            block = load_block(x, 0, n_batch, r0, min(r0 + rows, n_points), device, dtype, cosine)
            d = (block - last).pow(2).sum(-1).double()
            nearest[:, r0 : r0 + rows] = torch.minimum(nearest[:, r0 : r0 + rows], d)
        weights = torch.where(real > 0, nearest, torch.zeros_like(nearest))  # padding may hold NaN
        total = weights.sum(1, keepdim=True)
        weights = torch.where(total > 0, weights, real)
        u = torch.rand(n_batch, generator=generator, dtype=torch.float64)
        centres.append(_gather_rows(x, _sample(weights, u).unsqueeze(1), device, dtype, cosine))
    return torch.cat(centres, 1)
