from recbole_mm.prepare.cli import main
from recbole_mm.prepare.common import read_index_file
from recbole_mm.prepare.movielens import prepare_movielens

# ML-1M format. Hand-computed with k=2: movie 3 has one rating -> dropped; then user 3 keeps 1
# rating -> dropped. Users 1, 2 and items 1, 2, 4 remain.
RATINGS = """1::1::5::978300760
1::2::3::978300761
1::4::4::978300770
2::2::4::978300700
2::1::5::978300765
2::4::2::978300900
3::3::1::978300000
3::4::1::978300001
4::1::5
5::9::3::978300001
"""
MOVIES = (
    "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n"
    "3::Heat (1995)::Action|Crime\n4::Caf\xe9 (1999)::Drama\n"
)


def write_ml1m(tmp_path):
    source = tmp_path / "ml-1m"
    source.mkdir()
    (source / "ratings.dat").write_text(RATINGS)
    (source / "movies.dat").write_bytes(MOVIES.encode("latin-1"))
    return source


def test_movielens_1m(tmp_path, read_rows):
    source = write_ml1m(tmp_path)
    domain, report = prepare_movielens(str(source), "ml", k=2)
    # time order: 3-3@000 (removed later), 2-2@700, 1-1@760, 1-2@761, 2-1@765, 1-4@770, 2-4@900
    assert domain["user_ids"] == ["2", "1"] and domain["item_ids"] == ["2", "1", "4"]
    assert domain["sequences"] == [[0, 1, 2], [1, 0, 2]]
    assert domain["texts"] == [
        "Jumanji (1995). Adventure.",
        "Toy Story (1995). Animation, Children's, Comedy.",
        "Caf\xe9 (1999). Drama.",
    ]
    line = report.line()
    assert "skipped 1 corrupt ratings.dat lines (ratings.dat:9)" in line
    assert "skipped 1 ratings of movies missing from movies.dat (9)" in line
    assert "2-core in 2 round(s) removed 1 users and 1 items" in line  # movie 3, then user 3 (user 5 left with movie 9)
    assert (
        main(["movielens-1m", "--source", str(source), "--k", "2", "--data-path", str(tmp_path / "out"), "--no-encode"])
        == 0
    )
    folder = tmp_path / "out" / "ml-1m_mm"
    assert read_rows(folder / "ml-1m_mm.test.inter")[1:] == [["0", "0 1", "2"], ["1", "1 0", "2"]]
    assert read_index_file(str(folder / "ml-1m_mm.item2index")) == ["2", "1", "4"]
