"""Tests for recbole_mm.clustering.kmeans (torch and faiss backends) against float64 numpy Lloyd references."""

import logging

import numpy as np
import pytest
import torch

from recbole_mm.clustering import ClusteringError, KMeansResult, backends, kmeans
from recbole_mm.clustering.assign import block_shape
from recbole_mm.clustering.validation import check_problem
from recbole_mm.errors import RecBoleMMError


def numpy_lloyd(x, init, n_iter, cosine=False):
    """Float64 Lloyd from ``init`` (empty clusters keep their centroid); labels are nearest-returned-centroid."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(init, dtype=np.float64).copy()
    if cosine:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)

    def nearest(c):
        d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        return d.argmin(1), d.min(1)

    for _ in range(n_iter):
        labels, _ = nearest(c)
        for j in range(len(c)):
            if (labels == j).any():
                c[j] = x[labels == j].mean(0)
        if cosine:
            c = c / np.linalg.norm(c, axis=1, keepdims=True)
    labels, dist = nearest(c)
    return labels, c, dist.sum() / 2 if cosine else dist.sum()


def blobs(n_per, centres, spread=0.3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    points = centres.repeat_interleave(n_per, 0) + spread * torch.randn(
        len(centres) * n_per, centres.shape[1], generator=g, dtype=torch.float64
    )
    return points[torch.randperm(len(points), generator=g)].to(dtype)


def random_data(n, d, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_matches_float64_numpy_lloyd():
    x = random_data(300, 5)
    start = kmeans(x, 7, n_iter=0, seed=3).centroids
    res = kmeans(x, 7, n_iter=6, seed=3)
    labels, centroids, inertia = numpy_lloyd(x.numpy(), start.numpy(), 6)
    assert isinstance(res, KMeansResult) and res.n_iter == 6
    assert res.labels.dtype == torch.long and res.labels.shape == (300,)
    np.testing.assert_array_equal(res.labels.numpy(), labels)
    np.testing.assert_allclose(res.centroids.numpy(), centroids, rtol=1e-12, atol=1e-12)
    assert res.inertia == pytest.approx(inertia, rel=1e-12)


def test_float32_matches_float64_reference_on_separated_data():
    x = blobs(40, [[0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6]], dtype=torch.float32)
    res = kmeans(x, 4, n_iter=5, seed=1)
    start = kmeans(x, 4, n_iter=0, seed=1).centroids
    labels, centroids, inertia = numpy_lloyd(x.numpy(), start.numpy(), 5)
    assert res.centroids.dtype == torch.float32
    np.testing.assert_array_equal(res.labels.numpy(), labels)
    np.testing.assert_allclose(res.centroids.numpy(), centroids, rtol=1e-5, atol=1e-5)
    assert res.inertia == pytest.approx(inertia, rel=1e-5)


def test_random_init_picks_distinct_points_and_is_seeded():
    x = random_data(50, 3)
    start = kmeans(x, 10, n_iter=0, seed=5).centroids
    rows = [int(((x - c).abs().sum(1) == 0).nonzero()[0]) for c in start]
    assert len(set(rows)) == 10
    again = kmeans(x, 10, n_iter=4, seed=5)
    first = kmeans(x, 10, n_iter=4, seed=5)
    assert torch.equal(first.labels, again.labels) and torch.equal(first.centroids, again.centroids)
    assert not torch.equal(start, kmeans(x, 10, n_iter=0, seed=6).centroids)


def test_batched_equals_loop_of_single_runs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, 25:] = False
    mask[2, ::3] = False
    x[~mask] = 1e6  # padding values must not matter
    init = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    res = kmeans(x, 5, n_iter=7, init=init, mask=mask)
    assert res.labels.shape == (3, 40) and res.centroids.shape == (3, 5, 4) and res.inertia.shape == (3,)
    assert bool((res.labels[~mask] == -1).all())
    for b in range(3):
        single = kmeans(x[b][mask[b]], 5, n_iter=7, init=init[b])
        assert torch.equal(res.labels[b][mask[b]], single.labels)
        torch.testing.assert_close(res.centroids[b], single.centroids, rtol=1e-12, atol=1e-12)
        assert float(res.inertia[b]) == pytest.approx(single.inertia, rel=1e-12)


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_batched_init_uses_only_real_points(init):
    x = random_data(80, 3).view(2, 40, 3)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :12] = True
    mask[1, 30:] = True
    start = kmeans(x, 6, n_iter=0, mask=mask, seed=2, init=init).centroids
    for b in range(2):
        real = x[b][mask[b]]
        for c in start[b]:
            assert bool(((real - c).abs().sum(1) == 0).any())


def test_cosine_matches_spherical_reference():
    x = random_data(200, 6) + 0.5
    start = kmeans(x, 5, n_iter=0, seed=4, distance="cosine").centroids
    res = kmeans(x, 5, n_iter=5, seed=4, distance="cosine")
    labels, centroids, inertia = numpy_lloyd(x.numpy(), start.numpy(), 5, cosine=True)
    np.testing.assert_array_equal(res.labels.numpy(), labels)
    np.testing.assert_allclose(res.centroids.numpy(), centroids, atol=1e-12)
    torch.testing.assert_close(res.centroids.norm(dim=1), torch.ones(5, dtype=torch.float64))
    cos = torch.nn.functional.cosine_similarity(x, res.centroids[res.labels], dim=1)
    assert res.inertia == pytest.approx(float((1 - cos).sum()), rel=1e-10)


@pytest.mark.parametrize("batched", [False, True])
def test_chunked_equals_unchunked(batched):
    x = random_data(600, 8)
    x = x.view(3, 200, 8) if batched else x
    whole = kmeans(x, 9, n_iter=5, seed=0, memory_budget_bytes=2**30)
    tiny = kmeans(x, 9, n_iter=5, seed=0, memory_budget_bytes=2000)
    assert torch.equal(whole.labels, tiny.labels)
    torch.testing.assert_close(whole.centroids, tiny.centroids, rtol=1e-12, atol=1e-12)


def test_block_shape_respects_budget():
    for n_batch, n, k, d, budget in [(1, 10**6, 17879, 300, 2**30), (1024, 100, 8, 512, 2**20), (4, 50, 3, 2, 10**9)]:
        bb, rows = block_shape(n_batch, n, k, d, 4, budget)
        assert 1 <= bb <= n_batch and 1 <= rows <= n
        assert bb * rows * k * 4 <= budget
    # 1M points x 17.9k clusters: 71 GB of distances, cut into blocks
    assert block_shape(1, 10**6, 17879, 300, 4, 2**30)[1] < 10**6


def test_kmeanspp_picks_one_point_per_far_blob():
    centres = [[0, 0], [1000, 0], [0, 1000], [1000, 1000], [-1000, 500]]
    x = blobs(30, centres)
    start = kmeans(x, 5, n_iter=0, init="kmeans++", seed=0).centroids
    nearest_centre = torch.cdist(start, torch.tensor(centres, dtype=torch.float64)).argmin(1)
    assert sorted(nearest_centre.tolist()) == [0, 1, 2, 3, 4]
    for c in start:
        assert bool(((x - c).abs().sum(1) == 0).any())
    res = kmeans(x, 5, n_iter=3, init="kmeans++", seed=0)
    truth = torch.cdist(x, x.new_tensor(centres)).argmin(1)
    pairs = set(zip(truth.tolist(), res.labels.tolist()))
    assert len(pairs) == 5 and len({label for _, label in pairs}) == 5  # the partition is the blobs


@pytest.mark.parametrize("minibatch_size", [None, 4])
def test_empty_cluster_keep_versus_farthest(minibatch_size):
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0]], dtype=torch.float64)
    init = torch.tensor([[1.0], [1.0], [10.0]], dtype=torch.float64)
    keep = kmeans(x, 3, n_iter=1, init=init, empty="keep", minibatch_size=minibatch_size)
    far = kmeans(x, 3, n_iter=1, init=init, empty="farthest", minibatch_size=minibatch_size)
    # cluster 1 duplicates cluster 0 and gets no point; distances after the step are [1, 0, 1, 0]
    assert keep.centroids.flatten().tolist() == [1.0, 1.0, 10.0]
    assert far.centroids.flatten().tolist() == [1.0, 0.0, 10.0]  # farthest point, lower index on the tie
    assert far.labels.tolist() == [1, 0, 0, 2] and far.inertia == pytest.approx(1.0)


def test_farthest_in_batched_mode_reseeds_per_problem():
    x = torch.tensor([[[0.0], [1.0], [2.0], [10.0]], [[5.0], [5.0], [7.0], [-3.0]]], dtype=torch.float64)
    init = torch.tensor([[[1.0], [1.0], [10.0]], [[5.0], [7.0], [7.0]]], dtype=torch.float64)
    res = kmeans(x, 3, n_iter=1, init=init, empty="farthest")
    # problem 1: cluster 2 empty; distances [0, 0, 0, 64] -> point -3
    assert res.centroids[:, :, 0].tolist() == [[1.0, 0.0, 10.0], [(5 + 5 - 3) / 3, 7.0, -3.0]]


def test_padding_is_never_chosen():
    x = torch.tensor([[[float("nan")], [1.0], [1.0], [1.0]]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True]])
    res = kmeans(x, 2, n_iter=1, init=torch.tensor([[[1.0], [1.0]]], dtype=torch.float64), mask=mask, empty="farthest")
    assert res.centroids.flatten().tolist() == [1.0, 1.0]  # all distances 0: the first real point, not the padding
    start = kmeans(x, 2, n_iter=0, init="kmeans++", mask=mask).centroids
    assert start.flatten().tolist() == [1.0, 1.0]
    assert torch.isfinite(res.inertia).all() and res.labels[0, 0] == -1


def test_tolerance_stops_at_convergence():
    x = blobs(30, [[0, 0], [8, 0], [0, 8]])
    res = kmeans(x, 3, n_iter=100, tol=1e-9, seed=0)
    assert 1 <= res.n_iter < 100
    fixed = kmeans(x, 3, n_iter=res.n_iter + 5, seed=0)
    assert torch.equal(res.labels, fixed.labels)
    torch.testing.assert_close(res.centroids, fixed.centroids)


def test_minibatch_mode():
    x = blobs(50, [[0, 0, 0], [9, 0, 0], [0, 9, 0], [0, 0, 9]])
    one_block = kmeans(x, 4, n_iter=1, seed=0, minibatch_size=10**6)
    lloyd = kmeans(x, 4, n_iter=1, seed=0)
    assert torch.equal(one_block.labels, lloyd.labels)
    torch.testing.assert_close(one_block.centroids, lloyd.centroids, rtol=1e-12, atol=1e-12)
    small = kmeans(x, 4, n_iter=3, seed=0, minibatch_size=16, init="kmeans++")
    full = kmeans(x, 4, n_iter=10, seed=0, init="kmeans++")
    assert small.n_iter == 3 and small.inertia <= 1.01 * full.inertia
    assert torch.equal(small.centroids, kmeans(x, 4, n_iter=3, seed=0, minibatch_size=16, init="kmeans++").centroids)


def test_faiss_backend_same_init_close_inertia():
    pytest.importorskip("faiss")
    x = random_data(2000, 8, dtype=torch.float32)
    ours = kmeans(x, 16, n_iter=10, seed=0)
    theirs = kmeans(x, 16, n_iter=10, seed=0, backend="faiss")
    reference = numpy_lloyd(x.numpy(), kmeans(x, 16, n_iter=0, seed=0).centroids.numpy(), 10)[2]
    assert theirs.labels.shape == (2000,) and theirs.centroids.shape == (16, 8) and theirs.n_iter == 10
    assert abs(theirs.inertia / reference - 1) < 0.005 and abs(ours.inertia / reference - 1) < 1e-5
    with pytest.raises(ClusteringError, match="batched"):
        kmeans(x.view(2, 1000, 8), 4, backend="faiss")


def test_auto_backend_logs_missing_cupy_once(caplog, monkeypatch):
    monkeypatch.setattr(backends, "available", lambda module: False)
    monkeypatch.setattr(backends, "_fallback_logged", set())
    problem = check_problem(torch.zeros(2, 5, 3), 2)
    options = {"device": torch.device("cuda")}
    with caplog.at_level(logging.INFO, logger="recbole_mm.clustering.backends"):
        assert backends.resolve("auto", problem, 2, options) is backends.torch_kmeans
        assert backends.resolve("auto", problem, 2, options) is backends.torch_kmeans
    assert len([r for r in caplog.records if "cupy" in r.getMessage()]) == 1
    with pytest.raises(ClusteringError, match="not installed"):
        backends.resolve("cupy", problem, 2, options)


def _nan():
    x = random_data(10, 2)
    x[3, 1] = float("nan")
    return x


def _inf():
    x = random_data(10, 2)
    x[0, 0] = float("inf")
    return x


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((random_data(5, 2), 6), {}, "k: expected k <= number of points"),
        ((random_data(5, 2), 0), {}, "k: expected an integer >= 1"),
        ((random_data(5, 2), 2.5), {}, "k: expected an integer"),
        ((_nan(), 2), {}, "NaN or inf"),
        ((_inf(), 2), {}, "NaN or inf"),
        ((torch.zeros(0, 3), 1), {}, "at least one point"),
        ((torch.zeros(4, 0), 1), {}, "at least one point"),
        ((torch.zeros(4), 1), {}, r"shape \[n, d\]"),
        ((np.zeros((4, 2)), 1), {}, "torch.Tensor"),
        ((torch.zeros(4, 2, dtype=torch.long), 1), {}, "floating-point"),
        (
            (random_data(8, 2).view(2, 4, 2), 2),
            {"mask": torch.ones(2, 5, dtype=torch.bool)},
            r"mask: expected shape \[B, n\]",
        ),
        ((random_data(8, 2).view(2, 4, 2), 2), {"mask": torch.ones(2, 4)}, "mask: expected a bool tensor"),
        ((random_data(8, 2), 2), {"mask": torch.ones(8, dtype=torch.bool)}, "only valid with batched"),
        (
            (random_data(8, 2).view(2, 4, 2), 2),
            {"mask": torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)},
            "problem 1 has 1 points",
        ),
        (
            (random_data(8, 2).view(2, 4, 2), 2),
            {"init": torch.zeros(2, 3, 2)},
            r"init: expected centroids of shape \[2, 2, 2\]",
        ),
        ((random_data(8, 2), 2), {"init": "k-means||"}, "init: expected 'random'"),
        ((random_data(8, 2), 2), {"backend": "sklearn"}, "backend: expected one of"),
        ((random_data(8, 2), 2), {"distance": "manhattan"}, "distance: expected one of"),
        ((random_data(8, 2), 2), {"empty": "drop"}, "empty: expected one of"),
        ((random_data(8, 2), 2), {"n_iter": -1}, "n_iter: expected an integer >= 0"),
        ((random_data(8, 2), 2), {"minibatch_size": 0}, "minibatch_size"),
        ((random_data(8, 2), 2), {"tol": -1.0}, "tol"),
        ((random_data(8, 2), 2), {"precision": "bf16"}, r"precision: expected one of \[None, 'highest', 'tf32'\]"),
    ],
)
def test_bad_input(args, kwargs, message):
    with pytest.raises(ClusteringError, match=message) as info:
        kmeans(*args, **kwargs)
    assert isinstance(info.value, RecBoleMMError) and isinstance(info.value, ValueError)


def test_backend_asked_by_name_but_missing_or_unsupported():
    x = random_data(20, 2)
    if backends.available("cupy"):
        with pytest.raises(ClusteringError, match="cupy"):
            kmeans(x, 2, backend="cupy")  # CPU tensor: cupy cannot run it
    else:
        with pytest.raises(ClusteringError, match="'cupy' was asked for but is not installed"):
            kmeans(x, 2, backend="cupy")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_cuda_matches_cpu_in_float64():
    x = random_data(3000, 16)
    cpu = kmeans(x, 40, n_iter=8, seed=0)
    gpu = kmeans(x.cuda(), 40, n_iter=8, seed=0, memory_budget_bytes=2**16)
    assert torch.equal(cpu.labels, gpu.labels.cpu())
    torch.testing.assert_close(cpu.centroids, gpu.centroids.cpu(), rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@needs_cuda
def test_cuda_tf32_inertia_within_half_percent_of_float64_lloyd():
    x = random_data(50_000, 64, dtype=torch.float32).cuda()
    fast = kmeans(x, 512, n_iter=10, seed=0)  # TF32 products by default on CUDA
    start = kmeans(x, 512, n_iter=0, seed=0).centroids
    exact = kmeans(x.double().cpu(), 512, n_iter=10, init=start.double().cpu())
    assert fast.inertia / exact.inertia < 1.005


@pytest.mark.gpu
@needs_cuda
def test_cpu_data_streams_through_cuda():
    x = random_data(20_000, 32, dtype=torch.float32)
    streamed = kmeans(x, 100, n_iter=5, device="cuda", memory_budget_bytes=2**20, precision="highest")
    resident = kmeans(x.cuda(), 100, n_iter=5, precision="highest")
    assert streamed.centroids.is_cuda
    assert (streamed.labels == resident.labels).float().mean() > 0.999
    assert streamed.inertia == pytest.approx(resident.inertia, rel=1e-4)
    mini = kmeans(x, 100, n_iter=2, device="cuda", minibatch_size=4096)
    assert mini.inertia < 1.05 * resident.inertia


@pytest.mark.gpu
@needs_cuda
def test_cuda_batched_equals_loop():
    x = random_data(8 * 60 * 6, 1).view(8, 60, 6).cuda()
    mask = torch.rand(8, 60, generator=torch.Generator().manual_seed(0)) > 0.3
    init = torch.stack([x[b][mask[b].cuda()][:4] for b in range(8)])
    res = kmeans(x, 4, n_iter=6, init=init, mask=mask.cuda())
    for b in range(8):
        single = kmeans(x[b][mask[b].cuda()], 4, n_iter=6, init=init[b])
        assert torch.equal(res.labels[b][mask[b].cuda()], single.labels)


@pytest.mark.parametrize("globally", [False, True])
def test_matmul_precision_sets_cuda_products_both_ways_and_restores(globally):
    """Only flags are touched, so this runs without a GPU: 'highest' means full float32 even where the process
    allows TF32 (MISSRec's allow_tf32), 'tf32' allows it, and the process-wide setting comes back."""
    from recbole_mm.clustering.assign import matmul_precision
    from recbole_mm.runtime import set_tf32_matmul

    matmul = torch.backends.cuda.matmul

    def tf32_on():
        return matmul.fp32_precision == "tf32" if hasattr(matmul, "fp32_precision") else matmul.allow_tf32

    cuda = torch.device("cuda")
    try:
        set_tf32_matmul(globally)
        with matmul_precision("highest", cuda):
            assert not tf32_on()
        assert tf32_on() == globally
        with matmul_precision("tf32", cuda):
            assert tf32_on()
        assert tf32_on() == globally
        with matmul_precision("tf32", torch.device("cpu")):
            assert tf32_on() == globally
    finally:
        set_tf32_matmul(False)
