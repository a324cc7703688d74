"""Multi-modal feature loaders against hand-built tables, on tiny atomic datasets written per test."""

import os

import numpy as np
import pytest
import torch

from recbole_mm.config import Config
from recbole_mm.data.dataset import MultiModalDataset, MultiModalSequentialDataset
from recbole_mm.data.utils import create_dataset
from recbole_mm.errors import DataFieldError, DatasetNotFoundError, FeatureFileError

DIM = 4
# Item tokens are feature-file rows; they appear out of order so internal ids differ from rows.
HISTORIES = {"0": ["5", "2", "7"], "1": ["2", "0", "5", "3"], "2": ["7", "3", "0"]}
N_ROWS = 9  # rows 1, 4, 6 and 8 belong to no item of the dataset


def file_rows():
    rows = np.arange(N_ROWS * DIM, dtype=np.float32).reshape(N_ROWS, DIM) / 10 + 1
    rows[3] = 0  # item "3" lacks this modality
    return rows


def write_presplit(directory, name, histories=HISTORIES):
    os.makedirs(directory, exist_ok=True)
    parts = {"train": [], "valid": [], "test": []}
    for user, seq in histories.items():
        for j in range(1, len(seq) - 2):
            parts["train"].append((user, seq[:j], seq[j]))
        parts["valid"].append((user, seq[:-2], seq[-2]))
        parts["test"].append((user, seq[:-1], seq[-1]))
    for part, rows in parts.items():
        with open(os.path.join(directory, f"{name}.{part}.inter"), "w") as f:
            f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            f.writelines(f"{u}\t{' '.join(h)}\t{t}\n" for u, h, t in rows)


def write_plain_inter(directory, name, histories=HISTORIES):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, seq in histories.items():
            f.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(seq))


PRESPLIT = {
    "benchmark_filename": ["train", "valid", "test"],
    "alias_of_item_id": ["item_id_list"],
    "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
}


def make_config(tmp_path, name="toy", model="SASRec", **extra):
    base = {"data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved"), "show_progress": False}
    return Config(model=model, dataset=name, config_dict={**base, **extra})


def check_table(dataset, modality, rows):
    feats = dataset.mm_features[modality]
    tokens = dataset.field2id_token["item_id"]
    assert tokens[0] == "[PAD]"
    assert feats.table.shape == (len(tokens), rows.shape[1])
    assert torch.all(feats.table[0] == 0) and not feats.present[0]
    for internal_id in range(1, len(tokens)):
        expected = rows[int(tokens[internal_id])]
        assert torch.equal(feats.table[internal_id], torch.from_numpy(expected)), tokens[internal_id]
        assert bool(feats.present[internal_id]) == bool(np.any(expected != 0))


def test_raw_float32_file_aligned_to_internal_ids(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    config = make_config(tmp_path, mm_features={"text": {"suffix": "feat1CLS", "dim": DIM}}, **PRESPLIT)
    dataset = MultiModalSequentialDataset(config)
    check_table(dataset, "text", file_rows())
    tokens = list(dataset.field2id_token["item_id"])
    assert not dataset.mm_features["text"].present[tokens.index("3")]


def test_npy_memmap_and_missing_modality_mask(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    rows = file_rows() * -1
    rows[5] = 0
    np.save(tmp_path / "toy" / "toy.img.npy", rows.astype(np.float64))
    config = make_config(tmp_path, mm_features={"image": {"suffix": "img.npy"}}, **PRESPLIT)
    dataset = MultiModalSequentialDataset(config)
    check_table(dataset, "image", rows.astype(np.float32))
    assert dataset.mm_features["image"].table.dtype == torch.float32


def test_missrec_key_names_define_modalities(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    (file_rows() * 2).tofile(tmp_path / "toy" / "toy.feat3CLS")
    config = make_config(tmp_path, plm_suffix="feat1CLS", plm_size=DIM, img_suffix="feat3CLS", img_size=DIM, **PRESPLIT)
    dataset = MultiModalSequentialDataset(config)
    assert sorted(dataset.mm_features) == ["image", "text"]
    check_table(dataset, "image", file_rows() * 2)


def test_modalities_selects_and_rejects(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    feats = {"text": {"suffix": "feat1CLS", "dim": DIM}, "image": {"suffix": "feat3CLS", "dim": DIM}}
    dataset = MultiModalSequentialDataset(make_config(tmp_path, mm_features=feats, modalities=["text"], **PRESPLIT))
    assert list(dataset.mm_features) == ["text"]
    with pytest.raises(FeatureFileError, match=r"modalities.*'audio'.*\['image', 'text'\]"):
        MultiModalSequentialDataset(make_config(tmp_path, mm_features=feats, modalities=["audio"], **PRESPLIT))


def test_plain_inter_with_recbole_split(tmp_path):
    write_plain_inter(tmp_path / "toy", "toy")
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    config = make_config(
        tmp_path,
        mm_features={"text": {"suffix": "feat1CLS", "dim": DIM}},
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
    )
    dataset = MultiModalSequentialDataset(config)
    check_table(dataset, "text", file_rows())
    train, _, _ = dataset.build()
    assert "item_id_list" in train.inter_feat  # RecBole's own augmentation and split ran


def test_float_seq_column_of_item_file(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    rows = file_rows()
    with open(tmp_path / "toy" / "toy.item", "w") as f:
        f.write("item_id:token\temb:float_seq\n")
        for token in ["7", "0", "5", "2"]:  # item "3" has no row: a missing modality
            f.write(f"{token}\t{' '.join(repr(float(v)) for v in rows[int(token)])}\n")
    config = make_config(
        tmp_path,
        mm_features={"meta": {"field": "emb", "dim": DIM}},
        **{**PRESPLIT, "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id", "emb"]}},
    )
    dataset = MultiModalSequentialDataset(config)
    expected = rows.copy()
    expected[3] = 0
    check_table(dataset, "meta", expected)
    assert "emb" not in dataset.item_feat.columns  # not joined onto every batch


def test_multi_domain_pretraining_layout(tmp_path):
    histories = {"0-0": ["0-1", "1-0", "0-2"], "1-0": ["1-1", "0-1", "1-2", "1-0"]}
    write_presplit(tmp_path / "pt", "pt", histories)
    (tmp_path / "pt" / "pt.pt_datasets").write_text("Food,Home\n")
    food = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    home = -np.arange(12, dtype=np.float32).reshape(3, 4) - 1
    food.tofile(tmp_path / "pt" / "Food.feat1CLS")
    home.tofile(tmp_path / "pt" / "Home.feat1CLS")
    config = make_config(tmp_path, name="pt", mm_features={"text": {"suffix": "feat1CLS", "dim": 4}}, **PRESPLIT)
    dataset = MultiModalSequentialDataset(config)
    table = dataset.mm_features["text"].table
    for internal_id, token in enumerate(dataset.field2id_token["item_id"][1:], start=1):
        domain, row = token.split("-")
        assert torch.equal(table[internal_id], torch.from_numpy([food, home][int(domain)][int(row)]))


def test_general_dataset_gets_tables_too(tmp_path):
    write_plain_inter(tmp_path / "toy", "toy")
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    config = make_config(
        tmp_path,
        model="BPR",
        mm_features={"text": {"suffix": "feat1CLS", "dim": DIM}},
        load_col={"inter": ["user_id", "item_id"]},
    )
    check_table(MultiModalDataset(config), "text", file_rows())


# ---------------------------------------------------------------- bad input


@pytest.fixture
def toy(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    return tmp_path


def load(tmp_path, spec, **extra):
    return MultiModalSequentialDataset(make_config(tmp_path, mm_features={"text": spec}, **{**PRESPLIT, **extra}))


def test_size_not_a_multiple_of_dim(toy):
    np.zeros(10, np.float32).tofile(toy / "toy" / "toy.feat1CLS")
    with pytest.raises(
        FeatureFileError, match=r"toy\.feat1CLS: size 40 bytes is not a positive multiple of dim \* 4 = 12"
    ):
        load(toy, {"suffix": "feat1CLS", "dim": 3})


def test_npy_dim_disagrees_with_config(toy):
    np.save(toy / "toy" / "toy.t.npy", np.ones((9, 5), np.float32))
    with pytest.raises(FeatureFileError, match=r"toy\.t\.npy: config says dim 4, the file has dim 5"):
        load(toy, {"suffix": "t.npy", "dim": 4})


def test_token_out_of_range(toy):
    np.ones((6, DIM), np.float32).tofile(toy / "toy" / "toy.feat1CLS")  # items "7" needs row 7
    with pytest.raises(FeatureFileError, match=r"has 6 rows, but item tokens \['7'\] point past its end"):
        load(toy, {"suffix": "feat1CLS", "dim": DIM})


def test_token_not_an_integer(tmp_path):
    write_presplit(tmp_path / "toy", "toy", {"0": ["5", "B0001", "7", "2"], "1": ["2", "0", "5", "7"]})
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    with pytest.raises(FeatureFileError, match=r"non-negative integers.*\['B0001'\]"):
        load(tmp_path, {"suffix": "feat1CLS", "dim": DIM})


def test_nan_or_inf_rows(toy):
    rows = file_rows()
    rows[5, 1] = np.nan
    rows[7, 0] = np.inf
    rows.tofile(toy / "toy" / "toy.feat1CLS")
    with pytest.raises(FeatureFileError, match=r"NaN or inf in the feature rows of items \['5', '7'\]"):
        load(toy, {"suffix": "feat1CLS", "dim": DIM})


def test_missing_feature_file(toy):
    with pytest.raises(FeatureFileError, match=r"feature file .*toy\.feat9CLS does not exist"):
        load(toy, {"suffix": "feat9CLS", "dim": DIM})


def test_malformed_spec(toy):
    with pytest.raises(FeatureFileError, match=r"'mm_features.text.dim' is required"):
        load(toy, {"suffix": "feat1CLS"})
    with pytest.raises(FeatureFileError, match=r"exactly one of 'suffix' or 'field'"):
        load(toy, {"suffix": "feat1CLS", "field": "x", "dim": DIM})


def test_inter_without_needed_fields(tmp_path):
    (tmp_path / "toy").mkdir()
    for part in ["train", "valid", "test"]:  # pre-split files lacking the item_id_list histories
        (tmp_path / "toy" / f"toy.{part}.inter").write_text("user_id:token\titem_id:token\n0\t1\n")
    with pytest.raises(DataFieldError, match=r"toy\.train\.inter: model SASRec needs field\(s\) \['item_id_list'\]"):
        create_dataset(make_config(tmp_path, **PRESPLIT))


def test_plain_inter_without_timestamp_for_sequential_model(tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.inter").write_text("user_id:token\titem_id:token\n0\t1\n")
    with pytest.raises(
        DataFieldError, match=r"needs field\(s\) \['timestamp'\], the file has \['user_id', 'item_id'\]"
    ):
        create_dataset(make_config(tmp_path, load_col={"inter": ["user_id", "item_id"]}))


def test_missing_dataset_lists_what_exists(tmp_path):
    write_presplit(tmp_path / "toy", "toy")
    with pytest.raises(DatasetNotFoundError) as err:
        create_dataset(make_config(tmp_path, name="Scientific_mm_full", **PRESPLIT))
    message = str(err.value)
    assert "Scientific_mm_full.train.inter" in message and "Datasets there: toy" in message
    assert "dataset/README.md" in message


def test_presplit_histories_keep_the_most_recent_items(tmp_path):
    write_presplit(tmp_path / "toy", "toy", {"0": ["5", "2", "7", "0", "3"], "1": ["2", "0", "5", "3"]})
    file_rows().tofile(tmp_path / "toy" / "toy.feat1CLS")
    config = make_config(
        tmp_path, mm_features={"text": {"suffix": "feat1CLS", "dim": DIM}}, MAX_ITEM_LIST_LENGTH=2, **PRESPLIT
    )
    dataset = MultiModalSequentialDataset(config)
    test = dataset.build()[2]
    tokens = dataset.field2id_token["item_id"]
    histories = {
        dataset.field2id_token["user_id"][u]: [tokens[i] for i in seq[:n]]
        for u, seq, n in zip(
            test.inter_feat["user_id"], test.inter_feat["item_id_list"], test.inter_feat["item_length"]
        )
    }
    assert histories == {"0": ["7", "0"], "1": ["0", "5"]}  # the last 2 of 5 2 7 0 and of 2 0 5
    assert dataset.field2seqlen["item_id_list"] == 2
