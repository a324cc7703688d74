"""The Ray Tune tool: trials in parallel Ray workers (local or on a cluster), the validation metric
reported after every epoch so ASHA prunes bad trials early. Only the tuning package imports Ray, and
only when this tool is chosen."""

import json
import math
import os
import socket
from typing import Callable, Dict, List, Optional

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from recbole_mm.errors import SweepSetupError
from recbole_mm.tuning.space import Param
from recbole_mm.tuning.trial import COMPLETED, ERROR, STOPPED, SweepSetup, TrialRecord, ray_trainable

# Worker processes load RecBole checkpoints holding a pickled Config (torch >= 2.6 refuses them otherwise);
# RecBole's pandas FutureWarnings, relayed from every worker, would drown the progress lines.
WORKER_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast when a ``host:port`` (or ``ray://host:port``) cluster address does not answer.

    Raises:
        SweepSetupError: malformed address, or nothing listening there.
    """
    if address == "auto":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise SweepSetupError(f"--address must be 'auto', 'host:port' or 'ray://host:port', found '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise SweepSetupError(
            f"--address {address}: no Ray cluster answers there ({err}); start one with "
            f"'ray start --head' or leave --address out for a local Ray"
        ) from None


def connect(address: Optional[str]) -> bool:
    """Start a local Ray, or join the cluster at ``address``; reuse a session already open in this process.

    Returns:
        whether this call started the session (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    except ConnectionError as err:
        raise SweepSetupError(f"--address {address}: cannot join a Ray cluster ({err})") from None
    return True


def check_cluster_gpus(gpus_per_trial: float) -> None:
    """``--gpus_per_trial`` needs a GPU in the Ray cluster (local or joined)."""
    available = ray.cluster_resources().get("GPU", 0)
    if gpus_per_trial > 0 and available < gpus_per_trial:
        raise SweepSetupError(
            f"--gpus_per_trial {gpus_per_trial:g} but the Ray cluster has {available:g} GPU(s); "
            f"use --gpus_per_trial 0 on a CPU-only machine"
        )


def ray_space(space: List[Param], grid: bool) -> Dict:
    """Ray Tune domains for ``space``; with ``grid`` every (choice) parameter becomes a grid axis."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = tune.grid_search(list(p.values)) if grid else tune.choice(list(p.values))
        elif p.kind == "uniform":
            out[p.name] = tune.uniform(p.low, p.high)
        elif p.kind == "loguniform":
            out[p.name] = tune.loguniform(p.low, p.high)
        elif p.kind == "quniform":
            out[p.name] = tune.quniform(p.low, p.high, p.q)
        else:
            out[p.name] = tune.randint(int(p.low), int(p.high))
    return out


class _ProgressCallback(tune.Callback):
    """Relays trial events to the sweep's progress display."""

    def __init__(self, progress: Callable):
        self.progress = progress

    def on_trial_start(self, iteration, trials, trial, **info):
        self.progress("start", trial.trial_id, params=trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not result.get("finished"):
            self.progress("epoch", trial.trial_id, epoch=result["epoch"], score=result["valid_score"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        status = COMPLETED if last.get("finished") else STOPPED
        self.progress(
            "end", trial.trial_id, status=status, epochs=last.get("epoch", 0), best=last.get("best_valid_score")
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        self.progress("end", trial.trial_id, status=ERROR, epochs=last.get("epoch", 0), error="see the trial table")


def _error_line(error: Exception) -> str:
    """The exception line of a trial's error (Ray wraps it in a long traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return line
    return lines[-1] if lines else type(error).__name__


def _record(result, setup: SweepSetup) -> TrialRecord:
    """A :class:`TrialRecord` from a Ray ``Result``."""
    # a trial that failed or was stopped before its first report has no metrics, no frame and maybe no config
    metrics = result.metrics or {}
    frame = result.metrics_dataframe
    curve = []
    if frame is not None and "epoch" in frame and "valid_score" in frame:
        for epoch, score in zip(frame["epoch"], frame["valid_score"]):
            if not math.isnan(epoch) and (not curve or int(epoch) > curve[-1][0]):
                curve.append((int(epoch), float(score)))
    trial_dir = str(getattr(result, "path", None) or getattr(result, "log_dir", None) or "")
    trial_id = metrics.get("trial_id") or os.path.basename(trial_dir) or "unknown trial"
    config = result.config or {}
    params = {p.name: config.get(p.name) for p in setup.space}
    best = setup.best_of([s for _, s in curve])
    peak = None
    if frame is not None and "peak_rss_mb" in frame:
        peak = float(frame["peak_rss_mb"].max())
    if result.error is not None:
        return TrialRecord(trial_id, params, ERROR, curve, best, error=_error_line(result.error), peak_rss_mb=peak)
    if not metrics.get("finished"):
        return TrialRecord(trial_id, params, STOPPED, curve, best, peak_rss_mb=peak)
    return TrialRecord(
        trial_id,
        params,
        COMPLETED,
        curve,
        float(metrics["best_valid_score"]),
        test_result=json.loads(metrics["test_result"]),
        saved_model_file=metrics.get("saved_model_file", ""),
        peak_rss_mb=float(metrics.get("peak_rss_mb") or peak or 0) or None,
    )


def run_ray(setup: SweepSetup, options, progress: Callable) -> List[TrialRecord]:
    """Run the sweep on the Ray session already connected (see :func:`connect`)."""
    grid = options.search == "grid"
    if options.scheduler == "asha":
        # max_t one past the epoch limit: a trial reaching the limit is never stopped for it, so it
        # always sends its final report (the test result).
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=setup.epochs + 1,
            grace_period=options.grace_period,
            reduction_factor=options.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, setup=setup),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    run_config_class = getattr(tune, "RunConfig", None) or ray.air.RunConfig
    failure_config_class = getattr(tune, "FailureConfig", None) or ray.air.FailureConfig
    tuner = tune.Tuner(
        trainable,
        param_space=ray_space(setup.space, grid),
        tune_config=tune.TuneConfig(
            metric="valid_score",
            mode="max" if setup.bigger else "min",
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(max_concurrent=options.max_concurrent, random_state=setup.seed),
            num_samples=1 if grid else options.num_samples,
        ),
        run_config=run_config_class(
            name="ray",
            storage_path=setup.output_dir,
            callbacks=[_ProgressCallback(progress)],
            failure_config=failure_config_class(max_failures=0),
            verbose=1,
        ),
    )
    results = tuner.fit()
    records = [_record(result, setup) for result in results]
    return sorted(records, key=lambda r: r.trial_id)
