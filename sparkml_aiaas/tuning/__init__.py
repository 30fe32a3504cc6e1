"""Model selection: pyspark.ml's ``CrossValidator`` and ``TrainValidationSplit`` with one
block build and shared passes for this package's linear estimators."""

from sparkml_aiaas.tuning.validators import CrossValidator, TrainValidationSplit

__all__ = ["CrossValidator", "TrainValidationSplit"]
