"""Fused nearest-centroid search on CUDA: one Triton kernel does the TF32 products and the argmin.

The cuBLAS path of :func:`recbole_mm.clustering.assign.assign_pass` writes the ``rows x k`` score matrix
``c_sq - 2 x c^T`` to memory and reads it back for ``min``; at MISSRec's size (k = 17,879, d = 300) that traffic
is a large part of the pass. Here each program takes ``BLOCK_M`` rows, walks the centroids in tiles of ``BLOCK_N``
(the inner product accumulated over ``d`` in ``BLOCK_K`` chunks with TF32 ``tl.dot``), and keeps a running
(minimum, first argmin) per row in registers: only the labels and the minima are written. A Lloyd pass also
needs each cluster's sum: the kernel can add every row to its cluster's sum right after choosing it, while the
rows are still in cache, instead of ``index_add_`` reading the whole of ``x`` again. Row strides that are
multiples of 4 floats are passed divided by 4 (``VEC``) so that Triton knows the rows are 16-byte aligned and
loads them with vector copies. The kernel itself lives in :mod:`recbole_mm.clustering.fused_kernel`.

Triton is imported on first use (the CPU install has none); :func:`available` says whether the kernel can run.
Under ``TRITON_INTERPRET=1`` (set before triton is imported) the kernel runs on CPU tensors through Triton's
interpreter, with float32 products; the CPU tests use it. Autotuning is skipped in that mode (one config).
"""

import os
from functools import lru_cache
from typing import NamedTuple, Optional

import torch

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); the first is the one the interpreter uses, and the only one
# whose sm_90 build (triton 3.6) has no register spills: the others spill 40 to 976 bytes per thread
CONFIGS = (
    (128, 128, 32, 8, 3),
    (128, 128, 32, 8, 4),
    (128, 128, 64, 8, 3),
    (128, 256, 16, 8, 4),
    (256, 64, 32, 8, 4),
    (128, 64, 32, 4, 4),
)


class Nearest(NamedTuple):
    """Output of :func:`fused_nearest`: ``labels`` LongTensor ``[n]`` and ``best`` float32 ``[n]``."""

    labels: torch.Tensor
    best: torch.Tensor


def _interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on")


@lru_cache(maxsize=None)
def _triton():
    """The ``triton`` module, or ``None`` when it is not installed."""
    try:
        import triton
    except ImportError:
        return None
    return triton


def available(x: torch.Tensor) -> bool:
    """Whether :func:`fused_nearest` can run on ``x``: Triton imports and ``x`` is a CUDA float32 tensor on a GPU
    with TF32 (compute capability 8.0 or newer).

    Under ``TRITON_INTERPRET=1`` CPU float32 tensors qualify too (Triton's interpreter).
    """
    if x.dtype != torch.float32:
        return False
    if x.is_cuda:
        runs = torch.cuda.get_device_capability(x.device) >= (8, 0)
    else:
        runs = _interpreting() and x.device.type == "cpu"
    return runs and _triton() is not None  # triton imported only here: the import fixes its mode


@lru_cache(maxsize=None)
def _kernel():
    """The autotuned kernel (one config under the interpreter, which cannot time configs)."""
    triton = _triton()
    from recbole_mm.clustering.fused_kernel import nearest_kernel

    configs = CONFIGS[:1] if _interpreting() else CONFIGS
    return triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": kk}, num_warps=w, num_stages=s)
            for m, n, kk, w, s in configs
        ],
        key=["d", "k", "WANT_SUMS"],
        restore_value=["sums_ptr"],  # timing runs must not add to the sums: each is undone
    )(nearest_kernel)


def autotuned_configs() -> dict:
    """The tile configuration the autotuner chose per key ``(d, k, WANT_SUMS, ...)``; empty while the fused kernel
    has not run in this process."""
    if not _kernel.cache_info().currsize:
        return {}
    return dict(_kernel().cache)


def fused_nearest(
    x: torch.Tensor,
    centroids: torch.Tensor,
    c_sq: Optional[torch.Tensor] = None,
    sums: Optional[torch.Tensor] = None,
) -> Nearest:
    """Nearest centroid of every row of ``x`` under TF32 products, without materialising the score matrix.

    Args:
        x: ``[n, d]`` float32 points (CUDA; CPU under ``TRITON_INTERPRET=1``).
        centroids: ``[k, d]`` float32 on the same device.
        c_sq: ``[k]`` squared centroid norms (computed when ``None``).
        sums: contiguous float32 ``[k, d]``, or ``None``; when given, every row of ``x`` is added to the row of its
            nearest centroid (float atomics: the order of the additions, and so the last bits, vary between runs).

    Returns:
        :class:`Nearest` with ``best[i] = min_j (c_sq[j] - 2 x_i . c_j)`` and ``labels[i]`` its first argmin
        (ties go to the lower index, as with ``torch.min``). ``||x_i||^2 + best[i]`` is the squared distance.

    Raises:
        ValueError: shapes, dtypes or devices that do not fit, or Triton cannot run on ``x`` (see :func:`available`).
    """
    if not available(x):
        raise ValueError(
            f"fused_nearest: needs triton and a CUDA float32 x; found triton "
            f"{'installed' if _triton() is not None else 'missing'}, x {x.dtype} on {x.device}"
        )
    if x.dim() != 2 or centroids.dim() != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"fused_nearest: expected x [n, d] and centroids [k, d], found {tuple(x.shape)} and "
            f"{tuple(centroids.shape)}"
        )
    if centroids.dtype != torch.float32 or centroids.device != x.device:
        raise ValueError(
            f"fused_nearest: centroids must be float32 on {x.device}, found {centroids.dtype} on {centroids.device}"
        )
    n, d = x.shape
    k = centroids.shape[0]
    if c_sq is None:
        c_sq = centroids.pow(2).sum(-1)
    if c_sq.shape != (k,) or c_sq.dtype != torch.float32 or c_sq.device != x.device:
        raise ValueError(
            f"fused_nearest: c_sq must be float32 [{k}] on {x.device}, found {c_sq.dtype} {tuple(c_sq.shape)} "
            f"on {c_sq.device}"
        )
    if sums is not None and (
        sums.shape != (k, d) or sums.dtype != torch.float32 or sums.device != x.device or not sums.is_contiguous()
    ):
        raise ValueError(
            f"fused_nearest: sums must be contiguous float32 [{k}, {d}] on {x.device}, found {sums.dtype} "
            f"{tuple(sums.shape)} on {sums.device}{'' if sums.is_contiguous() else ', not contiguous'}"
        )
    x, centroids, c_sq = x.contiguous(), centroids.contiguous(), c_sq.contiguous()
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    best = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return Nearest(labels, best)
    vec = 4 if x.stride(0) % 4 == 0 and centroids.stride(0) % 4 == 0 else 1  # 16-byte aligned rows
    stride_x, stride_c = x.stride(0) // vec, centroids.stride(0) // vec

    def grid(meta):
        return (_triton().cdiv(n, meta["BLOCK_M"]),)

    want_sums = sums is not None
    target = sums if want_sums else best  # the kernel ignores the pointer without WANT_SUMS
    _kernel()[grid](x, centroids, c_sq, labels, best, target, n, k, d, stride_x, stride_c, vec, want_sums)
    return Nearest(labels, best)
