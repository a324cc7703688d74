"""Shared by the step benchmarks (``anomaly_mode.py``, ``step_overhead.py``, ``missrec.py``): a model on the real
ml-100k_mm under the results protocol, one training step."""

import torch

from recbole_mm.config import Config
from recbole_mm.data.utils import create_dataset, data_preparation, ensure_dataset
from recbole_mm.registry import get_model
from recbole_mm.runtime import gpu_id_for


def ml100k_mm_model(model_name: str, device: str, data_path: str = "dataset/", **settings):
    """``(model, train_data, torch device)``: ``model_name`` built on ml-100k_mm (``results/ml-100k_mm.yaml``,
    ``settings`` over it; the dataset is built on first use), weights drawn after ``torch.manual_seed(2020)``.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
    """
    config = Config(
        model=model_name,
        dataset="ml-100k_mm",
        config_file_list=["results/ml-100k_mm.yaml"],
        config_dict={"gpu_id": gpu_id_for(device), "data_path": data_path, "show_progress": False, **settings},
    )
    ensure_dataset(config)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    torch.manual_seed(2020)
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    return model, train_data, config["device"]


def train_step(model, optimizer, batch) -> None:
    """One training step: zero the gradients, backward of ``model.calculate_loss(batch)``, optimizer step."""
    optimizer.zero_grad()
    model.calculate_loss(batch).backward()
    optimizer.step()
