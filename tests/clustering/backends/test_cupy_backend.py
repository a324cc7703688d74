"""Tests for recbole_mm.clustering.backends.cupy_backend (GPU only; CPU-side: the applicability checks)."""

import pytest
import torch

from recbole_mm.clustering import ClusteringError, kmeans
from recbole_mm.clustering.backends import cupy_backend
from recbole_mm.clustering.validation import check_problem

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_unsupported_reasons(monkeypatch):
    monkeypatch.setattr(cupy_backend, "_shared_limit", lambda device: 227 * 1024)  # an H100's opt-in limit
    problem = check_problem(torch.zeros(4, 100, 512), 8)
    cuda = {"device": torch.device("cuda"), "minibatch_size": None, "tol": None, "empty": "keep"}
    assert cupy_backend.unsupported(problem, 8, cuda) is None  # regime B fits
    # 100 rows at an odd stride of 129 float4, 8 x 128 float4 centroids, labels and counts
    assert cupy_backend._shared_bytes(100, 8, 512) == 16 * (100 * 129 + 8 * 128) + 4 * 108
    # d = 30 is padded to 32 (8 float4, stride 9); d = 300 to 300 (75 float4, odd: no extra column)
    assert cupy_backend._shared_bytes(10, 2, 30) == 16 * (10 * 9 + 2 * 8) + 4 * 12
    assert cupy_backend._shared_bytes(10, 2, 300) == 16 * (10 * 75 + 2 * 75) + 4 * 12
    assert "CUDA" in cupy_backend.unsupported(problem, 8, dict(cuda, device=torch.device("cpu")))
    assert "k = 65" in cupy_backend.unsupported(problem, 65, cuda)
    too_big = cupy_backend.unsupported(check_problem(torch.zeros(2, 200, 512), 8), 8, cuda)
    assert "430016 bytes of shared memory, more than the 232448" in too_big
    assert "fixed number" in cupy_backend.unsupported(problem, 8, dict(cuda, tol=1e-4))
    assert "float32" in cupy_backend.unsupported(check_problem(torch.zeros(2, 10, 4, dtype=torch.float64), 2), 2, cuda)
    monkeypatch.setattr(cupy_backend, "_shared_limit", lambda device: cupy_backend.DEFAULT_SHARED_BYTES)
    assert "more than the 49152" in cupy_backend.unsupported(problem, 8, cuda)  # without the opt-in


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
@pytest.mark.parametrize("n, dim", [(100, 32), (300, 64), (100, 30)])  # 300 points: threads loop; d = 30 is padded
def test_fused_kernel_matches_torch_backend(cosine, n, dim):
    pytest.importorskip("cupy")
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
