"""CuPy backend: a fused CUDA kernel that runs a whole Lloyd k-means per thread block, for many small problems.

In the batched regime (e.g. 1,024 problems of 100 x 512, k = 8) torch spends its time launching ~20 kernels per
iteration. This backend launches one kernel for the whole run: block ``b`` keeps problem ``b``'s points and
centroids in shared memory, assigns its points (exact ``sum (x - c)^2`` in fp32, ties to the lower cluster
index), recomputes the means with a fixed summation order (no atomics: deterministic), repeats ``n_iter``
times, then writes the labels and the distances of a final assignment. Empty clusters keep their centroid.
Cosine mode normalises the points and the centroids after each update.

The kernel copies each problem's points into shared memory once (rows at an odd float4 stride, so a warp's rows
fall in distinct banks; ``d`` padded with zero columns to a multiple of 4) and iterates on them there, so DRAM is
read once per problem. 100 points of 512 dimensions with k = 8 need 223 KB per block, under the H100's 227 KiB
opt-in limit. Problems whose points do not fit a block's shared memory are refused (``backend='auto'`` then runs
the torch backend).

CuPy is imported only when this backend runs, and works with cupy-cuda12x or cupy-cuda13x (NVRTC compiles each
kernel once per ``k`` and CuPy caches it).
"""

from functools import lru_cache
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from recbole_mm.clustering.assign import default_budget
from recbole_mm.clustering.backends.torch_backend import initial_centroids
from recbole_mm.clustering.result import KMeansResult

MAX_K = 64
DEFAULT_SHARED_BYTES = 48 * 1024
THREADS = 256

_SOURCE = r"""
#define KK %(k)d
extern "C" __global__ void lloyd_staged(
    const float* __restrict__ x, const unsigned char* __restrict__ mask, int has_mask,
    float* __restrict__ cent, long long* __restrict__ labels, float* __restrict__ dist,
    int n, int d, int n_iter, int cosine)
{
    extern __shared__ float4 smem4[];
    const int d4 = d >> 2;                   // d is a multiple of 4 (the caller pads with zero columns)
    const int s4 = (d4 & 1) ? d4 : d4 + 1;   // odd row stride (in float4): rows fall in distinct banks
    float4* xs = smem4;                      // [n * s4] the problem's points (unit rows in cosine mode)
    float4* c = xs + (size_t)n * s4;         // [KK * d4] centroids
    int* lab = (int*)(c + KK * d4);          // [n] labels, -1 at padding
    int* cnt = lab + n;                      // [KK] counts
    float* xf = (float*)xs;
    float* cf = (float*)c;
    const int b = blockIdx.x;
    const float4* xb = (const float4*)(x + (size_t)b * n * d);
    float4* cb = (float4*)(cent + (size_t)b * KK * d);
    for (int idx = threadIdx.x; idx < n * d4; idx += blockDim.x) xs[(idx / d4) * s4 + idx %% d4] = xb[idx];
    for (int idx = threadIdx.x; idx < KK * d4; idx += blockDim.x) c[idx] = cb[idx];
    __syncthreads();
    if (cosine) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float sq = 0.0f;
            for (int t = 0; t < d; ++t) { const float v = xf[(size_t)i * 4 * s4 + t]; sq += v * v; }
            const float scale = sq > 0.0f ? rsqrtf(sq) : 0.0f;
            for (int t = 0; t < d; ++t) xf[(size_t)i * 4 * s4 + t] *= scale;
        }
        __syncthreads();
    }
    for (int it = 0; it <= n_iter; ++it) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            if (has_mask && !mask[(size_t)b * n + i]) {
                lab[i] = -1;
                if (it == n_iter) { labels[(size_t)b * n + i] = -1; dist[(size_t)b * n + i] = 0.0f; }
                continue;
            }
            float acc[KK];
            #pragma unroll
            for (int j = 0; j < KK; ++j) acc[j] = 0.0f;
            const float4* xi = xs + (size_t)i * s4;
            for (int t = 0; t < d4; ++t) {
                const float4 v = xi[t];
                #pragma unroll
                for (int j = 0; j < KK; ++j) {
                    const float4 w = c[j * d4 + t];
                    const float e0 = v.x - w.x, e1 = v.y - w.y, e2 = v.z - w.z, e3 = v.w - w.w;
                    acc[j] += e0 * e0 + e1 * e1 + e2 * e2 + e3 * e3;
                }
            }
            int best = 0;
            float best_d = acc[0];
            #pragma unroll
            for (int j = 1; j < KK; ++j) if (acc[j] < best_d) { best_d = acc[j]; best = j; }
            lab[i] = best;
            if (it == n_iter) { labels[(size_t)b * n + i] = best; dist[(size_t)b * n + i] = best_d; }
        }
        __syncthreads();
        if (it == n_iter) break;
        for (int j = threadIdx.x; j < KK; j += blockDim.x) {
            int count = 0;
            for (int i = 0; i < n; ++i) count += (lab[i] == j);
            cnt[j] = count;
        }
        __syncthreads();
        for (int t = threadIdx.x; t < d; t += blockDim.x) {   // sums in point order: deterministic
            float acc[KK];
            #pragma unroll
            for (int j = 0; j < KK; ++j) acc[j] = 0.0f;
            for (int i = 0; i < n; ++i) {
                const int l = lab[i];
                const float v = xf[(size_t)i * 4 * s4 + t];
                #pragma unroll
                for (int j = 0; j < KK; ++j) acc[j] += (l == j) ? v : 0.0f;
            }
            #pragma unroll
            for (int j = 0; j < KK; ++j) if (cnt[j] > 0) cf[j * d + t] = acc[j] / (float)cnt[j];
        }
        __syncthreads();
        if (cosine) {
            for (int j = threadIdx.x; j < KK; j += blockDim.x) {
                float sq = 0.0f;
                for (int t = 0; t < d; ++t) sq += cf[j * d + t] * cf[j * d + t];
                if (sq > 0.0f) { const float r = rsqrtf(sq); for (int t = 0; t < d; ++t) cf[j * d + t] *= r; }
            }
            __syncthreads();
        }
    }
    for (int idx = threadIdx.x; idx < KK * d4; idx += blockDim.x) cb[idx] = c[idx];
}
"""


def _padded_dim(dim: int) -> int:
    """``dim`` rounded up to a multiple of 4: the kernel reads float4; zero columns change no distance."""
    return -(-dim // 4) * 4


def _shared_bytes(n: int, k: int, dim: int) -> int:
    """Shared memory of one block: the points (odd float4 row stride), centroids, labels and counts."""
    d4 = _padded_dim(dim) // 4
    return 16 * (n * (d4 if d4 % 2 else d4 + 1) + k * d4) + 4 * (n + k)


def _shared_limit(device: torch.device) -> int:
    """Shared memory one block may opt in to on ``device`` (227 KiB on an H100; 48 KiB, the default, if unknown)."""
    if not torch.cuda.is_available():
        return DEFAULT_SHARED_BYTES
    index = device.index if device.index is not None else torch.cuda.current_device()
    limit = getattr(torch.cuda.get_device_properties(index), "shared_memory_per_block_optin", None)
    if limit is None:
        import cupy as cp

        limit = cp.cuda.Device(index).attributes["MaxSharedMemoryPerBlockOptin"]
    return int(limit)


def unsupported(problem, k: int, options) -> Optional[str]:
    """Why the fused kernel cannot run these options, or ``None``."""
    n_points, dim = problem.x.shape[1:]
    if options["device"].type != "cuda":
        return "it needs a CUDA device (pass a CUDA tensor or device='cuda')"
    if problem.dtype != torch.float32:
        return "it computes in float32 only"
    if options["minibatch_size"] is not None or options["tol"] is not None or options["empty"] != "keep":
        return "it runs a fixed number of full Lloyd iterations with empty='keep' (no minibatch_size, no tol)"
    if k > MAX_K:
        return f"k = {k} > {MAX_K}"
    needed, limit = _shared_bytes(n_points, k, dim), _shared_limit(options["device"])
    if needed > limit:
        return (
            f"a problem's points and centroids need {needed} bytes of shared memory, more than the {limit} of a block"
        )
    return None


@lru_cache(maxsize=None)
def _kernel(k: int, shared: int):
    import cupy as cp

    kernel = cp.RawKernel(_SOURCE % {"k": k}, "lloyd_staged")
    kernel.max_dynamic_shared_size_bytes = shared  # above 48 KiB a block must opt in
    return kernel


def cupy_kmeans(
    problem, k, explicit, *, n_iter, tol, init, cosine, empty, seed, budget, minibatch_size, precision, device
) -> KMeansResult:
    """Run the fused kernel on validated input (see :func:`recbole_mm.clustering.kmeans`)."""
    import cupy as cp

    generator = torch.Generator().manual_seed(seed)
    n_batch, n_points, dim = problem.x.shape
    centroids = initial_centroids(
        problem, k, init, explicit, generator, device, torch.float32, cosine, budget or default_budget(device)
    )
    pad = _padded_dim(dim) - dim  # zero columns: same distances, same norms
    x = F.pad(problem.x.to(device=device, dtype=torch.float32), (0, pad)).contiguous()
    centroids = F.pad(centroids, (0, pad)).contiguous().clone()
    if x.data_ptr() % 16:  # a view at an offset that is not 16-byte aligned (the kernel reads float4)
        x = x.clone()
    has_mask = problem.mask is not None
    mask = (problem.mask if has_mask else torch.ones(1, dtype=torch.bool, device=device)).to(device, torch.uint8)
    labels = torch.empty(n_batch, n_points, dtype=torch.long, device=device)
    dist = torch.empty(n_batch, n_points, dtype=torch.float32, device=device)
    shared = _shared_bytes(n_points, k, dim)
    stream = torch.cuda.current_stream(device)
    with cp.cuda.Device(device.index if device.index is not None else torch.cuda.current_device()):
        with cp.cuda.ExternalStream(stream.cuda_stream):
            _kernel(k, shared)(
                (n_batch,),
                (THREADS,),
                (
                    cp.asarray(x),
                    cp.asarray(mask.contiguous()),
                    np.int32(has_mask),
                    cp.asarray(centroids),
                    cp.asarray(labels),
                    cp.asarray(dist),
                    np.int32(n_points),
                    np.int32(dim + pad),
                    np.int32(n_iter),
                    np.int32(cosine),
                ),
                shared_mem=shared,
            )
    centroids = centroids[..., :dim].contiguous()
    inertia = dist.double().sum(1)
    if cosine:
        inertia = inertia / 2
    if problem.batched:
        return KMeansResult(labels, centroids, inertia, n_iter)
    return KMeansResult(labels[0], centroids[0], float(inertia[0]), n_iter)
