"""MMSRec on tiny pre-split multi-modal datasets written per test, and on a slice of ml-100k_mm.

Formulas are checked against float64 hand computations; training runs through RecBole's real dataloaders,
trainer and evaluator. ``write_tiny``, ``tiny_config`` and ``train_worker`` serve the PMMRec tests too.
"""

import os
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.utils import init_seed
from two_ranks import two_ranks_and_one

from recbole_mm.config import Config
from recbole_mm.data.atomic_files import leave_one_out, write_feature_file, write_inter_files
from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.errors import RecBoleMMError
from recbole_mm.model.sequential_recommender.mmsrec import MMSRec, masked_max_fusion, symmetric_info_nce
from recbole_mm.quick_start import load_data_and_model
from recbole_mm.registry import get_model, get_trainer

N_ITEMS, DIM, N_GROUPS = 24, 8, 4
BASE = {
    "MAX_ITEM_LIST_LENGTH": 8,
    "train_batch_size": 32,
    "eval_batch_size": 64,
    "epochs": 1,
    "metrics": ["HIT", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
    "benchmark_filename": ["train", "valid", "test"],
    "alias_of_item_id": ["item_id_list"],
    "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
    "mm_features": {"text": {"suffix": "feat1CLS", "dim": DIM}, "image": {"suffix": "feat3CLS", "dim": DIM}},
    "show_progress": False,
    "use_gpu": False,
    "seed": 2020,
}
WIDTHS = {
    "MMSRec": {"fusion_embed_dim": 16, "fusion_heads": 2, "fusion_feedforward_dim": 16},
    "PMMRec": {"embedding_dim": 16, "fusion_heads": 2},
}


def write_tiny(directory, name="syn", n_users=40, no_image=(3,), no_modality=(), image=True):
    """Items in 4 groups (features = group centre + noise); each user walks through one group. Items in
    ``no_image`` have a zero image row, items in ``no_modality`` zero rows in both files."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_GROUPS, DIM))
    group = np.arange(N_ITEMS) % N_GROUPS
    text = centres[group] + 0.3 * rng.normal(size=(N_ITEMS, DIM))
    img = -centres[group] + 0.3 * rng.normal(size=(N_ITEMS, DIM))
    img[list(no_image)] = 0
    text[list(no_modality)] = 0
    img[list(no_modality)] = 0
    sequences = []
    for user in range(n_users):
        members = np.flatnonzero(group == user % N_GROUPS)
        start = rng.integers(len(members))
        sequences.append([int(members[(start + k) % len(members)]) for k in range(5 + user % 4)])
    write_inter_files(str(directory), name, leave_one_out(sequences, max_history=8))
    write_feature_file(os.path.join(directory, f"{name}.feat1CLS"), text, "synthetic")
    if image:
        write_feature_file(os.path.join(directory, f"{name}.feat3CLS"), img, "synthetic")


def tiny_config(model, tmp_path, name="syn", **extra):
    base = {**BASE, **WIDTHS[model], "data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved")}
    return Config(model=model, dataset=name, config_dict={**base, **extra})


def build(model_name, tmp_path, name="syn", **extra):
    if not (tmp_path / name).exists():
        write_tiny(tmp_path / name, name)
    config = tiny_config(model_name, tmp_path, name, **extra)
    init_seed(config["seed"], True)
    loaders = data_preparation(config, create_dataset(config))
    torch.manual_seed(0)
    model = get_model(model_name)(config, loaders[0].dataset)
    return (config, model) + tuple(loaders)


def internal_id(dataset, token):
    """RecBole's internal id of the item written as ``token`` in the files."""
    return int(np.flatnonzero(dataset.field2id_token["item_id"] == str(token))[0])


def first_batch(loader):
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) else batch


def pretrain_config(directory, model_name, extra):
    return tiny_config(model_name, directory, "pt", **extra)


# ---------------------------------------------------------------------------------------------------
def test_masked_max_fusion_by_hand():
    hidden = torch.tensor([[[1.0, -2.0], [0.5, 3.0]], [[-1.0, -1.0], [-5.0, 2.0]], [[7.0, 7.0], [8.0, 8.0]]])
    present = torch.tensor([[True, True], [True, False], [False, False]])
    out = masked_max_fusion(hidden, present)
    assert torch.equal(out, torch.tensor([[1.0, 3.0], [-1.0, -1.0], [-1.0e4, -1.0e4]]))


def test_symmetric_info_nce_by_hand():
    torch.manual_seed(1)
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    a_valid = torch.tensor([True, True, False, True, True])
    b_valid = torch.tensor([True, True, True, True, False])
    items = torch.tensor([7, 8, 9, 7, 10])  # rows 0 and 3 are the same item: not each other's negatives
    tau = 0.05
    got = symmetric_info_nce(a, a_valid, b, b_valid, tau, items[:, None] == items[None, :])

    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731
    terms_i, terms_j = [], []
    for i in range(5):
        if not (a_valid[i] and b_valid[i]):
            continue
        row = [j for j in range(5) if b_valid[j] and (j == i or items[j] != items[i])]
        col = [j for j in range(5) if a_valid[j] and (j == i or items[j] != items[i])]
        terms_i.append(cos(a[i], b[i]) / tau - np.log(sum(np.exp(cos(a[i], b[j]) / tau) for j in row)))
        terms_j.append(cos(b[i], a[i]) / tau - np.log(sum(np.exp(cos(b[i], a[j]) / tau) for j in col)))
    assert got.item() == pytest.approx(-np.mean(terms_i) - np.mean(terms_j), rel=1e-9)
    none = torch.zeros(5, dtype=torch.bool)
    assert symmetric_info_nce(a, none, b, b_valid, tau).item() == 0.0  # no valid pair: no term, no NaN


def test_encoder_layout_by_hand(tmp_path):
    """Two slots per item (image = type 0, text = type 1), position per item, post-LN bidirectional Transformer
    with a final LayerNorm, per-slot output transform, masked max; [MASK] is id n_items in both slots."""
    _, model, train_data, _, _ = build("MMSRec", tmp_path, fusion_dropout=0.0, fusion_embed_dropout=0.0)
    model.eval()
    ids = torch.tensor([[internal_id(train_data.dataset, 5), internal_id(train_data.dataset, 3), model.mask_token, 0]])
    present = model.slot_presence(ids)
    assert present.tolist() == [[[True, True], [False, True], [True, True], [False, False]]]
    got = model.encode(ids, present)

    emb = model.embedding
    rows = []
    for pos, item in enumerate(ids[0].tolist()):
        for slot, modality in enumerate(("image", "text")):
            if item == model.mask_token:
                x = emb.mask_embeddings.weight[0]
            else:
                feature = getattr(model.features, modality)[item]
                x = model.input_transform.norms[slot](model.input_transform.linears[slot](feature))
            rows.append(x + emb.position_embeddings.weight[pos] + emb.modal_type_embeddings.weight[slot])
    tokens = emb.layer_norm(torch.stack(rows)).unsqueeze(0)  # [1, 8, D]
    key_pad = ~present.flatten(1)
    x = tokens
    for layer in model.encoder.layers:  # post-LN: x = LN(x + SA(x)); x = LN(x + FFN(x))
        attn = layer.self_attn(x, x, x, key_padding_mask=key_pad, need_weights=False)[0]
        x = layer.norm1(x + attn)
        x = layer.norm2(x + layer.linear2(F.gelu(layer.linear1(x))))
    x = model.encoder.norm(x).view(1, 4, 2, -1)
    slots = [model.output_transform.norms[s](model.output_transform.linears[s](x[:, :, s])) for s in range(2)]
    expected = torch.stack(slots, dim=2).masked_fill(~present.unsqueeze(-1), -1e4).max(dim=2).values
    assert torch.allclose(got[:, :3], expected[:, :3], atol=1e-5)
    assert torch.allclose(got[0, 1], slots[1][0, 1], atol=1e-5)  # no image: the text slot alone
    # bidirectional: the first position's output depends on a later item
    later = model.encode(ids.clone().index_fill_(1, torch.tensor([1]), internal_id(train_data.dataset, 4)), present)
    assert not torch.allclose(later[0, 0], got[0, 0])


def test_cloze_masking_rates(tmp_path):
    _, model, *_ = build("MMSRec", tmp_path)
    torch.manual_seed(0)
    n, length = 4000, 8
    lengths = torch.randint(1, length + 1, (n,))
    seq = torch.randint(1, model.n_items, (n, length)) * (torch.arange(length) < lengths[:, None])
    target = torch.randint(1, model.n_items, (n,))
    inputs, labels, masked = model.cloze(seq, lengths, target)
    last = F.one_hot(lengths, length + 1).bool()
    assert torch.equal(labels[last], target) and (inputs[last] == model.mask_token).all() and masked[last].all()
    real = (labels != 0) & ~last
    assert not (masked & (labels == 0)).any() and (inputs[labels == 0] == 0).all()  # padding untouched
    assert masked[real].float().mean().item() == pytest.approx(0.2, abs=0.01)
    inner = masked & ~last
    shown = inputs[inner]
    kept = (shown == labels[inner]).float().mean().item()  # restored (or a random draw of the same item)
    as_mask = (shown == model.mask_token).float().mean().item()
    # P(restored) = 0.1; P(random and not restored) = 0.1 * 0.9; [MASK] otherwise
    assert kept == pytest.approx(0.1 + 0.09 / (model.n_items - 1), abs=0.015)
    assert as_mask == pytest.approx(0.9 * 0.9, abs=0.015)
    assert not (masked & ~real & ~last).any()


def test_item_tower_is_the_shared_network_on_single_items_and_loss_by_hand(tmp_path):
    _, model, train_data, _, _ = build("MMSRec", tmp_path, fusion_dropout=0.0, fusion_embed_dropout=0.0)
    items = torch.arange(1, model.n_items)
    alone = torch.stack([model.encode(i.view(1, 1), model.slot_presence(i.view(1, 1)))[0, 0] for i in items])
    assert torch.allclose(model.item_tower(), alone, atol=1e-5)

    batch = first_batch(train_data)
    torch.manual_seed(5)
    loss = model.calculate_loss(batch)
    torch.manual_seed(5)
    inputs, labels, masked = model.cloze(batch["item_id_list"], batch["item_length"], batch["item_id"])
    hidden = model.encode(inputs, model.slot_presence(inputs))[masked].double()
    tower = alone.double()
    cos = F.normalize(hidden, dim=-1) @ F.normalize(tower, dim=-1).t()
    expected = F.cross_entropy(cos / 0.05, labels[masked] - 1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    # evaluation: [MASK] appended after the history, cosine without temperature, PAD column -inf
    model.eval()
    scores = model.full_sort_predict(batch)
    ids = F.pad(batch["item_id_list"], (0, 1)).scatter(1, batch["item_length"][:, None], model.mask_token)
    user = model.encode(ids, model.slot_presence(ids)).gather(
        1, batch["item_length"].view(-1, 1, 1).expand(-1, 1, 16)
    )[:, 0]
    expected = F.normalize(user.double(), dim=-1) @ F.normalize(tower, dim=-1).t()
    assert torch.allclose(scores[:, 1:].double(), expected, atol=1e-5) and torch.isinf(scores[:, 0]).all()
    cached = model._tower_cache
    assert cached is not None and model.full_sort_predict(batch) is not None and model._tower_cache is cached
    model.train()
    assert model._tower_cache is None  # training recomputes the tower at every step


def test_mask_history_switch(tmp_path):
    _, model, _, valid_data, _ = build("MMSRec", tmp_path, mask_history=True)
    model.eval()
    batch = first_batch(valid_data)
    masked = model.full_sort_predict(batch)
    model.mask_history = False
    plain = model.full_sort_predict(batch)
    seen = torch.zeros_like(plain, dtype=torch.bool).scatter(1, batch["item_id_list"], True)
    assert torch.isinf(masked[seen]).all() and torch.equal(masked[~seen], plain[~seen])
    assert torch.isfinite(plain[:, 1:]).all()


def test_pretraining_views_guard_all_masked_rows(tmp_path):
    """Item 3 has no image: its image-only views have no key to attend to (NaN in the reference); it is left out
    of those pairs, and the loss is the mean of the four pairs."""
    config, model, train_data, _, _ = build(
        "MMSRec", tmp_path, train_stage="pretrain", fusion_dropout=0.0, fusion_embed_dropout=0.0
    )
    model.train()
    items = torch.tensor([internal_id(train_data.dataset, t) for t in (4, 3, 5, 4, 6)])
    views = model.views(items)
    for name, (out, valid) in views.items():
        assert torch.isfinite(out).all(), name
        assert bool(valid[1]) == (not name.startswith("v") or name.startswith("vt")), name
    loss = model.pretrain_loss(Interaction({"item_id": items}))
    same = items[:, None] == items[None, :]
    pairs = (("v1", "v2"), ("v1", "t1"), ("t1", "t2"), ("vt1", "vt2"))
    # dropout off: the two views of a kind are equal, so the terms are recomputed from the same outputs
    expected = sum(symmetric_info_nce(*views[a], *views[b], 0.05, same) for a, b in pairs) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_item_without_any_modality_is_scored(tmp_path):
    write_tiny(tmp_path / "nomod", "nomod", no_modality=(5,))
    _, model, train_data, valid_data, _ = build("MMSRec", tmp_path, name="nomod")
    item = internal_id(train_data.dataset, 5)
    assert model.slot_presence(torch.tensor([item])).tolist() == [[True, True]]
    loss = model.calculate_loss(first_batch(train_data))
    assert torch.isfinite(loss)
    model.eval()
    assert torch.isfinite(model.full_sort_predict(first_batch(valid_data))[:, 1:]).all()


def test_transfer_drops_the_position_embedding_and_round_trip(tmp_path):
    write_tiny(tmp_path / "pt", "pt")
    config, model, train_data, _, _ = build("MMSRec", tmp_path, name="pt", train_stage="pretrain")
    trainer = get_trainer(config["MODEL_TYPE"], "MMSRec")(config, model)
    checkpoint = str(tmp_path / "pt.pth")
    trainer.saved_model_file = checkpoint
    trainer._save_checkpoint(0, verbose=False)

    # fine-tuning with another history length: everything but the position table is loaded, nothing frozen
    _, fresh, *_ = build("MMSRec", tmp_path, MAX_ITEM_LIST_LENGTH=5)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    loaded = fresh.load_pretrained(checkpoint)
    source = model.state_dict()
    assert sorted(loaded) == sorted(k for k in source if k.startswith(MMSRec.TRANSFERRED))
    assert "embedding.position_embeddings.weight" not in loaded and len(loaded) > 20
    for key, value in fresh.state_dict().items():
        if key in loaded:
            assert torch.equal(value, source[key]), key
        else:
            assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in fresh.parameters())

    # checkpoint round trip: the same scores from the reloaded model
    config, model, train_data, valid_data, test_data = build("MMSRec", tmp_path, epochs=1)
    trainer = get_trainer(config["MODEL_TYPE"], "MMSRec")(config, model)
    trainer.fit(train_data, valid_data, verbose=False, saved=True)
    model.eval()
    batch = first_batch(test_data)
    scores = model.full_sort_predict(batch)
    _, reloaded, _, _, _, reloaded_test = load_data_and_model(trainer.saved_model_file)
    assert torch.equal(reloaded.full_sort_predict(first_batch(reloaded_test)), scores)


def test_bad_inputs(tmp_path):
    write_tiny(tmp_path / "textonly", "textonly", image=False)
    with pytest.raises(RecBoleMMError, match=r"MMSRec.*image.*textonly"):
        build("MMSRec", tmp_path, name="textonly", mm_features={"text": {"suffix": "feat1CLS", "dim": DIM}})
    with pytest.raises(RecBoleMMError, match="train_stage"):
        build("MMSRec", tmp_path, train_stage="transductive_ft")
    # a checkpoint of another model, and one of other widths (the error names the keys and shapes)
    config, pmm, *_ = build("PMMRec", tmp_path)
    trainer = get_trainer(config["MODEL_TYPE"], "PMMRec")(config, pmm)
    trainer.saved_model_file = str(tmp_path / "pmm.pth")
    trainer._save_checkpoint(0, verbose=False)
    with pytest.raises(RecBoleMMError, match="PMMRec"):
        build("MMSRec", tmp_path, pretrained_path=str(tmp_path / "pmm.pth"))
    config, wide, *_ = build("MMSRec", tmp_path, fusion_embed_dim=32)
    trainer = get_trainer(config["MODEL_TYPE"], "MMSRec")(config, wide)
    trainer.saved_model_file = str(tmp_path / "wide.pth")
    trainer._save_checkpoint(0, verbose=False)
    with pytest.raises(RecBoleMMError, match=r"input_transform\.linears\.0\.weight.*32"):
        build("MMSRec", tmp_path, pretrained_path=str(tmp_path / "wide.pth"))


def short_run(model_name, data_path, dataset="ml-100k_mm", **extra):
    """``(trainer, untrained valid NDCG@10, best valid NDCG@10)`` of a short training on ``dataset``."""
    settings = {
        "data_path": str(data_path),
        "checkpoint_dir": str(data_path / "saved"),
        "MAX_ITEM_LIST_LENGTH": 20,
        "train_batch_size": 128,
        "epochs": 2,
        "show_progress": False,
        "seed": 2020,
        **extra,
    }
    config = Config(model=model_name, dataset=dataset, config_dict=settings)
    init_seed(config["seed"], True)
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    torch.manual_seed(0)
    model = get_model(model_name)(config, train_data.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    untrained = trainer.evaluate(valid_data, load_best_model=False)["ndcg@10"]
    _, best = trainer.fit(train_data, valid_data, verbose=False, saved=False)
    print(f"{model_name}: untrained NDCG@10 {untrained:.4f}, trained {best['ndcg@10']:.4f}")
    return trainer, test_data, untrained, best["ndcg@10"]


def short_ml100k_run(model_name, ml100k_root, tmp_path, n_users=150, max_rows=10, **extra):
    """Valid NDCG@10 before and after a short training on ``n_users`` users of ml-100k_mm (their last
    ``max_rows`` training rows)."""
    from recbole_mm.prepare.ml100k_mm_domains import copy_slice

    copy_slice(str(ml100k_root), str(tmp_path), "ml-100k_mm", n_users=n_users, max_rows=max_rows)
    _, _, untrained, trained = short_run(model_name, tmp_path, **extra)
    return untrained, trained


def test_short_ml100k_run_beats_untrained(ml100k_root, tmp_path):
    widths = {"fusion_embed_dim": 32, "fusion_heads": 2, "fusion_feedforward_dim": 64, "fusion_dropout": 0.1}
    untrained, trained = short_ml100k_run("MMSRec", ml100k_root, tmp_path, **widths)
    assert trained > untrained + 0.01


PRETRAIN = {  # dropout off, plain SGD with a large step (Adam would turn float noise into full-size steps)
    "train_stage": "pretrain",
    "benchmark_filename": ["train"],
    "learner": "sgd",
    "learning_rate": 0.05,
    "pretrain_epochs": 2,
    "save_step": 1,
    "ckpt_suffix": "test",
    "train_batch_size": 16,
}


def test_pretraining_two_ranks_match_one_process(tmp_path):
    """MMSRec and PMMRec: a 2-process gloo pre-training ends with the parameters of one process on the same global
    batches (in-batch rows gathered across the ranks, gradients averaged). PMMRec's NID and RCL draw their noise
    per rank, so they are weighted 0 here; NICL and the next-item loss run on the gathered batch."""
    write_tiny(tmp_path / "pt", "pt", n_users=24)
    runs = [
        ("MMSRec", {**PRETRAIN, "fusion_dropout": 0.0, "fusion_embed_dropout": 0.0}),
        ("PMMRec", {**PRETRAIN, "drop_rate": 0.0, "nid_weight": 0.0, "rcl_weight": 0.0}),
    ]
    singles = two_ranks_and_one(tmp_path, [(m, partial(pretrain_config, model_name=m, extra=x)) for m, x in runs])
    changed = {"MMSRec": "input_transform.linears.1.weight", "PMMRec": "user_encoder.blocks.0.w_1.weight"}
    for model_name, extra in runs:
        single = singles[model_name]
        config = tiny_config(model_name, tmp_path, "pt", **extra)
        init_seed(config["seed"], config["reproducibility"])
        initial = get_model(model_name)(config, create_dataset(config).build()[0]).state_dict()
        key = changed[model_name]
        assert (initial[key] - single[key]).abs().max() > 1e-3, model_name  # it trained
        assert (tmp_path / "saved" / f"{model_name}-pt-2-test.pth").is_file()
