import pytest

from recbole_mm.prepare.amazon import clean_field, prepare_domain
from recbole_mm.prepare.cli import main
from recbole_mm.prepare.common import PrepareError, read_index_file, write_dataset

# Hand-computed from the fixture (see conftest): after the metadata filter and the 3-core, users
# U1 U2 U3 U5 and items I1..I4 remain; indices follow the first appearance in time order.
USERS = ["U1", "U2", "U3", "U5"]
ITEMS = ["I1", "I2", "I3", "I4"]
SEQUENCES = [[0, 1, 2, 3], [0, 1, 2], [1, 2, 0, 3], [0, 1, 2, 3]]
TRAIN = [["0", "0", "1"], ["2", "1", "2"], ["3", "0", "1"]]
VALID = [["0", "0 1", "2"], ["1", "0", "1"], ["2", "1 2", "0"], ["3", "0 1", "2"]]
TEST = [["0", "0 1 2", "3"], ["1", "0 1", "2"], ["2", "1 2 0", "3"], ["3", "0 1 2", "3"]]


def test_ratings_csv_k_core_and_report(amazon_csv, amazon_texts):
    domain, report = prepare_domain("Sci", *amazon_csv, k=3)
    assert domain["user_ids"] == USERS and domain["item_ids"] == ITEMS
    assert domain["sequences"] == SEQUENCES
    assert domain["texts"] == [amazon_texts[i] for i in ITEMS]
    line = report.line()
    assert "skipped 1 corrupt JSON lines (meta.json.gz:4)" in line
    assert "skipped 1 duplicate metadata records (first kept) (I1)" in line
    assert "skipped 1 corrupt CSV lines (wrong number of fields)" in line
    assert "skipped 1 CSV rows without user, item or numeric timestamp" in line
    assert "skipped 1 duplicate interactions" in line
    assert "skipped 1 interactions of 1 items without metadata (I6)" in line
    assert "3-core in 1 round(s) removed 1 users and 1 items" in line  # U4 and I5
    assert "kept 4 users, 4 items, 15 interactions" in line


def test_review_json_gz_gives_the_same_dataset(amazon_reviews, amazon_csv):
    from_reviews, report = prepare_domain("Sci", *amazon_reviews, k=3)
    assert from_reviews == prepare_domain("Sci", *amazon_csv, k=3)[0]
    assert "skipped 2 corrupt JSON lines (meta.json:4, reviews.json.gz:20)" in report.line()
    assert "skipped 1 review rows without user, item or numeric timestamp" in report.line()


def test_written_files_row_by_row(amazon_csv, amazon_texts, tmp_path, read_rows):
    assert (
        main(["amazon", "--domain", "Sci", *amazon_csv, "--k", "3", "--data-path", str(tmp_path), "--no-encode"]) == 0
    )
    folder = tmp_path / "Sci_mm_full"
    assert read_rows(folder / "Sci_mm_full.train.inter")[1:] == TRAIN
    assert read_rows(folder / "Sci_mm_full.valid.inter")[1:] == VALID
    assert read_rows(folder / "Sci_mm_full.test.inter")[1:] == TEST
    assert read_index_file(str(folder / "Sci_mm_full.user2index")) == USERS
    assert read_index_file(str(folder / "Sci_mm_full.item2index")) == ITEMS
    assert read_rows(folder / "Sci_mm_full.text")[1:] == [[i, amazon_texts[i]] for i in ITEMS]
    preset = (folder / "Sci_mm_full.yaml").read_text()
    assert "benchmark_filename: [train, valid, test]" in preset and "mm_features" not in preset


def test_subset_keeps_items_with_every_modality(amazon_csv, tmp_path, images_for):
    images = images_for(tmp_path / "img", ["I1", "I2", "I3"])
    domain, report = prepare_domain("Sci", *amazon_csv, k=3, subset=True, image_dir=images)
    # I4 has no image file: dropped; U1 U2 U3 U5 keep 3 items each.
    assert domain["item_ids"] == ["I1", "I2", "I3"] and domain["user_ids"] == USERS
    assert domain["sequences"] == [[0, 1, 2], [0, 1, 2], [1, 2, 0], [0, 1, 2]]
    assert "items lacking a modality (--subset)" in report.line()
    # without an image folder the metadata decides: only I1, I3 and I4 have URLs; k=2 keeps some
    by_url, _ = prepare_domain("Sci", *amazon_csv, k=2, subset=True)
    assert set(by_url["item_ids"]) <= {"I1", "I3", "I4"}


def test_multi_domain_cli(amazon_csv, amazon_reviews, tmp_path, read_rows):
    argv = [
        "amazon",
        "--domain",
        "Food",
        *amazon_csv,
        "--domain",
        "Home",
        *amazon_reviews,
        "--k",
        "3",
        "--data-path",
        str(tmp_path),
        "--no-encode",
    ]
    assert main(argv) == 0
    folder = tmp_path / "FH_mm_full"
    assert (folder / "FH_mm_full.pt_datasets").read_text() == "Food,Home\n"
    rows = read_rows(folder / "FH_mm_full.test.inter")[1:]
    expected = [
        [f"{k}-{u}", " ".join(f"{k}-{i}" for i in h.split(" ")), f"{k}-{t}"] for k in (0, 1) for u, h, t in TEST
    ]
    assert rows == expected
    assert read_index_file(str(folder / "Home.item2index")) == ITEMS
    assert main(argv) == 0  # a re-run finds the identical dataset and keeps it


def test_bad_input_errors(amazon_csv, tmp_path, capsys):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_domain("X", str(tmp_path / "missing.csv"), amazon_csv[1])
    empty_meta = tmp_path / "empty.json"
    empty_meta.write_text("{broken\n")
    with pytest.raises(PrepareError, match="no usable metadata record"):
        prepare_domain("X", amazon_csv[0], str(empty_meta))
    with pytest.raises(PrepareError, match="no interaction is left"):
        prepare_domain("X", *amazon_csv, k=50)
    domain, _ = prepare_domain("X", *amazon_csv, k=3)
    write_dataset(str(tmp_path), "X_mm_full", [domain])
    # the same name from other ratings (U5 left out) is a different dataset
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("".join(line for line in open(amazon_csv[0]) if ",U5," not in line))
    assert (
        main(
            [
                "amazon",
                "--domain",
                "X",
                str(fewer),
                amazon_csv[1],
                "--k",
                "3",
                "--data-path",
                str(tmp_path),
                "--no-encode",
            ]
        )
        == 2
    )
    assert "already holds a different dataset" in capsys.readouterr().err


def test_clean_field():
    assert clean_field(["A &amp; B", "<i>C</i>"]) == "A & B C."
    assert clean_field('He said "hi"....') == "He said hi."
    assert clean_field("x" * 2000) == ""
