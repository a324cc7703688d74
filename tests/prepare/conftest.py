"""Tiny raw input files in the real public formats, written by the tests themselves.

The Amazon fixture (hand-designed; expected outputs are worked out in the tests):

    user  interactions (item@time)               notes
    U1    I1@10 I2@20 I3@30 I4@40 I6@15          I6 has no metadata -> dropped
    U2    I1@11 I2@21 I3@31 (+ I1@11 again)      the duplicate row is dropped
    U3    I2@12 I3@22 I1@32 I4@42
    U4    I4@5  I5@6                             2 interactions: removed by the 3-core, and I5 with it
    U5    I1@50 I2@60 I3@70 I4@80
plus a line with too many fields and one with a non-numeric timestamp.
"""

import gzip
import json
import os

import pytest

AMAZON_ROWS = [
    ("U1", "I1", 10),
    ("U1", "I2", 20),
    ("U1", "I3", 30),
    ("U1", "I4", 40),
    ("U1", "I6", 15),
    ("U2", "I1", 11),
    ("U2", "I2", 21),
    ("U2", "I3", 31),
    ("U2", "I1", 11),
    ("U3", "I2", 12),
    ("U3", "I3", 22),
    ("U3", "I1", 32),
    ("U3", "I4", 42),
    ("U4", "I4", 5),
    ("U4", "I5", 6),
    ("U5", "I1", 50),
    ("U5", "I2", 60),
    ("U5", "I3", 70),
    ("U5", "I4", 80),
]

META_LINES = [
    json.dumps(
        {
            "asin": "I1",
            "title": "Widget &amp; Co",
            "category": ["Science", "Lab"],
            "brand": "Acme",
            "imageURLHighRes": ["http://example.invalid/I1.jpg"],
            "description": ["ignored"],
        }
    ),
    json.dumps({"asin": "I2", "title": "<b>Beaker</b>...", "category": [], "brand": ""}),
    "{'asin': 'I3', 'title': 'Flask', 'imageURL': ['http://example.invalid/I3.png']}",  # 2014-style literal
    "{not json at all",
    json.dumps({"asin": "I4", "title": "Scale", "category": ["Tools"], "image": ["http://example.invalid/I4.jpg"]}),
    json.dumps({"asin": "I5", "title": "Lonely"}),
    json.dumps({"asin": "I1", "title": "duplicate record, ignored"}),
]


@pytest.fixture
def amazon_texts():
    """Hand-cleaned texts of the fixture items that survive the filters."""
    return {"I1": "Widget & Co. Science Lab. Acme.", "I2": "Beaker.", "I3": "Flask.", "I4": "Scale. Tools."}


def write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def amazon_csv(tmp_path):
    """``(ratings CSV, metadata .json.gz)`` of the fixture."""
    lines = [f"{i},{u},5.0,{t}" for u, i, t in AMAZON_ROWS] + ["I1,U9,5.0,12,extra,fields", "I2,U9,4.0,yesterday"]
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("\n".join(lines) + "\n")
    return str(ratings), write_gz(tmp_path / "meta.json.gz", META_LINES)


@pytest.fixture
def amazon_reviews(tmp_path):
    """``(review .json.gz, metadata .json)`` of the same fixture (reviews in the 2018 review format)."""
    lines = [
        json.dumps(
            {
                "overall": 5.0,
                "verified": True,
                "reviewTime": "01 1, 2018",
                "reviewerID": u,
                "asin": i,
                "reviewText": "fine",
                "summary": "ok",
                "unixReviewTime": t,
            }
        )
        for u, i, t in AMAZON_ROWS
    ] + ['{"reviewerID": "U9", "asin": "I1", "unixReviewTime": 12', json.dumps({"reviewerID": "U9", "asin": "I2"})]
    meta = tmp_path / "meta.json"
    meta.write_text("\n".join(META_LINES) + "\n")
    return write_gz(tmp_path / "reviews.json.gz", lines), str(meta)


def _read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


@pytest.fixture
def read_rows():
    """``read_rows(path)``: rows of an atomic file as lists of fields (header first)."""
    return _read_rows


def _images_for(directory, items, size=(40, 30)):
    """Write a distinct small JPEG ``<item>.jpg`` per item (needs Pillow)."""
    import numpy as np
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    for k, item in enumerate(items):
        pixels = np.random.default_rng(k).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(directory, f"{item}.jpg"), quality=95)
    return str(directory)


@pytest.fixture
def images_for():
    """``images_for(directory, items, size)``: a distinct random-texture JPEG ``<item>.jpg`` per item."""
    return _images_for
