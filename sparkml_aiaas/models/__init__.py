"""Models as pyspark.ml stages, and their Spark-free predictors.

``load_predictor`` needs no Spark (and imports none); the estimators are
imported lazily so that a serving process can use this package without
pyspark's ML stack.
"""

from sparkml_aiaas.models.predictor import LinearPredictor, load_predictor

_LAZY = {
    "LogisticRegression": "sparkml_aiaas.models.linear",
    "LogisticRegressionModel": "sparkml_aiaas.models.linear",
    "LinearRegression": "sparkml_aiaas.models.linear",
    "LinearRegressionModel": "sparkml_aiaas.models.linear",
    "LinearSVC": "sparkml_aiaas.models.linear",
    "LinearSVCModel": "sparkml_aiaas.models.linear",
    "TrainingSummary": "sparkml_aiaas.models.linear",
    "load_model": "sparkml_aiaas.models.persistence",
}

__all__ = ["LinearPredictor", "load_predictor", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparkml_aiaas.models' has no attribute {name!r}")
