"""Tests for recbole_mm.clustering.backends.cupy_backend (GPU only; CPU-side: the applicability checks)."""

import pytest
import torch

from recbole_mm.clustering import ClusteringError, kmeans
from recbole_mm.clustering.backends import cupy_backend
from recbole_mm.clustering.validation import check_problem

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_unsupported_reasons():
    problem = check_problem(torch.zeros(4, 100, 512), 8)
    cuda = {"device": torch.device("cuda"), "minibatch_size": None, "tol": None, "empty": "keep"}
    assert cupy_backend.unsupported(problem, 8, cuda) is None  # regime B fits: 8 x 512 x 8 + 100 x 8 bytes
    # staged: 100 rows at an odd stride of 129 float4, 8 x 128 float4 centroids, labels and counts: < 227 KiB (H100)
    assert cupy_backend._staged_bytes(100, 8, 512) == 16 * (100 * 129 + 8 * 128) + 4 * 108 <= 227 * 1024
    assert "CUDA" in cupy_backend.unsupported(problem, 8, dict(cuda, device=torch.device("cpu")))
    assert "k = 65" in cupy_backend.unsupported(problem, 65, cuda)
    assert "shared memory" in cupy_backend.unsupported(check_problem(torch.zeros(2, 100, 1024), 8), 8, cuda)
    assert "fixed number" in cupy_backend.unsupported(problem, 8, dict(cuda, tol=1e-4))
    assert "float32" in cupy_backend.unsupported(check_problem(torch.zeros(2, 10, 4, dtype=torch.float64), 2), 2, cuda)


def _blobs(n_batch, n, dim, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 8 * torch.randn(n_batch, k, dim, generator=g)
    which = torch.randint(0, k, (n_batch, n), generator=g)
    return (
        torch.gather(centres, 1, which.unsqueeze(-1).expand(-1, -1, dim)) + torch.randn(n_batch, n, dim, generator=g)
    ).cuda()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("n, dim, variant", [(100, 32, "staged"), (300, 64, "staged"), (100, 30, "global")])
def test_fused_kernel_matches_torch_backend(cosine, n, dim, variant):
    pytest.importorskip("cupy")
    assert cupy_backend._variant(n, 8, dim, torch.device("cuda")) == variant  # both kernels are exercised
    x = _blobs(64, n, dim, 8)
    mask = (torch.rand(64, n, generator=torch.Generator().manual_seed(1)) > 0.2).cuda()
    distance = "cosine" if cosine else "euclidean"
    ours = kmeans(x, 8, n_iter=10, mask=mask, backend="cupy", distance=distance)
    ref = kmeans(x, 8, n_iter=10, mask=mask, backend="torch", distance=distance, precision="highest")
    assert bool((ours.labels[~mask] == -1).all())
    assert (ours.labels == ref.labels).float().mean() > 0.999
    torch.testing.assert_close(ours.centroids, ref.centroids, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.inertia, ref.inertia, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_fused_kernel_quality_and_determinism():
    pytest.importorskip("cupy")
    x = torch.randn(256, 100, 512, generator=torch.Generator().manual_seed(0)).cuda()
    assert cupy_backend._variant(100, 8, 512, x.device) == "staged"  # regime B's shape: points in shared memory
    first = kmeans(x, 8, n_iter=10, backend="cupy")
    second = kmeans(x, 8, n_iter=10, backend="cupy")
    assert torch.equal(first.labels, second.labels) and torch.equal(first.centroids, second.centroids)
    start = kmeans(x, 8, n_iter=0).centroids
    exact = kmeans(x.double().cpu(), 8, n_iter=10, init=start.double().cpu())
    assert float(first.inertia.sum() / exact.inertia.sum()) < 1.005


@pytest.mark.gpu
@needs_cuda
def test_named_cupy_backend_rejects_what_it_cannot_run():
    pytest.importorskip("cupy")
    with pytest.raises(ClusteringError, match="k = 65"):
        kmeans(torch.randn(2, 100, 4).cuda(), 65, backend="cupy")
    assert kmeans(torch.randn(2, 100, 4).cuda(), 3, backend="auto").labels.shape == (2, 100)
