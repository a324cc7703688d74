"""A rough estimate of a training run's peak memory, made before the first step, and the one-line warning when it
exceeds what the machine has (a run that would be killed by the operating system says so first).

The estimate is the process's resident memory once data and model are built, plus the activations autograd keeps
for one batch of a Transformer over the histories (``train_batch_size`` x history length x tokens per position,
per layer: the projections, the feed-forward layer and the attention maps), the batch's scores over every item, the
gradient and the two Adam moments of every trained parameter, and what a model adds of its own: a model may define
``tokens_per_position`` (default 1) and ``activation_elements(batch, length) -> int``, the float32 values its
training step keeps beyond that Transformer (MMSRec's item tower over the catalogue, PMMRec's fusion layer over the
modality tokens of every item of the batch).
It is meant to tell a run that needs several times the memory there is from one that fits, not to predict the peak
to the megabyte: ``bench/peak_memory.py`` prints it beside the measured peak of every model's defaults.
"""

import logging
import os
from typing import Optional

# Autograd keeps about this many float32 values per token and layer for every hidden unit of a Transformer layer
# (Q, K, V, attention output, two layer norms, dropout masks, residuals) and per feed-forward unit (input and
# activation), and this many per attention-map entry (scores, softmax, dropout mask).
_PER_HIDDEN, _PER_INNER, _PER_ATTENTION = 12, 3, 3


# The keys that give a model's Transformer width, feed-forward width, layers and heads, first found wins.
WIDTH_KEYS = ("hidden_size", "fusion_embed_dim", "embedding_size", "embedding_dim")
INNER_KEYS = ("inner_size", "fusion_feedforward_dim")
LAYER_KEYS = ("n_layers", "fusion_layers", "num_hidden_layers", "transformer_block")
HEAD_KEYS = ("n_heads", "fusion_heads", "num_attention_heads", "num_heads")


def _first(config, keys, default: int) -> int:
    for key in keys:
        value = config[key]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def resident_bytes() -> int:
    """This process's resident memory now (0 where ``/proc`` is unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> Optional[int]:
    """Memory the machine can still give: ``MemAvailable`` of ``/proc/meminfo`` (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _history_length(config, train_data) -> int:
    field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    inter_feat = getattr(getattr(train_data, "_dataset", None), "inter_feat", None)
    if inter_feat is not None and field in inter_feat.columns:
        return int(inter_feat[field].shape[-1])
    return 0


def transformer_token_elements(hidden: int, inner: int, heads: int = 0, length: int = 0) -> int:
    """Float32 values autograd keeps per token and layer of a Transformer layer of width ``hidden`` and feed-forward
    width ``inner`` whose attention (``heads`` heads) spans ``length`` tokens (0: its maps not counted)."""
    return _PER_HIDDEN * hidden + _PER_INNER * inner + _PER_ATTENTION * heads * length


def estimate_training_bytes(config, train_data, model=None) -> int:
    """Resident memory now plus one training batch's activations (module docstring); bytes. Without ``model`` only
    the Transformer over the histories and the scores are counted."""
    batch = int(config["train_batch_size"] or 1)
    positions = _history_length(config, train_data)
    length = positions * getattr(model, "tokens_per_position", 1)
    hidden = _first(config, WIDTH_KEYS, 64)
    inner = _first(config, INNER_KEYS, 4 * hidden)
    layers = _first(config, LAYER_KEYS, 1)
    heads = _first(config, HEAD_KEYS, 1)
    per_token = transformer_token_elements(hidden, inner, heads, length)
    activations = batch * length * layers * per_token
    n_items = getattr(getattr(train_data, "_dataset", None), "item_num", 0)
    scores = 3 * batch * n_items  # logits, softmax, gradient
    own = 0
    if model is not None:
        own = 3 * sum(p.numel() for p in model.parameters() if p.requires_grad)  # gradient, Adam's two moments
        if callable(getattr(model, "activation_elements", None)):
            own += int(model.activation_elements(batch, positions))
    return resident_bytes() + 4 * (activations + scores + own)


def warn_if_too_large(config, train_data, logger: Optional[logging.Logger] = None, model=None) -> Optional[str]:
    """Log one warning line when the estimate exceeds the memory available; returns the line (None if it fits)."""
    available = available_bytes()
    if available is None:
        return None
    needed = estimate_training_bytes(config, train_data, model)
    if needed <= available:
        return None
    line = (
        f"{config['model']} with train_batch_size={config['train_batch_size']} needs an estimated "
        f"{needed / 2**30:.1f} GiB of memory, more than the {available / 2**30:.1f} GiB available: the run may be "
        f"killed by the operating system; a smaller train_batch_size lowers it in proportion"
    )
    (logger or logging.getLogger(__name__)).warning(line)
    return line
