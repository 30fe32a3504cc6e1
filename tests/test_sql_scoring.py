"""Linear models scored as Spark SQL give the predictor's doubles, bit for bit."""

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.models.predictor import LinearPredictor
from sparkml_aiaas.scoring.sql_linear import supports_sql, transform_sql


@pytest.fixture(scope="module")
def frame(spark):
    rng = np.random.default_rng(11)
    n = 3000
    pdf = pd.DataFrame({
        "id": np.arange(n),
        "a": rng.standard_normal(n) * 50,          # large margins: exp saturates
        "b": rng.integers(-5, 5, n),               # an integer column
        "c": rng.random(n) < 0.5,                  # a boolean column
        "d": np.where(rng.random(n) < 0.02, np.nan, rng.standard_normal(n)),  # NaN
    })
    df = spark.createDataFrame(pdf).selectExpr(
        "id", "a", "b", "c", "CASE WHEN id % 97 = 0 THEN NULL ELSE d END AS d")  # and nulls
    return df


def _local(df):
    pdf = df.toPandas()
    pdf["c"] = pdf["c"].astype(float)
    return pdf


@pytest.mark.parametrize("kind", ["binary_logistic", "linear_svc", "linear_regression"])
def test_sql_outputs_equal_the_predictor(frame, kind):
    rng = np.random.default_rng(3)
    predictor = LinearPredictor(kind=kind, coefficients=rng.standard_normal(4) * 0.3,
                                intercept=0.17, feature_cols=["a", "b", "c", "d"], threshold=0.3,
                                output_names={"prediction": "pred"})
    assert supports_sql(predictor, frame)
    scored = transform_sql(frame, predictor).orderBy("id").toPandas()
    assert list(scored.columns) == frame.columns + [n for n, _ in predictor.output_columns]
    expected = predictor.predict(_local(frame.orderBy("id")))
    for name, dtype in predictor.output_columns:
        got, want = scored[name], expected[name]
        if dtype == "array<double>":
            got, want = np.stack(got), np.stack(want)
        np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(want, dtype=float))
    # Rows with a null or NaN feature: NaN scores (a regression predicts NaN; a classifier
    # predicts 0, as numpy's NaN comparison says), on both sides.
    missing = scored["d"].isna()
    assert missing.any()
    if kind == "linear_regression":
        assert scored.loc[missing, "pred"].isna().all()
    else:
        assert (scored.loc[missing, "pred"] == 0.0).all()
        assert scored.loc[missing, "rawPrediction"].isna().all()


def test_models_sql_cannot_express_fall_back(spark, frame):
    multinomial = LinearPredictor(kind="multinomial_logistic", coefficients=np.ones((4, 3)),
                                  intercept=np.zeros(3), feature_cols=["a", "b", "c", "d"])
    assert not supports_sql(multinomial, frame)
    vector = LinearPredictor(kind="binary_logistic", coefficients=np.ones(4), intercept=0.0,
                             vector_col="v")
    assert not supports_sql(vector, frame)
    strings = spark.createDataFrame([("1",)], "a string")
    on_strings = LinearPredictor(kind="linear_regression", coefficients=np.ones(1),
                                 intercept=0.0, feature_cols=["a"])
    assert not supports_sql(on_strings, strings) and transform_sql(strings, on_strings) is None
