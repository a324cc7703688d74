"""Hyperparameter sweeps for recbole_mm and RecBole models, on Ray Tune or hyperopt.

Each trial reports its validation metric after every epoch (so ASHA can stop bad trials early); the
winner is chosen on validation and only its test result is read. Ray and hyperopt are imported only
when a sweep runs with that tool. Entry points: ``run_hyper.py``, ``python -m recbole_mm.tuning``,
:func:`run_sweep`.
"""

from recbole_mm.tuning.space import Param, load_search_space
from recbole_mm.tuning.sweep import SweepOptions, SweepResult, run_sweep

__all__ = ["Param", "load_search_space", "SweepOptions", "SweepResult", "run_sweep"]
