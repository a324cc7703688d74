import os

import numpy as np
import pytest
import torch

from recbole_mm.encoders.images import CLIP_MEAN, CLIP_STD, ImageDecoder, decode_image, normalize

PIL = pytest.importorskip("PIL.Image")


def photo(path, size, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PIL.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.parametrize("size", [(40, 30), (30, 50), (37, 50), (32, 32)])
def test_decode_matches_the_hugging_face_clip_processor(tmp_path, size):
    from transformers import CLIPImageProcessor

    path = photo(tmp_path / "a.png", size)
    pixels, reason = decode_image(path, 24)
    assert reason is None and pixels.shape == (24, 24, 3) and pixels.dtype == np.uint8
    processor = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    expected = processor(images=PIL.open(path), return_tensors="pt")["pixel_values"].double()
    ours = normalize(pixels[None], "cpu", torch.float64)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


def test_normalize_against_float64_reference():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    x = normalize(pixels, "cpu")
    ref = (pixels.astype(np.float64) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert x.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(x.numpy(), ref.transpose(0, 3, 1, 2), atol=1e-6)


def test_unreadable_and_truncated_files_are_reported(tmp_path):
    good = photo(tmp_path / "good.jpg", (64, 64))
    data = open(good, "rb").read()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    with ImageDecoder(16, workers=2) as pool:
        results = list(
            pool.imap([good, str(tmp_path / "cut.jpg"), str(tmp_path / "text.jpg"), str(tmp_path / "gone.jpg")])
        )
    assert results[0][0].shape == (16, 16, 3) and results[0][1] is None
    for pixels, reason in results[1:]:
        assert pixels is None and reason
    assert "truncated" in results[1][1]


def test_workers_give_the_same_pixels_as_in_process(tmp_path):
    paths = [photo(tmp_path / f"{k}.png", (20 + k, 30), seed=k) for k in range(5)]
    with ImageDecoder(16, workers=2) as pool:
        parallel = [p for p, _ in pool.imap(paths)]
    with ImageDecoder(16, workers=0) as inline:
        serial = [p for p, _ in inline.imap(paths)]
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["china.jpg", "flower.jpg"])
def test_draft_decoding_of_a_real_photo_stays_close_to_the_full_decode(name):
    """``--jpeg-draft`` trades exactness for speed: measured on scikit-learn's two sample photos (640 x 427)."""
    import sklearn

    path = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", name)
    full, _ = decode_image(path, 224)
    draft, _ = decode_image(path, 224, draft=True)
    np.testing.assert_array_equal(draft, full)  # 427 px cannot be halved and still give 224: nothing changes
    full, _ = decode_image(path, 200)
    draft, _ = decode_image(path, 200, draft=True)  # decoded at 320 x 213, then resized
    error = np.abs(full.astype(np.float64) - draft) / 255
    psnr = 10 * np.log10(1 / np.mean(error**2))
    assert 0 < error.mean() < 0.03 and psnr > 25  # measured: mean 0.0196 / 0.0079, PSNR 28.8 / 34.7 dB
