"""Model selection: pyspark.ml's ``CrossValidator`` and ``TrainValidationSplit`` with one
block build and shared passes for this package's linear estimators."""

from sparkml_aiaas.errors import missing_dependency

try:
    from sparkml_aiaas.tuning.validators import CrossValidator, TrainValidationSplit
except ImportError as exc:  # pyspark missing: name the extra that installs it
    raise missing_dependency(exc) from exc

__all__ = ["CrossValidator", "TrainValidationSplit"]
