"""A fitted preprocessor registered with its model: stored as one version, scored from raw columns.

The registry keeps preprocessor and model side by side; loading gives a
``PipelineModel``, the Spark-free predictor runs both, and batch scoring,
``spark_udf`` and the MLflow export take the raw columns -- with the same
numbers as ``PipelineModel.transform``.
"""

import os

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler

from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models import LogisticRegression
from sparkml_aiaas.preprocessing import Preprocessor
from sparkml_aiaas.registry import ModelRegistry
from sparkml_aiaas.scoring import read_scores, score, spark_udf

RAW = ["age", "income", "city"]


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv("SPARKML_AIAAS_REGISTRY_KEY", raising=False)


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(11)
    n = 300
    frame = pd.DataFrame({
        "id": np.arange(n),
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 10, n)),
        "income": rng.lognormal(10, 1, n),
        "city": rng.choice(["paris", "lyon", "nice", None], n),
    })
    rich = frame["income"] > np.median(frame["income"])
    frame["label"] = (rich ^ (frame["city"] == "nice")).astype(float)
    return frame


@pytest.fixture(scope="module")
def pipeline_model(df):
    return Pipeline(stages=[
        Preprocessor(numericCols=["age", "income"], categoricalCols=["city"], logCols=["income"],
                     imputeStrategy="median", scaling="standard", handleUnseen="zero"),
        LogisticRegression(featuresCol="features", labelCol="label", regParam=0.01),
    ]).fit(df)


@pytest.fixture(scope="module")
def expected(pipeline_model, df):
    return pipeline_model.transform(df).orderBy("id").toPandas()


@pytest.fixture(scope="module")
def registry(pipeline_model, tmp_path_factory):
    reg = ModelRegistry(str(tmp_path_factory.mktemp("reg")))
    assert reg.register(pipeline_model, "churn", metrics={"auc": 0.9}) == 1
    reg.set_alias("churn", "production", 1)
    return reg


@pytest.fixture(scope="module")
def raw_input(pdf, tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "data"
    path.mkdir()
    pdf.drop(columns=["label"]).to_parquet(path / "part-0.parquet")
    return str(path)


def _probs(frame):
    return np.stack(frame["probability"].to_numpy())


def test_pipeline_registers_as_preprocessor_plus_model(registry):
    mv = registry.resolve("churn@production")
    meta = mv.metadata
    assert meta["preprocessor"] is not None
    assert meta["model"]["class"].endswith("LogisticRegressionModel")
    # The version reads raw columns; the model's own signature is kept beside it.
    assert [c["name"] for c in meta["input_signature"]["inputs"]] == RAW
    assert [c["name"] for c in meta["model_signature"]["inputs"]] == ["features"]
    assert os.path.isdir(mv.preprocessor_path) and mv.bundle_path == os.path.dirname(mv.path)


def test_load_gives_a_pipeline_model_with_identical_predictions(registry, df, expected):
    loaded = registry.load("churn@production")
    assert isinstance(loaded, PipelineModel) and len(loaded.stages) == 2
    got = loaded.transform(df).orderBy("id").toPandas()
    np.testing.assert_array_equal(_probs(got), _probs(expected))


def test_load_predictor_takes_raw_columns(registry, pdf, expected):
    predictor = registry.load_predictor("churn")
    assert predictor.input_columns == RAW
    local = predictor.predict(pdf[RAW])
    np.testing.assert_array_equal(np.stack(local["probability"]), _probs(expected))
    np.testing.assert_array_equal(local["prediction"].to_numpy(), expected["prediction"])


def test_batch_scoring_applies_the_registered_preprocessor(spark, registry, raw_input, expected,
                                                           tmp_path):
    out = str(tmp_path / "scored")
    report = score(spark, "churn@production", raw_input, out, registry=registry.root)
    assert report.rows_out == len(expected) and report.model_version == "1"
    got = read_scores(spark, out).orderBy("id").toPandas()
    np.testing.assert_array_equal(_probs(got), _probs(expected))
    np.testing.assert_array_equal(got["prediction"], expected["prediction"])
    assert got["city"].tolist() == expected["city"].tolist()  # raw columns pass through


def test_batch_scoring_checks_the_raw_signature(spark, registry, pdf, tmp_path):
    frame = spark.createDataFrame(pdf[["id", "age", "income"]])
    out = tmp_path / "scored"
    with pytest.raises(DataValidationError, match="missing column 'city'"):
        score(spark, "churn", frame, str(out), registry=registry.root)
    assert not out.exists()
    typed = spark.createDataFrame(pdf[["id", "age", "income"]].assign(city=1))
    with pytest.raises(DataValidationError, match="column 'city' is bigint, the model expects"):
        score(spark, "churn", typed, str(out), registry=registry.root)


def test_spark_udf_runs_the_bundle(spark, registry, pdf, expected):
    frame = spark.createDataFrame(pdf.drop(columns=["label"]))
    udf = spark_udf(spark, "churn@production", registry=registry.root)
    assert udf.input_columns == RAW
    got = frame.withColumn("p", udf(*RAW)).select("id", "p.probability").orderBy("id").toPandas()
    np.testing.assert_array_equal(_probs(got), _probs(expected))


def test_saved_pipeline_path_registers_too(pipeline_model, tmp_path, pdf, expected):
    path = str(tmp_path / "saved")
    pipeline_model.write().save(path)
    reg = ModelRegistry(str(tmp_path / "reg"))
    version = reg.register(path, "churn")
    meta = reg.resolve(f"churn/{version}").metadata
    assert "/stages/0_PreprocessorModel_" in meta["preprocessor"]["source"]
    assert "/stages/1_" in meta["model"]["source"]
    local = reg.load_predictor("churn").predict(pdf[RAW])
    np.testing.assert_array_equal(np.stack(local["probability"]), _probs(expected))


def test_pipelines_that_are_not_preprocessor_plus_model_are_refused(spark, df, pipeline_model,
                                                                    tmp_path):
    reg = ModelRegistry(str(tmp_path / "reg"))
    assembled = Pipeline(stages=[
        VectorAssembler(inputCols=["income"], outputCol="features"),
        LogisticRegression(featuresCol="features"),
    ]).fit(df)
    with pytest.raises(ConfigError, match=r"stages \['VectorAssembler', "):
        reg.register(assembled, "bad")
    with pytest.raises(ConfigError, match="and preprocessor= too"):
        reg.register(pipeline_model, "bad", preprocessor=pipeline_model.stages[0])
    assert reg.list() == []


def test_a_model_that_does_not_read_the_preprocessor_output_is_refused(spark, df, pipeline_model,
                                                                       tmp_path):
    pre = pipeline_model.stages[0]
    other = LogisticRegression(featuresCols=["income"], labelCol="label").fit(df)
    reg = ModelRegistry(str(tmp_path / "reg"))
    with pytest.raises(ModelFormatError, match="reads \\['income'\\], not the preprocessor's "
                                               "output column 'features'"):
        reg.register(other, "bad", preprocessor=pre)
    assert reg.list() == [] and reg.versions("bad") == []


def test_mlflow_export_of_a_bundle_takes_raw_columns(registry, pdf, expected, tmp_path):
    pyfunc = pytest.importorskip("mlflow.pyfunc")
    target = registry.export_mlflow("churn@production", str(tmp_path / "mlflow"))
    loaded = pyfunc.load_model(target)
    got = loaded.predict(pdf[RAW])
    np.testing.assert_array_equal(np.stack(got["probability"]), _probs(expected))
