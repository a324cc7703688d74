"""Building blocks shared by recbole_mm models."""

from typing import Iterable, Optional

import torch
from torch import nn

from recbole_mm.errors import ConfigError


class ItemFeatureBank(nn.Module):
    """The dataset's per-item modality tables, owned by the model on its device.

    Each modality ``m`` becomes two non-persistent buffers, ``m`` (``[n_items, dim]`` float) and
    ``m_present`` (``[n_items]`` bool), so ``model.to(device)`` moves them once and every lookup is a
    GPU gather; they are rebuilt from the dataset rather than stored in checkpoints.

    Constructor Args:
        dataset: a :class:`recbole_mm.data.dataset.MultiModalSequentialDataset` or ``MultiModalDataset``.
        modalities: names to take (default: all of ``dataset.mm_features``).

    Call Args:
        name: modality name.
        item_ids: ``LongTensor`` of any shape ``S``.

    Returns:
        ``[*S, dim]`` features (zero for PAD and for items missing the modality).

    Example:
        >>> bank = ItemFeatureBank(dataset, ["text"])
        >>> bank("text", interaction["item_id_list"]).shape  # [B, L, dim]
    """

    def __init__(self, dataset, modalities: Optional[Iterable[str]] = None):
        super().__init__()
        available = getattr(dataset, "mm_features", {})
        self.names = list(available if modalities is None else modalities)
        for name in self.names:
            if name not in available:
                raise ConfigError(
                    f"modality '{name}' is not loaded for dataset '{dataset.dataset_name}' "
                    f"(loaded: {sorted(available)}); declare it in mm_features and list it in modalities"
                )
            self.register_buffer(name, available[name].table.clone(), persistent=False)
            self.register_buffer(f"{name}_present", available[name].present.clone(), persistent=False)

    def dim(self, name: str) -> int:
        return getattr(self, name).shape[1]

    def present(self, name: str, item_ids: torch.Tensor) -> torch.Tensor:
        """``[*S]`` bool: whether each item has the modality."""
        return getattr(self, f"{name}_present")[item_ids]

    def forward(self, name: str, item_ids: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[item_ids]
