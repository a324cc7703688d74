"""PMMRec on tiny pre-split multi-modal datasets (see test_mmsrec for the helpers) and on a slice of ml-100k_mm.

The in-batch loss is checked against the reference's per-user Python loop re-written here; NICL, NID and RCL
against float64 loops over their definitions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_mmsrec import build, first_batch, internal_id, write_tiny

from recbole_mm.errors import RecBoleMMError
from recbole_mm.model.sequential_recommender.pmmrec import (
    ITEM_ENCODER,
    USER_ENCODER,
    in_batch_logits,
    nicl_loss,
    nid_loss,
    rcl_loss,
)
from recbole_mm.registry import get_trainer


def save(config, model, path):
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.saved_model_file = str(path)
    trainer._save_checkpoint(0, verbose=False)
    return str(path)


def reference_logits(prec_vec, score_embs, ids, pop, log_mask, bs, max_len):
    """The reference's Model.forward from the logits to the masked logits (its loops, on left-padded rows)."""
    logits = prec_vec @ score_embs.t() - torch.log(pop[ids.view(-1)])
    keep = torch.cat((log_mask, torch.ones(bs, 1)), dim=1).view(-1)
    logits[:, keep == 0] = -1e4
    logits = logits.view(bs, max_len, -1)
    for i in range(bs):
        reject = ids.view(bs, -1)[i]
        for c in range(logits.size(2)):
            if (ids.view(-1)[c] == reject).any():
                for j in range(max_len):
                    if c != i * (max_len + 1) + j + 1:
                        logits[i, j, c] = -1e4
    return logits


def test_in_batch_logits_match_the_reference_loop():
    torch.manual_seed(0)
    bs, max_len, d, n_items = 3, 4, 5, 9
    # the reference's left-padded rows of max_len + 1 items, log_mask over the first max_len
    ids = torch.tensor([[0, 0, 3, 5, 3], [0, 2, 4, 6, 1], [7, 8, 2, 5, 4]])
    log_mask = (ids[:, :-1] != 0).float()
    pop = torch.rand(n_items, dtype=torch.float64) + 0.1
    user = torch.randn(bs, max_len, d, dtype=torch.float64)
    items = torch.randn(bs * (max_len + 1), d, dtype=torch.float64)
    expected = reference_logits(user.view(-1, d), items, ids, pop, log_mask, bs, max_len)

    member = torch.zeros(bs, n_items, dtype=torch.bool)
    member[torch.arange(bs)[:, None], ids] = True
    label_col = torch.arange(bs)[:, None] * (max_len + 1) + torch.arange(max_len) + 1
    row = torch.arange(bs)[:, None].expand(bs, max_len)
    cand_ids = ids.flatten()
    flat = in_batch_logits(
        user.flatten(0, 1), row.flatten(), label_col.flatten(), items, cand_ids, pop.log(), member, cand_ids != 0
    )
    got = flat.view(bs, max_len, -1)
    valid = log_mask.bool()
    assert torch.allclose(got[valid], expected[valid])
    # logQ: an unmasked entry is user . item - log p(item) (row 1's item 6 is not in row 2)
    assert got[2, 0, 8].item() == pytest.approx(float(user[2, 0] @ items[8] - pop[6].log()))
    assert got[0, 1, 4] == -1e4 and got[0, 3, 2] == -1e4  # row 0's item 3, twice: each the other's false negative
    assert got[0, 3, 4] > -1e4  # ... but the label of its own position
    assert got[1, 2, 14] == -1e4  # row 2's item 4 is in row 1's sequence: a false negative


def test_next_item_loss_in_the_model_by_hand(tmp_path):
    _, model, train_data, _, _ = build("PMMRec", tmp_path, drop_rate=0.0)
    batch = first_batch(train_data)
    loss = model.calculate_loss(batch)
    full, lengths = model._rows(batch)
    embs = model.item_embedding(full).double().detach()
    user = model.user_encoder(model.item_embedding(full)[:, :-1]).double().detach()
    log_pop = model.log_pop.double()
    terms = []
    n, width = full.shape
    for b in range(n):
        for pos in range(int(lengths[b])):
            logits, label = [], None
            for c in range(n):
                for k in range(width):
                    item = int(full[c, k])
                    if c == b and k == pos + 1:
                        label = len(logits)
                    elif item == 0 or item in full[b].tolist():
                        continue  # masked: its exp is 0 next to the others (-1e4)
                    logits.append(float(user[b, pos] @ embs[c, k] - log_pop[item]))
            terms.append(-(logits[label] - np.log(np.sum(np.exp(logits)))))
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-4)
    # logQ: the popularity counts the training file's targets and first items, plus one
    counts = torch.ones(model.n_items, dtype=torch.float64)
    inter = train_data.dataset.inter_feat
    for item in inter["item_id"].tolist() + inter["item_id_list"][inter["item_length"] == 1, 0].tolist():
        counts[item] += 1
    counts[0] = 1
    assert torch.allclose(model.log_pop.double(), (counts / counts.sum()).log(), atol=1e-6)


def test_nicl_by_hand():
    torch.manual_seed(2)
    n, d = 6, 4
    text = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)
    image = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)
    user = torch.tensor([0, 0, 0, 1, 1, 2])
    has_next = torch.tensor([True, True, False, True, False, False])
    text_ok = torch.tensor([True, True, True, True, True, False])  # position 5 is padding
    image_ok = torch.tensor([True, False, True, True, True, False])  # position 1 has no image
    tau = 0.5
    got = nicl_loss(text, image, text_ok, image_ok, user, has_next, tau)

    vectors = {("t", i): text[i] for i in range(n) if text_ok[i]}
    vectors.update({("v", i): image[i] for i in range(n) if image_ok[i]})
    terms = []
    for (kind, i), anchor in vectors.items():
        other = "v" if kind == "t" else "t"
        positives = [(other, i)] + ([("t", i + 1), ("v", i + 1)] if has_next[i] else [])
        positives = [p for p in positives if p in vectors]
        negatives = [key for key in vectors if user[key[1]] != user[i]]
        if not positives:
            continue
        e = lambda key: np.exp(float(anchor @ vectors[key]) / tau)  # noqa: E731
        pos = sum(e(p) for p in positives)
        terms.append(-np.log(pos / (pos + sum(e(q) for q in negatives))))
    assert got.item() == pytest.approx(np.mean(terms), rel=1e-9)


def test_nid_and_rcl_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], dtype=torch.float64)
    noised = torch.tensor([[True, False, False], [False, True, True]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    terms = [
        -(np.log(sig(x)) if y else np.log(1 - sig(x)))
        for x, y, v in zip(logits.flatten().tolist(), noised.flatten().tolist(), valid.flatten().tolist())
        if v
    ]
    assert nid_loss(logits, noised, valid).item() == pytest.approx(np.mean(terms), rel=1e-9)

    torch.manual_seed(3)
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    tau = 0.1
    cos = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / tau
    rows = [-(cos[i, i] - torch.logsumexp(cos[i], 0)).item() for i in range(4)]
    cols = [-(cos[i, i] - torch.logsumexp(cos[:, i], 0)).item() for i in range(4)]
    assert rcl_loss(a, b, tau).item() == pytest.approx((np.mean(rows) + np.mean(cols)) / 2, rel=1e-9)


def test_user_encoder_is_causal_sasrec(tmp_path):
    _, model, *_ = build("PMMRec", tmp_path, drop_rate=0.0)
    encoder = model.user_encoder
    assert len(encoder.blocks) == 2 and encoder.blocks[0].attention.num_heads == 2
    assert encoder.blocks[0].attention.in_proj_bias is None and encoder.blocks[0].attention.out_proj.bias is None
    x = torch.randn(2, 5, 16)
    y = x.clone()
    y[:, 3] = torch.randn(2, 16)  # (a constant shift would vanish in the LayerNorm)
    out_x, out_y = encoder(x), encoder(y)
    assert torch.allclose(out_x[:, :3], out_y[:, :3], atol=1e-6) and not torch.allclose(out_x[:, 3], out_y[:, 3])
    # one block by hand: post-LN attention (bias-free, 2 heads, causal), then post-LN ReLU feed-forward
    block = encoder.blocks[0]
    h = encoder.layer_norm(x + encoder.position_embedding.weight[:5])
    q, k, v = (h @ w.t() for w in block.attention.in_proj_weight.chunk(3))
    heads = lambda t: t.view(2, 5, 2, 8).transpose(1, 2)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(-1, -2) / 8**0.5
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    attended = (scores.softmax(-1) @ heads(v)).transpose(1, 2).reshape(2, 5, 16)
    attended = attended @ block.attention.out_proj.weight.t()
    h = block.attn_norm(h + attended)
    h = block.ffn_norm(h + block.w_2(F.relu(block.w_1(h))))
    start = encoder.layer_norm(x + encoder.position_embedding.weight[:5])
    assert torch.allclose(block(start, _causal(5)), h, atol=1e-5)


def _causal(n):
    return torch.ones(n, n, dtype=torch.bool).triu(1)


def test_fusion_is_merge_attention_with_masked_mean_pool(tmp_path):
    _, model, train_data, _, _ = build("PMMRec", tmp_path, drop_rate=0.0)
    model.eval()
    no_image = internal_id(train_data.dataset, 3)
    other = internal_id(train_data.dataset, 4)
    embs, present = model.modality_embeddings(torch.tensor([other, no_image]))
    tokens = torch.stack([embs["text"], embs["image"]], dim=1)
    both = model.fusion(tokens[:1]).mean(dim=1)
    alone = model.fusion(tokens[1:, :1]).mean(dim=1)  # a missing modality is a masked token
    got = model.item_embedding(torch.tensor([other, no_image]))
    assert torch.allclose(got[0], both[0], atol=1e-5) and torch.allclose(got[1], alone[0], atol=1e-5)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pre-trained PMMRec checkpoint (one epoch, so that it differs from any init) and its state."""
    directory = tmp_path_factory.mktemp("pmmrec_pretrained")
    write_tiny(directory / "pt", "pt")
    config, model, train_data, _, _ = build("PMMRec", directory, name="pt", train_stage="pretrain", pretrain_epochs=1)
    trainer = get_trainer(config["MODEL_TYPE"], "PMMRec")(config, model)
    trainer.fit(train_data, None, verbose=False, saved=False)
    return save(config, model, directory / "pt.pth"), {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "part, prefixes",
    [("full", ITEM_ENCODER + USER_ENCODER), ("item_encoder", ITEM_ENCODER), ("user_encoder", USER_ENCODER)],
)
def test_transfer_modes_load_exactly_their_parts(tmp_path, pretrained, part, prefixes):
    path, source = pretrained
    torch.manual_seed(7)
    _, plain, *_ = build("PMMRec", tmp_path)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    torch.manual_seed(7)
    _, model, *_ = build("PMMRec", tmp_path, pretrain_part=part, pretrained_path=path)
    for key, value in model.state_dict().items():
        if key.startswith(prefixes):
            assert torch.equal(value, source[key]), key
        elif key != "log_pop":
            assert not torch.equal(value, source[key]), key  # not the checkpoint's
            if key.startswith(USER_ENCODER) or part == "user_encoder":
                continue  # re-initialised (item_encoder) or fresh: drawn from the same init
            assert torch.equal(value, before[key]), key
    assert "nid_head.weight" in source and "nid_head.weight" not in model.state_dict()
    if part == "user_encoder":
        # the reference's call loads nothing: its keys keep the 'user_encoder.' prefix
        result = model.user_encoder.load_state_dict(source, strict=False)
        assert len(result.missing_keys) == len(model.user_encoder.state_dict())


def test_single_modality_transfer(tmp_path, pretrained):
    path, source = pretrained
    write_tiny(tmp_path / "txt", "txt", image=False)
    mm = {"text": {"suffix": "feat1CLS", "dim": 8}}
    _, model, *_ = build(
        "PMMRec", tmp_path, name="txt", mm_features=mm, item_tower="text-only", pretrain_part="full",
        pretrained_path=path,
    )
    assert not hasattr(model, "cv_proj") and not hasattr(model, "fusion")
    for key in ("text_proj.weight", "user_encoder.blocks.1.w_1.weight"):
        assert torch.equal(model.state_dict()[key], source[key])
    with pytest.raises(RecBoleMMError, match=r"PMMRec.*image.*txt"):
        build("PMMRec", tmp_path, name="txt", mm_features=mm)


def test_pretraining_terms_and_round_trip(tmp_path):
    write_tiny(tmp_path / "pt", "pt")
    _, model, train_data, _, _ = build("PMMRec", tmp_path, name="pt", train_stage="pretrain", drop_rate=0.0)
    batch = first_batch(train_data)
    full, lengths = model._rows(batch)
    torch.manual_seed(4)
    total = model.calculate_loss(batch)
    model.nicl_weight = model.nid_weight = model.rcl_weight = 0.0
    torch.manual_seed(4)
    base = model.calculate_loss(batch)
    assert torch.isfinite(total) and total.item() > base.item()
    noised, flags = model.noise(full[:, :-1], lengths)
    real = torch.arange(full.size(1) - 1) < lengths[:, None]
    assert not (flags & ~real).any() and torch.equal(noised[~real], full[:, :-1][~real])
    assert flags[real].float().mean().item() == pytest.approx(0.2, abs=0.08)
    assert set(noised[real].tolist()) <= set(full[:, :-1][real].tolist())  # in-batch items

    # checkpoint round trip: identical scores
    from recbole_mm.quick_start import load_data_and_model

    config, model, train_data, valid_data, test_data = build("PMMRec", tmp_path)
    trainer = get_trainer(config["MODEL_TYPE"], "PMMRec")(config, model)
    trainer.fit(train_data, valid_data, verbose=False, saved=True)
    model.eval()
    scores = model.full_sort_predict(first_batch(test_data))
    _, reloaded, _, _, _, reloaded_test = load_data_and_model(trainer.saved_model_file)
    assert torch.equal(reloaded.full_sort_predict(first_batch(reloaded_test)), scores)


def test_bad_inputs(tmp_path, pretrained):
    with pytest.raises(RecBoleMMError, match="train_stage"):
        build("PMMRec", tmp_path, train_stage="inductive_ft")
    with pytest.raises(RecBoleMMError, match="pretrain_part"):
        build("PMMRec", tmp_path, pretrain_part="encoder")
    path, _ = pretrained
    with pytest.raises(RecBoleMMError, match="PMMRec"):
        build("MMSRec", tmp_path, pretrained_path=path)
    with pytest.raises(RecBoleMMError, match=r"user_encoder\.position_embedding\.weight.*\(8, 16\)"):
        build("PMMRec", tmp_path, pretrained_path=path, pretrain_part="full", MAX_ITEM_LIST_LENGTH=6)


def test_short_ml100k_run_beats_untrained(ml100k_root, tmp_path):
    from test_mmsrec import short_ml100k_run

    # 300 users with 5 rows each: the in-batch softmax with logQ correction needs more steps than a full softmax
    widths = {"embedding_dim": 32, "fusion_heads": 2}
    # every prefix a row (each user's 5 rows), as the run was sized: with the default windows an epoch is 300 rows
    widths.update(epochs=5, learning_rate=1e-3, train_rows="prefixes")
    untrained, trained = short_ml100k_run("PMMRec", ml100k_root, tmp_path, 300, 5, **widths)
    assert trained > untrained + 0.01


def test_cold_start_items_are_ranked_from_their_features(ml100k_root, tmp_path):
    """On ml-100k_mm_cold (a fifth of the items never in training), the features-only model ranks the held-out
    test targets among the held-out items better than chance. (An ID model's rows of those items never train:
    SASRec ranks them by its random initial embeddings.)"""
    from test_mmsrec import short_run

    from recbole_mm.prepare import ml100k_mm_cold
    from recbole_mm.prepare.ml100k_mm_domains import copy_slice

    ml100k_mm_cold.build(str(tmp_path / "full"), source_data_path=str(ml100k_root))
    copy_slice(str(tmp_path / "full"), str(tmp_path), "ml-100k_mm_cold", n_users=300, max_rows=5)
    settings = {"embedding_dim": 32, "fusion_heads": 2, "epochs": 3, "learning_rate": 1e-3, "mask_history": False}
    trainer, test_data, _, _ = short_run("PMMRec", tmp_path, "ml-100k_mm_cold", **settings)
    model = trainer.model.eval()
    tokens = test_data.dataset.field2id_token["item_id"]
    held_out = set(ml100k_mm_cold.read_cold_items(str(tmp_path / "full" / "ml-100k_mm_cold")))
    cold = torch.tensor([i for i, t in enumerate(tokens) if t in held_out])
    percentiles = []
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = model.full_sort_predict(interaction)[:, cold]  # [B, held-out items]
            assert torch.isfinite(scores).all() and (scores.std(dim=1) > 0).all()  # non-trivial scores
            target = (cold[None, :] == interaction["item_id"][:, None]).float().argmax(dim=1)
            own = scores.gather(1, target[:, None])
            percentiles.append((scores > own).sum(dim=1).float() / (len(cold) - 1))
    percentile = torch.cat(percentiles)
    print(f"mean percentile rank among {len(cold)} held-out items: {percentile.mean():.3f} (chance 0.5)")
    # chance: 0.5 +- 0.29 / sqrt(n) (about 0.017 for 300 users)
    assert percentile.mean() < 0.5 - 3 * 0.29 / len(percentile) ** 0.5


# The 2-process gloo pre-training test of PMMRec shares MMSRec's process pair: test_mmsrec.py,
# test_pretraining_two_ranks_match_one_process.
