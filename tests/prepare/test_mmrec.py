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
    with pytest.raises(PrepareError, match="expected train.json, val.json and test.json, or bad.inter"):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
    (src / "bad.inter").write_text("userID\titemID\tx_label\n0\t1\t0\n0\t9\t3\n")
    with pytest.raises(PrepareError, match=r"rows \[3\] need non-negative integer ids and x_label 0, 1 or 2"):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
    (src / "bad.inter").write_text("userID\titemID\tx_label\n0\t1\t0\n0\t9\t2\n")
    write_features(src)
    with pytest.raises(PrepareError, match="5 rows, but the interactions use item ids up to 9"):
        convert_mmrec(str(src), str(tmp_path / "out"), "bad")
