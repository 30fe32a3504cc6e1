"""Metrics of scored DataFrames equal scikit-learn's on the same rows."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from sparkml_aiaas.evaluation import evaluate_binary, evaluate_multiclass, evaluate_regression


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=200)
    margin = label + rng.normal(scale=0.8, size=200)
    return pd.DataFrame({
        "label": label, "binary": (label > 0).astype(int), "margin": margin,
        "prediction": np.clip(np.round(margin), 0, 2).astype(float),
        "binary_prediction": (margin > 0.5).astype(float),
    })


def test_binary(spark, frame):
    result = evaluate_binary(spark.createDataFrame(frame), label_col="binary",
                             raw_prediction_col="margin", prediction_col="binary_prediction")
    assert result["auc"] == pytest.approx(sk.roc_auc_score(frame.binary, frame.margin))
    assert result["accuracy"] == pytest.approx(
        sk.accuracy_score(frame.binary, frame.binary_prediction))
    assert result["rows"] == 200


def test_multiclass(spark, frame):
    result = evaluate_multiclass(spark.createDataFrame(frame))
    assert result["accuracy"] == pytest.approx(sk.accuracy_score(frame.label, frame.prediction))
    assert result["f1"] == pytest.approx(
        sk.f1_score(frame.label, frame.prediction, average="weighted"))


def test_regression(spark, frame):
    result = evaluate_regression(spark.createDataFrame(frame), prediction_col="margin")
    assert result["rmse"] == pytest.approx(
        np.sqrt(sk.mean_squared_error(frame.label, frame.margin)))
    assert result["mae"] == pytest.approx(sk.mean_absolute_error(frame.label, frame.margin))
    assert result["r2"] == pytest.approx(sk.r2_score(frame.label, frame.margin))
