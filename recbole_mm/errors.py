"""Errors recbole_mm raises for bad input: each message names the file, field or key, what was
expected and what was found. The command line prints them without a traceback."""


class RecBoleMMError(Exception):
    """Base class: a user-facing problem with data or configuration."""


class DatasetNotFoundError(RecBoleMMError):
    """The dataset directory or its interaction files do not exist."""


class FeatureFileError(RecBoleMMError):
    """A multi-modal feature source is missing, malformed or misaligned with the item tokens."""


class DataFieldError(RecBoleMMError):
    """An atomic file lacks a field the configuration or the model needs."""


class ModelNotFoundError(RecBoleMMError, ValueError):
    """No model of that name in recbole_mm or RecBole."""


class ConfigError(RecBoleMMError):
    """A required setting is missing or contradicts another."""


class SearchSpaceError(RecBoleMMError, ValueError):
    """A search-space file is malformed: unknown parameter type, bad range or bad syntax."""


class SweepSetupError(RecBoleMMError):
    """A sweep option cannot be honoured (no GPU, unreachable cluster, clashing parameters...)."""


class CheckpointError(RecBoleMMError):
    """A checkpoint file is missing, incomplete or not a recbole_mm/RecBole checkpoint."""


class RunError(RecBoleMMError):
    """A run of a results table failed; the message names the table, row, seed and the log's last lines."""
