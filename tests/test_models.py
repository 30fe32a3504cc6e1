"""The Spark estimators end to end: fit vs numpy/scikit-learn, persistence, tuning, bad input,
block-file cleanup, and the engine's data pass and ordered tree reduce."""

import json
import os
import shutil
from functools import reduce

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import functions as F
from sklearn.linear_model import LinearRegression as SkLinearRegression
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.linear_model import Ridge

from sparkml_aiaas.core.glm import fit_glm
from sparkml_aiaas.core.losses import LOSSES, loss_gradient_sums
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.stats import block_stats, merge_stats
from sparkml_aiaas.engine import DistributedDataPass, FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine.block_files import local_root
from sparkml_aiaas.engine.tree_reduce import tree_reduce_ordered
from sparkml_aiaas.errors import (
    ConfigError,
    DataValidationError,
    ModelFormatError,
    SparkmlAiaasError,
)
from sparkml_aiaas.models import LinearRegression, LogisticRegression, load_predictor
from sparkml_aiaas.models.linear import LinearRegressionModel, LogisticRegressionModel

N, D = 500, 4
COLS = [f"x{i}" for i in range(D)]
REG = 0.01
#: Tight settings: the fit must reach the optimum, so different code paths agree.
EXACT = dict(regParam=REG, standardization=False, tol=1e-12, maxIter=300)
LR_OUTPUTS = ["rawPrediction", "probability", "prediction"]


# --------------------------------------------------------------------------- data
def _make_pdf(n=N, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, D))
    X = Z + 0.3 * Z[:, [0]]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    true = np.array([1.0, -1.0, 0.5, 0.0])
    m = X @ true + 0.2
    pdf = pd.DataFrame(X, columns=COLS)
    pdf["label"] = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-m))).astype(float)
    pdf["target"] = X @ [2.0, -1.0, 0.5, 0.0] + 1.5 + 0.3 * rng.normal(size=n)
    pdf["w"] = rng.integers(1, 4, size=n)
    pdf["id"] = np.arange(n)
    return pdf


@pytest.fixture(scope="module")
def pdf():
    return _make_pdf()


@pytest.fixture(scope="module")
def vdf(df):
    return VectorAssembler(inputCols=COLS, outputCol="features").transform(df)


def numpy_fit(pdf, loss_name, label="label", weights=None, n_chunks=3, cols=COLS, **kwargs):
    """The single-machine fit: fit_glm over numpy chunks."""
    loss = LOSSES[loss_name]
    X, y = pdf[cols].to_numpy(float), pdf[label].to_numpy(float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    bounds = np.linspace(0, len(y), n_chunks + 1).astype(int)
    chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def data_pass(coef, intercept, extra=None, with_hessian=False):
        return reduce(merge, [loss_gradient_sums(loss, X[s], y[s], w[s], coef, intercept, extra,
                                                 with_hessian=with_hessian)
                              for s in chunks])

    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return fit_glm(data_pass, stats, loss=loss, **kwargs)


def scored(frame, columns):
    """Output rows as pandas, sorted by id."""
    return frame.select("id", *columns).toPandas().sort_values("id").reset_index(drop=True)


def assert_same_outputs(a, b, columns=LR_OUTPUTS, exact=True):
    for column in columns:
        left = np.stack(a[column].to_numpy()).astype(float)
        right = np.stack(b[column].to_numpy()).astype(float)
        if exact:
            np.testing.assert_array_equal(left, right, err_msg=column)
        else:
            np.testing.assert_allclose(left, right, rtol=1e-12, atol=1e-14, err_msg=column)


# --------------------------------------------------------------------------- fitted models
@pytest.fixture(scope="module")
def lr_model(df):
    return LogisticRegression(featuresCols=COLS, numPartitions=2, **EXACT).fit(df)


@pytest.fixture(scope="module")
def lr_numpy(pdf):
    return numpy_fit(pdf, "logistic", reg_param=REG, standardization=False, tol=1e-12,
                     max_iter=300)


@pytest.fixture(scope="module")
def lr_vector_model(vdf):
    return LogisticRegression(featuresCol="features", **EXACT).fit(vdf)


@pytest.fixture(scope="module")
def saved_lr(lr_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("models") / "lr")
    lr_model.write().save(path)
    return path


# --------------------------------------------------------------------------- correctness
def test_distributed_fit_equals_numpy_fit(lr_model, lr_numpy):
    assert lr_model.summary.converged
    np.testing.assert_allclose(lr_model.coefficients, lr_numpy.coef[:, 0], rtol=0, atol=1e-6)
    assert lr_model.intercept == pytest.approx(lr_numpy.intercept[0], abs=1e-6)


def test_distributed_fit_equals_sklearn(lr_model, pdf):
    sk = SkLogisticRegression(C=1.0 / (N * REG), tol=1e-12, max_iter=10000)
    sk.fit(pdf[COLS].to_numpy(), pdf["label"].to_numpy())
    np.testing.assert_allclose(lr_model.coefficients, sk.coef_[0], rtol=1e-4, atol=1e-6)
    assert lr_model.intercept == pytest.approx(sk.intercept_[0], rel=1e-4, abs=1e-6)


def test_vector_features_col_equals_numeric_columns(lr_vector_model, lr_model, lr_numpy):
    np.testing.assert_allclose(lr_vector_model.coefficients, lr_numpy.coef[:, 0], atol=1e-6)
    np.testing.assert_allclose(lr_vector_model.coefficients, lr_model.coefficients, atol=1e-6)
    assert lr_vector_model.intercept == pytest.approx(lr_model.intercept, abs=1e-6)
    assert lr_vector_model.signature["inputs"] == [{"name": "features", "type": "vector"}]


@pytest.mark.parametrize("num_partitions", [1, 4, 8])  # 8: the tree reduce adds a level
def test_num_partitions_agree(df, lr_model, num_partitions):
    model = LogisticRegression(featuresCols=COLS, numPartitions=num_partitions, **EXACT).fit(df)
    np.testing.assert_allclose(model.coefficients, lr_model.coefficients, rtol=0, atol=1e-6)
    assert model.intercept == pytest.approx(lr_model.intercept, abs=1e-6)


def test_weight_col_equals_row_duplication(df):
    weighted = LogisticRegression(featuresCols=COLS, weightCol="w", **EXACT).fit(df)
    duplicated_df = df.withColumn("_copy", F.explode(F.expr("array_repeat(1, cast(w as int))")))
    assert duplicated_df.count() == df.agg(F.sum("w")).first()[0]
    duplicated = LogisticRegression(featuresCols=COLS, **EXACT).fit(duplicated_df)
    np.testing.assert_allclose(weighted.coefficients, duplicated.coefficients, rtol=0, atol=1e-6)
    assert weighted.intercept == pytest.approx(duplicated.intercept, abs=1e-6)
    # and the weighted mean objective is the sklearn one with sample weights
    sk = SkLogisticRegression(C=1.0 / (df.agg(F.sum("w")).first()[0] * REG), tol=1e-12,
                              max_iter=10000)
    pdf = df.toPandas()
    sk.fit(pdf[COLS].to_numpy(), pdf["label"].to_numpy(), sample_weight=pdf["w"].to_numpy())
    np.testing.assert_allclose(weighted.coefficients, sk.coef_[0], rtol=1e-4, atol=1e-6)


def test_linear_regression_matches_ridge(df, pdf):
    reg = 0.1
    model = LinearRegression(featuresCols=COLS, labelCol="target", regParam=reg,
                             standardization=False, tol=1e-12, maxIter=300).fit(df)
    # MLlib divides the L2 part by the label's (population) standard deviation:
    # ½ mean r² + reg/(2σ_y)‖w‖², i.e. Ridge's ‖r‖² + α‖w‖² with α = n·reg/σ_y.
    target = pdf["target"].to_numpy()
    sk = Ridge(alpha=N * reg / target.std(), tol=1e-12).fit(pdf[COLS].to_numpy(), target)
    np.testing.assert_allclose(model.coefficients, sk.coef_, rtol=1e-5, atol=1e-6)
    assert model.intercept == pytest.approx(sk.intercept_, rel=1e-6)
    assert isinstance(model, LinearRegressionModel)


@pytest.fixture(scope="module")
def ols_model(vdf):
    return LinearRegression(labelCol="target", tol=1e-12, maxIter=300).fit(vdf)


def test_linear_regression_matches_least_squares(ols_model, pdf):
    sk = SkLinearRegression().fit(pdf[COLS].to_numpy(), pdf["target"].to_numpy())
    np.testing.assert_allclose(ols_model.coefficients, sk.coef_, rtol=1e-5, atol=1e-6)
    assert ols_model.intercept == pytest.approx(sk.intercept_, rel=1e-6)
    assert ols_model.summary.converged


def test_gd_with_l1_matches_numpy_and_gives_exact_zeros(df, pdf):
    params = dict(regParam=0.05, elasticNetParam=1.0, standardization=False, tol=1e-10)
    model = LogisticRegression(featuresCols=COLS, optimizer="gd", maxIter=15, **params).fit(df)
    ref = numpy_fit(pdf, "logistic", reg_param=0.05, elastic_net_param=1.0,
                    standardization=False, optimizer="gd", tol=1e-10, max_iter=15)
    np.testing.assert_allclose(model.coefficients, ref.coef[:, 0], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(model.coefficients == 0.0, ref.coef[:, 0] == 0.0)
    assert model.coefficients[3] == 0.0  # the feature without signal
    assert np.all(model.coefficients[:3] != 0.0)
    assert model.summary.totalIterations == ref.result.n_iter


def test_summary(lr_model, pdf):
    s = lr_model.summary
    history = np.array(s.objectiveHistory)
    assert s.converged and s.message
    assert s.numRows == N
    assert s.totalIterations >= 2
    assert len(history) == s.totalIterations + 1
    assert np.all(np.diff(history) <= 1e-12 * abs(history[0]))
    assert history[-1] < history[0]
    assert s.totalIterations + 1 <= s.numPasses <= 3 * s.totalIterations + 3
    assert s.rebuiltPartitions == 0
    assert s.wallTimeSeconds > 0
    # the last objective is the penalized mean log-loss at the returned coefficients
    m = pdf[COLS].to_numpy() @ lr_model.coefficients + lr_model.intercept
    y = pdf["label"].to_numpy()
    objective = np.mean(np.logaddexp(0, m) - y * m) + 0.5 * REG * np.sum(lr_model.coefficients ** 2)
    assert history[-1] == pytest.approx(objective, rel=1e-10)


def test_dotted_column_names(spark):
    rng = np.random.default_rng(3)
    p = pd.DataFrame({"a.b": rng.normal(size=200), "c d": rng.normal(size=200)})
    p["y.v"] = 2.0 * p["a.b"] - p["c d"] + 0.5
    p["id"] = np.arange(200)
    frame = spark.createDataFrame(p)
    model = LinearRegression(featuresCols=["a.b", "c d"], labelCol="y.v", tol=1e-12).fit(frame)
    np.testing.assert_allclose(model.coefficients, [2.0, -1.0], atol=1e-6)
    out = model.transform(frame)
    assert out.columns == ["a.b", "c d", "y.v", "id", "prediction"]
    result = out.toPandas()
    np.testing.assert_allclose(result["prediction"], result["y.v"], atol=1e-5)


# --------------------------------------------------------------------------- transform
def test_transform_keeps_every_input_column(lr_model, df, pdf):
    out = lr_model.transform(df)
    assert out.columns == df.columns + LR_OUTPUTS
    result = out.toPandas().sort_values("id").reset_index(drop=True)
    assert len(result) == N
    pd.testing.assert_frame_equal(result[df.columns], pdf[df.columns], check_dtype=False)
    margin = pdf[COLS].to_numpy() @ lr_model.coefficients + lr_model.intercept
    # MLlib's binary rawPrediction: the vector [-m, m].
    np.testing.assert_allclose(np.stack(result["rawPrediction"]),
                               np.column_stack([-margin, margin]), rtol=1e-12, atol=1e-14)
    prob = np.stack(result["probability"])
    np.testing.assert_allclose(prob[:, 1], 1.0 / (1.0 + np.exp(-margin)), rtol=1e-12)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0)
    np.testing.assert_array_equal(result["prediction"], (prob[:, 1] > 0.5).astype(float))


def test_vector_model_scores_like_column_model(lr_vector_model, lr_model, vdf):
    a = scored(lr_vector_model.transform(vdf), LR_OUTPUTS)
    b = scored(lr_model.transform(vdf), LR_OUTPUTS)
    np.testing.assert_allclose(np.stack(a["rawPrediction"]), np.stack(b["rawPrediction"]),
                               atol=1e-5)


def test_threshold_and_output_names(lr_model, df):
    out = lr_model.transform(df, {lr_model.threshold: 0.9, lr_model.predictionCol: "yhat"})
    assert out.columns[-3:] == ["rawPrediction", "probability", "yhat"]
    result = out.toPandas()
    prob = np.stack(result["probability"])[:, 1]
    np.testing.assert_array_equal(result["yhat"], (prob > 0.9).astype(float))
    assert 0 < result["yhat"].sum() < (prob > 0.5).sum()


def test_null_vector_at_scoring_time_is_reported(lr_vector_model, vdf):
    frame = vdf.where("id < 10").withColumn(
        "features", F.when(F.col("id") == 3, F.lit(None)).otherwise(F.col("features")))
    with pytest.raises(Exception, match=r"column 'features' must hold vectors of size 4 .*found a null vector"):
        lr_vector_model.transform(frame).collect()


def test_output_column_clash_is_refused(lr_model, df):
    with pytest.raises(DataValidationError, match=r"output column\(s\) \['prediction'\]"):
        lr_model.transform(df.withColumn("prediction", F.lit(1.0)))


def test_transform_missing_input_column(lr_model, df):
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['x2'\]"):
        lr_model.transform(df.drop("x2"))


# --------------------------------------------------------------------------- persistence
def test_save_load_identical_predictions(saved_lr, lr_model, df):
    loaded = LogisticRegressionModel.load(saved_lr)
    assert loaded.uid == lr_model.uid
    np.testing.assert_array_equal(loaded.coefficients, lr_model.coefficients)
    assert loaded.intercept == lr_model.intercept
    assert loaded.getFeaturesCols() == COLS
    assert loaded.getRegParam() == REG and loaded.getThreshold() == 0.5
    assert loaded.summary.objectiveHistory == lr_model.summary.objectiveHistory
    assert loaded.signature == lr_model.signature
    assert_same_outputs(scored(loaded.transform(df), LR_OUTPUTS),
                        scored(lr_model.transform(df), LR_OUTPUTS))


def test_save_refuses_existing_path_without_overwrite(saved_lr, lr_model):
    with pytest.raises(SparkmlAiaasError, match="already exists"):
        lr_model.write().save(saved_lr)
    lr_model.write().overwrite().save(saved_lr)
    assert LogisticRegressionModel.load(saved_lr).intercept == lr_model.intercept


def test_load_predictor_equals_spark_transform(saved_lr, lr_model, df, pdf):
    predictor = load_predictor(saved_lr)
    assert predictor.input_columns == COLS
    local = predictor.predict(pdf)
    assert list(local.columns) == LR_OUTPUTS
    local["id"] = pdf["id"]
    spark_out = scored(lr_model.transform(df), LR_OUTPUTS)
    # transform's binary rawPrediction is MLlib's [-m, m]; the predictor gives m.
    spark_out["rawPrediction"] = [v[1] for v in spark_out["rawPrediction"]]
    assert_same_outputs(local.sort_values("id").reset_index(drop=True), spark_out, exact=False)


def test_linear_regression_save_load_and_predictor(ols_model, vdf, pdf, tmp_path):
    path = str(tmp_path / "ols")
    ols_model.save(path)
    loaded = LinearRegressionModel.load(path)
    spark_out = scored(ols_model.transform(vdf), ["prediction"])
    assert_same_outputs(scored(loaded.transform(vdf), ["prediction"]), spark_out, ["prediction"])
    local = load_predictor(path).predict(pd.DataFrame({"features": list(pdf[COLS].to_numpy())}))
    np.testing.assert_allclose(local["prediction"], spark_out["prediction"], rtol=1e-12)
    with pytest.raises(ModelFormatError, match="not a LogisticRegressionModel"):
        LogisticRegressionModel.load(path)


def test_pipeline_with_assembler_save_load(df, tmp_path):
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=COLS, outputCol="features"),
        LogisticRegression(regParam=REG, maxIter=10),
    ])
    fitted = pipeline.fit(df)
    path = str(tmp_path / "pipeline")
    fitted.write().save(path)
    loaded = PipelineModel.load(path)
    assert isinstance(loaded.stages[-1], LogisticRegressionModel)
    np.testing.assert_array_equal(loaded.stages[-1].coefficients, fitted.stages[-1].coefficients)
    assert_same_outputs(scored(loaded.transform(df), LR_OUTPUTS),
                        scored(fitted.transform(df), LR_OUTPUTS))


def _copy_model(src, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(src, dst)
    return dst


def test_unknown_format_version_is_refused(saved_lr, tmp_path):
    path = _copy_model(saved_lr, tmp_path)
    meta_path = os.path.join(path, "metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["format_version"] = 99
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(ModelFormatError, match="format_version 99"):
        load_predictor(path)
    with pytest.raises(ModelFormatError, match="format_version 99"):
        LogisticRegressionModel.load(path)


def test_tampered_arrays_fail_the_checksum(saved_lr, tmp_path):
    path = _copy_model(saved_lr, tmp_path)
    arrays = os.path.join(path, "arrays.npz")
    data = bytearray(open(arrays, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(arrays, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ModelFormatError, match="checksum mismatch"):
        load_predictor(path)
    with pytest.raises(ModelFormatError, match="checksum mismatch"):
        LogisticRegressionModel.load(path)


def test_missing_model_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_predictor(str(tmp_path / "nothing"))


# --------------------------------------------------------------------------- tuning
def test_cross_validator_with_binary_evaluator(df):
    lr = LogisticRegression(featuresCols=COLS, maxIter=5)
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.0, 0.5]).build()
    evaluator = BinaryClassificationEvaluator(rawPredictionCol="rawPrediction",
                                              metricName="areaUnderROC")
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2,
                        seed=7)
    cv_model = cv.fit(df)
    assert len(cv_model.avgMetrics) == 2
    assert all(0.7 < m <= 1.0 for m in cv_model.avgMetrics)
    best = cv_model.bestModel
    assert isinstance(best, LogisticRegressionModel)
    assert best.getRegParam() == grid[int(np.argmax(cv_model.avgMetrics))][lr.regParam]
    auc = evaluator.evaluate(best.transform(df))
    assert 0.7 < auc <= 1.0


def test_train_validation_split_with_regression_evaluator(df):
    lin = LinearRegression(featuresCols=COLS, labelCol="target", maxIter=10)
    grid = ParamGridBuilder().addGrid(lin.regParam, [0.0, 1.0]).build()
    evaluator = RegressionEvaluator(labelCol="target", metricName="rmse")
    tvs = TrainValidationSplit(estimator=lin, estimatorParamMaps=grid, evaluator=evaluator,
                               trainRatio=0.7, seed=7)
    tvs_model = tvs.fit(df)
    metrics = tvs_model.validationMetrics
    assert len(metrics) == 2 and all(np.isfinite(metrics))
    # an unpenalized fit of a linear truth beats a heavily penalized one
    assert metrics[0] < metrics[1]
    assert tvs_model.bestModel.getRegParam() == 0.0
    assert evaluator.evaluate(tvs_model.bestModel.transform(df)) < 0.5


# --------------------------------------------------------------------------- bad input
def _nan_rows(frame, column, n_rows, value=float("nan")):
    return frame.withColumn(column, F.when(F.col("id") < n_rows, F.lit(value))
                            .otherwise(F.col(column)))


BAD_INPUT = {
    "nan feature": (
        lambda df, vdf: _nan_rows(df, "x1", 7), dict(featuresCols=COLS),
        r"NaN, infinity or null in 'x1' \(7 rows\)"),
    "inf and null features": (
        lambda df, vdf: _nan_rows(_nan_rows(df, "x3", 2, float("inf")), "x0", 3, None),
        dict(featuresCols=COLS), r"'x0' \(3 rows\), 'x3' \(2 rows\)"),
    "inf in array column": (
        lambda df, vdf: _nan_rows(df, "x2", 4, float("-inf")).withColumn("arr", F.array(*COLS)),
        dict(featuresCol="arr"), r"'arr\[2\]' \(4 rows\)"),
    "labels not 0/1": (
        lambda df, vdf: df.withColumn("label", F.col("label") * 3 - 1),
        dict(featuresCols=COLS, family="binomial"),
        r"must hold 0 or 1 for a binary logistic model; found -1, 2"),
    "negative class index": (
        lambda df, vdf: df.withColumn("label", F.col("label") * 3 - 1),
        dict(featuresCols=COLS), r"must hold class indices 0 to 2 for a multinomial model; found -1"),
    "null label": (
        lambda df, vdf: _nan_rows(df, "label", 1, None),
        dict(featuresCols=COLS), r"label column 'label' contains NaN, infinity or null in 1 rows"),
    "negative weight": (
        lambda df, vdf: df.withColumn("w", F.when(F.col("id") < 2, -1).otherwise(F.col("w"))),
        dict(featuresCols=COLS, weightCol="w"), r"weight column 'w' has 2 negative values"),
    "empty": (
        lambda df, vdf: df.limit(0), dict(featuresCols=COLS), r"the training data is empty"),
    "empty vector data": (
        lambda df, vdf: vdf.where("id < 0"), dict(), r"empty"),
    "missing label": (
        lambda df, vdf: df, dict(featuresCols=COLS, labelCol="nope"),
        r"label column 'nope' is not in the data"),
    "missing feature column": (
        lambda df, vdf: df, dict(featuresCols=["x0", "zz"]),
        r"feature column 'zz' is not in the data"),
    "missing vector column": (
        lambda df, vdf: df, dict(), r"features column 'features' is not in the data"),
    "missing weight column": (
        lambda df, vdf: df, dict(featuresCols=COLS, weightCol="nope"),
        r"weight column 'nope' is not in the data"),
    "string feature": (
        lambda df, vdf: df.withColumn("s", F.lit("a")), dict(featuresCols=["x0", "s"]),
        r"feature column 's' must be numeric, but its type is string"),
    "string label": (
        lambda df, vdf: df.withColumn("label", F.col("label").cast("string")),
        dict(featuresCols=COLS), r"label column 'label' must be numeric"),
    "string features column": (
        lambda df, vdf: df.withColumn("features", F.lit("a")), dict(),
        r"features column 'features' must be a vector or an array of numbers"),
    "duplicate feature column": (
        lambda df, vdf: df, dict(featuresCols=["x0", "x0"]), r"lists a column twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_a_data_validation_error(case, df, vdf):
    make, params, match = BAD_INPUT[case]
    with pytest.raises(DataValidationError, match=match):
        LogisticRegression(maxIter=5, **params).fit(make(df, vdf))


def test_vector_size_mismatch(spark):
    rows = [(Vectors.dense([1.0, 2.0, 3.0]), 1.0), (Vectors.dense([0.0, 1.0, 2.0]), 0.0),
            (Vectors.dense([1.0, 2.0]), 1.0), (Vectors.dense([1.0, 2.0, 3.0, 4.0]), 0.0),
            (None, 1.0), (Vectors.dense([2.0, 1.0, 0.0]), 0.0)]
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    frame = spark.createDataFrame(rows, schema).coalesce(1)
    with pytest.raises(DataValidationError,
                       match=r"3 rows have a null feature vector or one whose size is not 3"):
        LogisticRegression(maxIter=5).fit(frame)


def test_squared_loss_accepts_any_label_but_not_nan(df):
    with pytest.raises(DataValidationError, match=r"label column 'target' contains NaN"):
        LinearRegression(featuresCols=COLS, labelCol="target", maxIter=5).fit(
            _nan_rows(df, "target", 3))


@pytest.mark.parametrize("params, match", [
    (dict(regParam=-0.1), r"param regParam must be >= 0, got -0.1"),
    (dict(optimizer="bfgs"),
     r"param optimizer must be one of \['gd', 'lbfgs', 'newton', 'sgd', .*'adagrad'\], got 'bfgs'"),
    (dict(elasticNetParam=1.5), r"param elasticNetParam must be in \[0, 1\]"),
    (dict(maxIter=-1), r"param maxIter must be >= 0"),
    (dict(stepSize=0.0), r"param stepSize must be > 0"),
    (dict(threshold=1.5), r"param threshold must be in \[0, 1\]"),
    (dict(regParam=0.1, elasticNetParam=0.5, optimizer="newton"),
     r"'newton' does not support an L1 penalty"),
])
def test_invalid_params_raise_config_error_before_any_spark_job(params, match, df, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the blocks must not be built for invalid params")

    monkeypatch.setattr(ResidentBlocks, "build", no_build)
    with pytest.raises(ConfigError, match=match):
        LogisticRegression(featuresCols=COLS, **params).fit(df)


def test_linear_regression_invalid_params(df):
    with pytest.raises(ConfigError, match="regParam"):
        LinearRegression(featuresCols=COLS, labelCol="target", regParam=-1.0).fit(df)


# --------------------------------------------------------------------------- block files
def _worker_block_root(spark):
    """Where the Python workers write blocks (their SPARK_LOCAL_DIRS, not the driver's)."""
    return spark.sparkContext.parallelize([0], 1).map(lambda _: local_root()).collect()[0]


@pytest.fixture
def cleanup_spy(monkeypatch):
    """Records each ResidentBlocks.cleanup: fit id, block paths and whether they existed then."""
    records = []
    original = ResidentBlocks.cleanup

    def spy(self):
        record = {"fit_id": self.fit_id, "paths": []}
        if self._keys_built:
            record["paths"] = [row["path"] for row in self.keys.collect()]  # from the cache
        record["existed"] = [os.path.isdir(p) for p in record["paths"]]
        records.append(record)
        original(self)

    monkeypatch.setattr(ResidentBlocks, "cleanup", spy)
    return records


def _assert_blocks_removed(spark, record, expect_paths=True):
    root = _worker_block_root(spark)
    if expect_paths:
        assert record["paths"] and all(record["existed"])
        assert all(os.path.dirname(p) == os.path.join(root, record["fit_id"])
                   for p in record["paths"])
    assert not any(os.path.exists(p) for p in record["paths"])
    assert not os.path.exists(os.path.join(root, record["fit_id"]))


def test_block_files_removed_after_fit(spark, df, cleanup_spy):
    model = LogisticRegression(featuresCols=COLS, maxIter=3, numPartitions=3).fit(df)
    assert model.summary.totalIterations == 3
    assert len(cleanup_spy) == 1 and len(cleanup_spy[0]["paths"]) == 3
    _assert_blocks_removed(spark, cleanup_spy[0])


def test_block_files_removed_after_validation_failure(spark, df, cleanup_spy):
    with pytest.raises(DataValidationError, match="must hold 0 or 1"):
        LogisticRegression(featuresCols=COLS, family="binomial").fit(
            df.withColumn("label", F.lit(2.0)))
    assert len(cleanup_spy) == 1
    _assert_blocks_removed(spark, cleanup_spy[0])


def test_block_files_removed_after_optimizer_failure(spark, df, cleanup_spy, monkeypatch):
    import sparkml_aiaas.models.linear as linear

    def failing_fit(data_pass, stats, **kwargs):
        data_pass(np.zeros((D, 1)), np.zeros(1))  # one real pass, then a crash
        raise RuntimeError("optimizer exploded")

    monkeypatch.setattr(linear, "fit_glm", failing_fit)
    with pytest.raises(RuntimeError, match="optimizer exploded"):
        LogisticRegression(featuresCols=COLS).fit(df)
    assert len(cleanup_spy) == 1
    _assert_blocks_removed(spark, cleanup_spy[0])


def test_failed_build_is_cleaned_up_without_rerunning(spark, cleanup_spy, tmp_path):
    calls = str(tmp_path / "calls.txt")

    @F.udf("double")
    def explode_on_row_5(x, i):
        if i == 5:
            with open(calls, "a") as f:
                f.write("x\n")
            raise ValueError("bad row")
        return x

    p = pd.DataFrame({"x": np.arange(20.0), "label": np.arange(20) % 2 * 1.0, "id": np.arange(20)})
    frame = spark.createDataFrame(p).coalesce(1).withColumn("x", explode_on_row_5("x", "id"))
    with pytest.raises(Exception, match="bad row"):
        LogisticRegression(featuresCols=["x"], numPartitions=1).fit(frame)
    with open(calls) as f:
        assert f.read().count("x") == 1  # the failed build ran once, cleanup did not redo it
    assert len(cleanup_spy) == 1
    _assert_blocks_removed(spark, cleanup_spy[0], expect_paths=False)


# --------------------------------------------------------------------------- engine
def test_tree_reduce_is_ordered(spark):
    sc = spark.sparkContext
    # list concatenation is associative but not commutative: any reordering shows
    rdd = sc.parallelize(range(16), 16).mapPartitionsWithIndex(lambda i, _: [(i, [i])])
    expected = list(range(16))
    for depth in (1, 2, 3):
        assert tree_reduce_ordered(rdd, lambda a, b: a + b, depth) == expected
    with pytest.raises(ValueError, match="depth"):
        tree_reduce_ordered(rdd, lambda a, b: a + b, 0)


def test_distributed_data_pass_matches_numpy_and_is_deterministic(df, pdf):
    X = pdf[COLS].to_numpy(float)
    y = pdf["label"].to_numpy(float)
    w = pdf["w"].to_numpy(float)
    with ResidentBlocks.build(df, FeatureSpec(columns=COLS), "label", "w",
                              num_partitions=6) as blocks:
        # 6 partitions at depth 2: one shuffle level of groups of 3 before the driver merge
        assert blocks.num_partitions == 6
        assert blocks.stats.count == N
        np.testing.assert_allclose(blocks.stats.mean, np.average(X, axis=0, weights=w),
                                   rtol=1e-12, atol=1e-14)
        assert blocks.stats.weight_sum == w.sum()
        coef = np.array([[0.3], [-0.2], [0.1], [0.05]])
        intercept = np.array([-0.1])
        data_pass = DistributedDataPass(blocks, "logistic", aggregation_depth=2)
        first = data_pass(coef, intercept)
        second = data_pass(coef, intercept)
        deeper = DistributedDataPass(blocks, "logistic", aggregation_depth=3)(coef, intercept)
        assert data_pass.passes == 2
    expected = loss_gradient_sums(LOSSES["logistic"], X, y, w, coef, intercept)
    assert first.count == N and first.weight == w.sum()
    assert first.loss == pytest.approx(expected.loss, rel=1e-12)
    np.testing.assert_allclose(first.grad, expected.grad, rtol=1e-11, atol=1e-11)
    # same data and parameters: bit-identical sums, whatever the task timing
    assert second.loss == first.loss
    np.testing.assert_array_equal(second.grad, first.grad)
    assert deeper.loss == pytest.approx(first.loss, rel=1e-13)


def test_missing_block_is_rebuilt_from_the_source(df, pdf):
    """A task that finds no block files (it ran away from them) recomputes that partition."""
    X = pdf[COLS].to_numpy(float)
    y = pdf["label"].to_numpy(float)
    coef, intercept = np.full((D, 1), 0.1), np.array([0.2])
    with ResidentBlocks.build(df, FeatureSpec(columns=COLS), "label", num_partitions=3) as blocks:
        data_pass = DistributedDataPass(blocks, "logistic")
        before = data_pass(coef, intercept)
        path = sorted(row["path"] for row in blocks.keys.collect())[1]
        shutil.rmtree(path)  # local mode: the executor's files are on this machine
        after = data_pass(coef, intercept)
        assert blocks.rebuilt_partitions == 1
        assert os.path.isdir(path)  # written again where the task ran
    expected = loss_gradient_sums(LOSSES["logistic"], X, y, np.ones(N), coef, intercept)
    assert after.count == before.count == N
    assert after.loss == pytest.approx(before.loss, rel=1e-13)
    np.testing.assert_allclose(after.grad, before.grad, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(after.grad, expected.grad, rtol=1e-11, atol=1e-11)


def test_estimator_params_round_trip(tmp_path):
    lr = LogisticRegression(featuresCols=COLS, regParam=0.3, optimizer="gd", weightCol="w",
                            numPartitions=3, threshold=0.7)
    path = str(tmp_path / "estimator")
    lr.save(path)
    loaded = LogisticRegression.load(path)
    assert loaded.getFeaturesCols() == COLS
    assert loaded.getRegParam() == 0.3 and loaded.getOptimizer() == "gd"
    assert loaded.getWeightCol() == "w" and loaded.getNumPartitions() == 3
    assert loaded.getThreshold() == 0.7
    assert loaded.feature_spec() == FeatureSpec(columns=COLS)


def test_more_partitions_than_rows(spark, pdf):
    small = pdf.head(6)
    frame = spark.createDataFrame(small)
    model = LinearRegression(featuresCols=COLS[:2], labelCol="target", numPartitions=8,
                             maxIter=4, standardization=False).fit(frame)
    ref = numpy_fit(small, "squared", label="target", cols=COLS[:2], max_iter=4,
                    standardization=False)
    assert model.summary.numRows == 6
    np.testing.assert_allclose(model.coefficients, ref.coef[:, 0], rtol=1e-9, atol=1e-12)
    assert model.intercept == pytest.approx(ref.intercept[0], rel=1e-9)


def test_block_files_round_trip(tmp_path, monkeypatch):
    from sparkml_aiaas.engine import block_files

    monkeypatch.setenv("SPARK_LOCAL_DIRS", f"{tmp_path},/elsewhere")
    assert block_files.local_root() == os.path.join(str(tmp_path), block_files.BLOCKS_DIRNAME)
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(7, 3)), rng.normal(size=7), rng.uniform(size=7)
    writer = block_files.BlockWriter("fit-a", 2, 0, 3)
    writer.append(X[:4], y[:4], w[:4])
    assert block_files.open_block(writer.path) is None  # not complete yet
    writer.append(X[4:], y[4:], w[4:])
    path = writer.close()
    assert path == os.path.join(block_files.fit_dir("fit-a"), "part-00002-0")
    Xb, yb, wb = block_files.open_block(path)
    np.testing.assert_array_equal(Xb, X)
    np.testing.assert_array_equal(yb, y)
    np.testing.assert_array_equal(wb, w)
    empty = block_files.BlockWriter("fit-a", 3, 0, 3).close()
    assert block_files.open_block(empty)[0].shape == (0, 3)
    aborted = block_files.BlockWriter("fit-a", 4, 1, 3)
    aborted.append(X, y, w)
    aborted.abort()
    assert not os.path.exists(aborted.path)
    assert block_files.remove_fit("fit-a") == 2
    assert not os.path.exists(block_files.fit_dir("fit-a"))
    assert block_files.remove_fit("fit-a") == 0
    assert block_files.open_block(path) is None


def test_remove_fit_siblings_reach_the_other_workers_app_dirs(tmp_path, monkeypatch):
    """A standalone worker's executors live under <local>/spark-*/executor-*/blockmgr-*, one
    executor-* per worker: a surviving executor's sweep reaches a lost executor's folder under
    another worker of the machine (local-cluster), and nothing of another fit."""
    from sparkml_aiaas.engine import block_files

    def blocks(*parts):
        path = tmp_path.joinpath(*parts, block_files.BLOCKS_DIRNAME)
        (path / "fit-a" / "part-00000-0").mkdir(parents=True)
        (path / "fit-b" / "part-00000-0").mkdir(parents=True)
        return path

    own = blocks("spark-1", "executor-a", "blockmgr-own")
    dead_here = blocks("spark-1", "executor-a", "blockmgr-dead")
    other_worker = blocks("spark-1", "executor-b", "blockmgr-dead")
    other_jvm = blocks("spark-2", "executor-c", "blockmgr-dead")
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(own.parent))
    assert block_files.remove_fit("fit-a", siblings=True) == 4
    for path in (own, dead_here, other_worker, other_jvm):
        assert sorted(os.listdir(path)) == ["fit-b"]
