"""``amazon2018``: Amazon 2018 5-core reviews + metadata (gzipped JSON lines in the real field layout, written here) to
the long-sequence layout with dummy queries; every expected row is worked out by hand below."""

import json

import numpy as np
import pytest

from recbole_mm.config import Config
from recbole_mm.data.long_sequence import LongSequenceDataset
from recbole_mm.prepare.amazon2018 import description_query, prepare_amazon2018
from recbole_mm.prepare.cli import main
from recbole_mm.prepare.common import PrepareError

from .conftest import write_gz

# user, asin, unixReviewTime. With k = 2: D (one review) goes, U4 (one review, of E) goes with E; U2 keeps A and C.
REVIEWS = [
    ("U1", "A", 100),
    ("U1", "B", 200),
    ("U1", "C", 300),
    ("U2", "A", 110),
    ("U2", "A", 110),  # exact duplicate: dropped and counted
    ("U2", "C", 210),
    ("U2", "D", 310),
    ("U3", "B", 120),
    ("U3", "A", 220),
    ("U4", "E", 130),
]
META = [
    {
        "category": ["Movies & TV", "Movies"],
        "tech1": "",
        "description": ["<p>The &amp; quick   brown fox jumps over dogs</p>", "second description, unused"],
        "fit": "",
        "title": "Movie A",
        "also_buy": [],
        "brand": "",
        "feature": [],
        "rank": "123 in Movies & TV (",
        "main_cat": "Movies & TV",
        "date": "",
        "price": "",
        "asin": "A",
        "imageURL": [],
        "imageURLHighRes": ["https://example.invalid/A.jpg"],
    },
    {"category": [], "description": [], "title": "Movie B", "asin": "B", "imageURL": [], "imageURLHighRes": []},
    {"description": ["Fourth film"], "title": "Movie D", "asin": "D"},
]
QUERY_A = "The & quick brown fox"  # first 5 whitespace tokens of A's first description, HTML removed
# indices by first appearance in time: users U1 (100) U2 (110) U3 (120); items A (100) B (120) C (210)
INTER = [
    ["0", "0", "100", QUERY_A],
    ["0", "1", "200", ""],
    ["0", "2", "300", ""],
    ["1", "0", "110", QUERY_A],
    ["1", "2", "210", ""],
    ["2", "1", "120", ""],
    ["2", "0", "220", QUERY_A],
]


@pytest.fixture
def amazon2018_files(tmp_path):
    reviews = [
        json.dumps(
            {
                "overall": 5.0,
                "verified": True,
                "reviewTime": "01 1, 2018",
                "reviewerID": u,
                "asin": i,
                "style": {"Format:": " DVD"},
                "reviewerName": "x",
                "reviewText": "fine",
                "summary": "ok",
                "unixReviewTime": t,
            }
        )
        for u, i, t in REVIEWS
    ]
    meta = [json.dumps(m) for m in META] + ["{broken"]
    return write_gz(tmp_path / "Movies_and_TV_5.json.gz", reviews), write_gz(tmp_path / "meta.json.gz", meta)


def test_description_query_rules():
    assert description_query({"description": ["one two three four five six"]}) == "one two three four five"
    assert description_query({"description": "a <b>b</b>"}) == "a b"
    assert description_query({"description": []}) == "" and description_query({}) == ""


def test_rows_queries_and_report(amazon2018_files):
    dataset, report = prepare_amazon2018(*amazon2018_files, name="Movies", k=2)
    assert dataset["user_ids"] == ["U1", "U2", "U3"] and dataset["item_ids"] == ["A", "B", "C"]
    rows = [[str(v) for v in row] for row in dataset["inter"].itertuples(index=False)]
    assert rows == INTER
    assert dataset["dummy_queries"] == [QUERY_A, "", ""]
    assert dataset["texts"] == ["Movie A", "Movie B", None]
    line = report.line()
    assert "skipped 1 duplicate interactions" in line and "skipped 1 corrupt JSON lines" in line
    assert "kept 3 users, 3 items, 7 interactions; 2 items with an empty dummy query (1 without metadata)" in line


def test_cli_writes_files_that_load_as_paired_histories(amazon2018_files, tmp_path, read_rows, capsys):
    assert main(["amazon2018", *amazon2018_files, "--name", "Movies", "--k", "2", "--data-path", str(tmp_path)]) == 0
    folder = tmp_path / "Movies"
    inter = read_rows(folder / "Movies.inter")
    assert inter[0] == ["user_id:token", "item_id:token", "timestamp:float", "query:token_seq"] and inter[1:] == INTER
    items = [["item_id:token", "dummy_query:token_seq"], ["0", QUERY_A], ["1", ""], ["2", ""]]
    assert read_rows(folder / "Movies.item") == items
    assert "kept 3 users" in capsys.readouterr().out
    # a second run with the same inputs keeps the folder; the preset loads through RecBole
    assert main(["amazon2018", *amazon2018_files, "--name", "Movies", "--k", "2", "--data-path", str(tmp_path)]) == 0
    assert "kept the identical dataset" in capsys.readouterr().out
    config = Config(
        model="SASRec",
        dataset="Movies",
        config_file_list=[str(folder / "Movies.yaml")],
        config_dict={
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "train_neg_sample_args": None,
            "checkpoint_dir": str(tmp_path / "saved"),
        },
    )
    assert config["MAX_ITEM_LIST_LENGTH"] == 100
    ds = LongSequenceDataset(config)
    _, _, test = ds.build()
    rows = test[np.arange(len(test))]
    tok = ds.field2token_id["query"]
    a = ds.field2token_id["item_id"]["0"]
    assert ds.dummy_query[a].tolist() == [tok[w] for w in QUERY_A.split()]
    # U1's test row: target C (empty query), history A (its dummy query), B (empty)
    u1 = int(np.flatnonzero(rows["user_id"].numpy() == ds.field2token_id["user_id"]["0"])[0])
    assert rows["item_id"][u1] == ds.field2token_id["item_id"]["2"] and rows["query"][u1].eq(0).all()
    assert rows["item_id_list"][u1, :2].tolist() == [a, ds.field2token_id["item_id"]["1"]]
    assert rows["query_list"][u1, 0].tolist() == ds.dummy_query[a].tolist() and rows["query_list"][u1, 1].eq(0).all()


def test_different_inputs_do_not_overwrite(amazon2018_files, tmp_path):
    assert main(["amazon2018", *amazon2018_files, "--name", "Movies", "--k", "2", "--data-path", str(tmp_path)]) == 0
    with pytest.raises(PrepareError, match=r"already holds a different dataset"):
        from recbole_mm.prepare.long_sequence import write_long_sequence_dataset

        dataset, _ = prepare_amazon2018(*amazon2018_files, name="Movies", k=1)
        dataset.pop("max_len")
        write_long_sequence_dataset(str(tmp_path), "Movies", **dataset)
