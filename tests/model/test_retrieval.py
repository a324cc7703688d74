"""Product-quantised retrieval: scores against float64 codeword sums, recall on planted clusters, the index checks."""

import pytest
import torch

from recbole_mm.model.retrieval import ProductQuantizer, RetrievalIndexError, exact_scores, two_stage_topk

MODALITIES = ["query", "id", "text", "image"]
WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4])


def random_tables(n=600, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=g) for m in MODALITIES}


def planted_tables(n=3000, d=16, subspaces=4, clusters=16, noise=0.01, seed=0):
    """Every sub-vector of every item is one of ``clusters`` planted centres plus small noise."""
    g = torch.Generator().manual_seed(seed)
    tables = {}
    for m in MODALITIES:
        centres = torch.randn(subspaces, clusters, d // subspaces, generator=g)
        pick = torch.randint(0, clusters, (n, subspaces), generator=g)
        x = centres[torch.arange(subspaces), pick]  # [n, S, d/S]
        tables[m] = x.reshape(n, d) + noise * torch.randn(n, d, generator=g)
    return tables


@pytest.fixture(scope="module")
def index():
    return ProductQuantizer.fit(random_tables(), n_subspaces=2, n_codewords=32, seed=3, model="SEMINAR")


def codeword_vectors(index, codes):
    """float64 ``[n, M, d]``: the codewords of ``codes [n, M, S]``, one sub-space after another, by loops."""
    books = index.codebooks.double()
    n, m_count, s_count = codes.shape
    out = torch.zeros(n, m_count, index.dim, dtype=torch.float64)
    width = index.dim // s_count
    for r in range(n):
        for j in range(m_count):
            for s in range(s_count):
                out[r, j, s * width : (s + 1) * width] = books[j, s, int(codes[r, j, s])]
    return out


def test_symmetric_scores_equal_float64_codeword_sums(index):
    g = torch.Generator().manual_seed(1)
    history = torch.randint(1, 600, (3, 20), generator=g)
    query_codes = index.codes[torch.tensor([7, 8, 9])]
    got = index.scores(query_codes, history, WEIGHTS)
    q = codeword_vectors(index, query_codes)
    w = WEIGHTS.double()
    for b in range(3):
        k = codeword_vectors(index, index.codes[history[b]])  # [L, M, d]
        want = torch.zeros(20, dtype=torch.float64)
        for i in range(4):
            for j in range(4):
                want += w[i] * w[j] * (k[:, j] @ q[b, i])  # sum_ij w_i w_j <C_i[code_q], C_j[code_k]>
        assert torch.allclose(got[b].double(), want, rtol=1e-5, atol=1e-5)


def test_asymmetric_scores_and_per_target_weights(index):
    tables = random_tables()
    g = torch.Generator().manual_seed(2)
    history = torch.randint(1, 600, (2, 15), generator=g)
    query = {m: torch.randn(2, 8, generator=g) for m in MODALITIES}
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    got = index.scores(query, history, weights)
    for b in range(2):
        merged = sum(weights[b, i].double() * query[m][b].double() for i, m in enumerate(MODALITIES))
        k = codeword_vectors(index, index.codes[history[b]])
        want = sum(weights[b, j].double() * (k[:, j] @ merged) for j in range(4))
        assert torch.allclose(got[b].double(), want, rtol=1e-5, atol=1e-5)
    # explicit history codes give the same scores as the item ids
    codes = index.codes[history]
    assert torch.allclose(index.scores(query, history, weights, history_codes=codes), got)
    # and the exact score is what the quantised one approximates: exact on the codeword tables is identical
    recon = {m: index.reconstruct(index.codes)[:, j] for j, m in enumerate(MODALITIES)}
    assert torch.allclose(exact_scores(recon, query, history, weights), got, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(exact_scores(tables, query, history, weights), got, rtol=1e-2, atol=1e-2)


def test_recall_on_planted_clusters():
    tables = planted_tables()
    index = ProductQuantizer.fit(tables, n_subspaces=4, n_codewords=16, seed=0, model="SEMINAR")
    g = torch.Generator().manual_seed(5)
    history = torch.randint(1, 3000, (8, 400), generator=g)
    targets = torch.randint(1, 3000, (8,), generator=g)
    query = {m: t[targets] for m, t in tables.items()}
    k = 40
    exact = exact_scores(tables, query, history, WEIGHTS).topk(k, dim=1).indices
    approx = index.topk(query, history, WEIGHTS, k).indices
    recall = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact)) / exact.numel()
    assert recall >= 0.9  # random top-k would give k / L = 0.1
    _, two = two_stage_topk(index, tables, query, history, WEIGHTS, k, candidates=2 * k)
    recall_two = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(two, exact)) / exact.numel()
    assert recall_two >= recall and recall_two >= 0.99


def test_topk_skips_padding(index):
    history = torch.tensor([[0, 5, 0, 9, 11, 0]])
    values, positions = index.topk(index.codes[torch.tensor([3])], history, WEIGHTS, 5)
    assert sorted(positions[0, :3].tolist()) == [1, 3, 4]
    assert torch.isinf(values[0, 3:]).all() and (values[0, 3:] < 0).all()


def test_index_for_another_model_or_other_tables_is_refused(index, tmp_path):
    path = str(tmp_path / "seminar.pq")
    index.save(path)
    shapes = {m: (600, 8) for m in MODALITIES}
    loaded = ProductQuantizer.load(path, model="SEMINAR", table_shapes=shapes)
    assert torch.equal(loaded.codes, index.codes) and torch.equal(loaded.codebooks, index.codebooks)
    with pytest.raises(RetrievalIndexError, match=r"built for model 'SEMINAR', not 'TWIN'"):
        ProductQuantizer.load(path, model="TWIN")
    with pytest.raises(RetrievalIndexError, match=r"built for tables .*\(600, 8\).*the model has .*\(600, 64\)"):
        ProductQuantizer.load(path, model="SEMINAR", table_shapes={m: (600, 64) for m in MODALITIES})
    with pytest.raises(RetrievalIndexError, match=r"built for tables"):
        ProductQuantizer.load(path, table_shapes={m: (600, 8) for m in MODALITIES[:3]})
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(RetrievalIndexError, match=r"not a product-quantisation index"):
        ProductQuantizer.load(str(tmp_path / "other.pt"))


def test_bad_fit_and_query_input(index):
    tables = random_tables(n=20)
    with pytest.raises(RetrievalIndexError, match=r"n_codewords must be between 1 and the 19 training rows"):
        ProductQuantizer.fit(tables, n_subspaces=2, n_codewords=32)
    with pytest.raises(RetrievalIndexError, match=r"n_subspaces must divide the table width 8, found 3"):
        ProductQuantizer.fit(tables, n_subspaces=3, n_codewords=4)
    with pytest.raises(RetrievalIndexError, match=r"weights: expected \[4\]"):
        index.scores(index.codes[:2], torch.ones(2, 3, dtype=torch.long), torch.ones(3))
    with pytest.raises(RetrievalIndexError, match=r"item ids must be in \[0, 600\)"):
        index.scores(index.codes[:1], torch.tensor([[1, 600]]), WEIGHTS)
