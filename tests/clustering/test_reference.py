"""Tests for recbole_mm.clustering.reference: each quirk of MISSRec's TorchPQ k-means."""

import numpy as np
import pytest
import torch

from recbole_mm.clustering import ClusteringError, kmeans, kmeans_reference
from recbole_mm.clustering.reference import reference_batches


def simulate_reference(x, k, batch_size, seed):
    """Hand-written float64 numpy walk through the reference code's algorithm."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if batch_size <= k:
        batch_size = int(1.1 * k)
    ranges, ptr = [], 0
    while ptr < n:
        remaining = n - ptr - batch_size
        stop = n if remaining <= k else ptr + batch_size
        ranges.append((ptr, stop))
        if remaining <= k:
            break
        ptr = stop
    first = x[ranges[0][0] : ranges[0][1]]
    c = first[np.random.RandomState(seed).choice(len(first), k, replace=False)].copy()
    counts = np.ones(k)
    for a, b in ranges:
        batch = x[a:b]
        labels = ((batch[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        delta = np.zeros_like(c)
        for j in range(k):
            if (labels == j).any():
                delta[j] = np.abs(batch[labels == j]).mean(0)
        c = np.abs(c) * (1 - 1 / counts[:, None]) + delta / counts[:, None]
        counts += np.bincount(labels, minlength=k)
    labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    return labels, c


def test_batch_bounds_merge_rule():
    assert reference_batches(4196, 200, 2048) == [(0, 2048), (2048, 4196)]  # remainder 100 <= k merged
    assert reference_batches(5000, 100, 2048) == [(0, 2048), (2048, 4096), (4096, 5000)]
    assert reference_batches(1000, 500, 2048) == [(0, 1000)]  # one batch: everything
    assert reference_batches(3000, 500, 400) == [(0, 550), (550, 1100), (1100, 1650), (1650, 2200), (2200, 3000)]


@pytest.mark.parametrize("n, k, batch_size", [(700, 40, 128), (300, 30, 64), (200, 150, 64)])
def test_matches_hand_written_walkthrough(n, k, batch_size):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    res = kmeans_reference(x, k, batch_size=batch_size, seed=7)
    labels, centroids = simulate_reference(x.numpy(), k, batch_size, 7)
    np.testing.assert_array_equal(res.labels.numpy(), labels)
    np.testing.assert_allclose(res.centroids.numpy(), centroids, rtol=1e-12, atol=1e-12)


def test_one_pass_and_labels_are_nearest_returned_centroid():
    x = torch.randn(3000, 8, generator=torch.Generator().manual_seed(0))
    res = kmeans_reference(x, 500)
    assert res.n_iter == 1  # error is 0 after the first pass: never a second one
    assert res.labels.shape == (3000,) and res.centroids.shape == (500, 8)
    d = torch.cdist(x.double(), res.centroids.double())
    assert torch.equal(res.labels, d.argmin(1))
    assert res.inertia == pytest.approx(float((d.min(1).values ** 2).sum()), rel=1e-5)
    # one pass of minibatch updates is far from converged k-means from the same kind of start
    assert res.inertia > 1.2 * kmeans(x, 500, n_iter=10).inertia


def test_non_negative_centroids_are_means_of_absolute_values():
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5
    before = x.clone()
    res = kmeans_reference(x, 50, batch_size=2048)  # one batch: centroid = mean |x| of its batch cluster
    assert torch.equal(x, before)  # the caller's tensor is not abs-ed
    assert float(res.centroids.min()) >= 0.0
    init = x[torch.as_tensor(np.random.RandomState(0).choice(400, 50, replace=False))]  # from the first batch
    batch_labels = torch.cdist(x, init).argmin(1)
    for j in batch_labels.unique():
        torch.testing.assert_close(res.centroids[j], x[batch_labels == j].abs().mean(0))


def test_empty_cluster_becomes_zero():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64).repeat(4, 1)  # every row four times
    res = kmeans_reference(x, 40, batch_size=2048, seed=3)
    chosen = np.random.RandomState(3).choice(120, 40, replace=False)
    init = x[torch.as_tensor(chosen)]
    # identical starting centroids share their points: all but (at least) one of them get none -> exactly 0.
    # (Which one wins is decided by the rounding of the matrix product, as in the reference.)
    zero = {j for j in range(40) if bool((res.centroids[j] == 0).all())}
    groups = {}
    for j in range(40):
        groups.setdefault(tuple(init[j].tolist()), []).append(j)
    assert zero and len(zero) <= 40 - len(groups)
    for members in groups.values():
        assert len([j for j in members if j not in zero]) >= 1  # some centroid of each value wins its copies
        if len(members) == 1:
            assert members[0] not in zero  # a unique starting point always wins its own copies


def test_init_comes_from_first_minibatch():
    # first minibatch far from the rest: the single init batch decides every starting centroid
    x = torch.cat([torch.rand(100, 2, dtype=torch.float64) + 50, torch.rand(500, 2, dtype=torch.float64)])
    res = kmeans_reference(x, 20, batch_size=100, seed=0)
    labels, centroids = simulate_reference(x.numpy(), 20, 100, 0)
    np.testing.assert_array_equal(res.labels.numpy(), labels)
    # all 20 centroids started at +50; after the first batch they are its means, all far from the later rows
    batch_one = kmeans_reference(x[:100], 20, batch_size=100, seed=0)
    assert float(batch_one.centroids.min()) > 49


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.zeros(2, 10, 3), 2), {}, "one problem"),
        ((torch.randn(10, 3), 11), {}, "k: expected k <= number of points"),
        ((torch.randn(10, 3), 2), {"batch_size": 0}, "batch_size"),
        ((torch.full((10, 3), float("nan")), 2), {}, "NaN or inf"),
        ((torch.randn(10, 3), 2), {"precision": "fp16"}, "precision"),
        ((torch.randn(10, 3), 2), {"precision": "bf16"}, r"precision: expected one of \['highest', 'tf32'\]"),
    ],
)
def test_bad_input(args, kwargs, message):
    with pytest.raises(ClusteringError, match=message):
        kmeans_reference(*args, **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    x = torch.randn(5000, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cpu = kmeans_reference(x, 300)
    gpu = kmeans_reference(x.cuda(), 300)
    assert torch.equal(cpu.labels, gpu.labels.cpu())
    torch.testing.assert_close(cpu.centroids, gpu.centroids.cpu(), rtol=1e-10, atol=1e-10)
