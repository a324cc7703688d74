"""SEMINAR: the projections G, the three PSU pre-training losses against float64 hand computations, and the
pre-train -> fine-tune path (strict load, freezing) through RecBole's trainer."""

import numpy as np
import pytest
import torch
from long_sequence_data import build, first_batch, write_longseq

from recbole_mm.errors import RecBoleMMError
from recbole_mm.registry import get_trainer


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("seminar")
    write_longseq(str(root), "lsq")
    return root


def linear64(layer, x):
    out = x @ np64(layer.weight).T
    return out if layer.bias is None else out + np64(layer.bias)


def np64(t):
    return t.detach().double().numpy()


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_items_and_queries_go_through_g(data_root, stage):
    _, _, *_, net = build(data_root, "SEMINAR", write=False, train_stage=stage)
    items = torch.tensor([[3, 7, 0]])
    tokens = torch.tensor([[[1, 2], [4, 0], [0, 0]]])
    gate = np64(net.gate_weights())
    psu = [np64(p) for p in net.psu_parts(items)]
    want = gate[0] * psu[0] @ np64(net.G_item_id.weight).T
    for k, m in enumerate(net.modalities):
        g = np.eye(8) if stage == "pretrain" else np64(net.G_modal[m].weight)  # pre-training: P_m only
        want = want + gate[k + 1] * psu[k + 1] @ g.T
    assert np.allclose(np64(net.item_embed(items)), want, atol=1e-6)
    query = np64(net.query_embedding.weight)[tokens.numpy()].sum(-2) / 5
    assert np.allclose(np64(net.query_embed(tokens)), query @ np64(net.G_query.weight).T, atol=1e-6)
    assert net.G_item_id.bias is None and net.G_query.bias is None


def hand_alignment(channels, valid, chunk, tau, compat):
    rows = [c.reshape(-1, c.shape[-1]) if compat else c[valid] for c in channels]
    n = rows[0].shape[0]
    size = min(chunk, n)
    losses = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            for start in range(0, (n // size) * size, size):
                a, b = normalize(rows[i][start : start + size]), normalize(rows[j][start : start + size])
                logits = b @ a.T / tau
                if compat:  # the reference's soft targets, multiplied by tau
                    sim = (a @ a.T + b @ b.T) / 2 * tau
                    targets = np.exp(sim) / np.exp(sim).sum(-1, keepdims=True)
                else:
                    targets = np.eye(size)
                forward = -(targets * log_softmax(logits)).sum(-1)
                backward = -(targets.T * log_softmax(logits.T)).sum(-1)
                losses.append(((forward + backward) / 2).mean())
    return np.mean(losses)


@pytest.mark.parametrize("compat", [False, True])
def test_alignment_loss_by_hand(data_root, compat):
    _, _, *_, net = build(data_root, "SEMINAR", write=False, align_chunk_size=4, reference_compat=compat)
    g = torch.Generator().manual_seed(0)
    channels = [torch.randn(2, 6, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    valid = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    got = net.alignment_loss(channels, valid).item()
    want = hand_alignment([c.numpy() for c in channels], valid.numpy(), 4, 0.05, compat)
    assert abs(got - want) < 1e-9
    if not compat:  # identity targets: aligned channels give a lower loss than unrelated ones
        same = net.alignment_loss([channels[0], channels[0] + 0.01 * channels[1]], valid)
        assert same < net.alignment_loss(channels[:2], valid)
    assert net.alignment_loss(channels[:1], valid).item() == 0  # one channel: nothing to align


@pytest.mark.parametrize("compat", [False, True])
def test_query_item_loss_by_hand(data_root, compat):
    _, _, *_, net = build(data_root, "SEMINAR", write=False, reference_compat=compat)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    item = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    has_query = torch.tensor([[True, False, True, True, True], [True] * 5])
    negatives = torch.tensor([[1, 2], [0, 3], [4, 0], [2, 1], [3, 2]])
    got = net.query_item_loss(query, item, valid, has_query, negatives).item()
    q, i = normalize(query.numpy()), normalize(item.numpy())
    terms = []
    for b in range(2):
        for l in range(5):
            pos = q[b, l] @ i[b, l] / 0.05
            negs = [q[b, l] @ i[b, n] / 0.05 for n in negatives[l].tolist() if compat or valid[b, n]]
            if compat:  # the reference's wrong-signed ratio, every position
                terms.append(np.exp(pos) / np.sum(np.exp(negs)))
            elif valid[b, l] and has_query[b, l]:
                terms.append(-pos + np.log(np.exp(pos) + np.sum(np.exp(negs))))
    assert abs(got - np.mean(terms)) < 1e-9 * max(1, abs(got))
    if not compat:  # InfoNCE: a query equal to its item has a lower loss than the reversed one (B4 fixed)
        assert net.query_item_loss(item, item, valid, has_query, negatives) < net.query_item_loss(
            -item, item, valid, has_query, negatives
        )


def test_negative_positions_exclude_the_position_itself(data_root):
    _, _, *_, net = build(data_root, "SEMINAR", write=False, psu_qi_negatives=5)
    index = net.negative_positions(8, torch.device("cpu"))
    assert index.shape == (8, 5)
    for l in range(8):
        assert l not in index[l].tolist() and len(set(index[l].tolist())) == 5
    assert net.negative_positions(3, torch.device("cpu")).shape == (3, 2)


@pytest.mark.parametrize("compat", [False, True])
def test_next_pair_loss_gives_the_positive_no_query_naming_it(data_root, compat, monkeypatch):
    # pre-training data where every interaction's query is its item's: the next-pair candidates share the row's
    # (empty, recommendation) query; only reference_compat gives the positive its own
    _, _, train, *_, net = build(data_root, "SEMINAR", write=False, train_stage="pretrain", reference_compat=compat)
    batch = first_batch(train)
    seen = {}
    monkeypatch.setattr(net, "score", lambda history, items, tokens: seen.update(tokens=tokens) or (torch.zeros(2, 2), 0))
    monkeypatch.setattr(net, "alignment_loss", lambda *args: torch.zeros(()))
    monkeypatch.setattr(net, "query_item_loss", lambda *args: torch.zeros(()))
    net.pretrain_loss(batch)
    b, _ = net.training_candidates(batch)
    tokens = seen["tokens"]
    if compat:
        assert torch.equal(tokens[:, 0], batch["query"][:b]) and tokens[:, 0].any()
    else:
        assert not tokens.any()


def test_pretraining_loss_is_the_weighted_sum_of_its_parts(data_root):
    _, _, train, *_, net = build(data_root, "SEMINAR", write=False, train_stage="pretrain", psu_align_weight=0.1)
    batch = first_batch(train)
    torch.manual_seed(0)
    next_pair, align, qi = net.pretrain_loss(batch)
    b, _ = net.training_candidates(batch)  # the first of RecBole's copies of each row (one per negative)
    items, tokens = batch["item_id_list"][:b], batch["query_list"][:b]
    parts = net.psu_parts(items)
    assert torch.allclose(align, 0.1 * net.alignment_loss(parts, items > 0))
    torch.manual_seed(0)
    logits, _ = net.training_logits(batch)
    negatives = net.negative_positions(items.shape[1], items.device)
    want_qi = net.query_item_loss(net.psu_query(tokens), net.gated(parts), items > 0, (tokens > 0).any(-1), negatives)
    assert torch.allclose(next_pair, net.candidate_loss(logits)) and torch.allclose(qi, want_qi)
    (next_pair + align + qi).backward()
    assert net.G_item_id.weight.grad is not None and net.modal_projection["text"].weight.grad is not None


def test_pretrain_then_finetune_loads_and_freezes(data_root, tmp_path):
    config, _, train, valid, _, pre = build(data_root, "SEMINAR", write=False, train_stage="pretrain", epochs=1)
    trainer = get_trainer(config["MODEL_TYPE"], "SEMINAR")(config, pre)
    trainer.fit(train, valid, saved=True)
    path = trainer.saved_model_file
    saved = torch.load(path, weights_only=False)["state_dict"]
    config, _, train, _, _, fine = build(
        data_root, "SEMINAR", write=False, pretrained_path=path, freeze_psu_embedding=True, seed=11
    )
    for name, value in fine.state_dict().items():
        assert torch.equal(value, saved[name]), name
    frozen = {n for n, p in fine.named_parameters() if not p.requires_grad}
    assert {"G_item_id.weight", "G_query.weight", "item_embedding.weight", "query_embedding.weight"} <= frozen
    assert "w_q.0.weight" not in frozen and "modal_projection.text.weight" not in frozen
    before = fine.G_item_id.weight.clone()
    ft = get_trainer(config["MODEL_TYPE"], "SEMINAR")(config, fine)
    ft._train_epoch(train, 0)
    assert torch.equal(fine.G_item_id.weight, before) and not torch.equal(fine.w_q[0].weight, saved["w_q.0.weight"])
    _, _, *_, scratch = build(data_root, "SEMINAR", write=False)  # from scratch: nothing frozen
    assert all(p.requires_grad for p in scratch.parameters())


def test_loading_a_wrong_checkpoint_is_a_clear_error(data_root, tmp_path):
    with pytest.raises(RecBoleMMError, match="does not exist"):
        build(data_root, "SEMINAR", write=False, pretrained_path=str(tmp_path / "none.pth"))
    config, _, _, _, _, twin = build(data_root, "TWIN", write=False)
    torch.save({"config": config, "state_dict": twin.state_dict()}, tmp_path / "twin.pth")
    with pytest.raises(RecBoleMMError, match="not a SEMINAR checkpoint"):
        build(data_root, "SEMINAR", write=False, pretrained_path=str(tmp_path / "twin.pth"))
    config, _, _, _, _, wide = build(data_root, "SEMINAR", write=False, hidden_size=12)
    torch.save({"config": config, "state_dict": wide.state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(RecBoleMMError, match="shape mismatches"):
        build(data_root, "SEMINAR", write=False, pretrained_path=str(tmp_path / "wide.pth"))


# ---------------------------------------------------------------------------------------------- gsu: pq
PQ = {"gsu": "pq", "pq_subspaces": 2, "pq_codewords": 8, "pq_iterations": 5}


def test_pq_search_scores_are_the_index_codeword_sums(data_root):
    from recbole_mm.model.retrieval import ProductQuantizer

    _, _, _, valid, _, net = build(data_root, "SEMINAR", write=False, **PQ)
    net.eval()
    index = net.build_pq_index()
    assert isinstance(index, ProductQuantizer) and index.modalities == ["query", "id", "text", "image"]
    batch = first_batch(valid)
    history = net.encode_history(batch["item_id_list"][:3], batch["query_list"][:3])
    target = net.pair_embed(batch["item_id"][:6].view(3, 2), torch.zeros(3, 2, 5, dtype=torch.long))
    got = np64(net.pq_scores(history, target))  # [B, C, H, L]
    w = np64(net.modality_weights())
    query_codes = index.encode({"query": net.query_embed(history.queries).flatten(0, 1)}).view(3, -1, 1, 2)
    codes = index.codes[history.items].long()
    codes[:, :, :1] = query_codes.long()
    books = index.codebooks.double().numpy()  # [M, S, C, d/S]
    for h in range(2):
        q = linear64(net.w_q[h], np64(target))
        u = q @ np64(net.w_k[h].weight)  # [B, C, D]
        for b in range(3):
            # explicit sum over modalities j and sub-spaces s of w_j <u^s, C_j^s[code]>
            words = np.stack([books[j, s][codes[b, :, j, s].numpy()] for j in range(4) for s in range(2)], 1)
            words = words.reshape(-1, 4, 2, 4)
            want = np.einsum("cjsk,ljsk,j->cl", u[b].reshape(2, 1, 2, 4).repeat(4, 1), words, w)
            assert np.allclose(got[b, :, h], want, atol=1e-5)
            module = index.scores({m: torch.from_numpy(u[b]).float() for m in index.modalities},
                                  history.items[b].expand(2, -1), torch.from_numpy(w).float(),
                                  history_codes=codes[b].expand(2, -1, -1, -1))
            assert np.allclose(module.numpy(), want, atol=1e-4)  # the index's look-up-table path, same numbers


def test_pq_search_at_inference_only_and_rebuilt_after_training(data_root):
    _, _, train, valid, _, net = build(data_root, "SEMINAR", write=False, **PQ)
    batch = first_batch(train)
    net.train()
    exact = net.calculate_loss(batch)
    assert net.pq_index is None  # training searches exactly
    net.eval()
    with torch.no_grad():
        scores = net.predict(first_batch(valid))
    assert net.pq_index is not None and torch.isfinite(scores).all()
    net.train()
    assert net.pq_index is None and torch.isfinite(exact)


def test_pq_index_of_another_model_is_refused(data_root, tmp_path):
    from recbole_mm.model.retrieval import ProductQuantizer, RetrievalIndexError

    _, _, *_, net = build(data_root, "SEMINAR", write=False, **PQ)
    tables = net.pq_tables()
    ProductQuantizer.fit(tables, 2, 8, n_iter=3, model="TWIN").save(str(tmp_path / "twin.pq"))
    with pytest.raises(RetrievalIndexError, match="built for model 'TWIN'"):
        build(data_root, "SEMINAR", write=False, pq_index_path=str(tmp_path / "twin.pq"), **PQ)
    net.build_pq_index().save(str(tmp_path / "seminar.pq"))
    _, _, *_, loaded = build(data_root, "SEMINAR", write=False, pq_index_path=str(tmp_path / "seminar.pq"), **PQ)
    assert torch.equal(loaded.pq_index.codes, net.pq_index.codes)
    loaded.train()
    assert loaded.pq_index is not None  # a loaded index is kept
    with pytest.raises(RetrievalIndexError, match="tables"):
        build(data_root, "SEMINAR", write=False, pq_index_path=str(tmp_path / "seminar.pq"), hidden_size=12, **PQ)
