"""recbole_mm.config: RecBole's ``Config`` that also knows recbole_mm's models and presets."""

import os

from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_mm.errors import ConfigError
from recbole_mm.utils import get_model

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "properties")

# Keys of the multi-modal feature loader: a change in them must invalidate a saved dataset.
MM_DATASET_ARGUMENTS = ["mm_features", "modalities"]


class Config(RecBoleConfig):
    r"""RecBole's configurator, extended the way RecBole-GNN extends it.

    Priority, lowest first: RecBole's internal defaults (overall, model, dataset, quick-start by model type),
    then recbole_mm's ``properties/overall.yaml``, ``properties/model/<Model>.yaml`` and
    ``properties/dataset/<dataset>.yaml``, then the dataset's own ``<data_path>/<dataset>/<dataset>.yaml`` (the
    file ``python -m recbole_mm.prepare`` writes beside the data), then the user's config files,
    ``config_dict`` and command line (``--key=value``).

    Model names are resolved by :func:`recbole_mm.utils.get_model`: recbole_mm first, then RecBole.

    NOTE: for a sequential model with ``loss_type: CE`` whose user did not set ``train_neg_sample_args``,
    the negative sampling RecBole enables by default is switched off (RecBole would otherwise refuse the
    configuration); an explicit user setting is left as it is.
    """

    def _init_parameters_category(self):
        super()._init_parameters_category()
        self.parameters["Dataset"] = self.parameters["Dataset"] + MM_DATASET_ARGUMENTS

    def _required(self, key, given):
        value = self.external_config_dict.get(key) if given is None else given
        if value is None:
            raise ConfigError(
                f"{key} must be given: as the {key} argument, in a config file, in config_dict "
                f"or on the command line (--{key}=NAME)"
            )
        return value

    def _get_model_and_dataset(self, model, dataset):
        model = self._required("model", model)
        if isinstance(model, str):
            model_class, model_name = get_model(model), model
        else:
            model_class, model_name = model, model.__name__
        return model_name, model_class, self._required("dataset", dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for file in [
            os.path.join(PROPERTIES_DIR, "overall.yaml"),
            os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"),
        ]:
            if os.path.isfile(file):
                self._update_internal_config_dict(file)
        data_path = self.external_config_dict.get("data_path") or self.internal_config_dict["data_path"]
        for dataset_file in [
            os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
            os.path.join(data_path, dataset, f"{dataset}.yaml"),  # written by python -m recbole_mm.prepare
        ]:
            if os.path.isfile(dataset_file):
                preset = self._update_internal_config_dict(dataset_file) or {}
                known = set(self.parameters["Dataset"])
                self.parameters["Dataset"] = self.parameters["Dataset"] + [k for k in preset if k not in known]

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final
