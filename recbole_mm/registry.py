"""Model, dataset and trainer lookup: recbole_mm's own models first, RecBole's as the fallback.

RecBole has no model registry (``recbole.utils.get_model`` only searches ``recbole.model``), so, like
RecBole-GNN, recbole_mm mirrors its lookup functions. A model ``Name`` lives in
``recbole_mm/model/<family>_recommender/<name>.py`` (or is added with :func:`register_model`). The model class
declares its dataset and trainer (``dataset_class``, ``trainer_class``, set once on each family base): nothing
here is keyed on a model's name.

Models and trainers are found by module name when a lookup is made (as RecBole's own ``Config`` finds models), so
this module imports only the ground floor and sits just above it: ``Config`` resolves model names through it.
"""

import importlib
import importlib.util
import pkgutil

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_mm.errors import ConfigError, ModelNotFoundError
from recbole_mm.runtime import keeping_anomaly_mode

MODEL_FAMILIES = ("sequential_recommender", "general_recommender")
RECBOLE_FAMILIES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)
RECBOLE_EXLIB_MODELS = ("lightgbm", "xgboost")
TRAINER_MODULE = "recbole_mm.trainer"

_registered = {}


def register_model(model_class: type) -> type:
    """Make ``model_class`` known to :func:`get_model` (and so to ``Config``, the quick start and the command line)
    under its class name; a model defined outside the package, e.g. a subclass of a family base. Usable as a class
    decorator. Registering the same class again changes nothing.

    Raises:
        ConfigError: another class is already registered under that name, or the name is one of recbole_mm's.
    """
    name = model_class.__name__
    known = _registered.get(name)
    if known is not None and known is not model_class:
        raise ConfigError(f"register_model: a model named {name} is already registered ({known.__module__}.{name})")
    if known is None and name.lower() in {module_name for _, module_name in _family_modules()}:
        raise ConfigError(f"register_model: {name} is the name of a model recbole_mm ships; choose another name")
    _registered[name] = model_class
    return model_class


def _family_modules():
    """Yield ``(family, module_name)`` for every model file recbole_mm ships."""
    for family in MODEL_FAMILIES:
        package = importlib.import_module(f"recbole_mm.model.{family}")
        for info in pkgutil.iter_modules(package.__path__):
            yield family, info.name


def list_models() -> list:
    """Names of the models recbole_mm ships (class names, as ``--model`` takes them)."""
    names = []
    for family, module_name in _family_modules():
        module = importlib.import_module(f"recbole_mm.model.{family}.{module_name}")
        names += [n for n in dir(module) if n.lower() == module_name and isinstance(getattr(module, n), type)]
    return sorted(names)


def get_model(model_name: str):
    r"""Return the model class called ``model_name``: a registered one, recbole_mm's, else RecBole's.

    RecBole's own ``get_model`` imports ``recbole.model.exlib_recommender`` (lightgbm, xgboost) for any
    name it has not found yet, so an unknown name raises ``ModuleNotFoundError: lightgbm`` where those
    are not installed; the exlib family is therefore only searched for its two models.

    Importing RecBole's model packages leaves torch's autograd anomaly mode as it was (see
    :func:`recbole_mm.runtime.keeping_anomaly_mode`).

    Raises:
        ModelNotFoundError: no such model in either package (the message lists recbole_mm's models).
    """
    if model_name in _registered:
        return _registered[model_name]
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


def get_dataset_class(model_class):
    """The dataset class ``model_class`` declares (``dataset_class``; every recbole_mm family base sets one), or
    None for a model that declares none (RecBole's ``create_dataset`` then chooses)."""
    return getattr(model_class, "dataset_class", None)


def get_trainer(model_type, model_name: str):
    r"""Return the trainer the model declares: its ``trainer_class`` (a class, or the name of a class in
    :mod:`recbole_mm.trainer`; every recbole_mm family base sets one). A model that declares none (RecBole's) gets
    RecBole's choice as recbole_mm runs it (:func:`recbole_mm.trainer.for_recbole_mm`: atomic checkpoint writes,
    and no host sync per step where RecBole's own epoch loop is used).

    Raises:
        ConfigError: the declared name is not a class of :mod:`recbole_mm.trainer`.
    """
    trainer_module = importlib.import_module(TRAINER_MODULE)
    try:
        model_class = get_model(model_name)
    except ModelNotFoundError:
        model_class = None
    declared = getattr(model_class, "trainer_class", None)
    if declared is None:
        return trainer_module.for_recbole_mm(recbole_get_trainer(model_type, model_name))
    if isinstance(declared, str):
        found = getattr(trainer_module, declared, None)
        if not isinstance(found, type):
            raise ConfigError(
                f"{model_name}.trainer_class = {declared!r}: {TRAINER_MODULE} has no such trainer class "
                f"(declare the class itself for a trainer defined elsewhere)"
            )
        return found
    return declared

