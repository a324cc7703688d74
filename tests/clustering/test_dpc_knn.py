"""Tests for recbole_mm.clustering.dpc_knn: MISSRec's DPC-KNN against a hand-worked
example and a float64 numpy walk through the whole-matrix algorithm."""

import math

import numpy as np
import pytest
import torch

from recbole_mm.clustering import ClusteringError, dpc_knn


def simulate_dpc_knn(x, k, local_size):
    """Float64 numpy DPC-KNN on the whole ``n x n`` distance matrix, as the reference code computes it."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) / math.sqrt(d)
    density = np.exp(-(np.sort(dist, axis=1)[:, :local_size] ** 2).mean(1))
    higher = density[None, :] > density[:, None]  # [i, j]: j denser than i
    delta = np.array([dist[i, higher[i]].min() if higher[i].any() else dist.max() for i in range(n)])
    centres = np.argsort(-(density * delta), kind="stable")[:k]
    labels = dist[centres].argmin(0)
    labels[centres] = np.arange(k)
    counts = np.bincount(labels, minlength=k)
    centroids = np.stack([x[labels == c].sum(0) / (counts[c] + 1e-4) for c in range(k)])
    return centres, labels, centroids


def test_hand_worked_two_groups_on_a_line():
    # local_size 3 (the point and its 2 nearest): densities exp(-mean d^2) put the peaks at 5.05 (densest of all:
    # delta = the largest distance, 5.2) and 0.1 (delta = 4.9 to 5.0, the nearest denser point), so with k = 2
    # cluster 0 is the right group and cluster 1 the left; centroids are sums / (3 + 1e-4)
    x = torch.tensor([[0.0], [0.1], [0.3], [5.0], [5.05], [5.2]], dtype=torch.float64)
    res = dpc_knn(x, 2, local_size=3)
    assert res.labels.tolist() == [1, 1, 1, 0, 0, 0]
    expected = torch.tensor([[15.25 / 3.0001], [0.4 / 3.0001]], dtype=torch.float64)
    torch.testing.assert_close(res.centroids, expected, rtol=0, atol=1e-12)
    right, left = 15.25 / 3.0001, 0.4 / 3.0001
    inertia = sum((v - right) ** 2 for v in (5.0, 5.05, 5.2)) + sum((v - left) ** 2 for v in (0, 0.1, 0.3))
    assert res.inertia == pytest.approx(inertia, rel=1e-12)
    assert res.n_iter == 1


@pytest.mark.parametrize("budget", [None, 4096])  # 4096 bytes: blocks of 1-2 rows, every pass chunked
def test_equals_float64_whole_matrix_walk(budget):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, 8, generator=gen, dtype=torch.float64) + torch.randint(0, 4, (300, 1), generator=gen) * 3
    centres, labels, centroids = simulate_dpc_knn(x.numpy(), 12, 30)
    res = dpc_knn(x, 12, local_size=30, memory_budget_bytes=budget)
    assert res.labels.tolist() == labels.tolist()
    np.testing.assert_allclose(res.centroids.numpy(), centroids, rtol=1e-12, atol=1e-12)
    assert len(set(labels[centres].tolist())) == 12  # every centre heads its own cluster


def test_float32_matches_float64_and_chunking_changes_nothing():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(500, 16, generator=gen) + torch.randint(0, 6, (500, 1), generator=gen) * 4
    whole = dpc_knn(x, 20, local_size=50)
    chunked = dpc_knn(x, 20, local_size=50, memory_budget_bytes=50_000)
    assert torch.equal(whole.labels, chunked.labels) and torch.equal(whole.centroids, chunked.centroids)
    _, labels, centroids = simulate_dpc_knn(x.double().numpy(), 20, 50)
    assert whole.labels.tolist() == labels.tolist()
    np.testing.assert_allclose(whole.centroids.numpy(), centroids, rtol=1e-5, atol=1e-5)
    assert whole.centroids.dtype == torch.float32


def test_bad_input_is_named():
    x = torch.randn(10, 3)
    with pytest.raises(ClusteringError, match="local_size: expected at most the number of points 10, found 11"):
        dpc_knn(x, 2, local_size=11)
    with pytest.raises(ClusteringError, match="local_size: expected an integer >= 1, found 0"):
        dpc_knn(x, 2, local_size=0)
    with pytest.raises(ClusteringError, match="dpc_knn clusters one problem"):
        dpc_knn(torch.randn(2, 10, 3), 2, local_size=3)
    with pytest.raises(ClusteringError, match="k: expected k <= number of points"):
        dpc_knn(x, 11, local_size=3)
    with pytest.raises(ClusteringError, match="NaN or inf"):
        dpc_knn(torch.full((4, 2), float("nan")), 2, local_size=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu_in_float64_with_blocks():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2000, 16, generator=gen, dtype=torch.float64) + torch.randint(0, 8, (2000, 1), generator=gen) * 3
    cpu = dpc_knn(x, 40, local_size=100)
    gpu = dpc_knn(x, 40, local_size=100, device="cuda", memory_budget_bytes=2**20)  # CPU data, CUDA compute, blocks
    assert gpu.labels.is_cuda and torch.equal(cpu.labels, gpu.labels.cpu())
    torch.testing.assert_close(cpu.centroids, gpu.centroids.cpu(), rtol=1e-10, atol=1e-10)
