"""Compatibility fixes that let RecBole 1.2.1 run on current numpy, torch and scipy.

:func:`apply` is called by the entry points (``recbole_mm.config.Config``, ``recbole_mm.quick_start``, the command
lines), not on import of the package. It is idempotent: calling it again changes nothing. Each fix is applied only
where the installed library needs it, so on the pinned CPU stack (numpy<2, scipy<1.13) only the torch setting takes
effect, while on a Python 3.12 stack (numpy 2, scipy 1.18) all three do.

1. numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which
   ``recbole.config.Config.compatibility_settings`` reads on every ``Config(...)``; ray 2.6 reads
   ``np.bool8``. The aliases are restored to the dtypes they always meant. RecBole's evaluator and
   ``Interaction`` use ``np.float``, ``np.int`` and ``np.bool`` (removed in numpy 1.24), which only
   ``Config(...)`` sets: a model reloaded from a checkpoint (whose config is unpickled, not built) would
   fail in NDCG, so they are set here too, to the same dtypes ``compatibility_settings`` gives them.
2. torch >= 2.6 loads checkpoints with ``weights_only=True`` by default, and RecBole checkpoints pickle
   the ``Config``: ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` makes RecBole's own ``torch.load`` calls
   trusted loads (checkpoints are local files the user wrote). Our own loads pass
   ``weights_only=False`` explicitly.
3. scipy >= 1.13 removed ``dok_matrix._update``, which RecBole's graph models (LightGCN, NGCF, ...)
   call to fill their adjacency matrices.
4. pandas warns (``FutureWarning``) about RecBole's own code on every dataset load (chained assignment in
   ``recbole/data/dataset/dataset.py``): warnings raised from RecBole's modules are ignored; the same warnings from
   any other module still show.
"""

import os
import warnings

import numpy as np

_NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
}

# The removed builtin-type aliases, as ``recbole.config.Config.compatibility_settings`` sets them.
_RECBOLE_ALIASES = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}

TORCH_LOAD_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def missing_numpy_aliases() -> list:
    """Names of the numpy aliases RecBole/ray need that this numpy lacks."""
    return [name for name in {**_NUMPY_ALIASES, **_RECBOLE_ALIASES} if name not in np.__dict__]


def _dok_update(self, data: dict) -> None:
    """Stand-in for ``dok_matrix._update``: bulk-set ``{(row, col): value}`` entries without checks."""
    store = getattr(self, "_dict", None)
    if store is None:  # scipy < 1.13: the matrix is itself a dict
        dict.update(self, data)
    else:
        store.update(data)


# FutureWarnings attributed to RecBole's own modules (pandas points its warnings at the caller's line)
RECBOLE_MODULES = r"recbole\."


def apply() -> None:
    """Apply every fix the installed stack needs (idempotent)."""
    for name in missing_numpy_aliases():
        setattr(np, name, {**_NUMPY_ALIASES, **_RECBOLE_ALIASES}[name])
    warnings.filterwarnings("ignore", category=FutureWarning, module=RECBOLE_MODULES)
    os.environ.setdefault(TORCH_LOAD_ENV, "1")
    from scipy.sparse import dok_matrix

    if not hasattr(dok_matrix, "_update"):
        dok_matrix._update = _dok_update
