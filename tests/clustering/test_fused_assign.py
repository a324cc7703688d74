"""Tests for recbole_mm.clustering.fused_assign (the fused Triton nearest-centroid kernel) and its use in assign_pass.

Without a GPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, float32 products); those tests
need the ``triton`` package and are skipped without it (the CPU install does not ship it: ``pip install triton``).
Triton fixes its mode for the whole process when it is first imported, so where a GPU is present the interpreter
variants are skipped and the same checks run on CUDA (TF32 products, marked ``gpu``), with larger shapes added
there. The compile-only check for the H100 runs in a subprocess of its own.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from recbole_mm.clustering import fused_assign, kmeans, kmeans_reference
from recbole_mm.clustering.assign import assign_pass, fused_applies
from recbole_mm.clustering.fused_assign import available, fused_nearest
from recbole_mm.clustering.lloyd import lloyd

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Largest error of an assignment score c_sq - 2 x.c relative to scale = ||x||^2 + max_j ||c_j||^2 (>= 2 |x||c_j|).
# Interpreter: float32 products and sums, far below 1e-4. TF32: each operand rounded to 10 mantissa bits (relative
# 2^-11), so |error(x.c)| <= ~2^-10 sum_i |x_i c_i| <= 1e-3 |x||c|: a score errs by at most 1e-3 * scale and the
# difference of two scores by at most 2e-3 * scale.
REL_FP32 = 1e-4
REL_TF32 = 2e-3


@pytest.fixture
def fused_calls(monkeypatch):
    """Rows of each call assign_pass makes to fused_nearest (the real function still runs)."""
    calls = []
    real = fused_assign.fused_nearest

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(fused_assign, "fused_nearest", counting)
    return calls


def gaussian(shape, seed, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def small_ints(shape, seed, device="cpu"):
    """Integers in [-3, 3] as float32: every product and sum below is exact in TF32 and float32."""
    return torch.randint(-3, 4, shape, generator=torch.Generator().manual_seed(seed)).float().to(device)


def check_against_float64(x, centroids, result, rel, chunk=8192):
    """Compare ``fused_nearest(x, centroids)`` with float64 scores; return the share of rows whose label is checked.

    With ``tol = rel * (||x||^2 + max ||c||^2)`` per row: every label scores within ``tol`` of the float64 minimum,
    ``best`` is the float64 score of its own label within ``tol``, and where the float64 gap between the best and
    the second-best centroid is at least ``tol`` the label is the float64 argmin itself.
    """
    c64 = centroids.double()
    c_sq = c64.pow(2).sum(-1)
    checked = 0
    for r0 in range(0, len(x), chunk):
        x64 = x[r0 : r0 + chunk].double()
        labels, best = result.labels[r0 : r0 + chunk], result.best[r0 : r0 + chunk].double()
        scores = c_sq - 2 * x64 @ c64.T
        tol = rel * (x64.pow(2).sum(-1) + c_sq.max())
        two = scores.topk(min(2, scores.shape[1]), dim=1, largest=False)
        gap = two.values[:, 1] - two.values[:, 0] if scores.shape[1] > 1 else torch.full_like(tol, float("inf"))
        chosen = scores.gather(1, labels[:, None])[:, 0]
        assert bool((chosen - two.values[:, 0] <= tol).all()), "a label is not a nearest centroid"
        assert bool(((best - chosen).abs() <= tol).all()), "best is not the score of its label"
        clear = gap >= tol
        assert torch.equal(labels[clear], two.indices[clear, 0])
        checked += int(clear.sum())
    return checked / len(x)


@pytest.mark.parametrize("n, d, k", [(300, 20, 7), (300, 33, 7), (300, 20, 130), (300, 33, 130), (1, 20, 1)])
def test_matches_float64_on_partial_tiles(device, n, d, k):
    x, centroids = gaussian((n, d), 0, device), gaussian((k, d), 1, device)
    result = fused_nearest(x, centroids)
    assert result.labels.shape == (n,) and result.labels.dtype == torch.long
    assert result.best.shape == (n,) and result.best.dtype == torch.float32
    assert bool(((result.labels >= 0) & (result.labels < k)).all())
    rel = REL_FP32 if device.type == "cpu" else REL_TF32
    assert check_against_float64(x, centroids, result, rel) > 0.9


def test_ties_go_to_the_lower_index_within_and_across_tiles(device):
    centroids = small_ints((130, 33), 2)
    centroids[64] = centroids[5]  # the same tile as 5 when BLOCK_N >= 128, the next one when BLOCK_N = 64
    centroids[129] = centroids[5]  # past the first 128-wide tile
    x = small_ints((300, 33), 3)
    x[::7] = centroids[5]  # ties between 5, 64 and 129 at distance 0
    x, centroids = x.to(device), centroids.to(device)
    result = fused_nearest(x, centroids)
    scores = centroids.double().pow(2).sum(-1) - 2 * x.double() @ centroids.double().T  # exact integers
    expected = scores.min(-1)
    assert torch.equal(result.labels, expected.indices)  # torch.min: the first minimum
    assert torch.equal(result.best.double(), expected.values)
    assert bool((result.labels[::7] == 5).all())


def test_sums_add_every_row_to_its_nearest_centroid_across_calls(device):
    x, centroids = small_ints((300, 33), 16, device), small_ints((20, 33), 17, device)  # exact sums in any order
    sums = torch.ones(20, 33, device=device)  # the kernel adds to what is there
    first = fused_nearest(x[:120], centroids, sums=sums)
    second = fused_nearest(x[120:], centroids, sums=sums)
    labels = torch.cat([first.labels, second.labels])
    expected = torch.ones(20, 33, dtype=torch.float64).index_add_(0, labels.cpu(), x.double().cpu())
    assert torch.equal(sums.double().cpu(), expected)
    assert torch.equal(labels, fused_nearest(x, centroids).labels)  # the sums change nothing else


def test_bad_sums_raise(device):
    x, centroids = torch.zeros(3, 4, device=device), torch.zeros(2, 4, device=device)
    with pytest.raises(ValueError, match=r"sums must be contiguous float32 \[2, 4\] .* \(2, 3\)"):
        fused_nearest(x, centroids, sums=torch.zeros(2, 3, device=device))
    with pytest.raises(ValueError, match="sums must be .* torch.float64"):
        fused_nearest(x, centroids, sums=torch.zeros(2, 4, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="not contiguous"):
        fused_nearest(x, centroids, sums=torch.zeros(4, 2, device=device).T)


def test_c_sq_is_used_as_given(device):
    x, centroids = gaussian((50, 20), 4, device), gaussian((9, 20), 5, device)
    c_sq = torch.zeros(9, device=device)
    c_sq[3] = -1e6  # nearest to every point through its norm term alone
    result = fused_nearest(x, centroids, c_sq)
    assert bool((result.labels == 3).all())
    expected = -1e6 - 2 * (x.double() @ centroids[3].double())
    torch.testing.assert_close(result.best.double(), expected, rtol=1e-6, atol=0)


def test_strided_and_empty_inputs(device):
    x, centroids = gaussian((40, 36), 6, device), gaussian((11, 36), 7, device)
    view = x[:, :33]  # rows 36 floats apart: not contiguous
    result = fused_nearest(view, centroids[:, :33])
    rel = REL_FP32 if device.type == "cpu" else REL_TF32
    check_against_float64(view, centroids[:, :33], result, rel)
    empty = fused_nearest(x[:0], centroids)
    assert empty.labels.shape == (0,) and empty.best.shape == (0,)


def test_bad_shapes_raise(device):
    x = torch.zeros(3, 2, device=device)
    with pytest.raises(ValueError, match=r"centroids \[k, d\], found \(3, 2\) and \(2, 5\)"):
        fused_nearest(x, torch.zeros(2, 5, device=device))
    with pytest.raises(ValueError, match="centroids must be float32"):
        fused_nearest(x, torch.zeros(2, 2, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match=r"c_sq must be float32 \[2\] .* \(3,\)"):
        fused_nearest(x, torch.zeros(2, 2, device=device), torch.zeros(3, device=device))


def test_unavailable_inputs_raise(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not available(torch.zeros(2, 2, dtype=torch.float64))
    assert not available(torch.zeros(2, 2))  # CPU without the interpreter
    with pytest.raises(ValueError, match="CUDA float32 x; found .* torch.float64"):
        fused_nearest(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="CUDA float32 x; found .* on cpu"):
        fused_nearest(torch.zeros(3, 2), torch.zeros(2, 2))


def test_available_where_triton_runs(device):
    assert available(torch.zeros(2, 2, device=device))
    assert not available(torch.zeros(2, 2, dtype=torch.float64, device=device))


@pytest.mark.parametrize("mask, rows", [(False, None), (True, None), (True, slice(50, 250))])
def test_assign_pass_fused_equals_cublas_path(device, fused_calls, mask, rows):
    x, centroids = small_ints((1, 300, 33), 8, device), small_ints((1, 130, 33), 9, device)  # exact scores
    real = (torch.rand(1, 300, generator=torch.Generator().manual_seed(10)) > 0.2).to(device) if mask else None
    budget = 4 * (2 * 33 + 4) * 100  # 100 rows per block once no score matrix is stored
    options = dict(budget=budget, precision="tf32", rows=rows, want_sums=True, want_dist=True)
    fused = assign_pass(x, centroids, real, **options)
    n_rows = 300 if rows is None else 200
    assert fused_calls == [100] * (n_rows // 100)
    plain = assign_pass(x, centroids, real, fused=False, **options)
    assert len(fused_calls) == n_rows // 100  # fused=False kept the kernel off
    assert torch.equal(fused.labels, plain.labels)
    assert torch.equal(fused.sums, plain.sums) and torch.equal(fused.counts, plain.counts)
    assert torch.equal(fused.dist, plain.dist)
    if mask:
        kept = real if rows is None else real[:, rows]
        assert bool((fused.labels[~kept] == -1).all()) and bool((fused.labels[kept] >= 0).all())


def test_fused_applies_only_to_single_tf32_float32_problems(device):
    one = torch.zeros(1, 4, 3, device=device)
    assert fused_applies(one, "tf32")
    assert not fused_applies(one, "highest")
    assert not fused_applies(torch.zeros(2, 4, 3, device=device), "tf32")  # batched problems keep baddbmm
    assert not fused_applies(one.double(), "tf32")


def test_kmeans_fused_equals_unfused_on_separated_data(device, fused_calls):
    centres = 6 * gaussian((5, 20), 11)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(13))
    x = (centres.repeat_interleave(40, 0) + 0.5 * gaussian((200, 20), 12))[order].to(device)
    # Started from the blob centres, every point is far nearer one centroid than any other, so the two TF32
    # products (Triton's and cuBLAS's round differently) must agree. A random start can put two centroids in one
    # blob, and the points between them then flip with the rounding (seen on the H100 with seed 0).
    start = centres.to(device)
    fused = kmeans(x, 5, n_iter=3, init=start, precision="tf32")
    assert fused_calls == [200] * 4  # three Lloyd passes and the final one, each a single block
    settings = dict(n_iter=3, tol=None, empty="keep", cosine=False, budget=2**20, precision="tf32")
    plain, done = lloyd(x.unsqueeze(0), None, start.unsqueeze(0), fused=False, **settings)
    assert done == 3 and len(fused_calls) == 4  # fused=False kept the kernel off
    labels = assign_pass(x.unsqueeze(0), plain, None, budget=2**20, precision="tf32", fused=False).labels[0]
    assert torch.equal(fused.labels, labels)
    torch.testing.assert_close(fused.centroids, plain[0], rtol=1e-5, atol=1e-5)


def test_reference_pass_in_tf32_runs_fused_and_keeps_the_labels_on_separated_data(device, fused_calls):
    centres = 6 * gaussian((5, 20), 11)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(13))
    x = (centres.repeat_interleave(60, 0) + 0.5 * gaussian((300, 20), 12))[order].to(device)
    fast = kmeans_reference(x, 5, batch_size=100, precision="tf32")
    assert fused_calls == [100, 100, 100, 300]  # every minibatch, then the final labels
    exact = kmeans_reference(x, 5, batch_size=100)  # float32 products, as the reference
    assert len(fused_calls) == 4  # 'highest' never takes the TF32 kernel
    assert torch.equal(fast.labels, exact.labels)
    torch.testing.assert_close(fast.centroids, exact.centroids, rtol=1e-5, atol=1e-5)


BUILD_FOR_H100 = """
import re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from recbole_mm.clustering.fused_assign import CONFIGS, _kernel

jit = _kernel().fn
kinds = dict(x_ptr="*fp32", c_ptr="*fp32", c_sq_ptr="*fp32", labels_ptr="*i64", best_ptr="*fp32", sums_ptr="*fp32")
signature = {name: kinds.get(name, "constexpr" if name.isupper() else "i32") for name in jit.arg_names}
for sums in (False, True):
    for vec, (block_m, block_n, block_k, warps, stages) in [(4, c) for c in CONFIGS] + [(1, CONFIGS[0])]:
        constants = dict(VEC=vec, WANT_SUMS=sums, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
        source = ASTSource(fn=jit, signature=signature, constexprs=constants)
        options = dict(num_warps=warps, num_stages=stages)
        ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
        atomics = re.search(r"\\b(atom|red)\\.global", ptx) is not None  # red: an atomic add, result unused
        ok = "wgmma.mma_async" in ptx and ".tf32" in ptx and atomics == sums
        print("ok" if ok else "no-wgmma-or-atomics", block_m, block_n, block_k, vec, sums)
"""


@needs_triton
def test_every_config_builds_for_the_h100():
    """Compile only, no GPU needed: each autotune config (and the unaligned-row variant), with and without the
    fused sums, lowers to sm_90 code with TF32 wgmma instructions and global atomics exactly when it adds the sums
    (ptxas included), in a fresh process where Triton compiles."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", BUILD_FOR_H100], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 2 * (len(fused_assign.CONFIGS) + 1) and all(line.startswith("ok ") for line in lines), lines


@pytest.mark.parametrize("n, d, k", [(50_000, 300, 17_879), (20_000, 256, 1024)])
@pytest.mark.gpu
@needs_triton
@needs_cuda
def test_cuda_matches_float64_at_missrec_size(n, d, k):
    """Labels within the products' rounding of float64, the clear-cut share decided exactly, and the fused sums."""
    x, centroids = gaussian((n, d), 13, "cuda"), gaussian((k, d), 14, "cuda")
    sums = torch.zeros(k, d, device="cuda")
    result = fused_nearest(x, centroids, sums=sums)
    assert check_against_float64(x, centroids, result, REL_TF32) > 0.5
    expected = torch.zeros(k, d, dtype=torch.float64, device="cuda").index_add_(0, result.labels, x.double())
    torch.testing.assert_close(sums.double(), expected, rtol=1e-4, atol=1e-3)  # float32 atomics, any order


@pytest.mark.gpu
@needs_triton
@needs_cuda
def test_cuda_kmeans_fused_inertia_within_half_percent_of_unfused(fused_calls):
    x = gaussian((50_000, 300), 15, "cuda")
    fused = kmeans(x, 2001, n_iter=10, seed=0)  # odd k: the cuBLAS path pads it, the kernel masks it
    used = len(fused_calls)
    assert used >= 11  # ten Lloyd passes and the final one
    start = kmeans(x, 2001, n_iter=0, seed=0).centroids.unsqueeze(0)
    settings = dict(n_iter=10, tol=None, empty="keep", cosine=False, budget=2**30, precision="tf32", fused=False)
    plain, _ = lloyd(x.unsqueeze(0), None, start, **settings)
    final = assign_pass(x.unsqueeze(0), plain, None, budget=2**30, precision="tf32", want_dist=True, fused=False)
    assert len(fused_calls) == used
    assert abs(fused.inertia / float(final.dist.sum()) - 1) < 0.005
