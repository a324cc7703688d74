"""Tiny randomly initialised CLIPs saved the way real checkpoints are, for the encoder tests.

- :func:`save_tiny_hf_clip`: a ``transformers.CLIPModel`` (2 layers, width 32, 32-px images, patch 8)
  with a character-level CLIP tokenizer (``vocab.json`` / ``merges.txt`` written here, nothing
  downloaded) and a ``CLIPImageProcessor``, all written with ``save_pretrained``.
- :func:`save_tiny_openai_clip`: a ``clip.model.CLIP`` of the ViT layout (width 64: the ``clip``
  package derives the head count as width / 64) saved as a traced TorchScript archive like the
  downloaded ``ViT-B-32.pt`` (or as a plain state dict). Needs the ``clip`` package (and torchvision).
"""

import json
import os

import torch


def write_char_tokenizer(directory: str) -> int:
    """A CLIP BPE vocabulary of single characters (no merges); returns the vocabulary size."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: k for k, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + k for k, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    return len(vocab)


def save_tiny_hf_clip(directory: str, seed: int = 0, vision_layers: int = 2) -> str:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    os.makedirs(directory, exist_ok=True)
    vocab_size = write_char_tokenizer(directory)
    tokenizer = CLIPTokenizer(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"))
    text = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def save_tiny_openai_clip(path: str, seed: int = 0, jit: bool = True) -> str:
    """``jit=True``: a traced TorchScript archive, the format of OpenAI's ``ViT-B-32.pt``; else a state dict."""
    from clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=16,
        image_resolution=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=8,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    ).eval()
    if jit:
        example = (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
        torch.jit.trace(model, example, check_trace=False).save(path)
    else:
        torch.save(model.state_dict(), path)
    return path
