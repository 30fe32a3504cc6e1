"""Linear models scored as Spark SQL (every kind; numeric, vector and array inputs) give the
predictor's doubles, bit for bit."""

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


def test_multinomial_sql_equals_the_predictor(frame):
    rng = np.random.default_rng(5)
    predictor = LinearPredictor(kind="multinomial_logistic",
                                coefficients=rng.standard_normal((4, 3)) * 0.4,
                                intercept=np.array([0.1, -0.2, 0.05]),
                                feature_cols=["a", "b", "c", "d"],
                                output_names={"probability": "p"})
    assert supports_sql(predictor, frame)
    scored = transform_sql(frame, predictor).orderBy("id").toPandas()
    expected = predictor.predict(_local(frame.orderBy("id")))
    for name, _ in predictor.output_columns:
        got = np.stack(scored[name]) if name != "prediction" else scored[name].to_numpy(float)
        want = np.stack(expected[name]) if name != "prediction" else expected[name].to_numpy(float)
        np.testing.assert_array_equal(got, want)
    # Large margins (column a is ×50): the softmax is shifted, never inf/inf.
    assert np.isfinite(np.stack(scored.loc[~scored["d"].isna(), "p"])).all()


@pytest.mark.parametrize("kind", ["binary_logistic", "multinomial_logistic", "linear_svc",
                                  "linear_regression"])
@pytest.mark.parametrize("source", ["vector", "array"])
def test_vector_and_array_inputs_equal_the_predictor(spark, frame, kind, source):
    from pyspark.ml.feature import VectorAssembler

    rng = np.random.default_rng(9)
    shape = (3, 4) if kind == "multinomial_logistic" else 3
    predictor = LinearPredictor(kind=kind, coefficients=rng.standard_normal(shape),
                                intercept=np.zeros(4) + 0.3 if kind == "multinomial_logistic"
                                else 0.3, vector_col="v")
    data = VectorAssembler(inputCols=["a", "b", "c"], outputCol="v").transform(
        frame.selectExpr("id", "a", "b", "CAST(c AS DOUBLE) AS c"))
    if source == "array":
        from pyspark.ml.functions import vector_to_array

        data = data.withColumn("v", vector_to_array("v"))
    assert supports_sql(predictor, data)
    scored = transform_sql(data, predictor).orderBy("id").toPandas()
    local = data.orderBy("id").toPandas()
    local["v"] = [np.asarray(v.toArray() if hasattr(v, "toArray") else v) for v in local["v"]]
    expected = predictor.predict(local)
    for name, dtype in predictor.output_columns:
        got, want = scored[name], expected[name]
        if dtype == "array<double>":
            got, want = np.stack(got), np.stack(want)
        np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(want, dtype=float))


def test_a_vector_of_the_wrong_size_stops_the_job_naming_the_column(spark):
    from pyspark.errors import PySparkException
    from pyspark.ml.linalg import Vectors

    data = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([1.0]),)], ["v"])
    predictor = LinearPredictor(kind="linear_regression", coefficients=np.ones(2),
                                intercept=0.0, vector_col="v")
    with pytest.raises(PySparkException) as caught:
        transform_sql(data, predictor).collect()
    assert "column 'v' must hold vectors of size 2" in str(caught.value)
    assert "found one of size 1" in str(caught.value)


def test_models_sql_cannot_express_fall_back(spark, frame):
    huge = LinearPredictor(kind="multinomial_logistic", coefficients=np.ones((2000, 3)),
                           intercept=np.zeros(3), vector_col="v")
    vectors = spark.createDataFrame([([1.0] * 2000,)], "v array<double>")
    assert not supports_sql(huge, vectors)
    vector = LinearPredictor(kind="binary_logistic", coefficients=np.ones(4), intercept=0.0,
                             vector_col="v")
    assert not supports_sql(vector, frame)  # no column v
    strings = spark.createDataFrame([("1",)], "a string")
    on_strings = LinearPredictor(kind="linear_regression", coefficients=np.ones(1),
                                 intercept=0.0, feature_cols=["a"])
    assert not supports_sql(on_strings, strings) and transform_sql(strings, on_strings) is None
