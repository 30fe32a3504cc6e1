"""scikit-learn models: sampled training with a size guard, wrapping, safe skops artifacts.

References are the same scikit-learn estimators fitted in this process on the
same seeded Spark sample (``df.sample(fraction, seed)``), so the wrapper must
reproduce them exactly.
"""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models import load_predictor
from sparkml_aiaas.models.sklearn_predictor import (SklearnPredictor, build_estimator,
                                                    estimator_spec, plan_sample, safe_dumps,
                                                    safe_loads, spec_json)

COLS = ["x0", "x1", "x2", "x3"]
N = 2000


class Evil(BaseEstimator, ClassifierMixin):
    """A user's class: must never be imported by a safe load."""


def user_function(X):
    return X


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(N, len(COLS)))
    frame = pd.DataFrame(X, columns=COLS)
    margin = X @ [1.0, -1.5, 0.5, 0.0]
    frame["label"] = (margin + 0.5 * rng.normal(size=N) > 0).astype(float)
    frame["label3"] = np.digitize(margin + 0.3 * rng.normal(size=N), [-0.7, 0.7]).astype(float)
    frame["y"] = X @ [2.0, -1.0, 0.5, 3.0] + 0.1 * rng.normal(size=N)
    frame["name"] = np.where(frame["label"] > 0, "yes", "no")
    frame["id"] = np.arange(N)
    return frame


def _sample(df, fraction, seed, label="label"):
    """The rows the wrapper trains on, drawn independently: Spark's seeded Bernoulli sample."""
    frame = df if fraction >= 1.0 else df.sample(withReplacement=False, fraction=fraction,
                                                seed=seed)
    rows = frame.select(*COLS, label).toPandas()
    return rows[COLS].to_numpy(np.float64), rows[label].to_numpy(np.float64)


def _spark_outputs(model, df, columns):
    # No orderBy (a shuffle): transform is narrow, so the rows keep df's order.
    got = model.transform(df).toPandas()
    assert (got["id"].to_numpy() == np.arange(N)).all()
    return {c: np.stack(got[c].to_numpy()).astype(float) if got[c].dtype == object
            else got[c].to_numpy(np.float64) for c in columns}


def _frame_outputs(frame, columns):
    return {c: np.stack(frame[c].to_numpy()).astype(float) if frame[c].dtype == object
            else frame[c].to_numpy(np.float64) for c in columns}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------- Spark-free pieces


def test_estimator_spec_round_trips_nested_estimators_tuples_and_int_keys():
    pipe = Pipeline([("scale", StandardScaler(with_mean=False)),
                     ("rf", RandomForestClassifier(n_estimators=7, class_weight={0: 1, 1: 3},
                                                   max_features=None))])
    spec = json.loads(spec_json(pipe))
    rebuilt = build_estimator(spec)
    assert type(rebuilt) is Pipeline and isinstance(rebuilt.steps[0], tuple)
    assert rebuilt.steps[1][1].get_params() == pipe.steps[1][1].get_params()
    assert rebuilt.steps[1][1].class_weight == {0: 1, 1: 3}
    assert estimator_spec(rebuilt) == spec
    assert build_estimator(estimator_spec(SVC(kernel="linear", C=0.25))).get_params() == \
        SVC(kernel="linear", C=0.25).get_params()


def test_estimator_spec_refuses_what_it_cannot_rebuild_safely():
    with pytest.raises(ConfigError, match="not a scikit-learn class"):
        spec_json(Evil())
    with pytest.raises(ConfigError, match="estimator.func"):
        spec_json(FunctionTransformer(func=np.log1p))  # a function is not a JSON param
    for path in ("os.system", "builtins.eval", "sklearn.no_such_module.Thing"):
        with pytest.raises(ConfigError, match="estimator class"):
            build_estimator({"class": path, "params": {}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        spec_json("{not json")


def test_plan_sample_fraction_and_size_guard():
    whole = plan_sample(2000, 4, 10**6)
    assert (whole.fraction, whole.bound_rows, whole.estimated_bytes) == (1.0, 2000, 80000)
    capped = plan_sample(2000, 4, 10**6, max_sample_rows=500)
    assert capped.fraction == 0.25 and capped.expected_rows == 500
    # Expected rows plus four binomial standard deviations.
    assert capped.bound_rows == int(np.ceil(500 + 4 * np.sqrt(2000 * 0.25 * 0.75)))
    assert plan_sample(2000, 4, 10**6, sample_fraction=0.1, max_sample_rows=500).fraction == 0.1
    with pytest.raises(ConfigError) as info:
        plan_sample(2000, 4, 1000)
    message = str(info.value)
    for number in ("2000 rows", "4 features", "80000 bytes", "maxSampleBytes=1000"):
        assert number in message


@pytest.mark.parametrize("payload, refused", [
    (FunctionTransformer(func=eval), "builtins.eval"),
    (FunctionTransformer(func=os.system), "system"),
    (Evil(), "Evil"),
    (FunctionTransformer(func=user_function), "user_function"),
    (FunctionTransformer(func=np.load), "load"),  # a numpy *function*: only classes are trusted
])
def test_crafted_skops_files_are_refused(payload, refused):
    data = sio.dumps(payload)
    with pytest.raises(ModelFormatError, match=refused):
        safe_loads(data)
    with pytest.raises(ConfigError, match="cannot be saved safely"):
        safe_dumps(payload)


def test_safe_loads_accepts_sklearn_models_and_refuses_garbage():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), np.arange(60) % 2
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    # sklearn.tree._tree.Tree is not in skops' defaults: the allowlist trusts it.
    assert "sklearn.tree._tree.Tree" in sio.get_untrusted_types(data=sio.dumps(forest))
    loaded = safe_loads(safe_dumps(forest))
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))
    with pytest.raises(ModelFormatError, match="not a readable skops file"):
        safe_loads(b"definitely not a zip file")
    with pytest.raises(ModelFormatError, match="not a scikit-learn estimator"):
        safe_loads(sio.dumps({"a": 1}))


def test_predictor_outputs_nan_rows_and_bad_input():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 2))
    y = (X[:, 0] > 0).astype(int)
    svc = SVC(kernel="linear").fit(X, y)
    predictor = SklearnPredictor(svc, "classifier", feature_cols=["a", "b"])
    # No predict_proba (probability=False): no probability column.
    assert predictor.output_columns == [("rawPrediction", "array<double>"),
                                        ("prediction", "double")]
    frame = pd.DataFrame(X.copy(), columns=["a", "b"], index=np.arange(80) + 100)
    out = predictor.predict(frame)
    assert list(out.index) == list(frame.index)
    d = svc.decision_function(X)
    np.testing.assert_array_equal(np.stack(out["rawPrediction"]), np.column_stack([-d, d]))
    np.testing.assert_array_equal(out["prediction"], svc.predict(X).astype(float))
    # A NaN row gets NaN outputs (SVC refuses NaN); the others are unchanged.
    frame.iloc[3, 0] = np.nan
    out = predictor.predict(frame)
    assert np.isnan(out["prediction"].iloc[3]) and np.isnan(out["rawPrediction"].iloc[3]).all()
    np.testing.assert_array_equal(np.delete(out["prediction"].to_numpy(), 3),
                                  np.delete(svc.predict(X).astype(float), 3))
    empty = predictor.predict(frame.iloc[:0])
    assert list(empty.columns) == ["rawPrediction", "prediction"] and len(empty) == 0
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['b'\]"):
        predictor.predict(frame[["a"]])
    with pytest.raises(DataValidationError, match="must be numeric"):
        predictor.predict(frame.assign(b="text"))
    with pytest.raises(DataValidationError, match="expected 2 features"):
        predictor.predict_matrix(np.zeros((2, 3)))


def test_from_estimator_refuses_bad_estimators():
    from sparkml_aiaas.models import SklearnClassificationModel, SklearnRegressionModel

    X = np.random.default_rng(2).normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ConfigError, match="not fitted"):
        SklearnClassificationModel.from_estimator(SVC(), featuresCols=["a", "b"])
    with pytest.raises(ConfigError, match="fitted on 2 features but featuresCols names 3"):
        SklearnClassificationModel.from_estimator(SVC().fit(X, y), featuresCols=["a", "b", "c"])
    with pytest.raises(ConfigError, match="needs a scikit-learn regressor"):
        SklearnRegressionModel.from_estimator(SVC().fit(X, y), featuresCols=["a", "b"])
    with pytest.raises(ConfigError, match="got a str"):
        SklearnClassificationModel.from_estimator("SVC", featuresCols=["a", "b"])
    with pytest.raises(ConfigError, match="cannot be saved safely.*user_function"):
        pipe = Pipeline([("f", FunctionTransformer(func=user_function)),
                         ("svc", SVC())]).fit(X, y)
        SklearnClassificationModel.from_estimator(pipe, featuresCols=["a", "b"])


# ---------------------------------------------------------------------- with Spark


@pytest.fixture(scope="module")
def svc_model(df):
    from sparkml_aiaas.models import SklearnClassifier

    return SklearnClassifier(estimator=SVC(kernel="linear"), featuresCols=COLS,
                             maxSampleRows=1500, seed=3).fit(df)


@pytest.fixture(scope="module")
def rf_model(df):
    from sparkml_aiaas.models import SklearnClassifier

    forest = RandomForestClassifier(n_estimators=15, max_depth=6)
    return SklearnClassifier(estimator=forest, featuresCols=COLS, labelCol="label3",
                             sampleFraction=0.6, seed=1).fit(df)


SVC_OUT = ["rawPrediction", "prediction"]
RF_OUT = ["rawPrediction", "probability", "prediction"]


@pytest.fixture(scope="module")
def svc_outputs(svc_model, df):
    return _spark_outputs(svc_model, df, SVC_OUT)


@pytest.fixture(scope="module")
def rf_outputs(rf_model, df):
    return _spark_outputs(rf_model, df, RF_OUT)


def test_svc_equals_sklearn_on_the_same_sample(svc_model, svc_outputs, df, pdf):
    summary = svc_model.summary
    assert summary.numRows == N and summary.sampleFraction == 0.75
    X, y = _sample(df, summary.sampleFraction, 3)
    assert summary.numSampleRows == len(y) and 1300 < len(y) < 1700
    assert summary.sampleBytes == len(y) * 5 * 8 <= summary.estimatedSampleBytes
    reference = SVC(kernel="linear", random_state=3).fit(X, y.astype(int))
    got = svc_outputs
    d = reference.decision_function(pdf[COLS].to_numpy())
    np.testing.assert_array_equal(got["rawPrediction"], np.column_stack([-d, d]))
    np.testing.assert_array_equal(got["prediction"], reference.predict(pdf[COLS].to_numpy()))
    assert svc_model.classes == [0, 1]


def test_random_forest_equals_sklearn_on_the_same_sample(rf_model, rf_outputs, df, pdf):
    summary = rf_model.summary
    assert summary.randomState == 1  # an unset random_state takes the seed
    X, y = _sample(df, 0.6, 1, label="label3")
    assert summary.numSampleRows == len(y)
    reference = RandomForestClassifier(n_estimators=15, max_depth=6, random_state=1)
    reference.fit(X, y.astype(int))
    got = rf_outputs
    proba = reference.predict_proba(pdf[COLS].to_numpy())
    np.testing.assert_array_equal(got["probability"], proba)
    np.testing.assert_array_equal(got["rawPrediction"], proba)  # no decision_function
    np.testing.assert_array_equal(got["prediction"], reference.predict(pdf[COLS].to_numpy()))


def test_size_guard_refuses_with_the_numbers(df, spark):
    from sparkml_aiaas.models import SklearnClassifier

    sc = spark.sparkContext
    try:
        sc.setJobGroup("sklearn-count", "a count")
        df.count()
        sc.setJobGroup("sklearn-size-guard", "refused fit")
        with pytest.raises(ConfigError) as info:
            SklearnClassifier(estimator=SVC(kernel="linear"), featuresCols=COLS,
                              maxSampleBytes=50_000).fit(df)
        # Refused after the count (one or two jobs, with adaptive execution), before any
        # sampling or collecting job.
        jobs = sc.statusTracker().getJobIdsForGroup
        assert len(jobs("sklearn-size-guard")) == len(jobs("sklearn-count"))
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    message = str(info.value)
    for part in ("up to 2000 rows", "4 features + label", "80000 bytes", "maxSampleBytes=50000"):
        assert part in message
    # A row cap that fits passes the same budget.
    model = SklearnClassifier(estimator=SVC(kernel="linear"), featuresCols=COLS,
                              maxSampleBytes=50_000, maxSampleRows=1000).fit(df)
    assert model.summary.estimatedSampleBytes <= 50_000
    assert model.summary.sampleBytes <= 50_000


def test_save_load_identical_in_spark_and_spark_free(svc_model, svc_outputs, rf_model,
                                                     rf_outputs, df, pdf, tmp_path):
    from sparkml_aiaas.models import SklearnClassificationModel

    for name, model, before in [("svc", svc_model, svc_outputs), ("rf", rf_model, rf_outputs)]:
        columns = list(before)
        path = str(tmp_path / name)
        model.write().save(path)
        with open(os.path.join(path, "metadata.json")) as f:
            metadata = json.load(f)
        assert metadata["predictor"]["family"] == "sklearn"
        assert "model.skops" in metadata["files"]
        assert metadata["training"]["numSampleRows"] == model.summary.numSampleRows
        assert [c["name"] for c in metadata["signature"]["inputs"]] == COLS
        loaded = SklearnClassificationModel.load(path)
        assert loaded.summary == model.summary
        _assert_same(_spark_outputs(loaded, df, columns), before)
        predictor = load_predictor(path)
        _assert_same(_frame_outputs(predictor.predict(pdf), columns), before)
        _assert_same(_frame_outputs(predictor.predict_matrix(pdf[COLS].to_numpy()), columns),
                     before)


def test_pipeline_save_load_and_copy_keep_the_estimator(df, pdf, tmp_path):
    from pyspark.ml import Pipeline as SparkPipeline
    from pyspark.ml import PipelineModel

    from sparkml_aiaas.models import SklearnClassifier

    clf = SklearnClassifier(estimator=RandomForestClassifier(n_estimators=5, max_depth=3),
                            featuresCols=COLS, maxSampleRows=800, seed=5,
                            predictionCol="pred")
    copied = clf.copy({clf.seed: 6})
    assert copied.getEstimatorSpec() == clf.getEstimatorSpec() and copied.getSeed() == 6
    pipeline = SparkPipeline(stages=[clf])
    pipeline.write().save(str(tmp_path / "unfitted"))
    again = SparkPipeline.load(str(tmp_path / "unfitted")).getStages()[0]
    assert again.getEstimator().get_params() == clf.getEstimator().get_params()
    assert again.getMaxSampleRows() == 800
    fitted = pipeline.fit(df)
    fitted.write().save(str(tmp_path / "fitted"))
    restored = PipelineModel.load(str(tmp_path / "fitted"))
    # A forest predicts row by row: the Spark-free predictor of the fitted stage is the
    # reference, so one Spark job checks the restored pipeline.
    expected = _frame_outputs(fitted.stages[0].predictor().predict(pdf), ["probability", "pred"])
    _assert_same(_spark_outputs(restored, df, ["probability", "pred"]), expected)


def test_registry_and_batch_score_equal_transform(svc_model, svc_outputs, pdf, spark,
                                                  tmp_path):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.scoring import read_scores, score

    registry = ModelRegistry(str(tmp_path / "registry"))
    version = registry.register(svc_model, "svc")
    input_path = str(tmp_path / "input.parquet")
    pdf.to_parquet(input_path)
    out = str(tmp_path / "scored")
    report = score(spark, "svc", input_path, out, registry=str(tmp_path / "registry"),
                   batch_size=300)
    assert report.rows_out == N and report.model_version == str(version)
    got = read_scores(spark, out).toPandas().sort_values("id", ignore_index=True)
    _assert_same(_frame_outputs(got, SVC_OUT), svc_outputs)
    direct = registry.load_predictor("svc").predict(pdf)
    _assert_same(_frame_outputs(direct, ["rawPrediction", "prediction"]),
                 _frame_outputs(got, ["rawPrediction", "prediction"]))


def test_wrapped_sklearn_pipeline_scores_like_predict_proba(df, pdf, tmp_path):
    from sparkml_aiaas.models import SklearnClassificationModel

    # Fitted on a pandas frame: its feature names become featuresCols.
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(C=0.5))])
    pipe.fit(pdf[COLS].iloc[:500], pdf["label"].iloc[:500].astype(int))
    model = SklearnClassificationModel.from_estimator(pipe, probabilityCol="p")
    assert model.getFeaturesCols() == COLS and not model.hasSummary
    assert model.signature["inputs"] == [{"name": c, "type": "double"} for c in COLS]
    got = _spark_outputs(model, df, ["rawPrediction", "p", "prediction"])
    np.testing.assert_allclose(got["p"], pipe.predict_proba(pdf[COLS]), rtol=0, atol=1e-15)
    d = pipe.decision_function(pdf[COLS])
    np.testing.assert_allclose(got["rawPrediction"], np.column_stack([-d, d]), rtol=1e-13,
                               atol=1e-13)
    np.testing.assert_array_equal(got["prediction"], pipe.predict(pdf[COLS]))
    path = str(tmp_path / "pipe")
    model.write().save(path)
    direct = _frame_outputs(load_predictor(path).predict(pdf), ["p", "prediction"])
    # BLAS matrix products may round differently for a 2000-row frame than for Spark's
    # smaller Arrow batches: equal to the last bit or two, not bit for bit.
    np.testing.assert_allclose(direct["p"], got["p"], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(direct["prediction"], got["prediction"])
    _assert_same(_spark_outputs(SklearnClassificationModel.load(path), df, ["p", "prediction"]),
                 {k: got[k] for k in ["p", "prediction"]})


def test_regressors_trained_and_wrapped_on_a_vector_column(df, pdf, tmp_path):
    from pyspark.ml.feature import VectorAssembler

    from sparkml_aiaas.models import SklearnRegressionModel, SklearnRegressor

    vectors = VectorAssembler(inputCols=COLS, outputCol="features").transform(df)
    ridge = SklearnRegressor(estimator=Ridge(alpha=2.0), labelCol="y").fit(vectors)
    assert ridge.summary.numSampleRows == N and ridge.summary.sampleFraction == 1.0
    assert ridge.signature["inputs"] == [{"name": "features", "type": "vector"}]
    reference = Ridge(alpha=2.0).fit(pdf[COLS].to_numpy(), pdf["y"].to_numpy())
    np.testing.assert_array_equal(ridge.estimator_.coef_, reference.coef_)
    got = _spark_outputs(ridge, vectors, ["prediction"])
    np.testing.assert_allclose(got["prediction"], reference.predict(pdf[COLS].to_numpy()),
                               rtol=1e-13, atol=1e-13)
    path = str(tmp_path / "ridge")
    ridge.write().save(path)
    _assert_same(_spark_outputs(SklearnRegressionModel.load(path), vectors, ["prediction"]), got)
    frame = pdf.assign(features=list(pdf[COLS].to_numpy()))
    _assert_same(_frame_outputs(load_predictor(path).predict(frame), ["prediction"]), got)
    # An already-fitted forest, wrapped for batch scoring.
    forest = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0)
    forest.fit(pdf[COLS].to_numpy()[:400], pdf["y"].to_numpy()[:400])
    wrapped = SklearnRegressionModel.from_estimator(forest, featuresCol="features")
    got = _spark_outputs(wrapped, vectors, ["prediction"])
    np.testing.assert_array_equal(got["prediction"], forest.predict(pdf[COLS].to_numpy()))


def test_behind_a_preprocessor_in_the_registry(df, pdf, tmp_path):
    from pyspark.ml import Pipeline as SparkPipeline

    from sparkml_aiaas.models import SklearnClassifier
    from sparkml_aiaas.preprocessing import Preprocessor
    from sparkml_aiaas.registry import ModelRegistry

    pipeline = SparkPipeline(stages=[
        Preprocessor(numericCols=COLS, scaling="standard"),
        SklearnClassifier(estimator=RandomForestClassifier(n_estimators=5, max_depth=4),
                          featuresCol="features", maxSampleRows=1000, seed=2),
    ]).fit(df)
    registry = ModelRegistry(str(tmp_path / "registry"))
    registry.register(pipeline, "forest")
    # Raw columns in, scaled by the preprocessor, then the forest: the same numbers as
    # scikit-learn on the features Spark's PreprocessorModel produces.
    direct = registry.load_predictor("forest").predict(pdf[COLS])
    rows = pipeline.stages[0].transform(df).select("features").toPandas()
    Z = np.stack([v.toArray() for v in rows["features"]])
    forest = pipeline.stages[1].estimator_
    np.testing.assert_array_equal(np.stack(direct["probability"]), forest.predict_proba(Z))
    np.testing.assert_array_equal(direct["prediction"], forest.predict(Z))


def _rewrite_skops(path, data):
    """Replace model.skops and its checksum, as an attacker with write access could."""
    with open(os.path.join(path, "model.skops"), "wb") as f:
        f.write(data)
    meta_path = os.path.join(path, "metadata.json")
    with open(meta_path) as f:
        metadata = json.load(f)
    metadata["files"]["model.skops"]["sha256"] = hashlib.sha256(data).hexdigest()
    with open(meta_path, "w") as f:
        json.dump(metadata, f)


def test_malicious_saved_model_is_refused(svc_model, tmp_path):
    from sparkml_aiaas.models import SklearnClassificationModel

    path = str(tmp_path / "svc")
    svc_model.write().save(path)
    with open(os.path.join(path, "model.skops"), "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ModelFormatError, match="checksum mismatch for model.skops"):
        load_predictor(path)
    _rewrite_skops(path, sio.dumps(Pipeline([("f", FunctionTransformer(func=eval)),
                                             ("svc", SVC())])))
    with pytest.raises(ModelFormatError, match="builtins.eval"):
        load_predictor(path)
    with pytest.raises(ModelFormatError, match="builtins.eval"):
        SklearnClassificationModel.load(path)
    _rewrite_skops(path, sio.dumps(Evil()))
    with pytest.raises(ModelFormatError, match="Evil"):
        load_predictor(path)


def test_bad_input_gives_clear_errors(df, svc_model):
    from sparkml_aiaas.models import SklearnClassifier

    svc = SVC(kernel="linear")
    with pytest.raises(DataValidationError, match="'nope' is not in the data"):
        SklearnClassifier(estimator=svc, featuresCols=[*COLS, "nope"]).fit(df)
    with pytest.raises(DataValidationError, match="'name' must be numeric.*string"):
        SklearnClassifier(estimator=svc, featuresCols=[*COLS, "name"]).fit(df)
    with pytest.raises(DataValidationError, match=r"lacks class\(es\) \[0\]"):
        SklearnClassifier(estimator=svc, featuresCols=COLS, labelCol="shifted").fit(
            df.withColumn("shifted", df["label"] + 1))
    with pytest.raises(ConfigError, match="not a scikit-learn class"):
        SklearnClassifier(estimator=Evil(), featuresCols=COLS)
    with pytest.raises(ConfigError, match="needs a scikit-learn classifier.*Ridge"):
        SklearnClassifier(estimator=Ridge(), featuresCols=COLS).fit(df)
    with pytest.raises(ConfigError, match="param estimator is not set"):
        SklearnClassifier(featuresCols=COLS).fit(df)
    with pytest.raises(ConfigError, match="sampleFraction must be in"):
        SklearnClassifier(estimator=svc, featuresCols=COLS, sampleFraction=0.0).fit(df)
    with pytest.raises(DataValidationError, match="'x3' is not in the data"):
        svc_model.transform(df.drop("x3"))
    with pytest.raises(DataValidationError, match="'x0' must be numeric"):
        svc_model.transform(df.withColumn("x0", df["name"]))
