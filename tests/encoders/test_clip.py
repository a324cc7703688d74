import numpy as np
import pytest
import torch

from encoders.tiny_clip import save_tiny_hf_clip, save_tiny_openai_clip
from recbole_mm.encoders.clip import (
    CheckpointError,
    HFClipEncoder,
    OpenAIClipEncoder,
    openai_clip_arch,
    read_openai_state_dict,
)
from recbole_mm.encoders.images import decode_image

PIL = pytest.importorskip("PIL.Image")
TEXTS = ["a red lab beaker", "widget", "scale with a long description " * 20]


def photos(tmp_path, n=3):
    paths = []
    for k in range(n):
        pixels = np.random.default_rng(k).integers(0, 256, (30 + 7 * k, 44, 3), dtype=np.uint8)
        PIL.fromarray(pixels).save(tmp_path / f"{k}.jpg", quality=95)
        paths.append(str(tmp_path / f"{k}.jpg"))
    return paths


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_tiny_hf_clip(str(tmp_path_factory.mktemp("hfclip")))


def test_hf_clip_matches_the_transformers_pipeline(hf_dir, tmp_path):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    encoder = HFClipEncoder(hf_dir, batch_size=2)
    assert (encoder.dim, encoder.image_size, encoder.arch) == (16, 32, "ViT-w32-l2/8")
    paths = photos(tmp_path)
    ours = encoder.encode_pixels(np.stack([decode_image(p, encoder.image_size)[0] for p in paths]))
    model = CLIPModel.from_pretrained(hf_dir).eval()
    processor = CLIPImageProcessor.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    with torch.no_grad():
        pixel_values = processor(images=[PIL.open(p) for p in paths], return_tensors="pt")["pixel_values"]
        image = model.get_image_features(pixel_values=pixel_values)
        image = image if torch.is_tensor(image) else image.pooler_output
        tokens = tokenizer(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text = model.get_text_features(**tokens)
        text = text if torch.is_tensor(text) else text.pooler_output
    assert ours.shape == (3, 16) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, image.numpy(), atol=1e-4)
    np.testing.assert_allclose(encoder.encode_text(TEXTS), text.numpy(), atol=1e-4)
    assert not np.allclose(ours[0], ours[1])


def test_hf_clip_wrong_architecture_or_model(hf_dir, tmp_path):
    with pytest.raises(CheckpointError, match="expected a CLIP ViT-B/32, the checkpoint is a ViT-w32-l2/8"):
        HFClipEncoder(hf_dir, arch="ViT-B/32")
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=10)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(CheckpointError, match="expected model_type 'clip', found 'bert'"):
        HFClipEncoder(str(tmp_path / "bert"))
    with pytest.raises(CheckpointError, match="no config.json"):
        HFClipEncoder(str(tmp_path))


def test_openai_checkpoint_that_is_not_a_clip(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="not an OpenAI ViT CLIP"):
        OpenAIClipEncoder(str(tmp_path / "linear.pt"))
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a TorchScript archive nor a torch state dict"):
        read_openai_state_dict(str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        OpenAIClipEncoder(str(tmp_path / "ViT-B-32.pt"))


@pytest.mark.gpu
@pytest.mark.parametrize("jit", [True, False])
def test_openai_clip_tiny_checkpoint(tmp_path, jit):
    """The same path as ViT-B-32.pt (file -> state dict -> clip.model.build_model); our preprocessing vs clip's own."""
    clip = pytest.importorskip("clip")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = save_tiny_openai_clip(str(tmp_path / "tiny.pt"), jit=jit)
    assert openai_clip_arch(read_openai_state_dict(path)) == "ViT-w64-l1/8"
    with pytest.raises(CheckpointError, match="expected a CLIP ViT-B/32, the checkpoint is a ViT-w64-l1/8"):
        OpenAIClipEncoder(path, arch="ViT-B/32")
    encoder = OpenAIClipEncoder(path, device=device, batch_size=2)
    assert (encoder.dim, encoder.image_size) == (16, 32)
    paths = photos(tmp_path)
    ours = encoder.encode_pixels(np.stack([decode_image(p, 32)[0] for p in paths]))
    from clip.clip import _transform  # clip's own torchvision preprocessing (what clip.load returns)
    from clip.model import build_model

    reference, preprocess = build_model(read_openai_state_dict(path)).float().eval(), _transform(32)
    with torch.no_grad():
        image = reference.encode_image(torch.stack([preprocess(PIL.open(p)) for p in paths])).numpy()
        text = reference.encode_text(clip.tokenize(TEXTS, truncate=True)).numpy()
    tol = 2e-2 if device == "cuda" else 1e-4  # fp16 on the GPU
    np.testing.assert_allclose(ours, image, atol=tol * max(1.0, np.abs(image).max()))
    np.testing.assert_allclose(encoder.encode_text(TEXTS), text, atol=tol * max(1.0, np.abs(text).max()))
