"""Tests for recbole_mm.clustering.span (Lloyd iterations in the span of the points, one Triton kernel).

Without a GPU the kernel runs under Triton's interpreter (float32 products; ``device`` fixture, skipped without the
``triton`` package). The span path is checked against the per-pass path (``span.ENABLED = False``), which
``test_kmeans.py`` checks against float64 numpy Lloyd: the two compute the distances differently (Gram matrix
against direct products), so agreement is a real check of the algebra. The H100 build is checked without a GPU.
"""

import os
import subprocess
import sys

import pytest
import torch

from recbole_mm.clustering import kmeans, span


@pytest.fixture
def span_calls(monkeypatch):
    """Problems per call of span_lloyd (the real function still runs)."""
    calls = []
    real = span.span_lloyd

    def counting(x, *args, **kwargs):
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(span, "span_lloyd", counting)
    return calls


def per_pass(*args, **kwargs):
    """The same kmeans call on the per-pass path."""
    span.ENABLED = False
    try:
        return kmeans(*args, **kwargs)
    finally:
        span.ENABLED = True


def blobs_and_centres(n_batch, n, dim, k, seed, device):
    """``n_batch`` problems of ``n`` points around ``k`` well-separated centres each: ``(points, centres)``."""
    g = torch.Generator().manual_seed(seed)
    centres = 6 * torch.randn(n_batch, k, dim, generator=g)
    which = torch.randint(0, k, (n_batch, n), generator=g)
    noise = torch.randn(n_batch, n, dim, generator=g)
    points = torch.gather(centres, 1, which.unsqueeze(-1).expand(-1, -1, dim)) + noise
    return points.to(device), centres.to(device)


def blob_problems(n_batch, n, dim, k, seed, device):
    return blobs_and_centres(n_batch, n, dim, k, seed, device)[0]


def test_width_is_a_power_of_two_of_at_least_16():
    assert [span._width(s) for s in (1, 16, 17, 100, 108, 128)] == [16, 16, 32, 128, 128, 128]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("masked", [False, True])
def test_span_path_equals_per_pass_path(device, span_calls, distance, masked):
    # started from the blob centres, no point is near a tie, so on CUDA too (TF32 products, rounded differently
    # by the two paths) the labels must agree
    x, start = blobs_and_centres(6, 40, 24, 5, 0, device)
    mask = None
    if masked:
        mask = torch.rand(6, 40, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[0] = True  # one problem without padding
        mask = mask.to(device)
        x = x.masked_fill(~mask.unsqueeze(-1), float("nan"))  # padding must not leak into any real result
    ours = kmeans(x, 5, n_iter=7, mask=mask, distance=distance, init=start)
    ref = per_pass(x, 5, n_iter=7, mask=mask, distance=distance, init=start)
    assert span_calls == [6]
    assert ours.n_iter == ref.n_iter == 7
    assert torch.equal(ours.labels, ref.labels)
    assert bool(torch.isfinite(ours.centroids).all())
    torch.testing.assert_close(ours.centroids, ref.centroids, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.inertia, ref.inertia, rtol=1e-5, atol=1e-4)


def test_span_path_keeps_empty_clusters_and_explicit_centroids(device, span_calls):
    x, centres = blobs_and_centres(3, 30, 8, 3, 2, device)
    far = torch.full((3, 1, 8), 1e3, device=device)  # a start no point is ever nearest to: its cluster stays empty
    init = torch.cat([centres, far], 1)
    ours = kmeans(x, 4, n_iter=5, init=init)
    ref = per_pass(x, 4, n_iter=5, init=init)
    assert span_calls == [3]
    assert torch.equal(ours.centroids[:, 3], far[:, 0])  # kept exactly: weight 1 on the initial centroid
    assert not bool((ours.labels == 3).any())
    assert torch.equal(ours.labels, ref.labels)
    torch.testing.assert_close(ours.centroids, ref.centroids, rtol=1e-5, atol=1e-5)


def test_zero_iterations_return_the_start(device, span_calls):
    x = blob_problems(2, 20, 8, 2, 3, device)
    start = per_pass(x, 2, n_iter=0, seed=5).centroids
    assert torch.equal(kmeans(x, 2, n_iter=0, seed=5).centroids, start)
    assert span_calls == [2]


def test_span_path_only_where_it_applies(device, span_calls):
    x = blob_problems(2, 100, 8, 4, 4, device)
    kmeans(x, 4, n_iter=2, empty="farthest")  # re-seeding stays on the per-pass path
    kmeans(x, 4, n_iter=2, tol=1e-4)  # so does a tolerance
    kmeans(x, 4, n_iter=2, minibatch_size=32)  # and mini-batch mode
    kmeans(x, 29, n_iter=2)  # 100 points + 29 centroids > MAX_SPAN
    kmeans(x.double(), 4, n_iter=2)  # float32 only
    assert span_calls == []
    kmeans(x, 28, n_iter=2)  # 100 + 28 = MAX_SPAN
    assert span_calls == [2]


def test_cpu_without_the_interpreter_stays_on_the_per_pass_path(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = blob_problems(2, 20, 8, 2, 5, "cpu")
    assert not span.applies(x, x[:, :2], tol=None, empty="keep")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "highest"])
def test_cuda_batched_regime_within_half_percent_of_float64_lloyd(precision):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("triton")
    x = torch.randn(256, 100, 512, generator=torch.Generator().manual_seed(0)).cuda()  # issue 3's regime B shape
    ours = kmeans(x, 8, n_iter=10, precision=precision)
    start = kmeans(x, 8, n_iter=0).centroids
    exact = kmeans(x.double(), 8, n_iter=10, init=start.double())  # float64: the per-pass path
    assert float(ours.inertia.sum() / exact.inertia.sum()) < 1.005  # random data: near-ties may flip, not this
    again = kmeans(x, 8, n_iter=10, precision=precision)
    assert torch.equal(ours.centroids, again.centroids)  # no atomics: deterministic
    # from the blob centres every point is far nearer one centroid than any other (a random start can put two
    # centroids in one blob, and the points between them flip with the rounding): the labels must agree
    blobs, start = blobs_and_centres(256, 100, 512, 8, 6, "cuda")
    ours = kmeans(blobs, 8, n_iter=10, init=start, precision=precision)
    exact = kmeans(blobs.double(), 8, n_iter=10, init=start.double())
    assert torch.equal(ours.labels, exact.labels)
    torch.testing.assert_close(ours.centroids.double(), exact.centroids, rtol=1e-4, atol=1e-4)


BUILD_FOR_H100 = """
import os, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from recbole_mm.clustering.span import _kernel

jit = _kernel()
ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
kinds = dict(g_ptr="*fp32", w_ptr="*fp32", real_ptr="*i8")
signature = {name: kinds.get(name, "constexpr" if name.isupper() else "i32") for name in jit.arg_names}
for precision in ("tf32", "tf32x3"):
    for cosine in (False, True):
        for m, k in ((16, 16), (128, 16), (128, 64)):
            constants = dict(PRECISION=precision, COSINE=cosine, M=m, K=k)
            built = triton.compile(
                ASTSource(fn=jit, signature=signature, constexprs=constants),
                target=GPUTarget("cuda", 90, 32),
                options=dict(num_warps=8),
            )
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(built.asm["ptx"])
            command = [ptxas, "-v", "-arch=sm_90a", f.name, "-o", os.devnull]
            log = subprocess.run(command, capture_output=True, text=True)
            os.unlink(f.name)
            spills = "0 bytes spill stores, 0 bytes spill loads" in log.stderr
            fits = built.metadata.shared <= 227 * 1024  # an H100 block's shared memory
            good = log.returncode == 0 and spills and fits and "mma" in built.asm["ptx"]
            print("ok" if good else f"shared {built.metadata.shared} {log.stderr}", precision, m, k)
"""


def test_kernel_builds_for_the_h100_without_spills():
    """Compile only, no GPU needed: every precision, cosine flag and tile size used lowers to sm_90 tensor-core
    code that ptxas builds without register spills and that fits a block's shared memory, in a fresh process where
    Triton compiles. k <= n and n + k <= 128 keep k <= 64: (128, 64) is the largest tile."""
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", BUILD_FOR_H100], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 12 and all(line.startswith("ok ") for line in lines), lines
