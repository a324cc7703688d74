import json

import numpy as np
import pytest

from recbole_mm.prepare.cli import main
from recbole_mm.prepare.common import PrepareError
from recbole_mm.prepare.mmrec import convert_mmrec


def write_features(folder, n_items=5):
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(n_items, 6)), rng.normal(size=(n_items, 4)).astype(np.float32)
    np.save(folder / "image_feat.npy", image)
    np.save(folder / "text_feat.npy", text)
    return image, text


def test_mmssl_json_layout(tmp_path, read_rows):
    src = tmp_path / "baby"
    src.mkdir()
    (src / "train.json").write_text(json.dumps({"0": [1, 2], "1": [0], "2": []}))
    (src / "val.json").write_text(json.dumps({"0": [3], "1": [4], "7": [2]}))  # user 7 has no training data
    (src / "test.json").write_text(json.dumps({"0": [4], "1": [2, 3]}))
    image, text = write_features(src)
    target, report = convert_mmrec(str(src), str(tmp_path / "out"), "baby")
    assert read_rows(f"{target}/baby.train.inter") == [
        ["user_id:token", "item_id:token"],
        ["0", "1"],
        ["0", "2"],
        ["1", "0"],
    ]
    assert read_rows(f"{target}/baby.valid.inter")[1:] == [["0", "3"], ["1", "4"]]
    assert read_rows(f"{target}/baby.test.inter")[1:] == [["0", "4"], ["1", "2"], ["1", "3"]]
    np.testing.assert_array_equal(
        np.fromfile(f"{target}/baby.v_feat", dtype=np.float32).reshape(-1, 6), image.astype(np.float32)
    )
    np.testing.assert_array_equal(np.fromfile(f"{target}/baby.t_feat", dtype=np.float32).reshape(-1, 4), text)
    assert json.loads(open(f"{target}/baby.v_feat.json").read())["items"] == 5
    assert "skipped 1 valid interactions of users without training data (7)" in report.line()


def test_mmrec_inter_layout_and_config(tmp_path, read_rows):
    src = tmp_path / "sports"
    src.mkdir()
    (src / "sports.inter").write_text(
        "userID\titemID\trating\ttimestamp\tx_label\n"
        "0\t1\t5\t10\t0\n0\t2\t5\t11\t0\n1\t2\t4\t12\t0\n0\t3\t5\t13\t1\n1\t4\t5\t14\t2\n"
    )
    write_features(src)
    assert main(["mmrec", "--source", str(src), "--name", "sports", "--data-path", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "sports"
    assert read_rows(folder / "sports.train.inter")[1:] == [["0", "1"], ["0", "2"], ["1", "2"]]
    assert read_rows(folder / "sports.valid.inter")[1:] == [["0", "3"]]
    assert read_rows(folder / "sports.test.inter")[1:] == [["1", "4"]]
    preset = (folder / "sports.yaml").read_text()
    assert "image: {suffix: v_feat, dim: 6}" in preset and "text: {suffix: t_feat, dim: 4}" in preset
    assert "inter: [user_id, item_id]" in preset and "item_id_list" not in preset
    assert (
        main(["mmrec", "--source", str(src), "--name", "sports", "--data-path", str(tmp_path / "out")]) == 2
    )  # no overwrite


def test_mmrec_bad_input(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    with pytest.raises(
        PrepareError,
        match=r"expected train.json, val.json and test.json \(there or in a <k>-core folder\), or bad.inter",
    ):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
    (src / "bad.inter").write_text("userID\titemID\tx_label\n0\t1\t0\n0\t9\t3\n")
    with pytest.raises(PrepareError, match=r"rows \[3\] need non-negative integer ids and x_label 0, 1 or 2"):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
    (src / "bad.inter").write_text("userID\titemID\tx_label\n0\t1\t0\n0\t9\t2\n")
    write_features(src)
    with pytest.raises(
        PrepareError, match=r"image_feat.npy: 5 rows, but the item set of the interactions has 10 items"
    ):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
    write_features(src, n_items=12)  # more rows than items: misaligned as well
    with pytest.raises(
        PrepareError, match=r"image_feat.npy: 12 rows, but the item set of the interactions has 10 items"
    ):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
    assert not (tmp_path / "out" / "bad").exists()  # nothing written


def test_lattice_layout_json_in_a_core_folder(tmp_path, read_rows):
    src = tmp_path / "sports"
    (src / "5-core").mkdir(parents=True)
    (src / "5-core" / "train.json").write_text(json.dumps({"0": [1, 2], "1": [0, 4]}))
    (src / "5-core" / "val.json").write_text(json.dumps({"0": [3], "1": [2]}))
    (src / "5-core" / "test.json").write_text(json.dumps({"0": [4], "1": [3]}))
    write_features(src)
    target, _ = convert_mmrec(str(src), str(tmp_path / "out"), "sports")
    assert read_rows(f"{target}/sports.train.inter")[1:] == [["0", "1"], ["0", "2"], ["1", "0"], ["1", "4"]]
    assert read_rows(f"{target}/sports.test.inter")[1:] == [["0", "4"], ["1", "3"]]


def test_converted_mmrec_layout_loads_with_its_split_and_aligned_features(tmp_path):
    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation

    src = tmp_path / "baby"
    src.mkdir()
    (src / "baby.inter").write_text(
        "userID\titemID\trating\ttimestamp\tx_label\n"
        "0\t3\t5\t1\t0\n0\t1\t5\t2\t0\n1\t4\t5\t3\t0\n1\t0\t5\t4\t0\n2\t2\t5\t5\t0\n"
        "0\t2\t5\t6\t1\n1\t3\t5\t7\t1\n2\t4\t5\t8\t1\n0\t0\t5\t9\t2\n1\t1\t5\t10\t2\n2\t3\t5\t11\t2\n"
    )
    image, text = write_features(src)
    assert main(["mmrec", "--source", str(src), "--name", "baby", "--data-path", str(tmp_path / "out")]) == 0
    config = Config(
        model="MMSSL",
        dataset="baby",
        config_dict={"data_path": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "saved"), "topk": [1],
                     "valid_metric": "Recall@1"},
    )
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert (len(train.dataset), len(valid.dataset), len(test.dataset)) == (5, 3, 3)  # the file's own split
    tokens = dataset.field2id_token["item_id"][1:].astype(int)
    np.testing.assert_array_equal(dataset.mm_features["image"].table[1:].numpy(), image[tokens].astype(np.float32))
    np.testing.assert_array_equal(dataset.mm_features["text"].table[1:].numpy(), text[tokens])
