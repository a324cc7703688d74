"""Dataset creation for recbole_mm: presence and field checks first, recbole_mm datasets first, RecBole's
as the fallback."""

import glob
import os
import pickle
from logging import getLogger

import pandas as pd
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.dataloader import TrainDataLoader
from recbole.utils import ModelType
from recbole.utils.argument_list import dataset_arguments

from recbole_mm.config import DATASET_SUBFOLDERS, has_interactions
from recbole_mm.data.device_loader import DeviceTrainLoader
from recbole_mm.errors import DataFieldError, DatasetNotFoundError, RecBoleMMError
from recbole_mm.registry import get_dataset_class


def check_pandas() -> None:
    """RecBole 1.2.1 cannot load ``token_seq`` fields (``item_id_list``) under pandas 3."""
    if int(pd.__version__.split(".")[0]) >= 3:
        raise RecBoleMMError(
            f"pandas {pd.__version__} is installed; RecBole 1.2.1 needs pandas<3 (under pandas 3 it cannot load "
            f"token_seq fields such as item_id_list): pip install 'pandas>=2,<3'"
        )


def inter_files(config) -> list:
    """The interaction files RecBole will read for this config."""
    name, directory = config["dataset"], config["data_path"]
    if config["benchmark_filename"]:
        return [os.path.join(directory, f"{name}.{part}.inter") for part in config["benchmark_filename"]]
    return [os.path.join(directory, f"{name}.inter")]


def available_datasets(root: str) -> list:
    """Dataset names under ``root`` and its ``downstream/`` and ``pretrain/`` sub-folders (folders holding
    ``<name>.inter`` or ``<name>.train.inter``), as ``--dataset`` takes them."""
    found = set()
    for folder in [root] + [os.path.join(root, sub) for sub in DATASET_SUBFOLDERS]:
        if os.path.isdir(folder):
            found.update(d for d in os.listdir(folder) if has_interactions(os.path.join(folder, d), d))
    return sorted(found)


# Datasets that can be built on first use, name -> ``build(root)``; registered by :mod:`recbole_mm.prepare`
# (``data`` never imports ``prepare``).
BUILDERS = {}


def register_builder(name: str, build) -> None:
    """Let ``ensure_dataset`` build the dataset ``name`` under a data root (``build(root)``) when it is missing."""
    BUILDERS[name] = build


def ensure_dataset(config) -> None:
    """Build a registered embedded dataset if it is asked for and missing; else check the dataset's files exist.

    Raises:
        DatasetNotFoundError: with what was looked for where, what the dataset folder holds (or which datasets
            exist), and how to prepare one.
    """
    name, directory = config["dataset"], config["data_path"]
    root = os.path.dirname(os.path.normpath(directory))
    if name in BUILDERS:
        BUILDERS[name](root)
    missing = [f for f in inter_files(config) if not os.path.isfile(f)]
    if missing:
        raise DatasetNotFoundError(_not_found_message(name, root, directory, missing))
    check_inter_fields(config)


def _not_found_message(name: str, root: str, directory: str, missing: list) -> str:
    looked = f"dataset '{name}' not found: looked for {', '.join(os.path.abspath(f) for f in missing)}"
    if os.path.isdir(directory):
        held = sorted(f for f in os.listdir(directory) if f.endswith(".inter"))
        if f"{name}.inter" in held:
            advice = "one interaction file, read when benchmark_filename is unset: remove it from the config"
        elif f"{name}.train.inter" in held:
            advice = "pre-split files: set benchmark_filename to the parts it holds, or leave it unset"
        else:
            advice = f"no {name}.inter nor {name}.train.inter: interaction files are named after their folder"
        return (
            f"{looked}. The folder {os.path.abspath(directory)} holds {', '.join(held) or 'no .inter file'} ({advice})."
        )
    searched = ", ".join(os.path.join(os.path.abspath(root), sub, "") for sub in DATASET_SUBFOLDERS)
    elsewhere = sorted(glob.glob(os.path.join(glob.escape(root), "*", name))) + [
        os.path.join(os.path.dirname(os.path.abspath(root)), name)  # data_path one level too deep
    ]
    nested = [
        os.path.dirname(folder)
        for folder in elsewhere
        if os.path.basename(os.path.dirname(folder)) not in DATASET_SUBFOLDERS and has_interactions(folder, name)
    ]
    hint = f" A folder '{name}' exists under {os.path.abspath(nested[0])}: pass --data_path there." if nested else ""
    return (
        f"{looked} (data_path={os.path.abspath(root)}; {searched} searched too). Datasets there: "
        f"{', '.join(available_datasets(root)) or 'none'}; always available: {', '.join(BUILDERS) or 'none'} (built on "
        f"first use), ml-100k (shipped with RecBole).{hint} To prepare a dataset see dataset/README.md, or point "
        f"--data_path at the folder that holds '{name}/'."
    )


def check_inter_fields(config) -> None:
    """Every interaction file must hold at least one row and the fields ``load_col`` and the model type need."""
    needed = list((config["load_col"] or {}).get("inter", []))
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        if config["benchmark_filename"]:
            needed.append(config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"])
        else:
            needed.append(config["TIME_FIELD"])
    for path in inter_files(config):
        with open(path, encoding="utf-8") as f:
            first = f.readline()
            has_row = any(line.strip() for line in f)
        if not has_row:  # a 0-byte file, or a header without rows
            what = "is empty (0 bytes)" if not first else "has a header and no rows"
            raise RecBoleMMError(f"{path} holds no interactions: the file {what}")
        header = [col.split(":")[0] for col in first.rstrip("\n").split(config["field_separator"])]
        absent = [field for field in dict.fromkeys(needed) if field not in header]
        if absent:
            raise DataFieldError(
                f"{path}: model {config['model']} needs field(s) {absent}, the file has {header} "
                f"(check load_col and benchmark_filename in the config)"
            )


def create_dataset(config):
    r"""Create the dataset for ``config``: the dataset class the model declares (``dataset_class``, set on every
    recbole_mm family base; :func:`recbole_mm.registry.get_dataset_class`), RecBole's ``create_dataset`` for a
    model that declares none.

    Like RecBole, a dataset saved at ``dataset_save_path`` (or ``checkpoint_dir/<dataset>-<Class>.pth``)
    is reused when its dataset arguments are unchanged, and ``save_dataset: True`` saves it.
    """
    check_pandas()
    ensure_dataset(config)
    dataset_class = get_dataset_class(config.model_class)
    if dataset_class is None:
        return recbole_create_dataset(config)
    file = config["dataset_save_path"] or os.path.join(
        config["checkpoint_dir"], f'{config["dataset"]}-{dataset_class.__name__}.pth'
    )
    if os.path.exists(file):
        with open(file, "rb") as f:
            dataset = pickle.load(f)
        keys = config.parameters["Dataset"] + dataset_arguments + ["seed", "repeatable"]
        if all(config[key] == dataset.config[key] for key in dict.fromkeys(keys)):
            getLogger().info(f"Load filtered dataset from: [{file}]")
            return dataset
    dataset = dataset_class(config)
    if config["save_dataset"]:
        dataset.save()
    return dataset


def data_preparation(config, dataset):
    r"""Split ``dataset`` and build the train/valid/test dataloaders.

    RecBole's split and dataloaders serve every recbole_mm model (feature tables live on the model, so
    batches carry item ids only); this delegates to ``recbole.data.data_preparation``. A single
    benchmark file (``benchmark_filename: [train]``, the pre-training layout) gives
    ``(train_data, None, None)``. With ``train_data_on_device: True`` the training loader draws its batches on
    the model's device (:class:`recbole_mm.data.device_loader.DeviceTrainLoader`).
    """
    if config["benchmark_filename"] and len(config["benchmark_filename"]) == 1:
        (train_dataset,) = dataset.build()
        loaders = TrainDataLoader(config, train_dataset, None, shuffle=config["shuffle"]), None, None
    else:
        loaders = recbole_data_preparation(config, dataset)
    if config["train_data_on_device"]:
        return (DeviceTrainLoader(loaders[0], config, config["device"]),) + tuple(loaders[1:])
    return loaders
