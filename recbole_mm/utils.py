"""Model and trainer lookup: recbole_mm's own modules first, RecBole's as the fallback.

RecBole has no model registry (``recbole.utils.get_model`` only searches ``recbole.model``), so, like
RecBole-GNN, recbole_mm mirrors its lookup functions. A model ``Name`` lives in
``recbole_mm/model/<family>_recommender/<name>.py``; a trainer ``NameTrainer`` in ``recbole_mm.trainer``.
"""

import contextlib
import importlib
import importlib.util
import pkgutil
import re

import torch
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_mm.errors import ConfigError, ModelNotFoundError

MODEL_FAMILIES = ("sequential_recommender", "general_recommender")
RECBOLE_FAMILIES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)
RECBOLE_EXLIB_MODELS = ("lightgbm", "xgboost")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _family_modules():
    """Yield ``(family, module_name)`` for every model file recbole_mm ships."""
    for family in MODEL_FAMILIES:
        package = importlib.import_module(f"recbole_mm.model.{family}")
        for info in pkgutil.iter_modules(package.__path__):
            yield family, info.name


def list_models() -> list:
    """Names of the models recbole_mm provides (class names, as ``--model`` takes them)."""
    names = []
    for family, module_name in _family_modules():
        module = importlib.import_module(f"recbole_mm.model.{family}.{module_name}")
        names += [n for n in dir(module) if n.lower() == module_name and isinstance(getattr(module, n), type)]
    return sorted(names)


def get_model(model_name: str):
    r"""Return the model class called ``model_name``: recbole_mm's if it has one, else RecBole's.

    RecBole's own ``get_model`` imports ``recbole.model.exlib_recommender`` (lightgbm, xgboost) for any
    name it has not found yet, so an unknown name raises ``ModuleNotFoundError: lightgbm`` where those
    are not installed; the exlib family is therefore only searched for its two models.

    Importing RecBole's model packages leaves torch's autograd anomaly mode as it was (see
    :func:`keeping_anomaly_mode`).

    Raises:
        ModelNotFoundError: no such model in either package (the message lists recbole_mm's models).
    """
    with keeping_anomaly_mode():
        return _find_model(model_name)


def _find_model(model_name: str):
    for family, module_name in _family_modules():
        if module_name == model_name.lower():
            module = importlib.import_module(f"recbole_mm.model.{family}.{module_name}")
            if hasattr(module, model_name):
                return getattr(module, model_name)
    if model_name.lower() in RECBOLE_EXLIB_MODELS:
        return recbole_get_model(model_name)
    for family in RECBOLE_FAMILIES:
        module_path = f"recbole.model.{family}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    raise ModelNotFoundError(
        f"model [{model_name}] is neither a recbole_mm model ({', '.join(list_models()) or 'none yet'}) "
        f"nor a RecBole model (names are case-sensitive, e.g. SASRec, BPR)"
    )


def get_trainer(model_type, model_name: str):
    r"""Return ``recbole_mm.trainer.<model_name>Trainer`` if it exists; else ``recbole_mm.trainer.PretrainTrainer``
    for a model with an ``on_epoch_start`` hook (every subclass of the multi-modal sequential family base: its
    pre-training stage, the hook before each epoch, rank sharding); else RecBole's choice as recbole_mm runs it
    (:func:`recbole_mm.trainer.for_recbole_mm`: atomic checkpoint writes, and no host sync per step where
    RecBole's own epoch loop is used)."""
    trainer_module = importlib.import_module("recbole_mm.trainer")
    own = getattr(trainer_module, model_name + "Trainer", None)
    if own is not None:
        return own
    try:
        model_class = get_model(model_name)
    except ModelNotFoundError:
        model_class = None
    if callable(getattr(model_class, "on_epoch_start", None)):
        return trainer_module.PretrainTrainer
    return trainer_module.for_recbole_mm(recbole_get_trainer(model_type, model_name))


def is_recbole_mm_model(model_class) -> bool:
    """Whether ``model_class`` is defined inside recbole_mm."""
    return model_class.__module__.startswith("recbole_mm.")


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
