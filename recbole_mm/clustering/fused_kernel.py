"""The Triton kernel of :func:`recbole_mm.clustering.fused_assign.fused_nearest`; importing it imports triton.

Only :mod:`recbole_mm.clustering.fused_assign` imports this module, on first use. Triton decides between compiling
and interpreting (``TRITON_INTERPRET=1``) when ``triton.language`` is first imported: its library functions are
built then, so one process runs Triton kernels in one of the two modes only.
"""

import triton
import triton.language as tl


@triton.jit
def nearest_kernel(
    x_ptr,
    c_ptr,
    c_sq_ptr,
    labels_ptr,
    best_ptr,
    sums_ptr,
    n,
    k,
    d,
    stride_x,
    stride_c,
    VEC: tl.constexpr,
    WANT_SUMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Per program, rows ``[pid * BLOCK_M, +BLOCK_M)`` of ``x [n, d]``: the first argmin over ``j < k`` of
    ``c_sq[j] - 2 x . c_j`` (TF32 products, float32 sums) into ``labels`` (int64) and its value
    into ``best``; ``stride_x * VEC`` and ``stride_c * VEC`` are the row strides (in floats) of ``x`` and
    ``c [k, d]``. With ``WANT_SUMS`` each row is then added to row ``labels[i]`` of ``sums [k, d]`` (contiguous;
    relaxed float atomics, as ``index_add_``) while the rows are still in cache, which saves the update a second
    read of ``x`` from memory."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    # strides arrive divided by VEC: the products below are known multiples of VEC (vector loads)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * (stride_x * VEC)
    offs_k = tl.arange(0, BLOCK_K)
    d_full = d - d % BLOCK_K
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    arg = tl.zeros([BLOCK_M], tl.int32)
    for n0 in range(0, k, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < k
        c_cols = c_ptr + cols.to(tl.int64)[None, :] * (stride_c * VEC)  # c^T: [d, BLOCK_N]
        dot = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, d_full, BLOCK_K):  # whole chunks: masks constant along d
            a = tl.load(x_rows + (k0 + offs_k)[None, :], mask=row_ok[:, None], other=0.0)
            b = tl.load(c_cols + (k0 + offs_k)[:, None], mask=col_ok[None, :], other=0.0)
            dot = tl.dot(a, b, dot, input_precision="tf32")
        if d_full < d:  # the last, partial chunk reads zeros past d
            dk = d_full + offs_k
            a = tl.load(x_rows + dk[None, :], mask=row_ok[:, None] & (dk < d)[None, :], other=0.0)
            b = tl.load(c_cols + dk[:, None], mask=col_ok[None, :] & (dk < d)[:, None], other=0.0)
            dot = tl.dot(a, b, dot, input_precision="tf32")
        # padded centroids (past k) score +inf, so they never win
        c_sq = tl.load(c_sq_ptr + cols, mask=col_ok, other=float("inf"))
        scores = c_sq[None, :] - 2.0 * dot
        tile_best, tile_arg = tl.min(scores, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_best < best  # strict: an equal score in a later tile keeps the lower index
        best = tl.where(better, tile_best, best)
        arg = tl.where(better, tile_arg + n0, arg)
    tl.store(labels_ptr + rows, arg.to(tl.int64), mask=row_ok)
    tl.store(best_ptr + rows, best, mask=row_ok)
    if WANT_SUMS:
        sum_rows = sums_ptr + arg.to(tl.int64)[:, None] * d
        for k0 in range(0, d, BLOCK_K):
            dk = k0 + offs_k
            inside = row_ok[:, None] & (dk < d)[None, :]
            a = tl.load(x_rows + dk[None, :], mask=inside, other=0.0)
            tl.atomic_add(sum_rows + dk[None, :], a, mask=inside, sem="relaxed")
