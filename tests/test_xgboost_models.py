"""XGBoost and XGBoost random forests trained by xgboost.spark: accuracy against single-node
xgboost, persistence (Spark and Spark-free), registry + batch scoring, wrapping trained
boosters, barrier preconditions and clear errors."""

import json
import os

import numpy as np
import pandas as pd
import pytest

xgboost = pytest.importorskip("xgboost")

from sklearn.metrics import roc_auc_score  # noqa: E402

from sparkml_aiaas.engine.barrier import (check_barrier_preconditions,  # noqa: E402
                                          total_task_slots)
from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError  # noqa: E402
from sparkml_aiaas.models import load_model, load_predictor  # noqa: E402
from sparkml_aiaas.models.xgboost import (RandomForestClassifier,  # noqa: E402
                                          RandomForestRegressor, XGBoostClassificationModel,
                                          XGBoostClassifier, XGBoostRegressionModel,
                                          XGBoostRegressor)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLS = [f"x{i}" for i in range(6)]
N_TRAIN, N_TEST = 5000, 1000


@pytest.fixture(scope="module")
def data():
    """Binary labels and a regression target on 6 features.

    Features are rounded to 0.1 (about 80 distinct values each, fewer than
    max_bin = 256): XGBoost's histogram cuts are then exact, the same whether
    one process or the allreduce of two workers' sketches computes them.  With
    continuous features the distributed sketch places a few cuts differently
    (measured: AUC within ±0.002 of single-node, not identical; docs/xgboost.md).
    2 % of x1 is missing (NaN), which both sides route by the learned default.
    """
    rng = np.random.default_rng(11)
    n = N_TRAIN + N_TEST
    X = np.round(rng.normal(size=(n, len(COLS))), 1)
    X[rng.random(n) < 0.02, 1] = np.nan
    x1 = np.nan_to_num(X[:, 1])
    logit = X[:, 0] + x1 * X[:, 2] - 0.5 * X[:, 3] + 0.3 * X[:, 4] ** 2
    label = (logit + rng.normal(size=n) > 0).astype(float)
    target = 2.0 * X[:, 0] + np.sin(2 * X[:, 2]) + x1 * X[:, 3] + 0.3 * rng.normal(size=n)
    frame = pd.DataFrame(X, columns=COLS)
    frame["label"], frame["target"], frame["id"] = label, target, np.arange(n)
    frame["vec"] = list(X)  # the same features as one array<double> column (NaN = missing)
    return frame.iloc[:N_TRAIN].reset_index(drop=True), frame.iloc[N_TRAIN:].reset_index(drop=True)


@pytest.fixture(scope="module")
def train_df(spark, data):
    frame = spark.createDataFrame(data[0]).cache()
    frame.count()
    yield frame
    frame.unpersist()


@pytest.fixture(scope="module")
def workers(spark):
    from sparkml_aiaas.engine.barrier import free_task_slots

    return 2 if free_task_slots(spark) >= 2 else 1


BOOST = {"max_depth": 3, "eta": 0.3, "tree_method": "hist"}


@pytest.fixture(scope="module")
def classifier(train_df, workers):
    return XGBoostClassifier(featuresCols=COLS, objective="binary:logistic", maxDepth=3, eta=0.3,
                             numRound=10, numWorkers=workers).fit(train_df)


@pytest.fixture(scope="module")
def forest(train_df, workers):
    return RandomForestClassifier(featuresCols=COLS, numTrees=20, maxDepth=5, subsample=0.8,
                                  colsampleBynode=0.8, seed=3, numWorkers=workers).fit(train_df)


@pytest.fixture(scope="module")
def regressor(train_df, workers):
    # Reads the array column: the featuresCol path of training and scoring.
    return XGBoostRegressor(featuresCol="vec", labelCol="target", maxDepth=4, eta=0.3,
                            numRound=15, numWorkers=workers).fit(train_df)


@pytest.fixture(scope="module")
def forest_regressor(train_df):
    return RandomForestRegressor(featuresCols=COLS, labelCol="target", numTrees=8, maxDepth=4,
                                 numWorkers=1).fit(train_df)


def _single_node(frame, label, params, rounds):
    return xgboost.train(params, xgboost.DMatrix(frame[COLS].to_numpy(), label=frame[label]),
                         rounds)


def _spark_scores(model, spark, frame, column="probability"):
    out = model.transform(spark.createDataFrame(frame)).orderBy("id").toPandas()
    values = out[column].to_numpy()
    return np.stack(values)[:, 1] if column != "prediction" else values.astype(float)


# --------------------------------------------------------------------- accuracy vs single node
def test_classifier_auc_matches_single_node_xgboost(spark, data, classifier, workers):
    train, test = data
    single = _single_node(train, "label", {**BOOST, "objective": "binary:logistic"}, 10)
    assert classifier.summary.numWorkers == workers
    assert classifier.summary.totalIterations == 10
    assert classifier.summary.metricName == "logloss"
    assert len(classifier.summary.objectiveHistory) == 10
    # Train and test rows scored in one Spark job (ids are distinct).
    both = _spark_scores(classifier, spark, pd.concat([train, test], ignore_index=True))
    for frame, ours in ((train, both[:N_TRAIN]), (test, both[N_TRAIN:])):
        ours = roc_auc_score(frame["label"], ours)
        reference = roc_auc_score(frame["label"], single.inplace_predict(frame[COLS].to_numpy()))
        assert abs(ours - reference) <= 0.002, (ours, reference)
    assert roc_auc_score(test["label"], single.inplace_predict(test[COLS].to_numpy())) > 0.75


def test_random_forest_auc_matches_single_node_forest(spark, data, forest):
    """RF mode: one round, 20 parallel trees, eta 1, row/column subsampling.

    The sampled rows differ between one process and two workers (each worker
    samples its own rows), so the forests are not identical; the tolerance is
    measured: 4 × the standard deviation of the test AUC over 5 single-node
    seeds (floor 0.005), i.e. what reseeding alone moves it by.
    """
    train, test = data
    booster = forest.get_booster()
    config = json.loads(booster.save_config())
    assert config["learner"]["gradient_booster"]["gbtree_model_param"]["num_parallel_tree"] == "20"
    assert booster.num_boosted_rounds() == 1
    params = {"objective": "binary:logistic", "max_depth": 5, "eta": 1.0, "subsample": 0.8,
              "colsample_bynode": 0.8, "num_parallel_tree": 20, "tree_method": "hist"}
    X_test = test[COLS].to_numpy()
    references = [roc_auc_score(test["label"], _single_node(train, "label", {**params, "seed": s},
                                                            1).inplace_predict(X_test))
                  for s in range(5)]
    tolerance = max(0.005, 4 * float(np.std(references)))
    ours = roc_auc_score(test["label"], _spark_scores(forest, spark, test))
    assert abs(ours - np.mean(references)) <= tolerance, (ours, references, tolerance)


def test_regressor_rmse_matches_single_node_xgboost(spark, data, regressor):
    train, test = data
    single = _single_node(train, "target", {**BOOST, "max_depth": 4,
                                            "objective": "reg:squarederror"}, 15)
    ours = _spark_scores(regressor, spark, test, "prediction")
    rmse = float(np.sqrt(np.mean((ours - test["target"]) ** 2)))
    reference = float(np.sqrt(np.mean(
        (single.inplace_predict(test[COLS].to_numpy()) - test["target"]) ** 2)))
    assert abs(rmse - reference) <= 0.002 * reference, (rmse, reference)
    assert rmse < 0.6 * float(test["target"].std())


def test_multiclass_classifier_matches_single_node_softprob(spark, data, train_df):
    """objective auto → multi:softprob for labels 0, 1, 2; one worker: the same booster."""
    from pyspark.sql import functions as F

    train, test = data
    classes = F.when(F.col("target") < -1, 0.0).when(F.col("target") < 1, 1.0).otherwise(2.0)
    model = XGBoostClassifier(featuresCols=COLS, labelCol="cls", maxDepth=2, numRound=3,
                              numWorkers=1).fit(train_df.withColumn("cls", classes))
    assert model.numClasses == 3 and model.summary.metricName == "mlogloss"
    labels = np.digitize(train["target"], [-1.0, 1.0])
    single = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2,
                            "eta": 0.3, "tree_method": "hist"},
                           xgboost.DMatrix(train[COLS].to_numpy(), label=labels), 3)
    out = model.predictor().predict(test)
    expected = single.inplace_predict(test[COLS].to_numpy())
    np.testing.assert_allclose(np.stack(out["probability"]), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out["prediction"], expected.argmax(axis=1).astype(float))


# ---------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", ["classifier", "forest", "regressor", "forest_regressor"])
def test_save_load_identical_in_spark_and_spark_free(spark, data, tmp_path, request, name):
    model = request.getfixturevalue(name)
    test = data[1]
    path = str(tmp_path / name)
    model.write().save(path)
    assert sorted(os.listdir(path)) == ["arrays.npz", "metadata", "metadata.json", "model.ubj"]
    with open(os.path.join(path, "model.ubj"), "rb") as f:
        assert f.read(1) == b"{"  # UBJ: an open, data-only JSON-like format
    reloaded = load_model(path)
    assert type(reloaded) is type(model)
    predictor = load_predictor(path)
    # The reloaded model writes "<column>_reloaded": both models score in one Spark job.
    renamed = {param: f"{reloaded.getOrDefault(param)}_reloaded" for param in
               (reloaded.predictionCol, getattr(reloaded, "probabilityCol", None),
                getattr(reloaded, "rawPredictionCol", None)) if param is not None}
    both = reloaded.copy(renamed).transform(model.transform(spark.createDataFrame(test)))
    both = both.orderBy("id").toPandas()
    free = predictor.predict(test)
    for column, _ in predictor.output_columns:
        expected = np.stack(both[column].to_numpy()).astype(float)
        np.testing.assert_array_equal(np.stack(both[f"{column}_reloaded"].to_numpy()), expected)
        np.testing.assert_array_equal(np.stack(free[column].to_numpy()), expected)
    assert reloaded.summary == model.summary


def test_tampered_booster_is_refused(classifier, tmp_path):
    path = str(tmp_path / "m")
    classifier.write().save(path)
    with open(os.path.join(path, "model.ubj"), "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelFormatError, match="checksum mismatch for model.ubj"):
        load_predictor(path)
    with pytest.raises(ModelFormatError, match="checksum mismatch for model.ubj"):
        load_model(path)


def test_register_and_batch_score_equal_transform(spark, data, classifier, tmp_path):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.scoring import score

    registry = ModelRegistry(str(tmp_path / "registry"))
    version = registry.register(classifier, "xgb_churn")
    test = data[1]
    frame = spark.createDataFrame(test)
    report = score(spark, f"xgb_churn/{version}", frame, str(tmp_path / "scored"),
                   registry=str(tmp_path / "registry"))
    assert report.rows_out == len(test)
    scored = spark.read.parquet(report.output_path).orderBy("id").toPandas()
    expected = classifier.transform(frame).orderBy("id").toPandas()
    for column in ("rawPrediction", "probability", "prediction"):
        np.testing.assert_array_equal(np.stack(scored[column].to_numpy()),
                                      np.stack(expected[column].to_numpy()))


# -------------------------------------------------------------------------------- wrapping
def test_wrapping_a_trained_booster_scores_as_xgboost(spark, data, tmp_path):
    train, test = data
    booster = _single_node(train, "label", {**BOOST, "objective": "binary:logistic"}, 5)
    model = XGBoostClassificationModel.from_booster(booster, featuresCols=COLS, numClasses=2)
    expected = booster.inplace_predict(test[COLS].to_numpy())
    np.testing.assert_allclose(_spark_scores(model, spark, test), expected, rtol=1e-6)
    path = str(tmp_path / "wrapped")
    model.write().save(path)
    free = load_predictor(path).predict(test)
    np.testing.assert_allclose(np.stack(free["probability"])[:, 1], expected, rtol=1e-6)
    np.testing.assert_array_equal(free["prediction"], (expected > 0.5).astype(float))

    # Pipeline-safe: a saved PipelineModel holding it reloads and scores the same.
    from pyspark.ml import PipelineModel

    PipelineModel([model]).write().save(str(tmp_path / "pipeline"))
    stage = PipelineModel.load(str(tmp_path / "pipeline")).stages[0]
    assert isinstance(stage, XGBoostClassificationModel)
    np.testing.assert_allclose(_spark_scores(stage, spark, test), expected, rtol=1e-6)
    # The estimator's params (xgbParams dict included) persist with pyspark's writer.
    estimator = XGBoostClassifier(featuresCols=COLS, numRound=7, xgbParams={"max_delta_step": 1})
    estimator.write().save(str(tmp_path / "estimator"))
    again = XGBoostClassifier.load(str(tmp_path / "estimator"))
    assert again.getOrDefault("xgbParams") == {"max_delta_step": 1}
    assert again.getOrDefault("numRound") == 7

    with pytest.raises(ConfigError, match="numClasses=3 does not match"):
        XGBoostClassificationModel.from_booster(booster, featuresCols=COLS, numClasses=3)
    with pytest.raises(ConfigError, match="the booster has 6 features but 2"):
        XGBoostClassificationModel.from_booster(booster, featuresCols=COLS[:2])
    with pytest.raises(ConfigError, match="is a binary classifier"):
        XGBoostRegressionModel.from_booster(booster, featuresCols=COLS)


def test_wrapping_sklearn_multiclass_and_regressor_models(data):
    """Spark-free: multiclass margins/probabilities and a regressor, via the sklearn API."""
    train, test = data
    X, X_test = train[COLS].to_numpy(), test[COLS].to_numpy()
    classes = np.digitize(train["target"], [-1.0, 1.0])
    sk = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(X, classes)
    model = XGBoostClassificationModel.from_booster(sk, featuresCols=COLS)
    assert model.numClasses == 3
    out = model.predictor().predict(test)
    np.testing.assert_allclose(np.stack(out["probability"]), sk.predict_proba(X_test), rtol=1e-5)
    np.testing.assert_array_equal(out["prediction"], sk.predict(X_test).astype(float))
    reg = xgboost.XGBRegressor(n_estimators=5, max_depth=3).fit(X, train["target"])
    wrapped = XGBoostRegressionModel.from_booster(reg, featuresCols=COLS, predictionCol="yhat")
    np.testing.assert_allclose(wrapped.predictor().predict(test)["yhat"], reg.predict(X_test),
                               rtol=1e-6)


# ------------------------------------------------------------------------ barrier preconditions
class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _FakeContext:
    """What check_barrier_preconditions reads from a SparkContext (no second context)."""

    def __init__(self, master, conf, running=0, parallelism=2):
        self.master, self._conf, self.defaultParallelism = master, _Conf(conf), parallelism
        self._running = running

    def getConf(self):
        return self._conf

    def statusTracker(self):
        running = self._running

        class Stage:
            numActiveTasks = running

        class Tracker:
            def getActiveStageIds(self):
                return [7] if running else []

            def getStageInfo(self, stage_id):
                return Stage()
        return Tracker()


class _FakeSession:
    def __init__(self, sc):
        self.sparkContext = sc


def test_total_task_slots_arithmetic():
    conf = _Conf({"spark.task.cpus": "2"})
    assert total_task_slots("local[8]", conf.get) == 4
    assert total_task_slots("local", _Conf().get) == 1
    assert total_task_slots("local[3, 2]", _Conf().get) == 3
    assert total_task_slots("local-cluster[2, 3, 1024]", _Conf().get) == 6
    assert total_task_slots("yarn", _Conf({"spark.executor.cores": "4"}).get, num_executors=5) == 20
    assert total_task_slots("spark://h:7077", conf.get, num_executors=3,
                            default_parallelism=12) == 6


def test_barrier_check_refuses_too_many_workers_with_the_numbers(spark):
    assert check_barrier_preconditions(spark, 1) >= 1
    with pytest.raises(ConfigError, match=r"needs 3 task slots.*only 2 are free: 2 slot\(s\) in "
                                          r"total \(master 'local\[2\]'"):
        check_barrier_preconditions(spark, 3)
    busy = _FakeSession(_FakeContext("local[4]", {}, running=3))
    with pytest.raises(ConfigError, match=r"needs 2 task slots.*only 1 are free: 4 slot\(s\).*"
                                          r"minus 3 running task\(s\)\. Set num_workers <= 1"):
        check_barrier_preconditions(busy, 2)


def test_barrier_check_refuses_dynamic_allocation():
    session = _FakeSession(_FakeContext("yarn", {"spark.dynamicAllocation.enabled": "true",
                                                 "spark.executor.cores": "4"}))
    with pytest.raises(ConfigError, match="spark.dynamicAllocation.enabled=false"):
        check_barrier_preconditions(session, 1)


def test_fit_refuses_more_workers_than_slots(train_df):
    with pytest.raises(ConfigError, match="needs 64 task slots"):
        XGBoostClassifier(featuresCols=COLS, numRound=1, numWorkers=64).fit(train_df)


# ------------------------------------------------------------------------------ bad input
def test_bad_input_gives_clear_errors(spark, data):
    frame = data[0].iloc[:60].copy()
    nan_label = frame.copy()
    nan_label.loc[3, "label"] = np.nan
    with pytest.raises(DataValidationError, match="label column 'label' has 1 null or NaN"):
        XGBoostClassifier(featuresCols=COLS).fit(spark.createDataFrame(nan_label))
    three = frame.copy()
    three.loc[:9, "label"] = 2.0
    with pytest.raises(DataValidationError, match=r"'binary:logistic' needs labels in \{0, 1\}"):
        XGBoostClassifier(featuresCols=COLS, objective="binary:logistic").fit(
            spark.createDataFrame(three))
    half = frame.copy()
    half.loc[0, "label"] = 0.5
    with pytest.raises(DataValidationError, match="class indices.*1 not integral"):
        RandomForestClassifier(featuresCols=COLS).fit(spark.createDataFrame(half))
    with pytest.raises(DataValidationError, match=r"feature column\(s\) \['nope'\]"):
        XGBoostRegressor(featuresCols=["nope"], labelCol="target").fit(
            spark.createDataFrame(frame))
    weighted = frame.assign(w=1.0)
    weighted.loc[5, "w"] = -1.0
    with pytest.raises(DataValidationError, match="weight column 'w' has 1 null, NaN or negative"):
        XGBoostRegressor(featuresCols=COLS, labelCol="target", weightCol="w").fit(
            spark.createDataFrame(weighted))
    with pytest.raises(DataValidationError, match="featuresCol 'id' must be a vector or an array"):
        XGBoostRegressor(featuresCol="id", labelCol="target").fit(spark.createDataFrame(frame))
    with pytest.raises(DataValidationError, match="labelCol 'y' is not in the data"):
        XGBoostRegressor(featuresCols=COLS, labelCol="y").fit(spark.createDataFrame(frame))
    with pytest.raises(ConfigError, match="xgbParams must not set \\['max_depth'\\]"):
        XGBoostClassifier(featuresCols=COLS, xgbParams={"max_depth": 2}).validate_params()
    with pytest.raises(ConfigError, match="subsample must be in \\(0, 1\\]"):
        RandomForestRegressor(featuresCols=COLS, subsample=0.0).validate_params()
    with pytest.raises(DataValidationError, match="missing column"):
        XGBoostClassificationModel.from_booster(
            _single_node(frame, "label", {"objective": "binary:logistic"}, 1),
            featuresCols=COLS).predictor().predict(frame.drop(columns=["x3"]))


# ---------------------------------------------------------------------------- the train job
def test_train_job_from_shipped_config(spark, tmp_path):
    from sparkml_aiaas.config import TrainJobConfig, load_config
    from sparkml_aiaas.data import write_breast_cancer_csv
    from sparkml_aiaas.pipeline import run_training

    dataset = write_breast_cancer_csv(str(tmp_path / "data" / "breast_cancer.csv"))
    config = load_config(TrainJobConfig, os.path.join(ROOT, "conf", "xgboost.yaml"), [
        f"input.path={dataset.path}", f"input.quarantine_path={tmp_path / 'q'}",
        f"output.model_path={tmp_path / 'model'}",
        f"output.metrics_path={tmp_path / 'metrics.json'}"])
    assert config.model.spark_params()["maxDepth"] == 3
    report = run_training(spark, config)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["auc"] > 0.95 and report.metrics["auc"] == metrics["metrics"]["auc"]
    assert metrics["iterations"] == 10 and len(metrics["objective_history"]) == 10
    predictor = load_predictor(str(tmp_path / "model"))
    assert predictor.metadata["data_source"]["path"] == dataset.path
    assert predictor.kind == "binary" and predictor.n_features == 30

    with pytest.raises(ConfigError, match=r"unknown model param\(s\) \['eta', 'num_round'\] for "
                                          r"type 'random_forest_classifier'; known: \[.*'num_trees'"):
        load_config(TrainJobConfig, os.path.join(ROOT, "conf", "xgboost.yaml"),
                    ["model.type=random_forest_classifier"])


def test_xgboost_and_xgboost_cpu_side_by_side_are_refused(monkeypatch):
    """Both distributions write the 'xgboost' module: one line saying which to keep."""
    import importlib.metadata

    from sparkml_aiaas.models import xgboost_predictor

    monkeypatch.setattr(xgboost_predictor, "_DISTRIBUTIONS_CHECKED", False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: {
        "xgboost": "3.2.0", "xgboost-cpu": "3.2.0"}[name])
    with pytest.raises(ConfigError) as raised:
        xgboost_predictor.check_xgboost_distribution()
    assert str(raised.value) == (
        "both xgboost 3.2.0 and xgboost-cpu 3.2.0 are installed, and they write the same "
        "'xgboost' module; keep one: pip uninstall -y xgboost xgboost-cpu && pip install "
        "xgboost-cpu (or xgboost on a CUDA machine)")


@pytest.mark.parametrize("system, machine", [("Linux", "x86_64"), ("Linux", "aarch64"),
                                             ("Darwin", "arm64"), ("Windows", "AMD64")])
def test_the_xgboost_extra_installs_exactly_one_distribution(system, machine):
    """pyproject's [xgboost] extra: xgboost-cpu on Linux x86-64 (no 469 MB NCCL), xgboost
    elsewhere; never both, never neither."""
    import tomllib

    from packaging.requirements import Requirement

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    environment = {"platform_system": system, "platform_machine": machine}
    chosen = [Requirement(r).name for r in extras["xgboost"]
              if Requirement(r).marker is None or Requirement(r).marker.evaluate(environment)]
    assert chosen == (["xgboost-cpu"] if (system, machine) == ("Linux", "x86_64")
                      else ["xgboost"])


# ---------------------------------------------------------------------------------- logging
@pytest.mark.parametrize("xgb_params, expect_info", [({}, False), ({"verbosity": 2}, True)])
def test_fit_is_quiet_unless_verbosity_asks(train_df, caplog, monkeypatch, xgb_params,
                                            expect_info):
    """A default fit logs nothing at INFO (xgboost.spark's params, "Training on CPUs",
    "Finished") and prints no per-round evaluation lines; verbosity >= 2 brings both back.
    The training task runs in a Python worker whose output the JVM owns, so what it is sent
    (verbose_eval, the logger level it reads) is checked where xgboost.spark computes it."""
    import logging

    from xgboost.spark import core

    shipped = {}
    original = core._SparkXGBEstimator._get_distributed_train_params

    def spy(self, dataset):
        params = original(self, dataset)
        shipped["verbose_eval"] = params.get("verbose_eval")
        shipped["worker_log_level"] = core.get_logger_level(core._LOG_TAG)
        return params

    monkeypatch.setattr(core._SparkXGBEstimator, "_get_distributed_train_params", spy)
    caplog.set_level(logging.INFO)  # the root: the XGBoost-PySpark logger keeps its level
    level_before = logging.getLogger("XGBoost-PySpark").level
    XGBoostClassifier(featuresCols=COLS, numRound=2, maxDepth=2, numWorkers=1,
                      xgbParams=xgb_params).fit(train_df.limit(500))
    info = [r for r in caplog.records if r.name == "XGBoost-PySpark" and r.levelno == logging.INFO]
    assert bool(info) is expect_info, [r.getMessage()[:80] for r in info]
    assert shipped["verbose_eval"] is expect_info
    if not expect_info:
        assert shipped["worker_log_level"] == logging.WARNING
        assert logging.getLogger("XGBoost-PySpark").level == level_before  # restored
