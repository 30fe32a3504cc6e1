"""``model.transform`` gives pyspark.ml's output schema; ``score()`` keeps its wire types.

For every model family the columns ``transform`` appends (names, types, nullability, MLlib's
``ml_attr`` metadata, order) equal what the corresponding pyspark.ml model appends for the
same input: ``rawPrediction`` and ``probability`` dense vectors (a binary margin ``m`` as
``[-m, m]``), a non-null double ``prediction``; a ``*Col`` param set to ``""`` leaves its
column out.  Linear models built from MLlib's own fitted coefficients give MLlib's numbers and
the same evaluator metrics.  ``score()`` still writes ``array<double>`` / ``double`` columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml import classification as mc
from pyspark.ml import regression as mr
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT

from sparkml_aiaas.models.linear import (LinearRegressionModel, LinearSVCModel,
                                         LogisticRegressionModel)

COLS = ["x0", "x1", "x2"]
N = 80
OUTPUTS = ("rawPrediction", "probability", "prediction")


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, len(COLS)))
    pdf = pd.DataFrame(X, columns=COLS)
    m = X @ [1.5, -1.0, 0.5] + 0.2
    pdf["label"] = (rng.uniform(size=N) < 1 / (1 + np.exp(-m))).astype(float)
    pdf["label3"] = np.digitize(m + 0.5 * rng.normal(size=N), [-0.7, 0.7]).astype(float)
    pdf["target"] = X @ [2.0, -1.0, 0.5] + 1.0 + 0.1 * rng.normal(size=N)
    pdf["id"] = np.arange(N)
    return pdf


@pytest.fixture(scope="module")
def vdf(df):
    frame = VectorAssembler(inputCols=COLS, outputCol="features").transform(df).cache()
    frame.count()
    yield frame
    frame.unpersist()


def _added(out, data):
    """The fields ``transform`` appended: (name, type, nullable, metadata), in order."""
    return [(f.name, f.dataType, f.nullable, f.metadata)
            for f in out.schema.fields if f.name not in data.columns]


def _signature_of(out, data):
    return [{"name": n, "type": t.simpleString()} for n, t, _, _ in _added(out, data)]


def _linear(cls, coefficients, intercept, **params):
    model = cls(coefficients=coefficients, intercept=intercept,
                signature={"inputs": [{"name": "features", "type": "vector"}]})
    return model._set(featuresCol="features", **params)


# ------------------------------------------------------------------ MLlib's fitted models


@pytest.fixture(scope="module")
def mllib(vdf):
    """pyspark.ml's models on the same rows (few iterations: only their schema and, for the
    linear ones, their coefficients are used, whatever they are)."""
    return {
        "lr": mc.LogisticRegression(maxIter=3, regParam=0.01).fit(vdf),
        "lr3": mc.LogisticRegression(maxIter=3, regParam=0.01, labelCol="label3").fit(vdf),
        "linreg": mr.LinearRegression(maxIter=3, labelCol="target").fit(vdf),
        "svc": mc.LinearSVC(maxIter=3, regParam=0.01).fit(vdf),
        "mlp": mc.MultilayerPerceptronClassifier(layers=[3, 4, 3], maxIter=1, seed=1,
                                                 labelCol="label3").fit(vdf),
        "gbt": mc.GBTClassifier(maxIter=1, maxDepth=1, seed=1).fit(vdf),
        "rf": mc.RandomForestClassifier(numTrees=1, maxDepth=1, seed=1).fit(vdf),
    }


# ------------------------------------------------------------------------ our models


def _ours_linear(mllib):
    lr, lr3, svc, linreg = mllib["lr"], mllib["lr3"], mllib["svc"], mllib["linreg"]
    return {
        "binary_logistic": _linear(LogisticRegressionModel, lr.coefficients.toArray(),
                                   lr.intercept),
        "multinomial_logistic": _linear(LogisticRegressionModel,
                                        lr3.coefficientMatrix.toArray().T,
                                        lr3.interceptVector.toArray()),
        "linear_regression": _linear(LinearRegressionModel, linreg.coefficients.toArray(),
                                     linreg.intercept),
        "linear_svc": _linear(LinearSVCModel, svc.coefficients.toArray(), svc.intercept),
    }


@pytest.fixture(scope="module")
def ours(mllib, pdf):
    """One of our models per family (wrapped where training is not the point), each reading
    the same ``features`` vector column as MLlib's."""
    xgboost = pytest.importorskip("xgboost")
    pytest.importorskip("torch")
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.linear_model import Ridge
    from sklearn.svm import SVC

    from sparkml_aiaas.core.torch_nets import build_network
    from sparkml_aiaas.models.sklearn import SklearnClassificationModel, SklearnRegressionModel
    from sparkml_aiaas.models.torch import TorchClassificationModel, TorchRegressionModel
    from sparkml_aiaas.models.xgboost import (RandomForestClassificationModel,
                                              RandomForestRegressionModel,
                                              XGBoostClassificationModel,
                                              XGBoostRegressionModel)

    X = pdf[COLS].to_numpy()
    models = _ours_linear(mllib)

    def booster(label, **params):
        return xgboost.train({"max_depth": 2, **params},
                             xgboost.DMatrix(X, label=pdf[label].to_numpy()), num_boost_round=2)

    forest = dict(num_parallel_tree=2, subsample=0.8, colsample_bynode=0.8, learning_rate=1.0)
    vector = dict(featuresCol="features", featuresColType="vector")
    models["xgboost_classifier"] = XGBoostClassificationModel.from_booster(
        booster("label", objective="binary:logistic"), numClasses=2, **vector)
    models["xgboost_multiclass"] = XGBoostClassificationModel.from_booster(
        booster("label3", objective="multi:softprob", num_class=3), numClasses=3, **vector)
    models["xgboost_regressor"] = XGBoostRegressionModel.from_booster(
        booster("target", objective="reg:squarederror"), **vector)
    models["random_forest_classifier"] = RandomForestClassificationModel.from_booster(
        booster("label", objective="binary:logistic", **forest), numClasses=2, **vector)
    models["random_forest_regressor"] = RandomForestRegressionModel.from_booster(
        booster("target", objective="reg:squarederror", **forest), **vector)
    mlp = {"type": "mlp", "input_size": 3, "hidden_layers": [4], "output_size": 3}
    models["torch_classifier"] = TorchClassificationModel.from_module(
        mlp, build_network(mlp, seed=0), featuresCol="features", inputShape=[3], numClasses=3)
    reg = {"type": "mlp", "input_size": 3, "hidden_layers": [4], "output_size": 1}
    models["torch_regressor"] = TorchRegressionModel.from_module(
        reg, build_network(reg, seed=0), featuresCol="features", inputShape=[3])
    models["sklearn_classifier"] = SklearnClassificationModel.from_estimator(
        SkLogistic().fit(X, pdf["label"]), featuresCol="features")
    models["sklearn_svc"] = SklearnClassificationModel.from_estimator(
        SVC().fit(X, pdf["label"]), featuresCol="features")
    models["sklearn_regressor"] = SklearnRegressionModel.from_estimator(
        Ridge().fit(X, pdf["target"]), featuresCol="features")
    return models


#: Our family -> the pyspark.ml model it stands in for (one fit per distinct schema: every
#: MLlib regressor appends the same ``prediction``, ``{"ml_attr": {}}`` -- except GBTRegressor,
#: whose ``prediction`` carries a copy of the features' attributes, an MLlib quirk -- and every
#: k-class probabilistic classifier the same three columns).
COUNTERPART = {
    "binary_logistic": "lr", "multinomial_logistic": "lr3", "linear_regression": "linreg",
    "linear_svc": "svc", "torch_classifier": "mlp", "torch_regressor": "linreg",
    "xgboost_classifier": "gbt", "xgboost_multiclass": "lr3", "xgboost_regressor": "linreg",
    "random_forest_classifier": "rf", "random_forest_regressor": "linreg",
    "sklearn_classifier": "lr", "sklearn_svc": "svc", "sklearn_regressor": "linreg",
}


@pytest.mark.parametrize("family", sorted(COUNTERPART))
def test_transform_schema_equals_mllib(family, ours, mllib, vdf):
    model, theirs = ours[family], mllib[COUNTERPART[family]]
    got = model.transform(vdf)
    want = _added(theirs.transform(vdf), vdf)
    assert _added(got, vdf) == want
    assert got.columns[:len(vdf.columns)] == vdf.columns  # appended, inputs untouched
    # The signature records what transform appends.
    assert model.signature["outputs"] == _signature_of(got, vdf)


def test_pipeline_of_assembler_and_our_model_equals_mllib(mllib, df):
    assembler = VectorAssembler(inputCols=COLS, outputCol="features")
    theirs = Pipeline(stages=[assembler, mc.LogisticRegression(maxIter=5)]).fit(df)
    ours = PipelineModel(stages=[assembler, _ours_linear(mllib)["binary_logistic"]])
    assert _added(ours.transform(df), df) == _added(theirs.transform(df), df)


def test_numeric_columns_input_gives_the_same_outputs(mllib, vdf):
    lr = mllib["lr"]
    on_columns = LogisticRegressionModel(coefficients=lr.coefficients.toArray(),
                                         intercept=lr.intercept)._set(featuresCols=COLS)
    assert _added(on_columns.transform(vdf), vdf) == _added(lr.transform(vdf), vdf)


@pytest.mark.parametrize("family,empty", [
    ("binary_logistic", ["probabilityCol"]), ("binary_logistic", ["rawPredictionCol"]),
    ("binary_logistic", ["predictionCol"]),
    ("binary_logistic", ["rawPredictionCol", "probabilityCol", "predictionCol"]),
    ("linear_svc", ["rawPredictionCol"]), ("linear_regression", ["predictionCol"]),
])
def test_empty_output_column_param_leaves_the_column_out(family, empty, mllib, vdf):
    ours = _ours_linear(mllib)[family]
    theirs = mllib[COUNTERPART[family]]
    ours = ours.copy({ours.getParam(p): "" for p in empty})
    theirs = theirs.copy({theirs.getParam(p): "" for p in empty})
    got = ours.transform(vdf)
    assert _added(got, vdf) == _added(theirs.transform(vdf), vdf)
    assert ours.signature["outputs"] == _signature_of(got, vdf)
    # The predictor (score, serving) still gives every output, under its own name.
    assert len(ours.predictor().output_columns) == len(_ours_linear(mllib)[family]
                                                       .predictor().output_columns)


# -------------------------------------------------------------------------- numbers


def _rows(frame, columns):
    pdf = frame.orderBy("id").select(*columns).toPandas()
    return {c: np.stack([v.toArray() for v in pdf[c]]) if c != "prediction"
            else pdf[c].to_numpy() for c in columns}


@pytest.mark.parametrize("family", ["binary_logistic", "multinomial_logistic", "linear_svc"])
def test_same_numbers_and_metrics_as_mllib(family, mllib, vdf):
    """Our linear model holding MLlib's coefficients: MLlib's vectors (to rounding: the margin
    is summed in another order) and the same evaluator metrics."""
    theirs = mllib[COUNTERPART[family]]
    ours = _ours_linear(mllib)[family]
    got_df, want_df = ours.transform(vdf).cache(), theirs.transform(vdf).cache()
    columns = [c for c in OUTPUTS if c in want_df.columns]
    got, want = _rows(got_df, columns), _rows(want_df, columns)
    for column in columns:
        np.testing.assert_allclose(got[column], want[column], rtol=1e-9, atol=1e-12,
                                   err_msg=column)
    label = "label3" if family == "multinomial_logistic" else "label"
    evaluators = [MulticlassClassificationEvaluator(labelCol=label, metricName="accuracy")]
    if family != "multinomial_logistic":
        evaluators.append(BinaryClassificationEvaluator(labelCol=label))
    if "probability" in columns:
        evaluators.append(MulticlassClassificationEvaluator(labelCol=label, metricName="logLoss"))
    for evaluator in evaluators:
        assert evaluator.evaluate(got_df) == pytest.approx(evaluator.evaluate(want_df),
                                                           rel=1e-9), evaluator.getMetricName()
    got_df.unpersist()
    want_df.unpersist()


def test_binary_vectors_are_minus_m_m_and_arrays_come_back_exactly(mllib, vdf, pdf):
    """``vector_to_array`` gives back the predictor's numbers (score's, serving's) exactly."""
    model = _ours_linear(mllib)["binary_logistic"]
    out = (model.transform(vdf)
           .select("id", vector_to_array("rawPrediction").alias("raw"),
                   vector_to_array("probability").alias("p"), "prediction")
           .orderBy("id").toPandas())
    frame = pdf.sort_values("id").reset_index(drop=True)
    frame["features"] = list(frame[COLS].to_numpy())
    direct = model.predictor().predict(frame)
    m = direct["rawPrediction"].to_numpy()
    np.testing.assert_array_equal(np.stack(out["raw"]), np.column_stack([-m, m]))
    np.testing.assert_array_equal(np.stack(out["p"]), np.stack(direct["probability"]))
    np.testing.assert_array_equal(out["prediction"], direct["prediction"])


@pytest.mark.parametrize("family", ["xgboost_classifier", "torch_classifier",
                                    "sklearn_classifier"])
def test_mllib_evaluators_read_our_output(family, ours, vdf, pdf):
    """BinaryClassificationEvaluator and logLoss run on our vectors and give the metric of the
    predictor's own numbers."""
    from sklearn.metrics import log_loss, roc_auc_score

    model = ours[family]
    scored = model.transform(vdf).cache()
    frame = pdf.copy()
    frame["features"] = list(frame[COLS].to_numpy())
    proba = np.stack(model.predictor().predict(frame)["probability"])
    label = "label3" if proba.shape[1] > 2 else "label"
    y = pdf[label].to_numpy()
    logloss = MulticlassClassificationEvaluator(labelCol=label, metricName="logLoss")
    assert logloss.evaluate(scored) == pytest.approx(
        log_loss(y, proba, labels=list(range(proba.shape[1]))), rel=1e-6)
    if proba.shape[1] == 2:
        auc = BinaryClassificationEvaluator(labelCol=label).evaluate(scored)
        assert auc == pytest.approx(roc_auc_score(y, proba[:, 1]), rel=1e-9)
    scored.unpersist()


def test_missing_features_give_nan_not_null(spark):
    """Vectors cannot hold nulls: a row with a null or NaN feature gets NaN entries (and a
    non-null prediction), as the predictor's numbers say."""
    model = LogisticRegressionModel(coefficients=[1.0, -1.0], intercept=0.5)
    model._set(featuresCols=["a", "b"])
    frame = spark.createDataFrame([(0, 1.0, None), (1, float("nan"), 1.0), (2, 1.0, 2.0)],
                                  "id int, a double, b double")
    rows = model.transform(frame).orderBy("id").collect()
    for row in rows[:2]:
        assert np.isnan(row["rawPrediction"].toArray()).all()
        assert np.isnan(row["probability"].toArray()).all()
        assert row["prediction"] == 0.0
    np.testing.assert_array_equal(rows[2]["rawPrediction"].toArray(), [0.5, -0.5])


# ---------------------------------------------------------------------- score(): arrays

ARRAY = {"type": "array", "elementType": "double", "containsNull": True}
#: score()'s output columns, as release 0.1 wrote them (and readers outside Spark open).
SCORE_OUTPUTS = {
    "binary_logistic": [("rawPrediction", "double"), ("probability", ARRAY),
                        ("prediction", "double")],
    "multinomial_logistic": [("rawPrediction", ARRAY), ("probability", ARRAY),
                             ("prediction", "double")],
    "linear_svc": [("rawPrediction", "double"), ("prediction", "double")],
}


@pytest.mark.parametrize("family,source", [
    ("binary_logistic", "columns"),       # Spark SQL expressions in the JVM
    ("linear_svc", "columns"),
    ("multinomial_logistic", "columns"),  # mapInArrow
    ("binary_logistic", "vector"),        # the pandas UDF (a vector input column)
])
def test_score_output_schema_is_unchanged(family, source, spark, mllib, vdf, pdf, tmp_path):
    from sparkml_aiaas.scoring import score, score_dataframe

    model = _ours_linear(mllib)[family]
    if source == "columns":
        model = model.copy()._set(featuresCols=COLS)
        model._signature = {"inputs": [{"name": c, "type": "double"} for c in COLS]}
        data = spark.createDataFrame(pdf[COLS + ["id"]])
    else:
        data = vdf
    path = str(tmp_path / "model")
    model.write().save(path)
    report = score(spark, path, data, str(tmp_path / "scores"), run_id="r1")
    written = spark.read.parquet(report.output_path)
    fields = {f["name"]: (f["type"], f["nullable"]) for f in written.schema.jsonValue()["fields"]}
    assert [(n, fields[n][0]) for n, _ in SCORE_OUTPUTS[family]] == SCORE_OUTPUTS[family]
    assert all(fields[n][1] for n, _ in SCORE_OUTPUTS[family])
    assert not any(isinstance(f.dataType, VectorUDT) and f.name in OUTPUTS
                   for f in written.schema.fields)
    scored, _ = score_dataframe(data, model, "m", "1", run_id="r1")
    fields = {f["name"]: f["type"] for f in scored.schema.jsonValue()["fields"]}
    assert [(n, fields[n]) for n, _ in SCORE_OUTPUTS[family]] == SCORE_OUTPUTS[family]
