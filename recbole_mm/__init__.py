"""recbole_mm: multi-modal recommendation models as a RecBole extension.

Importing the package applies :mod:`recbole_mm.compat` before any RecBole module is imported, so
RecBole 1.2.1 runs on the CPU stack (numpy<2, pandas<3) and on Python 3.12 with numpy 2.
"""

from recbole_mm import compat

compat.apply()

__version__ = "0.1.0"

from recbole_mm import prepare  # noqa: E402  registers the embedded datasets
