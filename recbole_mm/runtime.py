"""Process-wide torch switches recbole_mm sets for a run: TF32 products, ``torch.compile`` of the training loss,
autograd anomaly mode kept as it was, and RecBole's ``gpu_id`` for a torch device name.

A ground-floor module: it imports torch and :mod:`recbole_mm.errors` only, so every layer may use it.
"""

import contextlib
import re

import torch

from recbole_mm.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@contextlib.contextmanager
def keeping_anomaly_mode():
    """Restore torch's autograd anomaly detection to its state before the block.

    RecBole 1.2.1's ``recbole/model/sequential_recommender/sine.py`` calls
    ``torch.autograd.set_detect_anomaly(True)`` at import, and that package's ``__init__`` imports every
    sequential model, so looking up any of them turns anomaly detection on for the whole process: each
    forward op then records a Python stack trace and each backward node checks its output for NaN (a
    device sync per node on a GPU). Training runs several times slower for it.
    """
    enabled, check_nan = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    try:
        yield
    finally:
        torch.autograd.set_detect_anomaly(enabled, check_nan)


def tf32_switch(enabled: bool) -> tuple:
    """The attribute of ``torch.backends.cuda.matmul`` that allows (or forbids) TF32 float32 products, and the
    value to set: ``fp32_precision`` since torch 2.9 (mixing it with the legacy ``allow_tf32`` is refused by some
    versions), else ``allow_tf32``."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return "fp32_precision", "tf32" if enabled else "ieee"
    return "allow_tf32", enabled


def set_tf32_matmul(enabled: bool) -> None:
    """Allow (or forbid) TF32 float32 matrix products on CUDA (config key ``allow_tf32``), through the API this
    torch has (``fp32_precision`` since 2.9; mixing it with the legacy switches is refused by some versions)."""
    setattr(torch.backends.cuda.matmul, *tf32_switch(enabled))


def compile_training_loss(model: torch.nn.Module, mode) -> None:
    """``torch.compile`` the model's ``calculate_loss`` (its forward and backward) in place (config key
    ``compile_mode``; None leaves it eager). The parameters and ``state_dict`` are the model's own, so
    checkpoints do not change. Compilation happens at the first training step; a new batch size (the last
    batch) or a new mode of the model compiles once more, a static graph again (``dynamic=False``: torch 2.11's
    inductor fails on a dynamic-shape recompile of MISSRec's backward; CUDA graphs want static shapes too).
    ``reduce-overhead`` replays CUDA graphs.

    Raises:
        ConfigError: ``mode`` is not None nor one of :data:`COMPILE_MODES`.
    """
    if mode is None:
        return
    if mode not in COMPILE_MODES:
        raise ConfigError(
            f"config key 'compile_mode': expected None or one of {', '.join(COMPILE_MODES)}, found {mode!r}"
        )
    model.calculate_loss = torch.compile(model.calculate_loss, mode=mode, dynamic=False)


def gpu_id_for(device: str) -> str:
    """RecBole's ``gpu_id`` for a torch device name: ``'cpu'`` -> ``''`` (no GPU), ``'cuda'`` -> ``'0'``,
    ``'cuda:N'`` -> ``'N'``.

    Raises:
        ConfigError: any other name.
    """
    if device == "cpu":
        return ""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise ConfigError(f"device: expected 'cpu', 'cuda' or 'cuda:N', found {device!r}")
    return match.group(1) or "0"
