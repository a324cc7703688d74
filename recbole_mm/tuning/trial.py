"""One sweep trial: train a sampled configuration with the trunk's ``objective_function`` and report its
validation metric after every epoch (to Ray Tune, or into a local record for hyperopt).

Test metrics are computed by every completed trial (``objective_function`` tests the best checkpoint)
but kept out of every selection: the sweep picks its winner on validation only, then reads the
winner's test result (:mod:`recbole_mm.tuning.results`).
"""

import inspect
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from recbole_mm.tuning.space import Param, cast_params

COMPLETED, STOPPED, ERROR = "completed", "stopped", "error"


@dataclass
class SweepSetup:
    """Everything a trial needs, resolved and checked in the driver before any trial starts.

    Paths are absolute (Ray runs trials in other working directories, possibly on other nodes).
    ``fixed`` holds the command-line overrides plus the absolute ``data_path``; ``file_config`` the
    merged content of ``config_files`` (written into the best-config YAML).
    """

    model: str
    dataset: str
    config_files: List[str]
    fixed: Dict[str, Any]
    file_config: Dict[str, Any]
    space: List[Param]
    valid_metric: str
    bigger: bool
    epochs: int
    seed: int
    output_dir: str

    def trial_config_dict(self, sampled: Dict[str, Any], gpu_id: Optional[str] = None) -> Dict[str, Any]:
        """The ``config_dict`` of one trial: fixed overrides, the sampled point, and a fresh checkpoint folder."""
        checkpoints = os.path.join(self.output_dir, "checkpoints")
        os.makedirs(checkpoints, exist_ok=True)
        config_dict = dict(self.fixed, model=self.model, dataset=self.dataset, **cast_params(self.space, sampled))
        config_dict["checkpoint_dir"] = tempfile.mkdtemp(prefix="trial-", dir=checkpoints)
        if gpu_id is not None:
            config_dict["gpu_id"] = gpu_id
        return config_dict

    def best_of(self, scores: List[float]) -> Optional[float]:
        """The best of ``scores`` in the direction of the validation metric (None if empty)."""
        if not scores:
            return None
        return max(scores) if self.bigger else min(scores)


@dataclass
class TrialRecord:
    """What the sweep keeps of one trial.

    ``status``: ``completed`` (ran to its end and was tested), ``stopped`` (pruned by the scheduler)
    or ``error`` (raised; ``error`` holds the exception line). ``curve`` is ``[(epoch, valid score)]``
    with 1-based epochs.
    """

    trial_id: str
    params: Dict[str, Any]
    status: str
    curve: List[Tuple[int, float]] = field(default_factory=list)
    best_valid_score: Optional[float] = None
    error: str = ""
    test_result: Dict[str, float] = field(default_factory=dict)
    saved_model_file: str = ""
    peak_rss_mb: Optional[float] = None  # peak resident memory of the trial's worker process (Ray trials)

    @property
    def epochs_run(self) -> int:
        return max((epoch for epoch, _ in self.curve), default=0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_trial(setup: SweepSetup, sampled: Dict[str, Any], on_epoch: Callable, gpu_id: Optional[str] = None) -> dict:
    """Train and test one sampled point in this process; ``on_epoch(epoch_idx, valid_score)`` after each validation."""
    from recbole_mm.quick_start import objective_function

    config_dict = setup.trial_config_dict(sampled, gpu_id)
    return objective_function(config_dict, setup.config_files, saved=True, callback_fn=on_epoch)


def report_to_tune(metrics: Dict[str, Any]) -> None:
    """Report ``metrics`` from inside a Ray Tune trial, whichever Ray API this installation has:
    ``ray.tune.report(dict)`` (recent Ray), ``ray.train.report(dict)`` (2.7 and later) or
    ``ray.air.session.report(dict)`` (2.6 and earlier, which recbole 1.2.1 pins)."""
    from ray import tune

    report = getattr(tune, "report", None)  # the legacy tune.report(**kwargs) takes no dict
    if report is None or "metrics" not in inspect.signature(report).parameters:
        try:
            from ray.train import report
        except ImportError:
            from ray.air.session import report
    report(metrics)


def ray_trainable(sampled: Dict[str, Any], setup: SweepSetup) -> None:
    """The Ray Tune function trainable: one report per validation, then a final one (``finished``) with the
    best validation score, the test result and the checkpoint path.

    The trial sees only the GPUs Ray assigned it: RecBole's ``gpu_id`` is set to the
    ``CUDA_VISIBLE_DEVICES`` Ray gives the worker (RecBole would otherwise overwrite it).
    """
    last = {}

    def on_epoch(epoch_idx: int, valid_score: float) -> None:
        last.update(epoch=epoch_idx + 1, valid_score=float(valid_score), peak_rss_mb=peak_rss_mb())
        report_to_tune(dict(last))

    result = train_trial(setup, sampled, on_epoch, gpu_id=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    final = dict(last, finished=True, best_valid_score=float(result["best_valid_score"]), peak_rss_mb=peak_rss_mb())
    # A JSON string, not metrics: Ray's progress table shows numbers only, so nobody reads test scores
    # while the sweep runs; the result files show the winner's alone.
    final["test_result"] = json.dumps({k: float(v) for k, v in result["test_result"].items()})
    final["saved_model_file"] = result["saved_model_file"] or ""
    report_to_tune(final)


def local_trial(setup: SweepSetup, sampled: Dict[str, Any], trial_id: str, on_epoch: Callable = None) -> TrialRecord:
    """Run one trial in this process (the hyperopt tool); an exception is recorded, not raised.

    ``on_epoch(trial_id, epoch, score)`` is called after each validation (progress display).
    """
    curve = []

    def record(epoch_idx: int, valid_score: float) -> None:
        curve.append((epoch_idx + 1, float(valid_score)))
        if on_epoch is not None:
            on_epoch(trial_id, epoch_idx + 1, float(valid_score))

    try:
        with warnings.catch_warnings():  # RecBole's pandas FutureWarnings, as in Ray workers (ray_tool.WORKER_ENV)
            warnings.simplefilter("ignore", FutureWarning)
            result = train_trial(setup, sampled, record)
    except Exception as err:  # bad config, NaN loss, OOM...: recorded, and the sweep goes on
        best = setup.best_of([s for _, s in curve])
        return TrialRecord(trial_id, dict(sampled), ERROR, curve, best, error=f"{type(err).__name__}: {err}")
    return TrialRecord(
        trial_id,
        dict(sampled),
        COMPLETED,
        curve,
        float(result["best_valid_score"]),
        test_result={k: float(v) for k, v in result["test_result"].items()},
        saved_model_file=result["saved_model_file"] or "",
    )
