"""The hyperopt tool: trials one after another in this process, sampled by hyperopt (random, TPE) or
enumerated (grid, RecBole's ``exhaustive_search``). No pruning; every trial is recorded."""

import math
from importlib.metadata import version
from typing import Callable, Dict, List

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, rand, tpe

from recbole_mm.tuning.space import Param, grid_points
from recbole_mm.tuning.trial import ERROR, SweepSetup, TrialRecord, local_trial


def hyperopt_space(space: List[Param]) -> Dict:
    """hyperopt expressions for ``space`` (loguniform takes log bounds, as hyperopt wants)."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = hp.choice(p.name, list(p.values))
        elif p.kind == "uniform":
            out[p.name] = hp.uniform(p.name, p.low, p.high)
        elif p.kind == "loguniform":
            out[p.name] = hp.loguniform(p.name, math.log(p.low), math.log(p.high))
        elif p.kind == "quniform":
            out[p.name] = hp.quniform(p.name, p.low, p.high, p.q)
        else:
            out[p.name] = hp.randint(p.name, int(p.low), int(p.high))
    return out


def _rstate(seed: int):
    """hyperopt < 0.2.7 wants a ``RandomState``, later versions a ``Generator``."""
    major, minor, patch = (int(x) for x in version("hyperopt").split(".")[:3])
    return np.random.default_rng(seed) if (major, minor, patch) >= (0, 2, 7) else np.random.RandomState(seed)


def run_hyperopt(setup: SweepSetup, search: str, num_samples: int, progress: Callable) -> List[TrialRecord]:
    """Run the sweep; ``progress(kind, trial_id, **fields)`` shows what happens."""
    if search == "grid":
        from recbole.trainer.hyper_tuning import exhaustive_search

        algo, max_evals = exhaustive_search, grid_points(setup.space)
    else:
        algo, max_evals = (tpe.suggest if search == "bayes" else rand.suggest), num_samples
    records = []

    def objective(sampled: Dict) -> Dict:
        sampled = {k: v.item() if isinstance(v, np.generic) else v for k, v in sampled.items()}  # plain Python values
        trial_id = f"hyperopt_{len(records):05d}"
        progress("start", trial_id, params=sampled)
        record = local_trial(setup, sampled, trial_id, on_epoch=lambda t, e, s: progress("epoch", t, epoch=e, score=s))
        records.append(record)
        progress("end", trial_id, record=record)
        if record.status == ERROR:
            return {"status": STATUS_FAIL, "error": record.error}
        sign = -1.0 if setup.bigger else 1.0
        return {"status": STATUS_OK, "loss": sign * record.best_valid_score}

    fmin(
        objective,
        hyperopt_space(setup.space),
        algo=algo,
        max_evals=max_evals,
        trials=Trials(),
        rstate=_rstate(setup.seed),
        show_progressbar=False,
        return_argmin=False,
    )
    return records
