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


class MissingDependencyError(SparkmlAiaasError, ImportError):
    """An optional dependency this feature needs is not installed (the message names the extra)."""


#: The extra that installs each optional top-level module.
EXTRAS = {"pyspark": "spark", "py4j": "spark", "grpc": "connect", "torch": "torch",
          "xgboost": "xgboost", "skops": "sklearn", "fastapi": "serve", "uvicorn": "serve",
          "deltalake": "delta", "mlflow": "mlflow"}


def missing_dependency(exc: ImportError) -> ImportError:
    """``exc`` as a :class:`MissingDependencyError` naming the pip extra when it is an
    optional dependency of ours, else ``exc`` unchanged (raise the result ``from exc``)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return exc
    if extra == "spark":
        hint = ("pip install 'sparkml_aiaas[spark]' for a local Spark; on Databricks or with "
                "Databricks Connect / pyspark-client use the pyspark those provide")
    else:
        hint = f"pip install 'sparkml_aiaas[{extra}]'"
    return MissingDependencyError(f"{name} is not installed, and this needs it: {hint}")
