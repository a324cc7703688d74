"""The Triton kernel of :func:`recbole_mm.clustering.span.span_lloyd`; importing it imports triton.

Only :mod:`recbole_mm.clustering.span` imports this module, on first use (see
:mod:`recbole_mm.clustering.fused_kernel` for why Triton is imported late).
"""

import triton
import triton.language as tl


@triton.jit
def span_lloyd_kernel(
    g_ptr, w_ptr, real_ptr, n_iter, k, PRECISION: tl.constexpr, COSINE: tl.constexpr, M: tl.constexpr, K: tl.constexpr
):
    """Per program, problem ``pid``: ``n_iter`` Lloyd updates of the weights ``w [M, K]`` in place.

    ``g [B, M, M]`` is the Gram matrix of the problem's span rows (points, then initial centroids, then zero
    padding), ``w`` expresses centroid ``j`` as ``sum_i w[i, j] * row_i`` and ``real [B, M]`` (int8) marks the rows
    that are points to assign. Columns ``j >= k`` are padding and never win. ``PRECISION`` is the products'
    ``input_precision``: ``'tf32'``, or ``'tf32x3'`` (near float32). On sm_90 both keep ``g`` in shared memory as a
    wgmma operand; a float32 (``'ieee'``) product would be lowered to FMAs and spill registers at ``M = 128``.
    """
    pid = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, M)
    cols = tl.arange(0, K)
    g = tl.load(g_ptr + pid * M * M + rows[:, None] * M + rows[None, :])
    w_ptrs = w_ptr + pid * M * K + rows[:, None] * K + cols[None, :]
    w = tl.load(w_ptrs)
    real = tl.load(real_ptr + pid * M + rows) != 0
    col_ok = cols < k
    for _ in range(n_iter):
        gw = tl.dot(g, w, input_precision=PRECISION)  # [M, K]: row_i . c_j
        c_sq = tl.sum(w * gw, axis=0)  # [K]: ||c_j||^2
        scores = tl.where(col_ok[None, :], c_sq[None, :] - 2.0 * gw, float("inf"))
        _, nearest = tl.min(scores, axis=1, return_indices=True, return_indices_tie_break_left=True)
        member = ((nearest[:, None] == cols[None, :]) & real[:, None]).to(tl.float32)
        count = tl.sum(member, axis=0)
        w = tl.where((count > 0)[None, :], member / tl.maximum(count, 1.0)[None, :], w)  # empty: keep
        if COSINE:  # unit centroids, as F.normalize (a zero centroid stays zero)
            norm_sq = tl.sum(w * tl.dot(g, w, input_precision=PRECISION), axis=0)
            w = w / tl.maximum(tl.sqrt(norm_sq), 1e-12)[None, :]
    tl.store(w_ptrs, w)
