"""Run, tune and reload recbole_mm and RecBole models: the plugin's ``recbole.quick_start``.

``recbole.quick_start`` imports ray at module load and only knows RecBole's own models, so recbole_mm
has its own pipeline built from RecBole's parts (Config, datasets, dataloaders, trainers, evaluator).
"""

import logging
import os
import pickle
import sys
import zipfile
from logging import getLogger
from typing import Callable, Optional

import torch
from recbole.utils import get_environment, init_logger, init_seed, set_color

import recbole_mm.prepare  # noqa: F401  registers the embedded datasets (ml-100k_mm and its variants)
from recbole_mm import compat
from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation, ensure_dataset
from recbole_mm.errors import CheckpointError
from recbole_mm.memory import warn_if_too_large
from recbole_mm.registry import get_model, get_trainer
from recbole_mm.runtime import compile_training_loss, set_tf32_matmul


def _train_and_test(config, saved: bool, verbose: bool, callback_fn: Optional[Callable]) -> dict:
    """Build dataset, dataloaders, model and trainer from ``config``; fit; evaluate on test."""
    logger = getLogger()
    set_tf32_matmul(config["allow_tf32"])
    torch.autograd.set_detect_anomaly(config["detect_anomaly"])
    dataset = create_dataset(config)
    if verbose:
        logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if verbose:
        logger.info(model)
    compile_training_loss(model, config["compile_mode"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if config["device"].type == "cpu":
        warn_if_too_large(config, train_data, logger, model)
    best_valid_score, best_valid_result = trainer.fit(
        train_data,
        valid_data,
        verbose=verbose,
        saved=saved,
        show_progress=config["show_progress"],
        callback_fn=callback_fn,
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
    }


def run_recbole_mm(
    model=None,
    dataset: Optional[str] = None,
    config_file_list: Optional[list] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    callback_fn: Optional[Callable] = None,
) -> dict:
    r"""Train a model on a dataset and test the best checkpoint, as ``recbole.quick_start.run_recbole`` does.

    Args:
        model: model name (recbole_mm's or RecBole's) or model class.
        dataset: dataset name, looked up under ``data_path``; ``ml-100k_mm`` is built on first use.
        config_file_list: YAML files, later ones overriding earlier ones.
        config_dict: parameters overriding the files; the command line (``--key=value``) overrides both.
        saved: save the best checkpoint under ``checkpoint_dir`` and reload it for the test.
        callback_fn: called as ``callback_fn(epoch_idx, valid_score)`` after each validation.

    Returns:
        dict with ``model``, ``dataset``, ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
        ``test_result`` and ``saved_model_file``.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    ensure_dataset(config)  # a missing dataset fails here, before any logging
    init_seed(config["seed"], config["reproducibility"])
    # RecBole's init_logger checks, then creates ./log/<model>: processes started together (torchrun) race there
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    result = _train_and_test(config, saved, verbose=True, callback_fn=callback_fn)
    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    return result


def objective_function(
    config_dict: Optional[dict] = None,
    config_file_list: Optional[list] = None,
    saved: bool = True,
    callback_fn: Optional[Callable] = None,
) -> dict:
    r"""One tuning trial: the contract of ``recbole.quick_start.objective_function`` (same keys returned),
    usable with ``recbole.trainer.HyperTuning``. Logging is quiet; ``callback_fn(epoch, valid_score)``
    reports each validation (for schedulers that prune trials early)."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logging.basicConfig(level=logging.ERROR)
    return _train_and_test(config, saved, verbose=False, callback_fn=callback_fn)


def read_checkpoint(model_file: str) -> dict:
    """The dict a RecBole/recbole_mm trainer saved, loaded on the CPU (a trusted local file).

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    if not os.path.isfile(model_file):
        raise CheckpointError(f"checkpoint {os.path.abspath(model_file)} does not exist")
    size = os.path.getsize(model_file)
    try:
        checkpoint = torch.load(model_file, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        reason = " ".join(str(err).split()).split(". ")[0] or type(err).__name__
        raise CheckpointError(
            f"checkpoint {os.path.abspath(model_file)} is incomplete or corrupt ({size:,} bytes; torch.load: "
            f"{reason}): it was probably cut short while being written or copied"
        ) from None
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise CheckpointError(
            f"checkpoint {os.path.abspath(model_file)}: expected a dict with 'config' and 'state_dict' (as a "
            f"recbole_mm run saves), found {type(checkpoint).__name__}"
            + (f" with keys {sorted(checkpoint)[:8]}" if isinstance(checkpoint, dict) else "")
        )
    return checkpoint


def load_data_and_model(model_file: str):
    r"""Rebuild config, dataset, dataloaders and model from a checkpoint written by a recbole_mm run.

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)`` with the model's weights and
        other parameters restored, in eval mode.

    Raises:
        CheckpointError: the file is missing, incomplete (truncated) or not a checkpoint.
    """
    compat.apply()  # the unpickled config is used without Config.__init__
    checkpoint = read_checkpoint(model_file)
    config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data
