"""Write tests/data/models_v0_1: one saved model per family, made by the code of a past release.

Run once per release whose artifacts must keep loading (``python scripts/make_legacy_models.py
OUT``); tests/test_legacy_models.py loads every model found there and checks its predictions
against the ``expected.json`` written beside it.  The data is small and seeded so the folder
stays a few hundred kilobytes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def data(rows: int = 80, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    margin = x @ np.array([1.5, -2.0, 0.5]) + 0.3
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3"])
    frame["binary"] = (margin + rng.normal(scale=0.5, size=rows) > 0).astype(float)
    frame["multi"] = np.digitize(margin, [-1.0, 1.0]).astype(float)
    frame["target"] = margin + rng.normal(scale=0.3, size=rows)
    return frame


def main(out: str) -> None:
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from sklearn.tree import DecisionTreeClassifier

    from sparkml_aiaas.models.linear import LinearRegression, LinearSVC, LogisticRegression
    from sparkml_aiaas.models.sklearn import SklearnClassifier
    from sparkml_aiaas.models.torch import TorchClassifier, TorchRegressor
    from sparkml_aiaas.models.xgboost import (RandomForestClassifier, XGBoostClassifier,
                                              XGBoostRegressor)
    from sparkml_aiaas.session import get_spark

    spark = get_spark("legacy-models", master="local[2]")
    frame = data()
    df = spark.createDataFrame(frame)
    cols = ["x1", "x2", "x3"]
    estimators = {
        "binary_logistic": LogisticRegression(featuresCols=cols, labelCol="binary", regParam=0.01),
        "multinomial_logistic": LogisticRegression(featuresCols=cols, labelCol="multi"),
        "linear_regression": LinearRegression(featuresCols=cols, labelCol="target", regParam=0.1),
        "huber": LinearRegression(featuresCols=cols, labelCol="target", loss="huber"),
        "linear_svc": LinearSVC(featuresCols=cols, labelCol="binary", regParam=0.01),
        "torch_classifier": TorchClassifier(featuresCols=cols, labelCol="multi", numClasses=3,
                                            hiddenLayers=[4], maxEpochs=3, seed=1),
        "torch_regressor": TorchRegressor(featuresCols=cols, labelCol="target", hiddenLayers=[4],
                                          maxEpochs=3, seed=1),
        "xgboost_classifier": XGBoostClassifier(featuresCols=cols, labelCol="binary", numRound=3,
                                                maxDepth=2, numWorkers=1),
        "xgboost_regressor": XGBoostRegressor(featuresCols=cols, labelCol="target", numRound=3,
                                              maxDepth=2, numWorkers=1),
        "forest_classifier": RandomForestClassifier(featuresCols=cols, labelCol="multi",
                                                    numTrees=3, maxDepth=2, numWorkers=1),
        "sklearn_classifier": SklearnClassifier(featuresCols=cols, labelCol="multi",
                                                estimator=DecisionTreeClassifier(max_depth=2)),
        "pipeline_logistic": Pipeline(stages=[
            VectorAssembler(inputCols=cols, outputCol="features"),
            LogisticRegression(labelCol="binary", regParam=0.01)]),
    }
    root = Path(out)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    frame[cols].to_csv(root / "rows.csv", index=False)
    expected = {}
    for name, estimator in estimators.items():
        model = estimator.fit(df)
        model.write().save(str(root / name))
        scored = model.transform(df).toPandas()
        outputs = {}
        for column in ("prediction", "probability", "rawPrediction"):
            if column in scored.columns:
                outputs[column] = [np.asarray(v, dtype=float).tolist() if np.ndim(v) else float(v)
                                   for v in scored[column]]
        expected[name] = {"class": type(model).__name__, "outputs": outputs}
    (root / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models_v0_1")
