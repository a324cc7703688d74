"""Errors of the sweep tool: each raised before any trial starts, naming the file, line, option or key."""

from recbole_mm.errors import RecBoleMMError


class SearchSpaceError(RecBoleMMError, ValueError):
    """A search-space file is malformed: unknown parameter type, bad range or bad syntax."""


class SweepSetupError(RecBoleMMError):
    """A sweep option cannot be honoured (no GPU, unreachable cluster, clashing parameters...)."""
