"""Run a hyperparameter sweep: check everything first (search space, model, dataset, GPUs, cluster
address), then run the trials with Ray Tune or hyperopt, choose the winner on validation and write
the results (:mod:`recbole_mm.tuning.results`)."""

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import yaml

from recbole_mm.errors import SweepSetupError
from recbole_mm.tuning.space import Param, grid_points, load_search_space
from recbole_mm.tuning.trial import ERROR, SweepSetup, TrialRecord

TOOLS = ("ray", "hyperopt")
SEARCHES = {"ray": ("random", "grid"), "hyperopt": ("random", "grid", "bayes")}
SCHEDULERS = ("asha", "fifo")


@dataclass
class SweepOptions:
    """How to sweep (the command-line options of ``run_hyper.py``)."""

    tool: str = "ray"
    search: str = "random"
    num_samples: int = 10
    scheduler: str = "asha"
    max_concurrent: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: Optional[str] = None
    grace_period: int = 1
    reduction_factor: int = 2

    def check(self) -> None:
        """Raises SweepSetupError for an option value that cannot work."""
        if self.tool not in TOOLS:
            raise SweepSetupError(f"--tool must be one of {TOOLS}, found '{self.tool}'")
        if self.search not in SEARCHES[self.tool]:
            raise SweepSetupError(
                f"--search {self.search} is not available with --tool {self.tool} (choose from {SEARCHES[self.tool]})"
            )
        if self.scheduler not in SCHEDULERS:
            raise SweepSetupError(f"--scheduler must be one of {SCHEDULERS}, found '{self.scheduler}'")
        for name in ("num_samples", "grace_period", "reduction_factor"):
            if getattr(self, name) < 1:
                raise SweepSetupError(f"--{name} must be >= 1, found {getattr(self, name)}")
        if self.reduction_factor < 2:
            raise SweepSetupError(f"--reduction_factor must be >= 2, found {self.reduction_factor}")
        if self.max_concurrent < 0 or self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise SweepSetupError(
                f"need --max_concurrent >= 0, --cpus_per_trial > 0, --gpus_per_trial >= 0; found "
                f"{self.max_concurrent}, {self.cpus_per_trial:g}, {self.gpus_per_trial:g}"
            )
        if self.tool == "hyperopt" and (self.address or self.gpus_per_trial):
            raise SweepSetupError(
                "--address and --gpus_per_trial place trials on Ray: they need --tool ray "
                "(hyperopt trials run in this process, on the device of the config's gpu_id)"
            )


@dataclass
class SweepResult:
    """Every trial, the winner (None if no trial completed), the output files and the wall time."""

    records: List[TrialRecord]
    best: Optional[TrialRecord]
    files: Dict[str, str]
    wall_s: float


class Progress:
    """One line per trial event on standard output, with the count of finished trials."""

    def __init__(self, setup: SweepSetup, total: int):
        self.metric, self.total, self.done = setup.valid_metric, total, 0

    def __call__(self, kind: str, trial_id: str, **fields) -> None:
        if kind == "start":
            shown = ", ".join(f"{k}={v}" for k, v in fields["params"].items())
            line = f"[{trial_id}] start: {shown}"
        elif kind == "epoch":
            line = f"[{trial_id}] epoch {fields['epoch']}: valid {self.metric} = {fields['score']:.4f}"
        else:
            record = fields.get("record")
            status = record.status if record else fields["status"]
            epochs = record.epochs_run if record else fields.get("epochs", 0)
            self.done += 1
            detail = (record.error if record else fields.get("error", "")) if status == ERROR else ""
            line = (
                f"[{trial_id}] {status} after {epochs} epoch(s) {detail}".rstrip()
                + f"  ({self.done}/{self.total} trials)"
            )
        print(line, flush=True)


def parse_overrides(args: List[str]) -> Dict[str, Any]:
    """``--key=value`` arguments as config values, converted as RecBole converts its command line."""
    from recbole_mm.config import Config

    overrides = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise SweepSetupError(f"unrecognised argument '{arg}': fixed overrides are written --key=value")
        key, value = arg[2:].split("=", 1)
        overrides[key] = value
    return Config._convert_config_dict(None, overrides)  # RecBole's own conversion; it does not use self


def _check_local_gpus(options: SweepOptions) -> None:
    if options.gpus_per_trial > 0 and not options.address:
        import torch

        if torch.cuda.device_count() == 0:
            raise SweepSetupError(
                f"--gpus_per_trial {options.gpus_per_trial:g} but this machine has no CUDA GPU; "
                f"use --gpus_per_trial 0, or --address to join a cluster with GPUs"
            )


def prepare_setup(
    model: str,
    dataset: str,
    config_files: Optional[List[str]],
    overrides: Dict[str, Any],
    space: List[Param],
    output_dir: str,
) -> SweepSetup:
    """Resolve and check the sweep's configuration in this process, before any trial.

    Raises:
        ModelNotFoundError, DatasetNotFoundError: unknown model or dataset.
        SweepSetupError: a config file is missing, a searched name is not a known setting (the closest known
            one named), a parameter is both fixed and searched, or no validation would run (``eval_step`` >
            ``epochs``).
    """
    from recbole_mm.config import Config, unknown_key_message
    from recbole_mm.data.utils import ensure_dataset
    from recbole_mm.registry import get_model

    get_model(model)
    files = [os.path.abspath(f) for f in config_files or []]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise SweepSetupError(f"--config_files: not found: {', '.join(missing)}")
    clash = sorted(set(overrides) & {p.name for p in space})
    if clash:
        raise SweepSetupError(f"parameter(s) {clash} are both searched (params file) and fixed (--key=value); keep one")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # RecBole's Config overwrites it; Ray must see every GPU
    try:
        config = Config(model=model, dataset=dataset, config_file_list=files, config_dict=dict(overrides))
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    known = config.known_keys()
    for param in space:
        if param.name not in known:
            raise SweepSetupError(f"{param.where}: {unknown_key_message(param.name, known, 'searched')}")
    ensure_dataset(config)
    if not 0 < config["eval_step"] <= config["epochs"]:
        raise SweepSetupError(
            f"eval_step={config['eval_step']} with epochs={config['epochs']}: trials would never validate, so "
            f"nothing could be reported or selected; use 1 <= eval_step <= epochs"
        )
    file_config = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            file_config.update(yaml.load(f, Loader=config.yaml_loader) or {})
    fixed = dict(overrides)
    fixed["data_path"] = os.path.dirname(os.path.abspath(config["data_path"]))  # Config appended the dataset name
    os.makedirs(output_dir, exist_ok=True)
    return SweepSetup(
        model=model,
        dataset=dataset,
        config_files=files,
        fixed=fixed,
        file_config=file_config,
        space=space,
        valid_metric=config["valid_metric"],
        bigger=bool(config["valid_metric_bigger"]),
        epochs=int(config["epochs"]),
        seed=int(config["seed"]),
        output_dir=os.path.abspath(output_dir),
    )


def default_output_dir(model: str, dataset: str) -> str:
    return os.path.abspath(os.path.join("saved", "hyper", f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"))


def run_sweep(
    model: str,
    dataset: str,
    params_file: str,
    config_files: Optional[List[str]] = None,
    overrides: Optional[Dict[str, Any]] = None,
    options: Optional[SweepOptions] = None,
    output_dir: Optional[str] = None,
) -> SweepResult:
    r"""Sweep ``model`` on ``dataset`` over the space in ``params_file``.

    Every check runs before the first trial. Each trial reports its validation metric after every
    epoch; the winner is the completed trial with the best validation score (``valid_metric``), and
    only its test result is read. A failing trial is recorded with its error and the others go on.

    With ``--tool ray``, a Ray session already open in this process is reused (and left open);
    otherwise one is started (or joined at ``options.address``) and shut down at the end.

    Returns:
        :class:`SweepResult`; its ``files`` are ``trials.csv``, ``trials.md``, ``best_config.yaml``,
        ``valid_curves.png`` and ``summary.json`` under ``output_dir``.
    """
    from recbole_mm.tuning.results import select_best, write_outputs

    options = options or SweepOptions()
    options.check()
    space = load_search_space(params_file)
    total = grid_points(space) if options.search == "grid" else options.num_samples
    _check_local_gpus(options)
    if options.tool == "ray" and options.address:
        from recbole_mm.tuning.ray_tool import check_address

        check_address(options.address)
    setup = prepare_setup(
        model, dataset, config_files, overrides or {}, space, output_dir or default_output_dir(model, dataset)
    )
    progress = Progress(setup, total)
    start = time.perf_counter()
    if options.tool == "ray":
        from recbole_mm.tuning import ray_tool

        owns_session = ray_tool.connect(options.address)
        try:
            ray_tool.check_cluster_gpus(options.gpus_per_trial)
            records = ray_tool.run_ray(setup, options, progress)
        finally:
            if owns_session:
                ray_tool.ray.shutdown()
    else:
        from recbole_mm.tuning.hyperopt_tool import run_hyperopt

        records = run_hyperopt(setup, options.search, options.num_samples, progress)
    wall_s = time.perf_counter() - start
    best = select_best(records, setup.bigger)
    extra = dict(
        tool=options.tool,
        search=options.search,
        scheduler=options.scheduler if options.tool == "ray" else None,
        wall_s=wall_s,
    )
    files = write_outputs(setup, records, best, extra)
    return SweepResult(records, best, files, wall_s)
