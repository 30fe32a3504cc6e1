"""Wrap an already-trained model -- scikit-learn, XGBoost or torch -- for batch scoring.

One call for all three families::

    from sparkml_aiaas.models import wrap_model

    wrap_model(fitted_sklearn_pipeline, featuresCols=["age", "income"]).save("models/churn")
    wrap_model(xgb_booster, featuresCols=cols).save("models/fraud")
    wrap_model(torch_net, architecture={"type": "mlp", ...}, featuresCols=cols, numClasses=3)

The result is one of our fitted pyspark.ml models, so it saves in the open
artifact format, registers in :class:`~sparkml_aiaas.registry.ModelRegistry`
and scores through :func:`sparkml_aiaas.scoring.score`, ``spark_udf`` and the
Spark-free predictor like a model trained here.  Each family keeps its own
constructor (``SklearnClassificationModel.from_estimator``,
``XGBoostClassificationModel.from_booster``,
``TorchClassificationModel.from_module``) for the details; this module only
picks the right one.
"""

from __future__ import annotations

import json
from typing import Any

from sparkml_aiaas.errors import ConfigError

__all__ = ["wrap_model"]


def _family(obj: Any) -> str:
    module = type(obj).__module__ or ""
    root = module.split(".", 1)[0]
    if root == "xgboost":
        return "xgboost"
    if root == "sklearn":
        return "sklearn"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "torch"
    return ""


def _xgboost_is_classifier(obj: Any) -> bool:
    import xgboost

    if isinstance(obj, xgboost.XGBModel):
        return isinstance(obj, xgboost.XGBClassifier)
    objective = json.loads(obj.save_config())["learner"]["objective"]["name"]
    return objective.startswith(("binary:", "multi:"))


def wrap_model(obj: Any, **params):
    """One of our fitted models around an already-trained ``obj``.

    Parameters
    ----------
    obj : fitted scikit-learn estimator, ``xgboost.Booster`` / ``XGBModel``, or ``torch.nn.Module``
    **params
        Passed to the family's constructor: at least the input columns
        (``featuresCols=[...]`` or ``featuresCol="features"``); torch also needs
        ``architecture`` (how to rebuild the network without unpickling code) and,
        for a classifier, ``numClasses``.

    Raises
    ------
    ConfigError
        ``obj`` is none of the supported kinds, or a torch network lacks ``architecture``.
    """
    family = _family(obj)
    if family == "sklearn":
        from sklearn.base import is_classifier

        from sparkml_aiaas.models.sklearn import SklearnClassificationModel, SklearnRegressionModel

        cls = SklearnClassificationModel if is_classifier(obj) else SklearnRegressionModel
        return cls.from_estimator(obj, **params)
    if family == "xgboost":
        from sparkml_aiaas.models.xgboost import XGBoostClassificationModel, XGBoostRegressionModel

        cls = XGBoostClassificationModel if _xgboost_is_classifier(obj) else \
            XGBoostRegressionModel
        return cls.from_booster(obj, **params)
    if family == "torch":
        from sparkml_aiaas.models.torch import TorchClassificationModel, TorchRegressionModel

        architecture = params.pop("architecture", None)
        if architecture is None:
            raise ConfigError(
                "wrapping a torch network needs architecture=: a build_network spec dict "
                "(e.g. {'type': 'mlp', 'input_size': 50, 'hidden_layers': [128, 64], "
                "'output_size': 10}) or an importable factory 'pkg.module:function' -- the saved "
                "model stores only weights, and loading it never unpickles code")
        cls = TorchClassificationModel if params.get("numClasses") else TorchRegressionModel
        return cls.from_module(architecture, obj, **params)
    raise ConfigError(
        f"cannot wrap a {type(obj).__module__}.{type(obj).__name__}: wrap_model takes a fitted "
        "scikit-learn estimator, an xgboost Booster or XGBModel, or a torch.nn.Module")
