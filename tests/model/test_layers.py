"""ItemFeatureBank: the model-side owner of the dataset's modality tables."""

import numpy as np
import pytest
import torch

from recbole_mm.data.dataset import ItemFeatures
from recbole_mm.errors import ConfigError
from recbole_mm.model.layers import ItemFeatureBank


class FakeDataset:  # named as such: only the two attributes the bank reads
    dataset_name = "fake"

    def __init__(self):
        table = torch.from_numpy(np.arange(15, dtype=np.float32).reshape(5, 3))
        table[0] = 0
        table[3] = 0
        self.mm_features = {"text": ItemFeatures(table, table.ne(0).any(1), "fake.feat1CLS")}


def test_lookup_shapes_values_and_presence():
    dataset = FakeDataset()
    bank = ItemFeatureBank(dataset)
    ids = torch.tensor([[1, 3, 0], [4, 4, 2]])
    out = bank("text", ids)
    assert out.shape == (2, 3, 3)
    assert torch.equal(out[1, 0], dataset.mm_features["text"].table[4])
    assert bank.present("text", ids).tolist() == [[True, False, False], [True, True, True]]
    assert bank.dim("text") == 3


def test_tables_are_buffers_that_move_but_are_not_checkpointed():
    bank = ItemFeatureBank(FakeDataset()).double()
    assert bank.text.dtype == torch.float64
    assert bank.state_dict() == {}


def test_unknown_modality_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"modality 'image' is not loaded for dataset 'fake' \(loaded: \['text'\]\)"):
        ItemFeatureBank(FakeDataset(), ["image"])
