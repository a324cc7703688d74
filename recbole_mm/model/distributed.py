"""Sharing a global batch between torch.distributed ranks, for losses whose gradients are averaged over the ranks.

A multi-process run (torchrun, gradients all-reduced and divided by the world size after every backward) gives
each rank a contiguous shard of the same global batch. A loss that is a mean over the global batch is then
``scale * (mean over this shard)`` on each rank, a loss that is a sum ``world * (sum over this shard)``, and
in-batch negatives are gathered from every rank with :func:`gather_rows`. Without torch.distributed (or before
``init_process_group``) everything here is the identity.
"""

from typing import Iterable, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed() -> bool:
    """Whether torch.distributed is available and initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def is_rank0() -> bool:
    """Whether this process computes what every rank shares (rank 0, or the only process)."""
    return not distributed() or dist.get_rank() == 0


def broadcast_from_rank0(tensors: Iterable[torch.Tensor]) -> None:
    """In place: every tensor takes rank 0's values (nothing without torch.distributed). For state computed once,
    on rank 0, that all ranks must hold (e.g. a clustering's tables)."""
    if distributed():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


class RankShare:
    r"""This rank's part of the global batch.

    Constructor Args:
        n_local: rows of this rank's shard.
        device: where the size exchange runs (the model's device; gloo on CPU, NCCL on CUDA).

    Attributes:
        sizes (``Optional[List[int]]``): every rank's shard size, in rank order; None without torch.distributed.
        offset (``int``): this rank's first row in the global batch (0 without torch.distributed).
        scale (``float``): ``n_local * world / N``, ``N`` the global batch: a mean over this shard times
            ``scale``, averaged over the ranks, is the global mean (1 without torch.distributed).
        world (``int``): the world size: a sum over this shard times ``world``, averaged, is the global sum.

    Example:
        >>> share = RankShare(len(seq_output), seq_output.device)
        >>> labels = torch.arange(len(seq_output), device=seq_output.device) + share.offset
        >>> loss = share.scale * F.cross_entropy(logits, labels) + share.world * regulariser_sum
    """

    def __init__(self, n_local: int, device: torch.device):
        self.sizes: Optional[List[int]] = None
        self.offset, self.scale, self.world = 0, 1.0, 1
        if distributed():
            self.world = dist.get_world_size()
            sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world)]
            dist.all_gather(sizes, torch.tensor([n_local], device=device))
            self.sizes = [int(size) for size in sizes]
            self.offset = sum(self.sizes[: dist.get_rank()])
            self.scale = n_local * self.world / sum(self.sizes)

    def all_reduce_max(self, tensor: torch.Tensor) -> None:
        """In place: ``tensor`` (any shape) becomes its elementwise maximum over the ranks (unchanged without
        torch.distributed)."""
        if self.sizes is not None:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)

    def gather(self, tensor: torch.Tensor, differentiable: bool) -> torch.Tensor:
        """:func:`gather_rows` over this share's sizes; ``tensor`` itself without torch.distributed."""
        return tensor if self.sizes is None else gather_rows(tensor, self.sizes, differentiable)


def gather_rows(tensor: torch.Tensor, sizes: List[int], differentiable: bool) -> torch.Tensor:
    r"""Every rank's rows, concatenated in rank order.

    Args:
        tensor: ``[sizes[rank], *S]``, this rank's rows.
        sizes: every rank's row count (:attr:`RankShare.sizes`).
        differentiable: gradients flow back to each rank's own rows (``torch.distributed.nn``'s all_gather);
            False: a plain all_gather (ids, labels).

    Returns:
        ``[sum(sizes), *S]``.
    """
    padding = [0, 0] * (tensor.dim() - 1) + [0, max(sizes) - tensor.size(0)]
    padded = F.pad(tensor, padding)
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0)
