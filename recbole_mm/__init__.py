"""recbole_mm: multi-modal recommendation models as a RecBole extension.

Importing the package changes no global state and imports nothing else. The compatibility fixes of
:mod:`recbole_mm.compat` (RecBole 1.2.1 on numpy 2, torch >= 2.6, scipy >= 1.13) are applied by the entry points:
:class:`recbole_mm.config.Config`, :mod:`recbole_mm.quick_start` and the command lines.
"""

__version__ = "0.1.0"
