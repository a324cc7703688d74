"""The base of the multi-modal sequential family (MISSRec, MMSRec, PMMRec).

What these models share, and nothing particular to one paper: the dataset's per-item modality tables on the
model's device (:class:`~recbole_mm.model.layers.ItemFeatureBank`), per-modality adaptors that keep PyTorch's
default ``nn.Linear`` init, a ``train_stage`` with a pre-training stage and declared transfer/freeze lists for
``pretrained_path``, all-item scoring in chunks, a per-epoch hook the trainer calls, and the sharing of a global
batch between torch.distributed ranks (:mod:`recbole_mm.model.distributed`).

A model of the family::

    class MyRec(MultiModalSequentialRecommender):
        TRAIN_STAGES = ("pretrain", "finetune")
        TRANSFERRED = ("encoder.", "text_adaptor.")     # state_dict key prefixes a fine-tuning takes
        FROZEN = ("encoder",)                           # parameter-name prefixes frozen after loading

        def __init__(self, config, dataset):
            super().__init__(config, dataset)           # reads train_stage, pretrained_path, item_chunk_size
            self.features = self.feature_bank(dataset, ["text", "image"])
            self.text_adaptor = self.new_adaptor(self.features.dim("text"), config["hidden_size"])
            ...
            self.init_weights()                         # RecBole-style init; the adaptors keep PyTorch's
            if self.pretrained_path:
                self.load_pretrained(self.pretrained_path)

The base declares the family's dataset, :class:`recbole_mm.data.dataset.MultiModalSequentialDataset`, and trainer,
:class:`recbole_mm.trainer.PretrainTrainer` (pre-training stage, ``on_epoch_start``, rank sharding), which
:mod:`recbole_mm.registry` reads for every model of the family.
"""

import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_mm.data.dataset import MultiModalSequentialDataset
from recbole_mm.errors import ConfigError, RecBoleMMError
from recbole_mm.model.distributed import RankShare
from recbole_mm.model.layers import ItemFeatureBank


class MultiModalSequentialRecommender(SequentialRecommender):
    r"""Base of the multi-modal sequential recommenders.

    Class attributes a model declares:
        TRAIN_STAGES (``Tuple[str, ...]``): the values config key ``train_stage`` may take.
        TRANSFERRED (``Tuple[str, ...]``): state_dict key prefixes a fine-tuning takes from a pre-trained
            checkpoint (:meth:`load_pretrained`).
        FROZEN (``Tuple[str, ...]``): parameter-name prefixes frozen after a checkpoint is loaded.
        dataset_class, trainer_class: the family's dataset and trainer (a class, or the name of a class in
            :mod:`recbole_mm.trainer`), read by :mod:`recbole_mm.registry`.

    Config keys read here: ``train_stage``, ``pretrained_path``, ``item_chunk_size`` (and ``initializer_range``
    by the default :meth:`_init_weights`).

    Raises:
        ConfigError: ``train_stage`` not in ``TRAIN_STAGES``, or ``item_chunk_size`` not a positive int.
    """

    TRAIN_STAGES: Tuple[str, ...] = ()
    TRANSFERRED: Tuple[str, ...] = ()
    FROZEN: Tuple[str, ...] = ()
    dataset_class = MultiModalSequentialDataset
    trainer_class = "PretrainTrainer"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.train_stage = config["train_stage"]
        self.pretrained_path = config["pretrained_path"]
        self.item_chunk_size = config["item_chunk_size"]
        self.initializer_range = config["initializer_range"]
        self._default_init: List[nn.Module] = []  # modules that keep PyTorch's init (see init_weights)
        if self.train_stage not in self.TRAIN_STAGES:
            self.bad_config("train_stage", f"one of {list(self.TRAIN_STAGES)}", self.train_stage)
        chunk = self.item_chunk_size
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            self.bad_config("item_chunk_size", "a positive int", chunk)

    # ------------------------------------------------------------------ set-up
    def bad_config(self, key: str, expected: str, found) -> None:
        """Raise :class:`~recbole_mm.errors.ConfigError` naming the model, ``key``, what was expected and found."""
        raise ConfigError(f"{type(self).__name__}: config key '{key}' must be {expected}, found {found!r}")

    def feature_bank(self, dataset, modalities: Sequence[str], why: Optional[str] = None) -> ItemFeatureBank:
        r"""The dataset's tables of ``modalities`` on this model, as an :class:`ItemFeatureBank`.

        Args:
            dataset: the dataset the model is built with (its ``mm_features``).
            modalities: names the model needs, e.g. ``["text", "image"]``.
            why: what needs them (named in the error), e.g. ``"modal_type 'img_text'"``.

        Raises:
            RecBoleMMError: a modality is not loaded; the message names the model, the missing modalities and the
                dataset.
        """
        loaded = sorted(getattr(dataset, "mm_features", None) or {})
        absent = [m for m in modalities if m not in loaded]
        if absent:
            reason = f" with {why}" if why else ""
            raise RecBoleMMError(
                f"{type(self).__name__}{reason} needs modalities {list(modalities)}, dataset "
                f"'{dataset.dataset_name}' loaded {loaded} (missing {absent}); check the feature file suffixes "
                f"and 'modalities' in the config"
            )
        return ItemFeatureBank(dataset, modalities)

    def new_adaptor(self, in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
        r"""A ``Linear(in_dim -> out_dim)`` adaptor that keeps PyTorch's default init: :meth:`init_weights`
        re-initialises it with ``reset_parameters()`` after the model-wide init.

        PAD and an item lacking a modality have all-zero features, so the adaptor maps them to its bias alone;
        with a zero bias that is an exact zero vector, whose ``F.normalize`` gradient explodes."""
        adaptor = nn.Linear(in_dim, out_dim, bias=bias)
        self._default_init.append(adaptor)
        return adaptor

    def init_weights(self) -> None:
        """``apply(self._init_weights)`` over the model, then PyTorch's default init again for every module
        made by :meth:`new_adaptor` (in creation order). Call it at the end of ``__init__``."""
        self.apply(self._init_weights)
        for module in self._default_init:
            module.reset_parameters()

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole's Transformer init: Linear and Embedding weights ``N(0, initializer_range)`` (an embedding's
        padding row zero), Linear biases zero, LayerNorm ``(1, 0)``."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # ------------------------------------------------------------------ pre-trained checkpoints
    def compatible_checkpoints(self) -> Tuple[str, ...]:
        """Model names (``config['model']`` of a checkpoint) :meth:`load_pretrained` accepts: its own class."""
        return (type(self).__name__,)

    def adapt_pretrained_state(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Hook: turn a checkpoint's transferred tensors into this model's layout before the shape check
        (e.g. a reference checkpoint's tensor of another shape). Default: unchanged."""
        return state

    def load_pretrained(
        self, path: str, transferred: Optional[Iterable[str]] = None, frozen: Optional[Iterable[str]] = None
    ) -> List[str]:
        r"""Load the tensors of a pre-trained checkpoint whose keys start with a ``transferred`` prefix, then
        freeze the parameters whose names start with a ``frozen`` prefix.

        Args:
            path: a checkpoint RecBole's trainer saved (a dict with ``config`` and ``state_dict``).
            transferred: key prefixes to load (default ``TRANSFERRED``); keys this model lacks are skipped.
            frozen: parameter-name prefixes to freeze (default ``FROZEN``).

        Returns:
            The loaded state_dict keys.

        Raises:
            RecBoleMMError: no such file; not a checkpoint of :meth:`compatible_checkpoints`; a tensor of another
                shape (every such key named, with both shapes).
        """
        name = type(self).__name__
        transferred = tuple(self.TRANSFERRED if transferred is None else transferred)
        frozen = tuple(self.FROZEN if frozen is None else frozen)
        if not os.path.isfile(path):
            raise RecBoleMMError(f"{name}: config key 'pretrained_path' points to {path}, which does not exist")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # trusted local checkpoint
        saved_config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
        model = saved_config["model"] if saved_config is not None and "model" in saved_config else None
        accepted = self.compatible_checkpoints()
        if model not in accepted or "state_dict" not in checkpoint:
            raise RecBoleMMError(
                f"{name}: pretrained_path {path} is not a {' or '.join(accepted)} checkpoint (expected a dict with "
                f"config['model'] in {list(accepted)} and a state_dict, found model {model!r})"
            )
        own = self.state_dict()
        state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(transferred) and k in own}
        state = self.adapt_pretrained_state(state)
        wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
        if wrong:
            raise RecBoleMMError(
                f"{name}: pretrained_path {path} has tensors of other shapes (checkpoint vs model): {wrong}"
            )
        self.load_state_dict(state, strict=False)
        for param_name, param in self.named_parameters():
            if param_name.startswith(frozen):
                param.requires_grad = False
        self.logger.info(f"{name}: loaded {len(state)} tensors from {path}; froze {', '.join(frozen) or 'nothing'}")
        return list(state)

    # ------------------------------------------------------------------ scoring
    def score_all_items(self, seq_output: torch.Tensor, score_chunk: Callable[[slice], torch.Tensor]) -> torch.Tensor:
        r"""Scores of every item (PAD included), computed ``item_chunk_size`` items at a time.

        Args:
            seq_output: ``[B, ...]`` the sequences scored (its first dimension checks the chunks' shape).
            score_chunk: ``slice(start, stop)`` of item ids -> ``[B, stop - start]`` scores.

        Returns:
            ``[B, n_items]``.
        """
        chunks = []
        for start in range(0, self.n_items, self.item_chunk_size):
            items = slice(start, min(start + self.item_chunk_size, self.n_items))
            chunk = score_chunk(items)
            if chunk.shape != (seq_output.size(0), items.stop - items.start):
                raise RuntimeError(
                    f"{type(self).__name__}: score_chunk gave shape {tuple(chunk.shape)} for items {items.start}:"
                    f"{items.stop} of {seq_output.size(0)} sequences"
                )
            chunks.append(chunk)
        return torch.cat(chunks, dim=1)

    @staticmethod
    def embedding_rows(embedding: nn.Embedding, item_ids) -> torch.Tensor:
        r"""Rows of ``embedding`` for a tensor of item ids (a lookup, ``[*S, dim]``) or a ``slice`` of them (the
        weight's rows, ``[stop - start, dim]``, no lookup: an embedding lookup's backward on CUDA reads a count back
        to the host). A slice from 0 gives PAD's row no gradient, as the lookup's ``padding_idx`` does."""
        if not isinstance(item_ids, slice):
            return embedding(item_ids)
        rows = embedding.weight[item_ids]
        if item_ids.start in (0, None) and embedding.padding_idx == 0:
            return torch.cat([rows[:1].detach(), rows[1:]])
        return rows

    # ------------------------------------------------------------------ training hooks
    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before every training epoch (epoch 0 included), before its first batch.
        Default: nothing (MISSRec re-clusters its interests here)."""

    @staticmethod
    def rank_share(n_local: int, device: torch.device) -> RankShare:
        """This rank's part of the global batch (:class:`~recbole_mm.model.distributed.RankShare`)."""
        return RankShare(n_local, device)
