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
    "SklearnClassifier": "sparkml_aiaas.models.sklearn",
    "SklearnClassificationModel": "sparkml_aiaas.models.sklearn",
    "SklearnRegressor": "sparkml_aiaas.models.sklearn",
    "SklearnRegressionModel": "sparkml_aiaas.models.sklearn",
    "SklearnPredictor": "sparkml_aiaas.models.sklearn_predictor",
    "TorchClassifier": "sparkml_aiaas.models.torch",
    "TorchClassificationModel": "sparkml_aiaas.models.torch",
    "TorchRegressor": "sparkml_aiaas.models.torch",
    "TorchRegressionModel": "sparkml_aiaas.models.torch",
    "TorchTrainingSummary": "sparkml_aiaas.models.torch",
    "XGBoostClassifier": "sparkml_aiaas.models.xgboost",
    "XGBoostClassificationModel": "sparkml_aiaas.models.xgboost",
    "XGBoostRegressor": "sparkml_aiaas.models.xgboost",
    "XGBoostRegressionModel": "sparkml_aiaas.models.xgboost",
    "RandomForestClassifier": "sparkml_aiaas.models.xgboost",
    "RandomForestClassificationModel": "sparkml_aiaas.models.xgboost",
    "RandomForestRegressor": "sparkml_aiaas.models.xgboost",
    "RandomForestRegressionModel": "sparkml_aiaas.models.xgboost",
    "XGBoostTrainingSummary": "sparkml_aiaas.models.xgboost",
    "XGBoostPredictor": "sparkml_aiaas.models.xgboost_predictor",
    "wrap_model": "sparkml_aiaas.models.wrap",
}

__all__ = ["LinearPredictor", "load_predictor", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        from sparkml_aiaas.errors import missing_dependency

        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            raise missing_dependency(exc) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'sparkml_aiaas.models' has no attribute {name!r}")
