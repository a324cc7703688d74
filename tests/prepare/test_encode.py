import json
import os

import numpy as np
import pytest
from encoders.tiny_clip import save_tiny_hf_clip

from recbole_mm.data.atomic_files import file_sha256
from recbole_mm.encoders.clip import HFClipEncoder
from recbole_mm.encoders.images import decode_image
from recbole_mm.prepare.cli import main
from recbole_mm.prepare.common import PrepareError, read_index_file, read_text_file
from recbole_mm.prepare.encode import encode_dataset, word_drop

pytest.importorskip("PIL")


def features(path, dim):
    return np.fromfile(path, dtype=np.float32).reshape(-1, dim)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_tiny_hf_clip(str(tmp_path_factory.mktemp("hfclip")))


@pytest.fixture
def prepared(amazon_csv, tmp_path):
    assert (
        main(["amazon", "--domain", "Sci", *amazon_csv, "--k", "3", "--data-path", str(tmp_path / "ds"), "--no-encode"])
        == 0
    )
    return str(tmp_path / "ds" / "Sci_mm_full")


class InterruptingTextEncoder:
    """Test double around a real encoder: counts text batches and raises KeyboardInterrupt on call ``stop_at``."""

    def __init__(self, encoder, stop_at=None):
        self.encoder, self.stop_at, self.calls = encoder, stop_at, 0
        self.name, self.dim = encoder.name, encoder.dim

    def encode_text(self, texts):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.encoder.encode_text(texts)


def test_amazon_with_minilm_text_features_aligned_to_item2index(amazon_csv, tmp_path, capsys):
    from recbole_mm.encoders.text import MiniLMEncoder

    assert (
        main(["amazon", "--domain", "Sci", *amazon_csv, "--k", "3", "--data-path", str(tmp_path), "--device", "cpu"])
        == 0
    )
    folder = tmp_path / "Sci_mm_full"
    items = read_index_file(str(folder / "Sci_mm_full.item2index"))
    texts = [read_text_file(str(folder / "Sci_mm_full.text"))[i] for i in items]
    minilm = MiniLMEncoder()
    expected = np.stack([minilm.encode([t])[0] for t in texts])  # one by one: no padding effects
    np.testing.assert_allclose(features(folder / "Sci_mm_full.feat1CLS", 384), expected, atol=1e-5)
    dropped = word_drop(texts, 0.15, 2020)
    np.testing.assert_allclose(features(folder / "Sci_mm_full.feat2CLS", 384), minilm.encode(dropped), atol=1e-5)
    sidecar = json.loads((folder / "Sci_mm_full.feat1CLS.json").read_text())
    assert (sidecar["dim"], sidecar["items"], sidecar["dtype"]) == (384, 4, "float32")
    assert sidecar["sha256"] == file_sha256(str(folder / "Sci_mm_full.feat1CLS")) and "MiniLM" in sidecar["encoder"]
    assert "text: {suffix: feat1CLS, dim: 384}" in (folder / "Sci_mm_full.yaml").read_text()
    out = capsys.readouterr().out
    assert "encode Sci_mm_full.feat1CLS: 4 items, 4 encoded, 0 without text (zero row)" in out
    assert not (folder / "Sci_mm_full.feat1CLS.parts").exists()


def test_image_features_rows_zero_rows_and_bad_files(prepared, hf_dir, images_for, tmp_path, capsys):
    images = images_for(tmp_path / "img", ["I1", "I2", "I3", "ZZ"])  # ZZ matches no item; I4 has none
    data = open(os.path.join(images, "I3.jpg"), "rb").read()
    open(os.path.join(images, "I3.jpg"), "wb").write(data[: len(data) // 3])  # truncated
    images_for(tmp_path / "other", ["I1"])
    os.replace(tmp_path / "other" / "I1.jpg", os.path.join(images, "I1.png"))  # second file for I1: ignored
    argv = [
        "encode",
        "--dir",
        prepared,
        "--no-text",
        "--images",
        images,
        "--encoder",
        f"hf-clip:{hf_dir}",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    rows = features(os.path.join(prepared, "Sci_mm_full.feat3CLS"), 16)
    encoder = HFClipEncoder(hf_dir)
    for k, item in enumerate(["I1", "I2"]):
        pixels = decode_image(os.path.join(images, f"{item}.jpg"), 32)[0]
        np.testing.assert_allclose(rows[k], encoder.encode_pixels(pixels[None])[0], atol=1e-5)
    assert np.abs(rows[:2]).sum(axis=1).min() > 0
    np.testing.assert_array_equal(rows[2:], 0)  # I3 truncated, I4 without image
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("encode Sci_mm_full.feat3CLS")][0]
    assert "4 items, 3 with an image file, 1 without (zero row)" in line
    assert "skipped 1 image files matching no item (ZZ.jpg)" in line
    assert "skipped 1 extra image files for an item (the first by name is used) (I1.png)" in line
    assert "skipped 1 unreadable or truncated images (zero row) (I3.jpg:" in line
    assert main(argv) == 0  # same inputs: kept
    assert "is up to date" in capsys.readouterr().out


def test_interrupted_encoding_resumes_from_finished_chunks(prepared, hf_dir, capsys):
    real = HFClipEncoder(hf_dir)
    interrupted = InterruptingTextEncoder(real, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(prepared, "Sci_mm_full", interrupted, chunk_rows=1)
    parts = os.path.join(prepared, "Sci_mm_full.feat1CLS.parts")
    assert sorted(f for f in os.listdir(parts) if f.endswith(".npy")) == ["chunk000000.npy", "chunk000001.npy"]
    assert not os.path.exists(os.path.join(prepared, "Sci_mm_full.feat1CLS"))
    assert not [f for f in os.listdir(parts) if f.endswith(".tmp")]
    resumed = InterruptingTextEncoder(real)
    encode_dataset(prepared, "Sci_mm_full", resumed, chunk_rows=1)
    assert resumed.calls == 2  # only the two unfinished chunks
    texts = [
        read_text_file(os.path.join(prepared, "Sci_mm_full.text"))[i]
        for i in read_index_file(os.path.join(prepared, "Sci_mm_full.item2index"))
    ]
    np.testing.assert_allclose(
        features(os.path.join(prepared, "Sci_mm_full.feat1CLS"), 16), real.encode_text(texts), atol=1e-5
    )
    assert not os.path.exists(parts)


def test_nothing_is_overwritten_silently(prepared, hf_dir, tmp_path):
    real = HFClipEncoder(hf_dir)
    encode_dataset(prepared, "Sci_mm_full", real)
    path = os.path.join(prepared, "Sci_mm_full.feat1CLS")
    before = open(path, "rb").read()
    other = save_tiny_hf_clip(str(tmp_path / "other"), seed=1)
    with pytest.raises(PrepareError, match="already exists and was made from other inputs or another encoder"):
        encode_dataset(prepared, "Sci_mm_full", HFClipEncoder(other))
    assert open(path, "rb").read() == before
    encode_dataset(prepared, "Sci_mm_full", HFClipEncoder(other), overwrite=True)
    assert open(path, "rb").read() != before
    # leftover chunks of a different run are not mixed in
    os.makedirs(path + "x.parts")
    with open(os.path.join(path + "x.parts", "manifest.json"), "w") as f:
        json.dump({"input_fingerprint": "something else"}, f)
    from recbole_mm.prepare import encode as encode_module

    with pytest.raises(PrepareError, match="interrupted run with other inputs"):
        encode_module.encode_file(
            path + "x", ["a"], lambda b, r: np.zeros((1, 2)), 2, "e", encode_module.SkipReport("t")
        )


def test_encoder_spec_errors(prepared, capsys):
    assert main(["encode", "--dir", prepared, "--encoder", "resnet"]) == 2
    assert main(["encode", "--dir", prepared, "--no-text"]) == 2
    assert main(["encode", "--dir", prepared, "--images", prepared, "--device", "cpu"]) == 2  # MiniLM: text only
    assert "encodes text only" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(prepared, "Sci_mm_full.feat1CLS"))  # refused before encoding anything
    with pytest.raises(PrepareError, match="encodes text only"):
        from recbole_mm.encoders.text import MiniLMEncoder

        encode_dataset(prepared, "Sci_mm_full", MiniLMEncoder(), text=False, image_dir=prepared)
