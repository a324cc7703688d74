"""MMSSL: each "must be faithful" point against float64 hand computations on tiny graphs, the reference_compat
switches, the two optimisers, bad input, and the general view of ml-100k_mm."""

import os

import numpy as np
import pytest
import torch
from graph_data import build, dense_train_matrix, make_config
from torch import nn

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.errors import ConfigError, FeatureFileError
from recbole_mm.model.general_recommender.mmssl import (
    MMSSLBatchError,
    MMSSLTrainingError,
    ModalityAttention,
    cross_view_infonce,
    gradient_penalty,
    gumbel_real_rows,
    topk_pairs,
)
from recbole_mm.registry import get_model
from recbole_mm.trainer import MMSSLTrainer


def normalize(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_collapsed_attention(views, w_q, w_cat, heads):
    """The reference's multi_head_self_attention as written (K from Q, V untransformed, softmax over the key
    modality, V indexed by the query modality), then the mean over modalities; float64 torch."""
    m, n, d = views.shape
    dh = d // heads
    q = (views @ w_q).reshape(m, n, heads, dh).permute(2, 0, 1, 3)
    k = q
    att = torch.softmax(((q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) / dh**0.5).unsqueeze(-1), dim=2)
    z = (att * views.unsqueeze(1)).sum(2)  # [heads, M, N, d]
    z = torch.cat(list(z), dim=-1) @ w_cat
    return z.mean(0)


@pytest.fixture(scope="module")
def compat(tmp_path_factory):
    return build(tmp_path_factory.mktemp("mmssl_compat"), reference_compat=True, train_batch_size=8)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    return build(tmp_path_factory.mktemp("mmssl_fixed"))


# ---------------------------------------------------------------------------------------------- forward pass
def test_forward_matches_float64_hand_computation(compat):
    """Projections, one-hop modality views, modality ID views over the (initial) training graph, the collapsed
    attention, e^(0), two alternating hops with the last softmaxed, layer mean, fusion with model_cat_rate."""
    _, _, train, _, _, model = compat
    model.eval()
    out = model.forward()
    r = dense_train_matrix(train.dataset)
    p_ui = (r.sum(1, keepdims=True) + 1e-8) ** -0.5 * r
    p_iu = (r.sum(0, keepdims=True).T + 1e-8) ** -0.5 * r.T
    e_u = model.user_embedding.weight.detach().double().numpy()
    e_i = model.item_embedding.weight.detach().double().numpy()
    w_eff = model.attention.w_cat.detach().double().numpy().reshape(2, 8, 8).sum(0)
    feat_u, feat_i = {}, {}
    for m in ("image", "text"):
        lin = model.projections[m]
        f = getattr(model.features, m).double().numpy() @ lin.weight.detach().double().numpy().T
        f += lin.bias.detach().double().numpy()
        feat_u[m] = p_ui @ f
        feat_i[m] = p_iu @ feat_u[m]
        np.testing.assert_allclose(out["feat_user"][m].detach().numpy(), feat_u[m], rtol=1e-4, atol=1e-6)
    z_u = np.mean([p_ui @ e_i @ w_eff for _ in range(2)], axis=0)  # both modalities start from the training graph
    z_i = np.mean([p_iu @ e_u @ w_eff for _ in range(2)], axis=0)
    u0, i0 = e_u + 0.36 * normalize(z_u), e_i + 0.36 * normalize(z_i)
    u1 = p_ui @ i0
    i1 = p_iu @ u1
    u2 = softmax(p_ui @ i1)
    i2 = softmax(p_iu @ u2)
    user = (u0 + u1 + u2) / 3 + 0.55 * (normalize(feat_u["image"]) + normalize(feat_u["text"]))
    item = (i0 + i1 + i2) / 3 + 0.55 * (normalize(feat_i["image"]) + normalize(feat_i["text"]))
    np.testing.assert_allclose(out["user"].detach().numpy(), user, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["item"].detach().numpy(), item, rtol=1e-4, atol=1e-5)
    model.train()


def test_compat_attention_is_the_references_collapsed_attention():
    torch.manual_seed(0)
    attention = ModalityAttention(8, 2, compat=True).double()
    views = torch.randn(2, 5, 8, dtype=torch.float64)
    w_q = torch.randn(8, 8, dtype=torch.float64)  # any w_q: the reference's output does not depend on it
    expected = reference_collapsed_attention(views, w_q, attention.w_cat, heads=2)
    torch.testing.assert_close(attention(views), expected)


def test_fixed_attention_is_multi_head_attention_across_modalities():
    torch.manual_seed(1)
    att = ModalityAttention(8, 2, compat=False).double()
    views = torch.randn(3, 4, 8, dtype=torch.float64)
    expected = torch.zeros(3, 4, 8, dtype=torch.float64)
    for node in range(4):
        x = views[:, node]  # [M, d]
        q, k, v = x @ att.w_q, x @ att.w_k, x @ att.w_v
        heads = []
        for h in range(2):
            s = slice(4 * h, 4 * h + 4)
            weights = torch.softmax(q[:, s] @ k[:, s].T / 2.0, dim=-1)  # over the 3 key modalities
            heads.append(weights @ v[:, s])
        expected[:, node] = torch.cat(heads, dim=-1) @ att.w_o
    torch.testing.assert_close(att(views), expected.mean(0))
    # not the collapsed map: swapping one modality's view changes the others' outputs through attention
    assert not torch.allclose(att(views), (views @ att.w_v @ att.w_o).mean(0))


# --------------------------------------------------------------------------------------------- the critic
def test_gumbel_real_rows_hand_computed():
    observed = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    cf = torch.tensor([[0.0, 0.6, 0.0, 0.8]], dtype=torch.float64)
    noise = torch.tensor([[0.3, 0.9, 0.5, 0.1]], dtype=torch.float64)
    gumbel = -np.log(-np.log(noise.numpy() + 1e-8) + 1e-8)
    soft = softmax((observed.numpy() + 0.5 * gumbel) / 2.0)
    expected = normalize(soft + 3.0 * cf.numpy())
    got = gumbel_real_rows(observed, cf, noise, scale=0.5, tau=2.0, cf_weight=3.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    # the reference's values (scale 1e-5, tau 0.005): uniform over the observed items, then 100 x the CF row
    plain = gumbel_real_rows(observed, torch.zeros_like(cf), noise, 1e-5, 0.005, 100.0)
    np.testing.assert_allclose(plain.numpy(), [[2**-0.5, 0, 2**-0.5, 0]], atol=2e-3)  # noise moves it by 0.2%
    mostly_cf = gumbel_real_rows(observed, cf, noise, 1e-5, 0.005, 100.0)
    assert float(mostly_cf[0] @ cf[0]) > 0.99


def test_gradient_penalty_of_a_linear_critic():
    critic = nn.Linear(4, 1).double()
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.0]]))
    real, fake = torch.rand(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    alpha = torch.rand(3, 1, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, alpha)
    # the gradient of w.x + b is w for every row: 0.3 * (||w|| - 1)^2
    assert float(gp.detach()) == pytest.approx(0.3 * (np.sqrt(0.25 + 1 + 4) - 1) ** 2, rel=1e-12)
    assert gp.requires_grad  # the penalty trains the critic


def test_cross_view_infonce_hand_computed():
    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(
        3, 4, generator=gen, dtype=torch.float64
    )
    a, b = normalize(z1.numpy()), normalize(z2.numpy())
    losses = []
    for i in range(3):
        pos = np.exp(a[i] @ b[i] / 0.5)
        neg = sum(np.exp(a[i] @ b[j] / 0.5) for j in range(3)) + sum(
            np.exp(a[i] @ a[j] / 0.5) for j in range(3) if j != i
        )
        losses.append(-np.log(pos / neg + 1e-8))
    assert float(cross_view_infonce(z1, z2, 0.5)) == pytest.approx(np.mean(losses), rel=1e-12)


# -------------------------------------------------------------------------------------------- generated graphs
def test_topk_pairs_with_and_without_the_pairing_bug():
    rows = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.1, 0.7]])
    users = torch.tensor([10, 20])
    fixed = list(zip(*(t.tolist() for t in topk_pairs(rows, users, 2, pairing_bug=False))))
    assert fixed == [(10, 0), (10, 2), (20, 1), (20, 3)]
    buggy = list(zip(*(t.tolist() for t in topk_pairs(rows, users, 2, pairing_bug=True))))
    assert buggy == [(10, 0), (20, 2), (10, 1), (20, 3)]  # row 0's second item credited to user 20


def test_regenerated_graph_is_each_users_topk_unobserved_items(fixed):
    _, _, train, _, _, model = fixed
    assert model.topk == 2  # max(1, int(11 * 0.2))
    model.regenerate_graphs()
    model.eval()
    with torch.no_grad():
        out = model.forward()
    model.train()
    r = dense_train_matrix(train.dataset)
    for m in model.modalities:
        users, items = model.generated[m]
        scores = (out["feat_user"][m].double() @ out["feat_item"][m].double().T).numpy()
        scores[r > 0] = -np.inf
        scores[:, 0] = -np.inf
        active = np.flatnonzero(r.sum(1))
        assert sorted(set(users.tolist())) == active.tolist()
        for u in active:
            assert sorted(items[users == u].tolist()) == sorted(np.argsort(-scores[u])[:2].tolist())
        g_ui = model.graph_operators(m)[0].to_dense().numpy()
        np.testing.assert_allclose(g_ui[active].sum(1), np.full(len(active), 2 * 2**-0.5), rtol=1e-5)
    # the graph feeds the modality ID views: g_u = G_ui E_item
    expected = model.graph_operators("image")[0].to_dense() @ model.item_embedding.weight
    torch.testing.assert_close(model.forward()["id_user"]["image"], expected)


def test_compat_k_zero_empties_the_graphs_and_fixed_keeps_k_at_least_one(tmp_path):
    *_, train, _, _, model = build(tmp_path, reference_compat=True, train_batch_size=8, m_topk_rate=1e-4)
    assert model.topk == 0
    batch = next(model.reference_batches(torch.Generator().manual_seed(0)))
    model.calculate_loss(batch)
    model.after_batch(0)  # collects k = 0 items
    assert any(model.generated[m] is None for m in model.modalities)
    model.after_batch(1)  # period 1: rebuild from what was collected
    out = model.forward()
    for m in model.modalities:
        assert len(model.generated[m][0]) == 0
        assert float(out["id_user"][m].abs().sum()) == 0.0  # the branch is off
    *_, fixed_model = build(tmp_path, m_topk_rate=1e-4)
    assert fixed_model.topk == 1


def test_compat_graph_schedule_collects_with_the_pairing_bug(compat):
    _, _, _, _, _, model = compat
    batches = model.reference_batches(torch.Generator().manual_seed(1))
    batch = next(batches)
    assert len(torch.unique(batch[model.USER_ID])) == 8  # distinct users, one positive and one negative each
    model.calculate_loss(batch)
    users, rows = model._last_rows
    model.after_batch(0)
    expected = topk_pairs(rows["text"], users, model.topk, pairing_bug=True)
    got = model._collected["text"][-1]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    model.after_batch(1)
    assert torch.equal(model.generated["text"][0], expected[0]) and model._collected["text"] == []


# ----------------------------------------------------------------------------------------- training and optimisers
def test_critic_and_recommender_are_updated_by_their_own_optimisers_only(fixed):
    config, _, train, _, _, model = fixed
    trainer = MMSSLTrainer(config, model)
    critic_ids = {id(p) for p in model.critic.parameters()}
    rec_ids = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert rec_ids.isdisjoint(critic_ids) and rec_ids == {id(p) for p in model.recommender_parameters()}
    assert {id(p) for g in trainer.critic_optimizer.param_groups for p in g["params"]} == critic_ids
    assert type(trainer.optimizer).__name__ == "AdamW" and trainer.optimizer.defaults["weight_decay"] == 0.01
    batch = next(iter(train))

    def snapshot():
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    before = snapshot()
    loss, _ = model.critic_loss(batch)
    trainer.critic_optimizer.zero_grad()
    loss.backward()
    trainer.critic_optimizer.step()
    after_critic = snapshot()
    changed = {n for n in before if not torch.equal(before[n], after_critic[n])}
    assert changed and all(n.startswith("critic.") for n in changed)
    trainer.optimizer.zero_grad()
    trainer.critic_optimizer.zero_grad()  # set to None
    sum(model.calculate_loss(batch)).backward()
    assert all(p.grad is None for p in model.critic.parameters())  # the adversarial term computes no critic gradient
    assert all(p.requires_grad for p in model.critic.parameters())
    trainer.optimizer.step()
    after_rec = snapshot()
    changed = {n for n in before if not torch.equal(after_critic[n], after_rec[n])}
    assert changed and not any(n.startswith("critic.") for n in changed)
    assert "projections.image.weight" in changed  # the adversarial and BPR terms train the projections


def test_one_user_batch_skips_the_critic_and_compat_alpha_needs_a_full_batch(fixed, compat):
    _, _, train, _, _, model = fixed
    batch = next(iter(train))
    one = batch[batch[model.USER_ID] == batch[model.USER_ID][0]]
    assert model.critic_loss(one) is None
    model.skipped_critic_batches = 0
    assert float(model.calculate_loss(one)[-1]) == 0.0 and model.skipped_critic_batches == 1
    _, _, compat_train, _, _, compat_model = compat
    with pytest.raises(MMSSLBatchError, match=r"alpha for 16 rows \(2 x train_batch_size\), the batch has \d+"):
        compat_model.critic_loss(next(iter(compat_train))[:3])  # fewer than the reference's 8 users


def test_compat_needs_as_many_users_as_the_batch(tmp_path):
    *_, model = build(tmp_path, reference_compat=True, train_batch_size=64)
    with pytest.raises(MMSSLBatchError, match="train_batch_size=64 distinct users per batch; the training data has 20"):
        next(model.reference_batches(torch.Generator()))


def test_nan_gradient_penalty_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    config, _, train, valid, _, model = build(tmp_path)
    trainer = MMSSLTrainer(config, model)
    trainer.fit(train, valid, verbose=False, saved=True)
    with open(trainer.saved_model_file, "rb") as f:
        saved = f.read()
    with torch.no_grad():
        model.critic.net[0].weight[0, 0] = float("nan")
    with pytest.raises(MMSSLTrainingError, match=r"gradient penalty is nan at epoch 0, step 0"):
        trainer.fit(train, valid, verbose=False, saved=True)
    with open(trainer.saved_model_file, "rb") as f:
        assert f.read() == saved


def test_checkpoint_restores_the_generated_graphs(fixed, tmp_path):
    _, _, _, _, _, model = fixed
    model.regenerate_graphs()
    state = model.state_dict()
    torch.save(state, tmp_path / "m.pth")
    model.install_graph("image", None, None)
    model.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=False))
    assert torch.equal(model.generated["image"][0], state["_extra_state"]["generated"]["image"][0])


def test_training_beats_the_untrained_model(tmp_path):
    config, _, train, valid, _, model = build(tmp_path, epochs=8, learning_rate=0.01, stopping_step=8)
    trainer = MMSSLTrainer(config, model)
    untrained = trainer.evaluate(valid, load_best_model=False)
    best, result = trainer.fit(train, valid, verbose=False, saved=False)
    assert result["recall@1"] > untrained["recall@1"] + 0.1


# --------------------------------------------------------------------------------------------------- config/data
def test_dataset_presets_apply_by_name_and_user_keys_win(tmp_path):
    config = make_config(tmp_path, dataset_preset="sports", learning_rate=0.002)
    *_, model = build(tmp_path, dataset_preset="sports", learning_rate=0.002)
    assert model.rebuild_period == 2 and model.real_data_tau == 0.002 and config["D_lr"] == 3e-4
    assert model.topk == 2  # m_topk_rate 0.2 is set by the tests' config: the preset's 0.02 does not override it
    assert config["learning_rate"] == 0.002
    *_, plain = build(tmp_path)
    assert plain.rebuild_period == 1 and plain.real_data_tau != 0.002
    with pytest.raises(ConfigError, match="dataset_preset': expected 'auto', None or one of .*'sports'.*'clothing'"):
        make_config(tmp_path, dataset_preset="clothing")


def test_a_modality_the_dataset_lacks_is_refused(tmp_path):
    config = make_config(tmp_path, modalities=["image", "audio"])
    with pytest.raises(FeatureFileError, match="modality 'audio'.*declares only \\['image', 'text'\\]"):
        create_dataset(config)


def test_ml100k_mm_general_view_and_one_step(ml100k_root):
    config = Config(
        model="MMSSL",
        dataset="ml-100k_mm",
        config_dict={
            "data_path": str(ml100k_root),
            "train_batch_size": 256,
            "embedding_size": 16,
            "show_progress": False,
            "checkpoint_dir": str(ml100k_root / "saved_mmssl"),
            "state": "ERROR",
        },
    )
    dataset = create_dataset(config)
    folder = os.path.join(str(ml100k_root), "ml-100k_mm")
    rows = {}
    for part in ("train", "valid", "test"):
        with open(os.path.join(folder, f"ml-100k_mm.{part}.inter")) as f:
            rows[part] = sum(1 for _ in f) - 1
    train, valid, test = data_preparation(config, dataset)
    assert "item_id_list" not in dataset.field2type
    users_with_train = len(np.unique(train.dataset.inter_feat["user_id"].numpy()))
    assert len(train.dataset) == rows["train"] + users_with_train  # every target + each user's first item
    assert len(valid.dataset) == rows["valid"] and len(test.dataset) == rows["test"]
    pairs = train.dataset.inter_feat["user_id"] * dataset.item_num + train.dataset.inter_feat["item_id"]
    assert len(torch.unique(pairs)) == len(pairs)
    model = get_model("MMSSL")(config, train.dataset)
    assert model.modalities == ["text", "image"] and model.topk == 1  # int(1682 * 1e-4) = 0, kept at 1
    batch = next(iter(train))
    critic_loss, penalty = model.critic_loss(batch)
    parts = model.calculate_loss(batch)
    assert torch.isfinite(critic_loss) and torch.isfinite(penalty) and all(torch.isfinite(p) for p in parts)


def test_compat_epoch_runs_on_reference_batches(tmp_path):
    config, _, train, valid, _, model = build(tmp_path, reference_compat=True, train_batch_size=8, epochs=1)
    trainer = MMSSLTrainer(config, model)
    losses = trainer._train_epoch(train, 0)
    assert len(losses) == 6 and np.isfinite(losses).all()
    # 50 training interactions // 8 + 1 = 7 batches; rebuilt at batches 1..6 (period 1), so the graphs are generated
    assert all(model.generated[m] is not None for m in model.modalities)
    assert trainer.evaluate(valid, load_best_model=False)["recall@5"] > 0
