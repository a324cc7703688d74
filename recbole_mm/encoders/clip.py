"""CLIP text and image encoders from local checkpoints (nothing is downloaded).

- :class:`OpenAIClipEncoder`: a checkpoint file of OpenAI's ``clip`` package (``ViT-B-32.pt``, the JIT
  archive it downloads, or a plain state dict of the same model), built with ``clip.model.build_model``
  as ``clip.load(path, jit=False)`` does.
  Needs ``pip install 'recbole_mm[clip]'`` and torchvision (which ``clip`` imports).
- :class:`HFClipEncoder`: a Hugging Face directory of a ``CLIPModel`` with its tokenizer and image
  processor config (e.g. a saved ``openai/clip-vit-base-patch32``). Needs only ``transformers``.

Both expose ``name``, ``dim``, ``image_size``, ``encode_text(texts) -> [n, dim]`` and
``encode_pixels(uint8 [b, h, w, 3]) -> [b, dim]``. Outputs are the projected CLIP embeddings
(``get_text_features`` / ``get_image_features``), not L2-normalised, float32. On CUDA the forward
passes run in fp16. Images are preprocessed by :mod:`recbole_mm.encoders.images` (CLIP's resize /
centre-crop / normalisation), the same code for both encoders and for any checkpoint.

A checkpoint that is not a CLIP, or whose architecture differs from the one asked for (``arch``), is a
:class:`CheckpointError`, raised before any weights are built.
"""

import json
import os
import warnings
from typing import List, Optional

import numpy as np
import torch

from recbole_mm.encoders.images import CLIP_MEAN, CLIP_STD, normalize
from recbole_mm.errors import RecBoleMMError

OPENAI_CLIP_KEYS = ("visual.conv1.weight", "token_embedding.weight", "text_projection", "positional_embedding")
VIT_NAMES = {768: "B", 1024: "L", 1280: "H"}


class CheckpointError(RecBoleMMError):
    """A checkpoint file or directory is missing, unreadable, not a CLIP, or of another architecture."""


def vit_name(width: int, layers: int, patch: int) -> str:
    """``ViT-B/32`` for the standard CLIP towers, ``ViT-w<width>-l<layers>/<patch>`` for any other."""
    letter = VIT_NAMES.get(width)
    if (letter, layers) in {("B", 12), ("L", 24), ("H", 32)}:
        return f"ViT-{letter}/{patch}"
    return f"ViT-w{width}-l{layers}/{patch}"


def _device_dtype(device: str):
    device = torch.device(device)
    return device, (torch.float16 if device.type == "cuda" else torch.float32)


class _ClipBase:
    """Batching shared by both encoders; subclasses define ``_text_batch`` and ``_image_batch``."""

    batch_size: int
    device: torch.device
    dtype: torch.dtype
    mean = CLIP_MEAN
    std = CLIP_STD

    @torch.no_grad()
    def encode_text(self, texts: List[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 text embeddings."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            emb = self._text_batch(list(texts[start : start + self.batch_size]))
            out[start : start + len(emb)] = emb.float().cpu().numpy()
        return out

    @torch.no_grad()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``[b, size, size, 3]`` (from :func:`~recbole_mm.encoders.images.decode_image`) ->
        ``[b, dim]`` float32."""
        if pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected pixels [b, {self.image_size}, {self.image_size}, 3], got {pixels.shape}")
        out = np.zeros((len(pixels), self.dim), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            x = normalize(pixels[start : start + self.batch_size], self.device, self.dtype, self.mean, self.std)
            out[start : start + len(x)] = self._image_batch(x).float().cpu().numpy()
        return out


def read_openai_state_dict(path: str) -> dict:
    """State dict of an OpenAI CLIP checkpoint: a TorchScript archive or a ``torch.save``-d state dict."""
    if not os.path.isfile(path):
        raise CheckpointError(f"CLIP checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: OpenAI ships TorchScript
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
    except RuntimeError:
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: neither a TorchScript archive nor a torch state dict ({type(err).__name__}: {err})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a CLIP state dict, found a {type(state).__name__}")
    return state


def openai_clip_arch(state: dict, path: str = "checkpoint") -> str:
    """Architecture name of an OpenAI CLIP state dict: ``ViT-B/32`` style, or ``ViT-w<width>-l<layers>/<patch>``.

    Raises:
        CheckpointError: the keys are not those of an OpenAI CLIP (e.g. a ResNet CLIP, or another model).
    """
    missing = [k for k in OPENAI_CLIP_KEYS if k not in state]
    if missing or "visual.proj" not in state:
        kind = (
            "a ResNet CLIP (only ViT CLIPs are supported)"
            if "visual.layer1.0.conv1.weight" in state
            else "not an OpenAI ViT CLIP"
        )
        raise CheckpointError(
            f"{path}: {kind}: expected keys {list(OPENAI_CLIP_KEYS) + ['visual.proj']}, "
            f"missing {missing or ['visual.proj']} (found {len(state)} keys such as {list(state)[:3]})"
        )
    width, _, patch, _ = state["visual.conv1.weight"].shape
    layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return vit_name(width, layers, patch) + ("@336px" if grid * patch == 336 else "")


class OpenAIClipEncoder(_ClipBase):
    """OpenAI CLIP through the ``clip`` package, from a local checkpoint file.

    Args:
        checkpoint: path to e.g. ``ViT-B-32.pt``.
        device: torch device string; fp16 on CUDA.
        batch_size: texts or images per forward pass.
        arch: if given (e.g. ``"ViT-B/32"``), the checkpoint must be that architecture.
    """

    def __init__(self, checkpoint: str, device: str = "cpu", batch_size: int = 256, arch: Optional[str] = None):
        state = read_openai_state_dict(checkpoint)
        self.arch = openai_clip_arch(state, checkpoint)
        if arch is not None and arch != self.arch:
            raise CheckpointError(f"{checkpoint}: expected a CLIP {arch}, the checkpoint is a {self.arch}")
        try:
            import clip
            from clip.model import build_model
        except ImportError as err:
            raise ImportError(
                "the OpenAI CLIP encoder needs the clip package and torchvision: "
                f"pip install 'recbole_mm[clip]' ({err})"
            ) from None
        self.device, self.dtype = _device_dtype(device)
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self._clip = clip
        # What clip.load(path, jit=False) does after reading the file: build the eager model from the
        # state dict (fp16 weights), fp32 on the CPU. clip.load itself cannot read a plain state dict
        # under current torch (its TorchScript attempt moves the file position), so the file is read here.
        model = build_model(state).to(self.device)
        if self.device.type == "cpu":
            model.float()
        self.model = model.eval()
        self.dtype = self.model.dtype
        self.image_size = int(self.model.visual.input_resolution)
        self.dim = int(self.model.text_projection.shape[1])

    @property
    def name(self) -> str:
        return f"openai-clip {self.arch} ({os.path.basename(self.checkpoint)})"

    def _text_batch(self, texts):
        tokens = self._clip.tokenize(texts, truncate=True).to(self.device)
        return self.model.encode_text(tokens)

    def _image_batch(self, x):
        return self.model.encode_image(x)


class HFClipEncoder(_ClipBase):
    """A Hugging Face ``CLIPModel`` from a local directory (model, tokenizer and image processor config).

    Args:
        model_dir: directory written by ``save_pretrained`` (``config.json`` with ``model_type: clip``).
        device: torch device string; fp16 on CUDA.
        batch_size: texts or images per forward pass.
        arch: if given, must equal the ``<vision hidden size>/<patch size>`` description, e.g.
            ``"ViT-B/32"`` for a 768-wide, 12-layer, patch-32 vision tower.
    """

    def __init__(self, model_dir: str, device: str = "cpu", batch_size: int = 256, arch: Optional[str] = None):
        config_path = os.path.join(model_dir, "config.json")
        if not os.path.isfile(config_path):
            raise CheckpointError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("model_type") != "clip":
            raise CheckpointError(f"{config_path}: expected model_type 'clip', found {config.get('model_type')!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoTokenizer, CLIPModel

        vision = config.get("vision_config", {})
        self.arch = vit_name(
            vision.get("hidden_size", 768), vision.get("num_hidden_layers", 12), vision.get("patch_size", 32)
        )
        if arch is not None and arch != self.arch:
            raise CheckpointError(f"{model_dir}: expected a CLIP {arch}, the checkpoint is a {self.arch}")
        self.device, self.dtype = _device_dtype(device)
        self.batch_size = batch_size
        self.model_dir = model_dir
        self.model = CLIPModel.from_pretrained(model_dir, local_files_only=True).to(self.device, self.dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self._read_image_config(model_dir)
        self.dim = int(self.model.config.projection_dim)

    def _read_image_config(self, model_dir: str) -> None:
        """Image size, mean and std from the saved image processor config.

        Read from ``preprocessor_config.json`` or ``processor_config.json``, whichever is there.
        """
        processor = {}
        for file in ("preprocessor_config.json", "processor_config.json"):
            path = os.path.join(model_dir, file)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                processor = data.get("image_processor", data)
                break
        crop = processor.get("crop_size", {"height": self.model.config.vision_config.image_size})
        size = crop["height"] if isinstance(crop, dict) else int(crop)
        shortest = (
            processor.get("size", {}).get("shortest_edge", size) if isinstance(processor.get("size"), dict) else size
        )
        if shortest != size:
            raise CheckpointError(
                f"{model_dir}: the image processor resizes to {shortest} and crops {size}; only resize == crop "
                f"(CLIP's own preprocessing) is supported"
            )
        self.image_size = int(size)
        self.mean = tuple(processor.get("image_mean", CLIP_MEAN))
        self.std = tuple(processor.get("image_std", CLIP_STD))

    @property
    def name(self) -> str:
        return f"hf-clip {self.arch} ({os.path.abspath(self.model_dir)})"

    def _text_batch(self, texts):
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        ).to(self.device)
        pooled = self.model.text_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).pooler_output
        return self.model.text_projection(pooled)

    def _image_batch(self, x):
        return self.model.visual_projection(self.model.vision_model(pixel_values=x).pooler_output)
