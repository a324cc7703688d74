"""recbole_mm.config: RecBole's ``Config`` that also knows recbole_mm's models and presets."""

import difflib
import functools
import logging
import math
import os
import re

import recbole
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.evaluator.register import metrics_dict
from recbole.utils import EvaluatorType, ModelType, argument_list

from recbole_mm import compat
from recbole_mm.errors import ConfigError
from recbole_mm.registry import get_model

# The settings tree, installed with the package: overall.yaml, model/<Model>.yaml, dataset/<dataset>.yaml (defaults),
# props/<Model>/*.yaml (run presets), hyper/ (search spaces), protocols/ (result protocols).
PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "properties")
RECBOLE_PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(recbole.__file__)), "properties")

# Keys of the multi-modal feature loader: a change in them must invalidate a saved dataset.
MM_DATASET_ARGUMENTS = ["mm_features", "modalities"]

# MISSRec / UniSRec key names that define a modality: modality -> (suffix key, dim key).
LEGACY_FEATURE_KEYS = {
    "text": ("plm_suffix", "plm_size"),
    "image": ("img_suffix", "img_size"),
    "text_aug": ("plm_suffix_aug", "plm_size"),
}

# Sub-folders of data_path searched for a dataset folder, after data_path itself (the MISSRec/UniSRec layout).
DATASET_SUBFOLDERS = ("downstream", "pretrain")

# The setting that lists deliberately new keys (read by a user's own model or code, with no default anywhere):
# ``extra_keys: [my_key]`` in a config file, or ``--extra_keys="['my_key']" --my_key=3``.
EXTRA_KEYS = "extra_keys"

# Keys RecBole reads that have no default in its properties: its argument lists, the distributed-run keys it sets
# itself, and the names of the run (``--config_files`` is run_recbole_mm.py's own option).
_KEYS_WITHOUT_DEFAULT = frozenset(
    argument_list.general_arguments
    + argument_list.training_arguments
    + argument_list.evaluation_arguments
    + argument_list.dataset_arguments
    + ["local_rank", "nproc", "world_size", "offset", "ip", "port", "model", "dataset", "config_files", EXTRA_KEYS]
    + [key for pair in LEGACY_FEATURE_KEYS.values() for key in pair]
    + MM_DATASET_ARGUMENTS
)

# RecBole's common numeric keys and the values they accept, checked before any data is loaded.
_POSITIVE_INT = (
    "epochs",
    "train_batch_size",
    "eval_batch_size",
    "MAX_ITEM_LIST_LENGTH",
    "embedding_size",
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "pretrain_epochs",
    "save_step",
)
_NON_NEGATIVE_INT = ("worker", "eval_step", "stopping_step", "loss_decimal_place", "metric_decimal_place")
_POSITIVE = ("learning_rate",)
_NON_NEGATIVE = ("weight_decay",)
_PROBABILITY = ("dropout_prob", "hidden_dropout_prob", "attn_dropout_prob")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


RANGES = {
    **{key: ("a positive integer", lambda v: _is_int(v) and v >= 1) for key in _POSITIVE_INT},
    **{key: ("a non-negative integer", lambda v: _is_int(v) and v >= 0) for key in _NON_NEGATIVE_INT},
    **{key: ("a positive number", lambda v: _is_number(v) and math.isfinite(v) and v > 0) for key in _POSITIVE},
    **{key: ("a number >= 0", lambda v: _is_number(v) and math.isfinite(v) and v >= 0) for key in _NON_NEGATIVE},
    **{key: ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1) for key in _PROBABILITY},
}

# Types a "# (type) meaning" comment may name, and the Python values each accepts.
_ANNOTATED_TYPES = {
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "None": (lambda v: v is None, "None"),
}


@functools.lru_cache(maxsize=None)
def annotated_types(yaml_file: str) -> dict:
    """``key -> [type names]`` from the ``key: value  # (type) meaning`` comments of a properties file, for the keys
    whose comment names only ``int``, ``float``, ``bool`` and ``None`` (e.g. ``(int)``, ``(int or None)``)."""
    if not os.path.isfile(yaml_file):
        return {}
    found = {}
    with open(yaml_file, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"^(\w+)\s*:[^#]*#\s*\(([^)]*)\)", line)
            if match:
                names = [name.strip() for name in match.group(2).split(" or ")]
                if all(name in _ANNOTATED_TYPES for name in names):
                    found[match.group(1)] = names
    return found


class Config(RecBoleConfig):
    r"""RecBole's configurator, extended the way RecBole-GNN extends it.

    Priority, lowest first: RecBole's internal defaults (overall, model, dataset, quick-start by model type),
    then recbole_mm's ``properties/overall.yaml``, ``properties/model/<Model>.yaml`` and
    ``properties/dataset/<dataset>.yaml``, then the dataset's own ``<data_path>/<dataset>/<dataset>.yaml`` (the
    file ``python -m recbole_mm.prepare`` writes beside the data), then the user's config files,
    ``config_dict`` and command line (``--key=value``). The priority holds for the modalities too: a modality
    defined in ``mm_features`` or by MISSRec's keys (``plm_suffix``/``plm_size`` for ``text``,
    ``img_suffix``/``img_size`` for ``image``, ``plm_suffix_aug`` for ``text_aug``) at a higher level replaces the
    same modality defined lower; the final ``mm_features`` holds them all.

    Model names are resolved by :func:`recbole_mm.registry.get_model`: recbole_mm first, then RecBole.

    The dataset folder is looked for in ``data_path``, then in its ``downstream/`` and ``pretrain/`` sub-folders
    (the layout of MISSRec's and UniSRec's downloads); ``data_path`` becomes the folder it was found in. A folder
    with pre-split files ``<dataset>.train.inter`` (and ``.valid``/``.test``) but no ``<dataset>.inter`` is read as
    such when no setting says otherwise: ``benchmark_filename`` lists the parts present, ``load_col`` loads the
    fields of the train file's header, and a history field (``item_id_list``) shares the item ids
    (``alias_of_item_id``).

    Settings are checked before any data is loaded: config files must exist and hold ``key: value`` lines; a
    user's value must have the type of the key's default (or of the type its ``# (type)`` comment names in
    RecBole's or recbole_mm's properties), and RecBole's common numeric keys must lie in range (:data:`RANGES`).

    NOTE: for a sequential model with ``loss_type: CE`` whose user did not set ``train_neg_sample_args``,
    the negative sampling RecBole enables by default is switched off (RecBole would otherwise refuse the
    configuration); an explicit user setting is left as it is.

    Raises:
        ConfigError: a missing or unreadable config file, an unknown key, a value of the wrong type or out of range,
            a ``valid_metric`` not computed, a malformed ``mm_features``, a pre-split folder with an incomplete set
            of parts, ``use_gpu: True`` without a GPU.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        compat.apply()  # an entry point: RecBole's Config reads numpy's removed aliases
        super().__init__(model, dataset, config_file_list, config_dict)

    # Whether this program's ``--key=value`` arguments are all settings (run_recbole_mm.py sets it), so that their
    # names are checked too; other programs (run_hyper.py's own options, Ray's worker processes) leave it False.
    command_line_is_settings = False

    def _init_parameters_category(self):
        super()._init_parameters_category()
        self.parameters["Dataset"] = self.parameters["Dataset"] + MM_DATASET_ARGUMENTS

    def _load_config_files(self, file_list):
        """RecBole's, with a clear error for a file that is missing, is not YAML or is not a ``key: value`` map."""
        merged = {}
        for file in file_list or []:
            file = settings_file(file)
            if not os.path.isfile(file):
                raise ConfigError(
                    f"config file {file} does not exist (looked for {os.path.abspath(file)} and "
                    f"{os.path.join(PROPERTIES_DIR, file)}; --config_files takes paths separated by spaces)"
                )
            with open(file, encoding="utf-8") as f:
                try:
                    loaded = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as err:
                    raise ConfigError(f"config file {file} is not valid YAML: {' '.join(str(err).split())}") from None
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"config file {file}: expected 'key: value' lines, found a {type(loaded).__name__}: {loaded!r}"
                )
            merged.update(loaded)
        return merged

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
        self._preset_layers = [dict(self.internal_config_dict)]  # RecBole's own defaults
        recbole_load_col = self.internal_config_dict.get("load_col")
        data_path = self.external_config_dict.get("data_path") or self.internal_config_dict["data_path"]
        self._data_root = dataset_root(data_path, dataset)
        self._annotation_files = [
            os.path.join(RECBOLE_PROPERTIES_DIR, "overall.yaml"),
            os.path.join(RECBOLE_PROPERTIES_DIR, "dataset", "sample.yaml"),
        ]
        for file in [
            os.path.join(PROPERTIES_DIR, "overall.yaml"),
            os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"),
            # a model defined outside the package names its own defaults file (see docs/adding_a_model.md)
            getattr(model_class, "defaults_file", None),
        ]:
            if file and os.path.isfile(file):
                self._preset_layers.append(self._update_internal_config_dict(file) or {})
                self._annotation_files.append(file)
        for dataset_file in [
            os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
            os.path.join(self._data_root, dataset, f"{dataset}.yaml"),  # written by python -m recbole_mm.prepare
        ]:
            if os.path.isfile(dataset_file):
                preset = self._update_internal_config_dict(dataset_file) or {}
                self._preset_layers.append(preset)
                known = set(self.parameters["Dataset"])
                self.parameters["Dataset"] = self.parameters["Dataset"] + [k for k in preset if k not in known]
        self._infer_presplit_layout(dataset, recbole_load_col)
        self._apply_dataset_preset(dataset)

    def _apply_dataset_preset(self, dataset):
        """The model's settings for a dataset (``dataset_presets[<entry>]``, e.g. in its yaml), over every preset
        file and under the user's settings: ``dataset_preset: auto`` picks the entry named like the dataset (lower
        case) if there is one, None none, a name that entry."""
        given = self.external_config_dict.get("dataset_presets", self.internal_config_dict.get("dataset_presets"))
        table = given or {}
        name = self.external_config_dict.get("dataset_preset", self.internal_config_dict.get("dataset_preset"))
        if name is None:
            return
        if name == "auto":
            name = str(dataset).lower()
            if name not in table:
                return
        elif name not in table:
            raise ConfigError(
                f"config key 'dataset_preset': expected 'auto', None or one of {sorted(table)}, found {name!r}"
            )
        unknown = [key for key in table[name] if key not in self.internal_config_dict]
        if unknown:
            raise ConfigError(
                f"dataset_presets.{name}: unknown key(s) {unknown} (a preset sets keys the model's defaults define)"
            )
        self.internal_config_dict.update(table[name])
        self._preset_layers.append(dict(table[name]))

    def _infer_presplit_layout(self, dataset, recbole_load_col):
        """Read a folder of pre-split files (``<dataset>.train.inter``, no ``<dataset>.inter``) as such, where
        neither a preset nor the user set ``benchmark_filename``."""
        if self.internal_config_dict.get("benchmark_filename") or "benchmark_filename" in self.external_config_dict:
            return
        folder = os.path.join(self._data_root, dataset)
        if os.path.isfile(os.path.join(folder, f"{dataset}.inter")):
            return
        parts = [p for p in ("train", "valid", "test") if os.path.isfile(os.path.join(folder, f"{dataset}.{p}.inter"))]
        if not parts:
            return
        if parts not in (["train"], ["train", "valid", "test"]):
            raise ConfigError(
                f"dataset folder {folder} holds the pre-split parts {parts}: a run needs train, valid and test "
                f"(fine-tuning) or train alone (pre-training); set benchmark_filename to say which files to read"
            )
        separator = self.external_config_dict.get("field_separator") or self.internal_config_dict["field_separator"]
        with open(os.path.join(folder, f"{dataset}.train.inter"), encoding="utf-8") as f:
            fields = [column.split(":")[0] for column in f.readline().rstrip("\n").split(separator)]
        inferred = {"benchmark_filename": parts}
        if (
            "load_col" not in self.external_config_dict
            and self.internal_config_dict.get("load_col") == recbole_load_col
        ):
            inferred["load_col"] = {**(recbole_load_col or {}), "inter": fields}
        history = self.internal_config_dict["ITEM_ID_FIELD"] + self.internal_config_dict["LIST_SUFFIX"]
        if history in fields and not self.internal_config_dict.get("alias_of_item_id"):
            inferred["alias_of_item_id"] = [history]
        self.internal_config_dict.update(inferred)
        self._preset_layers.append(inferred)

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        self._check_values(final)
        final["data_path"] = self._data_root
        final["mm_features"] = self._layered_mm_features(final)
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final

    def _source(self, key) -> str:
        """Where the user set ``key``: the command line, config_dict or a config file."""
        if key in self.cmd_config_dict:
            return "on the command line"
        if key in self.variable_config_dict:
            return "in config_dict"
        return "in the config files"

    def known_keys(self) -> set:
        """The setting names a run accepts: every key of RecBole's and recbole_mm's defaults for this model and
        dataset (properties files, the dataset folder's yaml), RecBole's argument lists, and the names the user
        declared in ``extra_keys``."""
        declared = self.external_config_dict.get(EXTRA_KEYS) or []
        if isinstance(declared, str):
            declared = [declared]
        if not isinstance(declared, (list, tuple)) or not all(isinstance(k, str) for k in declared):
            raise ConfigError(f"config key '{EXTRA_KEYS}': expected a list of key names, found {declared!r}")
        return set(self.internal_config_dict) | _KEYS_WITHOUT_DEFAULT | set(declared)

    def _check_known_keys(self):
        """Every key of the config files, and of the command line where it holds only settings
        (:attr:`command_line_is_settings`), must be a known setting: a typo would otherwise be accepted and never
        read. ``config_dict`` is left unchecked: programs pass one set of settings to every model through it (the
        results runner's protocols)."""
        known = self.known_keys()
        given = dict(self.file_config_dict)
        if self.command_line_is_settings:
            given.update(self.cmd_config_dict)
        for key in given:
            if key not in known:
                raise ConfigError(unknown_key_message(key, known, self._source(key)))

    def _check_metrics(self, final):
        """``topk`` positive integers, ``metrics`` RecBole's, ``valid_metric`` one of the metrics computed."""
        topk = final.get("topk")
        ks = topk if isinstance(topk, list) else [topk]
        if not ks or not all(_is_int(k) and k >= 1 for k in ks):
            where = self._source("topk") if "topk" in self.external_config_dict else "in the presets"
            raise ConfigError(
                f"config key 'topk': expected positive integers (e.g. [10] or [5, 10]), found {topk!r} ({where})"
            )
        metrics = final.get("metrics")
        metrics = metrics if isinstance(metrics, list) else [metrics]
        unknown = [m for m in metrics if not isinstance(m, str) or m.lower() not in metrics_dict]
        if unknown:
            raise ConfigError(
                f"config key 'metrics': unknown metric(s) {unknown}; RecBole's metrics are {sorted(metrics_dict)}"
            )
        offered = []
        for metric in metrics:
            if metrics_dict[metric.lower()].metric_type == EvaluatorType.RANKING:
                offered += [f"{metric}@{k}" for k in ks]
            else:
                offered.append(metric)
        valid_metric = final.get("valid_metric")
        if not isinstance(valid_metric, str) or valid_metric.lower() not in {m.lower() for m in offered}:
            where = self._source("valid_metric") if "valid_metric" in self.external_config_dict else "in the presets"
            raise ConfigError(
                f"config key 'valid_metric': expected one of the metrics x topk computed ({', '.join(offered)}), "
                f"found {valid_metric!r} ({where})"
            )

    def _init_device(self):
        """RecBole's; a ``gpu_id`` the machine does not have is said in one line (the run goes to the CPU), and
        ``use_gpu: True`` asked explicitly without a visible GPU is an error."""
        super()._init_device()
        final = self.final_config_dict
        if not final.get("single_spec", True) or final["device"].type != "cpu" or not final["use_gpu"]:
            return
        import torch

        visible = torch.cuda.device_count()
        if self.external_config_dict.get("use_gpu") is True:
            raise ConfigError(
                f"config key 'use_gpu': True was asked ({self._source('use_gpu')}), but torch sees no CUDA GPU "
                f"(gpu_id={final['gpu_id']!r}, {visible} visible): use --use_gpu=False to train on the CPU"
            )
        if final["gpu_id"] and "gpu_id" in self.external_config_dict:
            logging.getLogger(__name__).warning(
                f"gpu_id={final['gpu_id']!r} was asked, but torch sees no such CUDA GPU ({visible} visible): "
                f"training runs on the CPU"
            )
            final["use_gpu"] = False

    def _check_values(self, final):
        """Names of the user's settings (:meth:`known_keys`), their types against the defaults, the ranges of
        RecBole's common numeric keys, and ``valid_metric`` against ``metrics`` x ``topk``."""
        self._check_known_keys()
        annotations = {}
        for file in self._annotation_files:
            annotations.update(annotated_types(file))
        for key, value in self.external_config_dict.items():
            if value is None and self.internal_config_dict.get(key) is None:
                continue  # the default itself
            if key in annotations:
                names = annotations[key]
                accepted = any(_ANNOTATED_TYPES[name][0](value) for name in names)
                expected = " or ".join(_ANNOTATED_TYPES[name][1] for name in names)
            elif key in self.internal_config_dict:
                default = self.internal_config_dict[key]
                if isinstance(default, bool):
                    accepted, expected = isinstance(value, bool), "True or False"
                elif _is_number(default):
                    accepted, expected = _is_number(value), "a number"
                else:
                    continue
            else:
                continue
            if not accepted:
                raise ConfigError(f"config key '{key}': expected {expected}, found {value!r} ({self._source(key)})")
        for key, (expected, accepts) in RANGES.items():
            value = final.get(key)
            if value is not None and not accepts(value):
                where = self._source(key) if key in self.external_config_dict else "in the presets"
                raise ConfigError(f"config key '{key}': expected {expected}, found {value!r} ({where})")
        self._check_metrics(final)

    def _layered_mm_features(self, final) -> dict:
        """``mm_features`` with MISSRec's keys folded in, level by level: a modality defined at a higher level
        replaces the same modality defined lower (within one level, MISSRec's keys win)."""
        layers = self._preset_layers + [self.file_config_dict, self.variable_config_dict, self.cmd_config_dict]
        declared = {}
        for layer in layers:
            given = layer.get("mm_features")
            if given is not None:
                if not isinstance(given, dict):
                    raise ConfigError(
                        f"config key 'mm_features': expected a dict of modality -> {{suffix or field, dim}}, "
                        f"found {given!r}"
                    )
                declared.update(given)
            for name, (suffix_key, dim_key) in LEGACY_FEATURE_KEYS.items():
                if layer.get(suffix_key) is not None:
                    declared[name] = {"suffix": layer[suffix_key], "dim": final.get(dim_key)}
        return declared or None


def settings_file(path: str) -> str:
    """``path`` if it exists, else the file of that relative path in the settings tree (:data:`PROPERTIES_DIR`) if
    that exists (``props/MISSRec/cpu.yaml``, ``hyper/SASRec.hyper``), else ``path`` unchanged (for the caller's
    error)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    shipped = os.path.join(PROPERTIES_DIR, path)
    return shipped if os.path.exists(shipped) else path


def unknown_key_message(key: str, known, where: str) -> str:
    """The error for a setting name that no default, preset or ``extra_keys`` declares, with the closest known."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"; the closest known key is '{close[0]}'" if close else ""
    return (
        f"config key '{key}' ({where}) is not a known setting{hint}. A deliberately new key (read by your own "
        f"code) is declared in '{EXTRA_KEYS}', e.g. --{EXTRA_KEYS}=\"['{key}']\""
    )


def has_interactions(folder: str, name: str) -> bool:
    """Whether ``folder`` holds ``<name>.inter`` or ``<name>.train.inter``."""
    return any(os.path.isfile(os.path.join(folder, f"{name}{suffix}")) for suffix in (".inter", ".train.inter"))


def dataset_root(data_path: str, dataset: str) -> str:
    """The folder holding ``<dataset>/``: ``data_path`` or the first of its :data:`DATASET_SUBFOLDERS` whose
    ``<dataset>/`` has interaction files; ``data_path`` itself when none has."""
    for root in [data_path] + [os.path.join(data_path, sub, "") for sub in DATASET_SUBFOLDERS]:
        if has_interactions(os.path.join(root, dataset), dataset):
            return root
    return data_path
