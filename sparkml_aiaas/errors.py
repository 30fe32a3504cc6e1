"""Exceptions for expected user errors.

Everything a user can cause (bad input data, a bad config, a missing file)
raises a subclass of :class:`SparkmlAiaasError` with a message that names the
problem.  The CLI prints such errors as one line and exits non-zero; any other
exception is a bug and keeps its traceback.
"""


class SparkmlAiaasError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class ConfigError(SparkmlAiaasError, ValueError):
    """A configuration file or argument is invalid."""


class DataValidationError(SparkmlAiaasError, ValueError):
    """Input data cannot be used as given (NaN, wrong labels, missing columns...)."""


class InputNotFoundError(SparkmlAiaasError, FileNotFoundError):
    """An input path does not exist."""


class ModelFormatError(SparkmlAiaasError, ValueError):
    """A saved model is missing files, is corrupt, or has an unknown format version."""
