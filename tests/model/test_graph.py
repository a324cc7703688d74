"""The graph family base: operators, propagation, chunked masked preference rows, full-sort scoring."""

import numpy as np
import pytest
import torch
from graph_data import build, dense_train_matrix

from recbole_mm.model.graph import SparseOperator, row_normalised, sparse_pairs


def test_sparse_pairs_merges_duplicates_and_row_normalised_scales_rows():
    graph = sparse_pairs(torch.tensor([0, 0, 0, 2]), torch.tensor([1, 2, 1, 0]), 3, 4)
    expected = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float64)
    np.testing.assert_array_equal(graph.to_dense().numpy(), expected)
    scaled = row_normalised(graph).to_dense().numpy()
    # row 0 has degree 2 -> 1/sqrt(2); the empty row stays zero; row 2 degree 1 -> 1
    np.testing.assert_allclose(scaled[0], [0, 2**-0.5, 2**-0.5, 0], rtol=1e-6)
    np.testing.assert_array_equal(scaled[1], 0)
    np.testing.assert_allclose(scaled[2], [1, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(row_normalised(graph, power=-1.0).to_dense().numpy()[0], [0, 0.5, 0.5, 0], rtol=1e-6)


def test_sparse_operator_product_and_gradient_match_dense():
    gen = torch.Generator().manual_seed(0)
    dense = (torch.rand(5, 7, generator=gen) < 0.4).double() * torch.rand(5, 7, generator=gen).double()
    op = SparseOperator(dense.float().to_sparse())
    x = torch.randn(7, 3, generator=gen, requires_grad=True)
    weight = torch.randn(5, 3, generator=gen)
    (op(x) * weight).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    (dense @ x64 * weight.double()).sum().backward()
    np.testing.assert_allclose(op(x).detach().numpy(), (dense @ x64).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), x64.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("graph"))


def test_training_operators_are_row_scaled_interaction_matrices(tiny):
    _, _, train, _, _, model = tiny
    r = dense_train_matrix(train.dataset)
    d_u, d_i = r.sum(1, keepdims=True), r.sum(0, keepdims=True).T
    np.testing.assert_allclose(model.ui_operator.to_dense().numpy(), (d_u + 1e-8) ** -0.5 * r, rtol=1e-6)
    np.testing.assert_allclose(model.iu_operator.to_dense().numpy(), (d_i + 1e-8) ** -0.5 * r.T, rtol=1e-6)


def test_observed_pairs_list_each_users_training_items(tiny):
    _, _, train, _, _, model = tiny
    r = dense_train_matrix(train.dataset)
    users = torch.tensor([3, 1, 3, 0])
    rows, items = model.observed_pairs(users)
    got = sorted(zip(rows.tolist(), items.tolist()))
    expected = sorted((k, int(i)) for k, u in enumerate(users.tolist()) for i in np.flatnonzero(r[u]))
    assert got == expected and len(expected) > 0


def test_chunked_masked_preference_rows_equal_dense_computation(tiny):
    _, _, train, _, _, model = tiny
    assert model.pref_chunk_items < model.n_items  # several chunks
    r = dense_train_matrix(train.dataset)
    gen = torch.Generator().manual_seed(1)
    users = torch.tensor([1, 2, 5, 9, 17])
    u = torch.randn(len(users), 8, generator=gen, requires_grad=True)
    items = torch.randn(model.n_items, 8, generator=gen, requires_grad=True)
    rows = model.masked_preference_rows(u, items, users)
    keep = 1 - r[users.numpy()]
    keep[:, 0] = 0  # [PAD]
    dense = (u.detach().double() @ items.detach().double().T).numpy() * keep
    expected = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(rows.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    rows.sum().backward()  # differentiable in both inputs
    assert u.grad.abs().sum() > 0 and items.grad.abs().sum() > 0


def test_full_sort_scores_are_cached_dot_products_until_training(tiny):
    _, _, _, _, _, model = tiny
    model.eval()
    users = torch.tensor([1, 4])
    scores = model.full_sort_predict({model.USER_ID: users}).view(2, -1)
    user_e, item_e = model.compute_embeddings()
    np.testing.assert_allclose(scores.detach().numpy(), (user_e[users] @ item_e.T).detach().numpy(), rtol=1e-5)
    assert model._cache is not None
    model.train()
    assert model._cache is None
