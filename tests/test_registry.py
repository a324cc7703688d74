"""The registry: a model declares its dataset and trainer, and a model added outside the package (a subclass of each
family base, registered with :func:`recbole_mm.registry.register_model`) trains one epoch through the command line,
with nothing else named after it (the steps of ``docs/adding_a_model.md``)."""

import math
import os
import shutil

import pytest
import torch.nn.functional as F
from cli_helpers import run_main
from torch import nn

from recbole_mm.config import PROPERTIES_DIR
from recbole_mm.data.dataset import MultiModalDataset, MultiModalSequentialDataset
from recbole_mm.data.long_sequence import LongSequenceDataset
from recbole_mm.errors import ConfigError
from recbole_mm.model.abstract_recommender import (
    GraphRecommender,
    LongSequenceRecommender,
    MultiModalSequentialRecommender,
)
from recbole_mm.model.long_sequence import Retrieval
from recbole_mm.registry import get_model, get_trainer, list_models, register_model
from recbole_mm.trainer import LongSequenceTrainer, MMSSLTrainer, PretrainTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ToySeq(MultiModalSequentialRecommender):
    """Mean of the history's adapted text features; CE over all items."""

    TRAIN_STAGES = ("finetune",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.features = self.feature_bank(dataset, ["text"])
        self.adaptor = self.new_adaptor(self.features.dim("text"), config["hidden_size"])
        self.init_weights()

    def forward(self, item_seq):
        tokens = self.adaptor(self.features("text", item_seq)) * (item_seq > 0).unsqueeze(-1)
        return tokens.sum(1) / (item_seq > 0).sum(1, keepdim=True).clamp(min=1)

    def _scores(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ])
        return self.score_all_items(user, lambda items: user @ self.adaptor(self.features("text", items)).t())

    def calculate_loss(self, interaction):
        return F.cross_entropy(self._scores(interaction), interaction[self.POS_ITEM_ID])

    def full_sort_predict(self, interaction):
        return self._scores(interaction)


class ToyLong(LongSequenceRecommender):
    """The long-sequence family with the most recent K positions as its search unit."""

    def gsu(self, history, items, tokens, target):
        logits = history.valid.float().cumsum(-1)[:, None, None, :].expand(-1, target.shape[1], self.num_heads, -1)
        return Retrieval(select=self.top_k(logits.clone(), history.valid), logits=None)


class ToyGraph(GraphRecommender):
    """One propagation of ID embeddings over the normalised user-item graph; BPR."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.user_embedding = nn.Embedding(self.n_users, config["embedding_size"])
        self.item_embedding = nn.Embedding(self.n_items, config["embedding_size"])

    def compute_embeddings(self):
        users, items = self.user_embedding.weight, self.item_embedding.weight
        return users + self.ui_operator(items), items + self.iu_operator(users)

    def calculate_loss(self, interaction):
        user_e, item_e = self._final_embeddings()
        u = user_e[interaction[self.USER_ID]]
        pos, neg = item_e[interaction[self.ITEM_ID]], item_e[interaction[self.NEG_ITEM_ID]]
        return -F.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()


TINY = ["--epochs=1", "--show_progress=False", "--seed=2020", "--MAX_ITEM_LIST_LENGTH=20"]
# model -> (its yaml: a sibling's defaults plus its own lines, its command-line overrides on the ml-100k_mm slice)
TOYS = {
    ToySeq: (
        "",
        "loss_type: CE\ntrain_stage: finetune\npretrained_path: ~\nitem_chunk_size: 512\ninitializer_range: 0.02\n"
        "hidden_size: 8\n",
        [],
    ),
    ToyLong: (
        "TWIN.yaml",
        "hidden_size: 8\nnum_heads: 2\nretrieve_topk: 3\nmlp_hidden_size: 8\n",
        ["--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'uni20', 'group_by': 'user'}",
         "--eval_batch_size=840", "--topk=[1,5,10]"],
    ),
    ToyGraph: ("", "embedding_size: 8\npref_chunk_items: 4096\ntrain_batch_size: 256\n", []),
}


def test_family_bases_declare_their_dataset_and_trainer():
    assert get_model("MISSRec").dataset_class is MultiModalSequentialDataset
    assert get_model("TWIN").dataset_class is LongSequenceDataset
    assert get_model("MMSSL").dataset_class is MultiModalDataset
    assert get_trainer(None, "PMMRec") is PretrainTrainer
    assert get_trainer(None, "SEMINAR") is LongSequenceTrainer
    assert get_trainer(None, "MMSSL") is MMSSLTrainer


def test_register_model_refuses_a_clash():
    class TWIN(LongSequenceRecommender):  # noqa: N801  the name of a shipped model
        pass

    with pytest.raises(ConfigError, match="TWIN is the name of a model recbole_mm ships"):
        register_model(TWIN)
    first = register_model(type("ToyClash", (ToySeq,), {}))
    assert register_model(first) is first  # again: nothing changes
    with pytest.raises(ConfigError, match="ToyClash is already registered"):
        register_model(type("ToyClash", (ToySeq,), {}))


@pytest.mark.parametrize("model", list(TOYS), ids=lambda m: m.__name__)
def test_a_model_added_outside_the_package_trains_through_the_command_line(model, ml100k_slice, tmp_path, monkeypatch,
                                                                           capsys):
    sibling, own, overrides = TOYS[model]
    yaml_file = tmp_path / f"{model.__name__}.yaml"
    if sibling:
        shutil.copy(os.path.join(PROPERTIES_DIR, "model", sibling), yaml_file)
    with open(yaml_file, "a", encoding="utf-8") as f:
        f.write(own)
    monkeypatch.setattr(model, "defaults_file", str(yaml_file), raising=False)  # its yaml, as docs/adding_a_model.md
    register_model(model)
    assert model.__name__ not in list_models()  # not one of the package's models
    code = run_main(
        monkeypatch, tmp_path, f"--model={model.__name__}", "--dataset=ml-100k_mm",
        f"--data_path={ml100k_slice}", f"--checkpoint_dir={tmp_path / 'saved'}", *TINY, *overrides,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    test_line = [line for line in out.splitlines() if line.strip().startswith("test")][-1]
    values = [float(v) for v in test_line.split()[2::2]]
    assert values and all(math.isfinite(v) and 0 <= v <= 1 for v in values), test_line
    assert os.listdir(tmp_path / "saved")  # the checkpoint of the best epoch, reloaded for the test
