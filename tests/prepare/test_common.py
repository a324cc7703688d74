import os

import pandas as pd
import pytest

from recbole_mm.prepare.common import (
    PrepareError,
    SkipReport,
    k_core,
    read_index_file,
    write_config,
    write_dataset,
)


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_k_core_iterates_to_a_fixed_point():
    # k=2. Round 1 drops u4 (1 row); then item c has 1 row (u3's) -> round 2 drops it; then u3 has
    # 1 row -> round 3 drops it. Hand-computed result: u1 and u2 with items a and b.
    inter = frame(
        [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "b", 4), ("u3", "a", 5), ("u3", "c", 6), ("u4", "c", 7)]
    )
    report = SkipReport("t")
    kept = k_core(inter, 2, report)
    assert sorted(zip(kept["user_id"], kept["item_id"])) == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]
    assert "2-core in 3 round(s) removed 2 users and 1 items" in report.line()
    assert k_core(kept, 2, SkipReport("t")).equals(kept)  # a fixed point


def domain(name, sequences):
    n_items = 1 + max(max(s) for s in sequences)
    return {
        "name": name,
        "sequences": sequences,
        "user_ids": [f"u{k}" for k in range(len(sequences))],
        "item_ids": [f"i{k}" for k in range(n_items)],
        "texts": [f"text {k}" for k in range(n_items)],
    }


def test_leave_one_out_rows_prefixes_and_truncation(tmp_path, read_rows):
    long = list(range(60))  # 60 items: histories must keep the last 50
    target, reused = write_dataset(str(tmp_path), "D", [domain("D", [long, [5, 6, 7]])])
    assert not reused and target == str(tmp_path / "D")
    train = read_rows(tmp_path / "D" / "D.train.inter")
    assert train[0] == ["user_id:token", "item_id_list:token_seq", "item_id:token"]
    user0 = [r for r in train[1:] if r[0] == "0"]
    assert len(user0) == 57  # targets t_2..t_58: every training prefix
    for j, (u, hist, target_item) in enumerate(user0, start=1):
        assert target_item == str(j)
        assert hist.split(" ") == [str(i) for i in range(max(0, j - 50), j)]
    assert all(r[0] != "1" for r in train[1:])  # 3 items: no training row
    valid = read_rows(tmp_path / "D" / "D.valid.inter")[1:]
    test = read_rows(tmp_path / "D" / "D.test.inter")[1:]
    assert valid[0] == ["0", " ".join(map(str, range(8, 58))), "58"]
    assert test[0] == ["0", " ".join(map(str, range(9, 59))), "59"]
    assert valid[1] == ["1", "5", "6"] and test[1] == ["1", "5 6", "7"]
    assert read_index_file(str(tmp_path / "D" / "D.item2index"))[:3] == ["i0", "i1", "i2"]
    assert read_rows(tmp_path / "D" / "D.text")[:2] == [["item_id:token", "text:token_seq"], ["i0", "text 0"]]


def test_rerun_keeps_identical_dataset_and_refuses_a_different_one(tmp_path):
    d = domain("D", [[0, 1, 2], [2, 1, 0]])
    write_dataset(str(tmp_path), "D", [d])
    before = os.path.getmtime(tmp_path / "D" / "D.train.inter")
    assert write_dataset(str(tmp_path), "D", [d])[1] is True
    assert os.path.getmtime(tmp_path / "D" / "D.train.inter") == before
    other = domain("D", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
    with pytest.raises(PrepareError, match="already holds a different dataset.*D.user2index"):
        write_dataset(str(tmp_path), "D", [other])
    (tmp_path / "E").mkdir()
    (tmp_path / "E" / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match="not empty"):
        write_dataset(str(tmp_path), "E", [d])
    assert (tmp_path / "E" / "notes.txt").read_text() == "mine"


def test_multi_domain_tokens_and_pt_datasets(tmp_path, read_rows):
    write_dataset(str(tmp_path), "FH", [domain("Food", [[0, 1, 2, 3]]), domain("Home", [[1, 0, 2], [2, 1, 0]])])
    folder = tmp_path / "FH"
    assert (folder / "FH.pt_datasets").read_text() == "Food,Home\n"
    assert read_rows(folder / "FH.train.inter")[1:] == [["0-0", "0-0", "0-1"]]
    assert read_rows(folder / "FH.valid.inter")[1:] == [
        ["0-0", "0-0 0-1", "0-2"],
        ["1-0", "1-1", "1-0"],
        ["1-1", "1-2", "1-1"],
    ]
    assert read_rows(folder / "FH.test.inter")[1:] == [
        ["0-0", "0-0 0-1 0-2", "0-3"],
        ["1-0", "1-1 1-0", "1-2"],
        ["1-1", "1-2 1-1", "1-0"],
    ]
    assert read_index_file(str(folder / "Home.item2index")) == ["i0", "i1", "i2"]
    assert not (folder / "Food.train.inter").exists()
    write_config(str(folder), "FH")
    assert "mm_features" not in (folder / "FH.yaml").read_text()  # no feature files yet


def test_skip_report_line():
    report = SkipReport("step", examples=2)
    report.note("kept 3")
    for k in range(3):
        report.skip("bad lines", f"line {k}")
    report.skip("nothing", count=0)
    assert report.line() == "step: kept 3; skipped 3 bad lines (line 0, line 1, ...)"
