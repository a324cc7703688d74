"""``kuaisar``: KuaiSAR's src_inter.csv / rec_inter.csv (the real columns, extra ones included, written here) merged by
time into paired (item, query) sequences; every expected row is worked out by hand below."""

import numpy as np
import pytest

from recbole_mm.config import Config
from recbole_mm.data.long_sequence import LongSequenceDataset
from recbole_mm.prepare.cli import main
from recbole_mm.prepare.common import PrepareError
from recbole_mm.prepare.kuaisar import keyword_query, prepare_kuaisar

SRC_HEADER = (
    "user_id,search_session_id,search_session_time,search_session_timestamp,keyword,search_source,item_id,click_cnt"
)
SRC = [
    # user 1: a search click at 1000 (ties with a recommendation click: the search comes first); a shown, unclicked item
    '1,s1,2023-05-01,1000,"[5, 6]",TOP,10,1',
    '1,s1,2023-05-01,1000,"[5, 6]",TOP,11,0',
    # user 2: an empty keyword list, 7 keywords (kept whole in the file), an unreadable list
    "2,s2,2023-05-01,500,[],TOP,10,2",
    '2,s3,2023-05-01,600,"[1, 2, 3, 4, 5, 6, 7]",TOP,15,1',
    "2,s4,2023-05-01,650,not json,TOP,16,1",
    # user 3 has 2 clicks in all: dropped by the user core (4)
    "3,s5,2023-05-01,350,[9],TOP,12,1",
    # a non-numeric timestamp: skipped and counted
    "2,s6,2023-05-01,x,[9],TOP,12,1",
]
REC_HEADER = "user_id,item_id,time,date,hourmin,timestamp,click,like,follow,search,forward,comment"
REC = [
    "1,12,t,20230501,900,900,1,0,0,0,0,0",
    "1,13,t,20230501,1000,1000,1,0,0,0,0,0",
    "1,14,t,20230501,1100,1100,1,0,0,0,0,0",
    "2,12,t,20230501,700,700,1,0,0,0,0,0",
    "2,12,t,20230501,700,700,1,0,0,0,0,0",  # exact duplicate
    "3,10,t,20230501,300,300,1,0,0,0,0,0",
    "3,11,t,20230501,400,400,0,0,0,0,0,0",  # not clicked
]
# indices by first appearance in time (user 3 removed): users "2" -> 0, "1" -> 1; items 10 15 16 12 13 14 -> 0..5
INTER = [
    ["0", "0", "500", ""],
    ["0", "1", "600", "1 2 3 4 5 6 7"],
    ["0", "2", "650", ""],
    ["0", "3", "700", ""],
    ["1", "3", "900", ""],
    ["1", "0", "1000", "5 6"],
    ["1", "4", "1000", ""],
    ["1", "5", "1100", ""],
]


@pytest.fixture
def kuaisar_dir(tmp_path):
    source = tmp_path / "KuaiSAR_final"
    source.mkdir()
    (source / "src_inter.csv").write_text("\n".join([SRC_HEADER] + SRC) + "\n")
    (source / "rec_inter.csv").write_text("\n".join([REC_HEADER] + REC) + "\n")
    return source


def test_keyword_lists():
    assert keyword_query("[1979292, 2548186]") == ("1979292 2548186", True)
    assert keyword_query("[]") == ("", True)
    assert keyword_query("{oops") == ("", False) and keyword_query('{"a": 1}') == ("", False)


def test_merge_by_time_and_report(kuaisar_dir):
    dataset, report = prepare_kuaisar(str(kuaisar_dir / "src_inter.csv"), str(kuaisar_dir / "rec_inter.csv"))
    assert dataset["user_ids"] == ["2", "1"] and dataset["item_ids"] == ["10", "15", "16", "12", "13", "14"]
    assert [[str(v) for v in row] for row in dataset["inter"].itertuples(index=False)] == INTER
    assert dataset["dummy_queries"] is None and dataset["max_len"] == 1000
    line = report.line()
    assert "skipped 1 src_inter rows with a missing or non-numeric field" in line
    assert "skipped 1 unreadable keyword lists (empty query kept) (not json)" in line
    assert "skipped 1 duplicate interactions" in line
    assert "skipped 1 users with fewer than 4 interactions" in line
    assert "kept 2 users, 6 items, 8 interactions (4 search clicks, 4 recommendation clicks; 1 queries" in line


def test_cli_output_loads_with_queries_cut_to_five(kuaisar_dir, tmp_path, read_rows):
    assert main(["kuaisar", "--source", str(kuaisar_dir), "--data-path", str(tmp_path)]) == 0
    folder = tmp_path / "kuaisar"
    assert read_rows(folder / "kuaisar.inter")[1:] == INTER
    assert not (folder / "kuaisar.item").exists()
    config = Config(
        model="SASRec",
        dataset="kuaisar",
        config_file_list=[str(folder / "kuaisar.yaml")],
        config_dict={
            "MAX_ITEM_LIST_LENGTH": 3,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "train_neg_sample_args": None,
            "checkpoint_dir": str(tmp_path / "saved"),
        },
    )
    ds = LongSequenceDataset(config)
    assert ds.query_truncated == 1 and ds.dummy_query.eq(0).all()
    train, valid, test = ds.build()
    rows = test[np.arange(len(test))]
    tok, item = ds.field2token_id["query"], ds.field2token_id["item_id"]
    row_of = {u: int(np.flatnonzero(rows["user_id"].numpy() == ds.field2token_id["user_id"][u])[0]) for u in "01"}
    user1, user2 = row_of["1"], row_of["0"]  # raw users "1" and "2" (file tokens are indices)
    # user "1": 12 (900), 10 with "5 6" (1000, search first), 13 (1000), target 14 (1100)
    assert rows["item_id_list"][user1].tolist() == [item["3"], item["0"], item["4"]]
    assert rows["query_list"][user1, 1].tolist() == [tok["5"], tok["6"], 0, 0, 0]
    assert rows["query_list"][user2, 1].tolist() == [tok[k] for k in "12345"]  # 7 keywords cut to 5


def test_missing_columns_are_named(kuaisar_dir):
    (kuaisar_dir / "rec_inter.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(PrepareError, match=r"rec_inter\.csv: expected the columns .*\['click'\] are missing"):
        prepare_kuaisar(str(kuaisar_dir / "src_inter.csv"), str(kuaisar_dir / "rec_inter.csv"))
