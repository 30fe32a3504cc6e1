"""Model registry: numbered, checksummed, optionally signed model versions on a filesystem.

>>> from sparkml_aiaas.registry import ModelRegistry          # doctest: +SKIP
>>> registry = ModelRegistry("/mnt/models")                   # doctest: +SKIP
>>> version = registry.register(model, "breast_cancer", metrics={"auc": 0.99})  # doctest: +SKIP
>>> registry.set_alias("breast_cancer", "production", version)  # doctest: +SKIP
>>> registry.load("breast_cancer@production")                 # doctest: +SKIP

Importing this package imports no pyspark (``load_predictor`` serves
Spark-free processes) and no mlflow.  See ``docs/registry.md``.
"""

from sparkml_aiaas.registry.core import (
    DEFAULT_KEY_ENV,
    ModelNotFoundError,
    ModelRegistry,
    ModelVersion,
    canonical_json,
    content_digest,
    parse_ref,
    validate_alias,
    validate_name,
)
from sparkml_aiaas.registry.storage import LocalStorage, Storage

__all__ = [
    "DEFAULT_KEY_ENV",
    "HadoopStorage",
    "LocalStorage",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersion",
    "Storage",
    "canonical_json",
    "content_digest",
    "parse_ref",
    "validate_alias",
    "validate_name",
]


def __getattr__(name):
    # HadoopStorage on first use: its module is light, but keep this package's import minimal.
    if name == "HadoopStorage":
        from sparkml_aiaas.registry.hadoop_storage import HadoopStorage

        return HadoopStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
