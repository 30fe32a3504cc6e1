"""A saved PipelineModel (preprocessing + model) predicts the same numbers without Spark."""

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler

from sparkml_aiaas.errors import ModelFormatError
from sparkml_aiaas.models import LogisticRegression, load_predictor
from sparkml_aiaas.models.pipeline_predictor import is_saved_pipeline
from sparkml_aiaas.preprocessing import Preprocessor


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(5)
    n = 400
    frame = pd.DataFrame({
        "id": np.arange(n),
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 10, n)),
        "income": rng.lognormal(10, 1, n),
        "city": rng.choice(["paris", "lyon", "nice"], n),
    })
    rich = frame["income"] > np.median(frame["income"])
    frame["label"] = (rich ^ (frame["city"] == "nice")).astype(float)
    return frame


def test_saved_pipeline_predicts_like_spark_without_spark(spark, pdf, df, tmp_path):
    pipeline = Pipeline(stages=[
        Preprocessor(numericCols=["age", "income"], categoricalCols=["city"], logCols=["income"],
                     imputeStrategy="median", scaling="standard", handleUnseen="zero"),
        LogisticRegression(featuresCol="features", labelCol="label", regParam=0.01),
    ])
    model = pipeline.fit(df)
    path = str(tmp_path / "pipeline")
    model.write().save(path)
    assert is_saved_pipeline(path)

    spark_out = PipelineModel.load(path).transform(df).orderBy("id").toPandas()
    predictor = load_predictor(path)
    assert predictor.input_columns == ["age", "income", "city"]
    local = predictor.predict(pdf.drop(columns=["label"]))
    np.testing.assert_array_equal(local["prediction"].to_numpy(), spark_out["prediction"].to_numpy())
    np.testing.assert_array_equal(np.stack(local["probability"]),
                                  np.stack(spark_out["probability"]))
    # An unseen city under handleUnseen="zero" still scores.
    unseen = predictor.predict(pd.DataFrame({"age": [30.0], "income": [5e4], "city": ["oslo"]}))
    assert unseen["prediction"].iloc[0] in (0.0, 1.0)


def test_pipelines_with_other_stages_are_refused(spark, df, tmp_path):
    assembler = VectorAssembler(inputCols=["income"], outputCol="features")
    model = Pipeline(stages=[assembler, LogisticRegression(featuresCol="features")]).fit(df)
    path = str(tmp_path / "assembled")
    model.write().save(path)
    with pytest.raises(ModelFormatError, match="VectorAssembler.*only PreprocessorModel stages"):
        load_predictor(path)


def test_linear_predictor_is_bit_identical_whatever_the_frame_layout():
    # einsum's summation order depends on memory layout; the predictor makes rows contiguous,
    # so a frame built column by column (as MLflow builds it), one row, or a block agree.
    from sparkml_aiaas.models.predictor import LinearPredictor

    rng = np.random.default_rng(0)
    X, w = rng.standard_normal((500, 37)), rng.standard_normal(37)
    cols = [f"x{i}" for i in range(37)]
    predictor = LinearPredictor(kind="binary_logistic", coefficients=w, intercept=0.3,
                                feature_cols=cols)
    block = predictor.predict(pd.DataFrame(X, columns=cols))["rawPrediction"].to_numpy()
    by_column = pd.DataFrame({c: X[:, i].copy() for i, c in enumerate(cols)})
    assert np.array_equal(block, predictor.predict(by_column)["rawPrediction"].to_numpy())
    one_row = [predictor.predict(by_column.iloc[[i]])["rawPrediction"].iloc[0] for i in range(20)]
    assert np.array_equal(block[:20], np.array(one_row))
