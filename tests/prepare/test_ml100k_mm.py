"""The embedded demo dataset ml-100k_mm, built from the MovieLens-100K files inside the recbole wheel."""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from recbole_mm.encoders.text import MiniLMEncoder
from recbole_mm.prepare import ml100k_mm

NAME = ml100k_mm.NAME
# sha256 of the files that depend only on MovieLens-100K and the build recipe (not on float kernels)
CHECKSUMS = {
    "train.inter": "87982d0c663a8644d690371fb85af8e9f85f5cfcd8e83329d1f1d9f935b7bd5e",
    "valid.inter": "dfc37d44b12b60be6a6eb041447e4c6a7c6900f1fd528acd47c4478b38f1a721",
    "test.inter": "0d3600f890ca26b6729b51e107aff756aff7f4c42bd65e9ed6b97ac09e819335",
    "item2index": "f931c29d81c4cbf2c50127f1aede57d8a9c6d34cc089c73f24c1387630978646",
    "user2index": "ec016f123d163fe0d57d0f7c77008e71fa87fc4cf1247cb1315f5d22a8c28067",
    "text": "42f2f4a739b3de01a754401558fcb71a370ab83ad7f2971e0ab2ac23dd93e6bf",
}


def path(root, suffix):
    return os.path.join(root, NAME, f"{NAME}.{suffix}")


def read_inter(root, part):
    frame = pd.read_csv(path(root, f"{part}.inter"), sep="\t", dtype=str)
    frame.columns = ["user", "history", "target"]
    return frame


def features(root, suffix):
    return np.fromfile(path(root, suffix), dtype=np.float32).reshape(-1, 384)


def item_index(root):
    return pd.read_csv(path(root, "item2index"), sep="\t", header=None, dtype=str, names=["raw", "index"])


@pytest.mark.parametrize("suffix", sorted(CHECKSUMS))
def test_stable_checksums(ml100k_root, suffix):
    with open(path(ml100k_root, suffix), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == CHECKSUMS[suffix]


def test_leave_one_out_against_the_raw_ratings(ml100k_root):
    inter, _ = ml100k_mm.load_source()
    users = pd.read_csv(path(ml100k_root, "user2index"), sep="\t", header=None, dtype=str, names=["raw", "index"])
    items = dict(item_index(ml100k_root).values)
    raw_user = users["raw"][5]
    mine = inter[inter["user_id"] == raw_user].assign(
        t=lambda d: d["timestamp"].astype(float), i=lambda d: d["item_id"].astype(int)
    )
    seq = [items[i] for i in mine.sort_values(["t", "i"], kind="stable")["item_id"]]
    test, valid, train = (read_inter(ml100k_root, p) for p in ["test", "valid", "train"])
    row = test[test["user"] == "5"].iloc[0]
    assert row["target"] == seq[-1] and row["history"].split() == seq[:-1][-50:]
    row = valid[valid["user"] == "5"].iloc[0]
    assert row["target"] == seq[-2] and row["history"].split() == seq[:-2][-50:]
    rows = train[train["user"] == "5"]
    assert len(rows) == len(seq) - 3
    for j, (_, r) in enumerate(rows.iterrows(), start=1):  # every prefix, truncated to 50
        assert r["target"] == seq[j] and r["history"].split() == seq[:j][-50:]
    assert len(test) == len(valid) == 943 and len(train) == 100_000 - 3 * 943


def test_feature_files_and_sidecars(ml100k_root):
    n_items = len(item_index(ml100k_root))
    for suffix in [ml100k_mm.TEXT_SUFFIX, ml100k_mm.GENRE_SUFFIX]:
        rows = features(ml100k_root, suffix)
        assert rows.shape == (n_items, 384) == (1682, 384)
        norms = np.linalg.norm(rows, axis=1)
        assert np.allclose(norms[norms > 0], 1, atol=1e-5)
        meta = json.load(open(path(ml100k_root, suffix) + ".json"))
        with open(path(ml100k_root, suffix), "rb") as f:
            assert meta["sha256"] == hashlib.sha256(f.read()).hexdigest()
        assert meta["dim"] == 384 and meta["items"] == 1682 and "all-MiniLM-L6-v2" in meta["encoder"]


def test_missing_modalities_are_zero_rows(ml100k_root):
    index = dict(item_index(ml100k_root).values)
    genres, text = features(ml100k_root, ml100k_mm.GENRE_SUFFIX), features(ml100k_root, ml100k_mm.TEXT_SUFFIX)
    # MovieLens-100K marks items 267 ("unkonwn" title and genre "unknown") and 1373 (genre "unknown")
    assert not genres[int(index["1373"])].any() and not genres[int(index["267"])].any()
    assert not text[int(index["267"])].any() and text[int(index["1373"])].any()
    assert int((~genres.any(1)).sum()) == 2


def test_text_vectors_are_semantic(ml100k_root):
    titles = pd.read_csv(path(ml100k_root, "text"), sep="\t", dtype=str, keep_default_na=False)
    titles.columns = ["raw", "text"]
    index = dict(item_index(ml100k_root).values)
    rows = features(ml100k_root, ml100k_mm.TEXT_SUFFIX)
    vec = {
        t: rows[int(index[r])]
        for r, t in titles.values
        if t in {"Star Wars (1977)", "Return of the Jedi (1983)", "Fargo (1996)"}
    }
    star_wars, jedi, fargo = vec["Star Wars (1977)"], vec["Return of the Jedi (1983)"], vec["Fargo (1996)"]
    assert star_wars @ jedi > max(star_wars @ fargo, jedi @ fargo)


def test_features_are_reproducible(ml100k_root):
    """A fresh encoder gives the same bytes for the same rows (deterministic build)."""
    titles = pd.read_csv(path(ml100k_root, "text"), sep="\t", dtype=str, keep_default_na=False)["text:token_seq"]
    rows = features(ml100k_root, ml100k_mm.TEXT_SUFFIX)
    first = list(titles[:128])
    again = MiniLMEncoder().encode(first)
    np.testing.assert_array_equal(again, rows[:128])


def test_build_refuses_to_overwrite(ml100k_root):
    with pytest.raises(FileExistsError, match="already exists"):
        ml100k_mm.build(str(ml100k_root))
    assert not [d for d in os.listdir(ml100k_root) if d.startswith(".")]  # no temporary build left behind
