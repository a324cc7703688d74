"""The multi-modal sequential family base (recbole_mm.model.multimodal_sequential) and its trainer
(recbole_mm.trainer.PretrainTrainer), through a small model of the family defined here (``TwoTower``: mean of
adapted features over the history, cosine scores) on a pre-split synthetic dataset, with RecBole's real
dataloaders and trainer."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.trainer import Trainer
from recbole.utils import ModelType
from torch import nn

from recbole_mm.config import Config
from recbole_mm.data.atomic_files import leave_one_out, write_feature_file, write_inter_files
from recbole_mm.data.dataset import MultiModalSequentialDataset
from recbole_mm.data.utils import data_preparation
from recbole_mm.errors import ConfigError, RecBoleMMError
from recbole_mm.model.abstract_recommender import MultiModalSequentialRecommender
from recbole_mm.model.distributed import RankShare, broadcast_from_rank0, is_rank0
from recbole_mm.registry import get_trainer
from recbole_mm.trainer import PretrainTrainer

N_ITEMS, DIM = 20, 6


class TwoTower(MultiModalSequentialRecommender):
    """A model of the family for these tests: the sequence is the mean of its items' adapted text features (+ an
    ID embedding), candidates are their adapted features; CE over all items. Records ``on_epoch_start`` calls."""

    TRAIN_STAGES = ("pretrain", "finetune")
    TRANSFERRED = ("text_adaptor.", "encoder.")
    FROZEN = ("encoder",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.features = self.feature_bank(dataset, ["text"])
        self.text_adaptor = self.new_adaptor(self.features.dim("text"), 8)
        self.item_embedding = nn.Embedding(self.n_items, 8, padding_idx=0)
        self.encoder = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.epochs_started = []
        self.init_weights()
        if self.pretrained_path:
            self.load_pretrained(self.pretrained_path)

    def on_epoch_start(self, epoch):
        self.epochs_started.append(epoch)

    def forward(self, item_seq):
        tokens = self.text_adaptor(self.features("text", item_seq)) + self.item_embedding(item_seq)
        pooled = (tokens * (item_seq > 0).unsqueeze(-1)).sum(1) / (item_seq > 0).sum(1, keepdim=True)
        return F.normalize(self.norm(self.encoder(pooled)), dim=-1)

    def item_scores(self, seq_output, items):
        return seq_output @ F.normalize(self.text_adaptor(self.features("text", items)), dim=-1).t()

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ])
        logits = self.score_all_items(seq_output, lambda items: self.item_scores(seq_output, items))
        return F.cross_entropy(logits / 0.1, interaction[self.POS_ITEM_ID])

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ])
        return self.score_all_items(seq_output, lambda items: self.item_scores(seq_output, items))


BASE = {
    "loss_type": "CE",
    "train_stage": "finetune",
    "pretrained_path": None,
    "item_chunk_size": 7,
    "initializer_range": 0.02,
    "mm_features": {"text": {"suffix": "feat1CLS", "dim": DIM}},
    "MAX_ITEM_LIST_LENGTH": 8,
    "train_batch_size": 16,
    "eval_batch_size": 32,
    "epochs": 2,
    "benchmark_filename": ["train", "valid", "test"],
    "alias_of_item_id": ["item_id_list"],
    "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
    "train_neg_sample_args": None,
    "metrics": ["HIT", "NDCG"],
    "topk": [5],
    "valid_metric": "NDCG@5",
    "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
    "show_progress": False,
    "use_gpu": False,
    "seed": 3,
}


def write_dataset(directory, name="mm"):
    """Items with random text features; each user walks through consecutive items."""
    os.makedirs(directory / name, exist_ok=True)
    rng = np.random.default_rng(0)
    sequences = [[(u + k) % N_ITEMS for k in range(4 + u % 3)] for u in range(24)]
    write_inter_files(str(directory / name), name, leave_one_out(sequences, max_history=8))
    text = rng.normal(size=(N_ITEMS, DIM))
    write_feature_file(str(directory / name / f"{name}.feat1CLS"), text, "synthetic")


def build(tmp_path, **extra):
    if not (tmp_path / "mm").exists():
        write_dataset(tmp_path)
    config_dict = {**BASE, "data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved"), **extra}
    config = Config(model=TwoTower, dataset="mm", config_dict=config_dict)
    # the dataset recbole_mm's create_dataset gives its own sequential models (TwoTower lives outside the package)
    train_data, valid_data, test_data = data_preparation(config, MultiModalSequentialDataset(config))
    torch.manual_seed(0)
    return config, TwoTower(config, train_data.dataset), train_data, valid_data


def test_config_checks_name_the_model_key_and_values(tmp_path):
    with pytest.raises(ConfigError, match=r"TwoTower: config key 'train_stage' must be one of \['pretrain', "):
        build(tmp_path, train_stage="transductive_ft")
    with pytest.raises(ConfigError, match=r"'train_stage' .*found 'transductive_ft'"):
        build(tmp_path, train_stage="transductive_ft")
    with pytest.raises(ConfigError, match=r"TwoTower: config key 'item_chunk_size' must be a positive int, found 0"):
        build(tmp_path, item_chunk_size=0)


def test_feature_bank_names_model_modality_and_dataset(tmp_path):
    _, model, train_data, _ = build(tmp_path)
    with pytest.raises(RecBoleMMError, match=r"TwoTower with pre-training needs .*dataset 'mm'.*missing \['image'\]"):
        model.feature_bank(train_data.dataset, ["text", "image"], why="pre-training")
    assert torch.equal(model.features.text[1:], model.feature_bank(train_data.dataset, ["text"]).text[1:])


def test_adaptors_keep_pytorch_default_init(tmp_path):
    _, model, _, _ = build(tmp_path)
    bound = 1 / math.sqrt(DIM)  # nn.Linear's default: U(-bound, bound) for weight and bias
    adaptor = model.text_adaptor
    assert adaptor.bias.abs().max() <= bound and adaptor.bias.abs().min() > 0
    assert adaptor.weight.abs().max() <= bound and float(adaptor.weight.detach().std()) > bound / 3
    # everything else: RecBole's Transformer init
    assert torch.all(model.encoder.bias == 0) and abs(float(model.encoder.weight.detach().std()) - 0.02) < 0.01
    assert torch.all(model.item_embedding.weight[0] == 0) and model.item_embedding.weight[1:].abs().sum() > 0
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)


def test_all_item_scores_in_chunks_equal_one_chunk(tmp_path):
    _, model, train_data, _ = build(tmp_path)
    model.eval()
    batch = next(iter(train_data))
    with torch.no_grad():
        seq_output = model(batch["item_id_list"])
        chunked = model.full_sort_predict(batch)  # chunks of 7 items: 7 + 7 + 7 (n_items = 21)
        expected = model.item_scores(seq_output, torch.arange(model.n_items))
    assert model.n_items == N_ITEMS + 1 and chunked.shape == (len(seq_output), model.n_items)
    torch.testing.assert_close(chunked, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"score_chunk gave shape \(3, 7\) for items 0:7 of 16 sequences"):
        model.score_all_items(seq_output, lambda items: torch.zeros(3, 7))


def test_embedding_rows_of_a_slice_equal_the_lookup_with_gradients(tmp_path):
    _, model, _, _ = build(tmp_path)
    weights = torch.randn(model.n_items, 8, generator=torch.Generator().manual_seed(0))
    by_slice = model.embedding_rows(model.item_embedding, slice(0, model.n_items))
    by_lookup = model.embedding_rows(model.item_embedding, torch.arange(model.n_items))
    torch.testing.assert_close(by_slice, by_lookup)
    (grad_slice,) = torch.autograd.grad((by_slice * weights).sum(), model.item_embedding.weight)
    (grad_lookup,) = torch.autograd.grad((by_lookup * weights).sum(), model.item_embedding.weight)
    torch.testing.assert_close(grad_slice, grad_lookup)
    assert torch.all(grad_slice[0] == 0) and torch.equal(grad_slice[1:], weights[1:])  # PAD: padding_idx
    later = model.embedding_rows(model.item_embedding, slice(5, 9))
    assert torch.equal(later, model.item_embedding.weight[5:9])


def save_checkpoint(path, model_name, state):
    torch.save({"config": {"model": model_name}, "state_dict": state}, path)


def test_load_pretrained_transfers_freezes_and_checks(tmp_path):
    _, source, _, _ = build(tmp_path)
    with torch.no_grad():
        for param in source.parameters():
            param.add_(1.0)
    checkpoint = str(tmp_path / "pre.pth")
    save_checkpoint(checkpoint, "TwoTower", source.state_dict())
    _, model, _, _ = build(tmp_path, pretrained_path=checkpoint)
    own, src = model.state_dict(), source.state_dict()
    for key in ("text_adaptor.weight", "text_adaptor.bias", "encoder.weight", "encoder.bias"):
        assert torch.equal(own[key], src[key]), key
    assert not torch.equal(own["item_embedding.weight"], src["item_embedding.weight"])  # not transferred
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"encoder.weight", "encoder.bias"}

    _, fresh, _, _ = build(tmp_path)  # explicit lists, and the returned keys
    loaded = fresh.load_pretrained(checkpoint, transferred=("norm.",), frozen=())
    assert sorted(loaded) == ["norm.bias", "norm.weight"] and all(p.requires_grad for p in fresh.parameters())

    with pytest.raises(RecBoleMMError, match="TwoTower: config key 'pretrained_path' points to .*nope.pth, which"):
        build(tmp_path, pretrained_path=str(tmp_path / "nope.pth"))
    other = str(tmp_path / "other.pth")
    save_checkpoint(other, "SASRec", source.state_dict())
    with pytest.raises(RecBoleMMError, match=r"not a TwoTower checkpoint .*found model 'SASRec'"):
        build(tmp_path, pretrained_path=other)
    fresh.compatible_checkpoints = lambda: ("TwoTower", "SASRec")  # a model may accept another's checkpoints
    assert "text_adaptor.weight" in fresh.load_pretrained(other)

    bad = dict(source.state_dict())
    bad["text_adaptor.weight"] = torch.zeros(8, DIM + 1)
    bad["encoder.bias"] = torch.zeros(9)
    save_checkpoint(other, "TwoTower", bad)
    with pytest.raises(RecBoleMMError) as error:
        build(tmp_path, pretrained_path=other)
    message = str(error.value)  # every mismatching key, with both shapes
    assert "text_adaptor.weight: (8, 7) vs (8, 6)" in message and "encoder.bias: (9,) vs (8,)" in message

    fresh.adapt_pretrained_state = lambda state: {**state, "encoder.bias": state["encoder.bias"][:8]}  # the hook
    bad["text_adaptor.weight"] = src["text_adaptor.weight"]
    save_checkpoint(other, "TwoTower", bad)
    fresh.load_pretrained(other)
    assert torch.equal(fresh.encoder.bias, torch.zeros(8))


def test_trainer_calls_the_epoch_hook_and_is_chosen_for_the_family(tmp_path, monkeypatch):
    config, model, train_data, valid_data = build(tmp_path)
    trainer = PretrainTrainer(config, model)
    untrained = trainer.evaluate(valid_data, load_best_model=False)["ndcg@5"]
    _, best = trainer.fit(train_data, valid_data, verbose=False, saved=False)
    assert model.epochs_started == [0, 1]
    assert best["ndcg@5"] > untrained, (best, untrained)  # it trains through the chunked scores

    import recbole_mm.registry

    monkeypatch.setattr(recbole_mm.registry, "get_model", lambda name: TwoTower)  # a lookup that knows TwoTower
    assert get_trainer(ModelType.SEQUENTIAL, "TwoTower") is PretrainTrainer  # the family base declares it

    class Hooked(nn.Module):  # outside the family, declaring the trainer by its name in recbole_mm.trainer
        trainer_class = "PretrainTrainer"

    monkeypatch.setattr(recbole_mm.registry, "get_model", lambda name: Hooked)
    assert get_trainer(ModelType.SEQUENTIAL, "Hooked") is PretrainTrainer
    Hooked.trainer_class = "NoSuchTrainer"
    with pytest.raises(ConfigError, match="NoSuchTrainer"):
        get_trainer(ModelType.SEQUENTIAL, "Hooked")


def test_pretraining_saves_every_save_step_epochs(tmp_path):
    extra = {"train_stage": "pretrain", "pretrain_epochs": 3, "save_step": 2, "ckpt_suffix": "s"}
    config, model, train_data, _ = build(tmp_path, **extra)
    trainer = PretrainTrainer(config, model)
    before = model.text_adaptor.weight.detach().clone()
    trainer.fit(train_data, None, verbose=False, saved=True)
    assert model.epochs_started == [0, 1, 2] and not torch.equal(model.text_adaptor.weight, before)
    assert sorted(os.listdir(tmp_path / "saved")) == ["TwoTower-mm-2-s.pth"]
    saved = torch.load(tmp_path / "saved" / "TwoTower-mm-2-s.pth", weights_only=False)
    assert saved["epoch"] == 1 and saved["config"]["model"] == "TwoTower"
    assert trainer.evaluate(None) == {}  # pre-training has no evaluation data

    config, model, train_data, _ = build(tmp_path, train_stage="pretrain", save_step=1)  # no pretrain_epochs
    with pytest.raises(ConfigError, match=r"TwoTower: config key 'pretrain_epochs' must be an int >= 0 .*found None"):
        PretrainTrainer(config, model).fit(train_data, None, verbose=False)


def test_rank_share_without_torch_distributed_is_the_identity():
    share = RankShare(5, torch.device("cpu"))
    assert (share.sizes, share.offset, share.scale, share.world) == (None, 0, 1.0, 1)
    tensor = torch.arange(3.0)
    share.all_reduce_max(tensor)
    assert torch.equal(tensor, torch.arange(3.0)) and share.gather(tensor, differentiable=True) is tensor
    broadcast_from_rank0([tensor])
    assert is_rank0() and torch.equal(tensor, torch.arange(3.0))
    assert issubclass(PretrainTrainer, Trainer)
