"""sparkml_aiaas.tuning: CrossValidator / TrainValidationSplit over one set of grouped blocks.

Every fast-path result is compared with pyspark.ml's own validator over the same estimator,
data and seed (so the same folds): the metrics agree to rounding, the same map wins, the
refitted best model is ``estimator.fit(dataset, bestMap)`` to rounding.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import tuning as pyspark_tuning
from pyspark.ml.evaluation import (BinaryClassificationEvaluator, Evaluator,
                                   MulticlassClassificationEvaluator, RegressionEvaluator)
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.tuning import ParamGridBuilder

from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression
from sparkml_aiaas.tuning import CrossValidator, TrainValidationSplit

FEATURES = [f"x{i}" for i in range(5)]


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(3)
    n = 3000
    X = rng.normal(size=(n, len(FEATURES)))
    margin = X @ np.array([1.0, -0.8, 0.5, 0.0, 0.3]) + 0.2
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(float)
    frame["y"] = margin + rng.normal(scale=0.5, size=n)
    frame["cls"] = np.digitize(margin + rng.normal(scale=0.7, size=n), [-0.7, 0.7]).astype(float)
    frame["w"] = rng.uniform(0.5, 2.0, size=n)
    frame["fold"] = rng.integers(0, 3, size=n)
    return frame


def _fast_path_taken(caplog, kind: str) -> bool:
    return any(f"{kind} over" in r.getMessage() for r in caplog.records)


def _compare(ours, theirs, metrics_attr: str, rtol: float = 1e-7):
    np.testing.assert_allclose(getattr(ours, metrics_attr), getattr(theirs, metrics_attr),
                               rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(ours.bestModel.coefficientMatrix,
                               theirs.bestModel.coefficientMatrix, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", ["binary_auc", "binary_pr_weighted", "svc_accuracy",
                                  "multinomial_f1", "multinomial_logloss", "regression_rmse",
                                  "regression_r2_weighted"])
def test_cross_validator_matches_pyspark_over_the_same_estimator(df, case, caplog):
    weights = {"weightCol": "w"} if case.endswith("_weighted") else {}
    if case.startswith("binary"):
        est = LogisticRegression(featuresCols=FEATURES, **weights)
        metric = "areaUnderPR" if "pr" in case else "areaUnderROC"
        evaluator = BinaryClassificationEvaluator(metricName=metric, **weights)
        values = [1e-3, 3e-2, 0.3]
    elif case.startswith("svc"):
        est = LinearSVC(featuresCols=FEATURES, maxIter=50)
        evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
        values = [1e-3, 1e-1]
    elif case.startswith("multinomial"):
        est = LogisticRegression(featuresCols=FEATURES, labelCol="cls", family="multinomial")
        metric = case.split("_")[1].replace("logloss", "logLoss")
        evaluator = MulticlassClassificationEvaluator(labelCol="cls", metricName=metric)
        values = [1e-3, 1e-1]
    else:
        est = LinearRegression(featuresCols=FEATURES, labelCol="y", **weights)
        evaluator = RegressionEvaluator(labelCol="y", metricName=case.split("_")[1], **weights)
        values = [1e-2, 1.0]
    grid = ParamGridBuilder().addGrid(est.regParam, values).build()
    kwargs = dict(estimator=est, estimatorParamMaps=grid, evaluator=evaluator, numFolds=3,
                  seed=11)
    with caplog.at_level(logging.INFO, logger="sparkml_aiaas.tuning"):
        ours = CrossValidator(**kwargs).fit(df)
    assert _fast_path_taken(caplog, "CrossValidator")
    theirs = pyspark_tuning.CrossValidator(**kwargs).fit(df)
    _compare(ours, theirs, "avgMetrics")
    np.testing.assert_allclose(ours.stdMetrics, theirs.stdMetrics, rtol=1e-5, atol=1e-9)
    assert int(np.argmax(ours.avgMetrics)) == int(np.argmax(theirs.avgMetrics))


def test_train_validation_split_matches_pyspark(df, caplog):
    est = LinearRegression(featuresCols=FEATURES, labelCol="y")
    grid = ParamGridBuilder().addGrid(est.regParam, [1e-3, 1e-1, 1.0]) \
        .addGrid(est.elasticNetParam, [0.0, 0.5]).build()
    kwargs = dict(estimator=est, estimatorParamMaps=grid, trainRatio=0.7, seed=5,
                  evaluator=RegressionEvaluator(labelCol="y", metricName="mae"),
                  collectSubModels=True)
    with caplog.at_level(logging.INFO, logger="sparkml_aiaas.tuning"):
        ours = TrainValidationSplit(**kwargs).fit(df)
    assert _fast_path_taken(caplog, "TrainValidationSplit")
    theirs = pyspark_tuning.TrainValidationSplit(**kwargs).fit(df)
    _compare(ours, theirs, "validationMetrics")
    assert len(ours.subModels) == len(grid)
    for mine, other in zip(ours.subModels, theirs.subModels):
        np.testing.assert_allclose(mine.coefficients, other.coefficients, rtol=1e-6, atol=1e-9)


def test_best_model_is_the_fit_of_the_best_map_on_all_rows(df):
    est = LogisticRegression(featuresCols=FEATURES)
    grid = ParamGridBuilder().addGrid(est.regParam, [1e-3, 1e-1]).build()
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, seed=1,
                        evaluator=BinaryClassificationEvaluator())
    model = cv.fit(df)
    best = grid[int(np.argmax(model.avgMetrics))]
    direct = est.fit(df, best)
    np.testing.assert_allclose(model.bestModel.coefficients, direct.coefficients, rtol=1e-8)
    assert model.bestModel.summary.numRows == df.count()


def test_fold_column_and_its_range_check_are_pyspark_s(spark, df, caplog):
    est = LogisticRegression(featuresCols=FEATURES)
    grid = ParamGridBuilder().addGrid(est.regParam, [1e-3, 1e-1]).build()
    kwargs = dict(estimator=est, estimatorParamMaps=grid, numFolds=3, foldCol="fold",
                  evaluator=BinaryClassificationEvaluator())
    with caplog.at_level(logging.INFO, logger="sparkml_aiaas.tuning"):
        ours = CrossValidator(**kwargs).fit(df)
    assert _fast_path_taken(caplog, "CrossValidator")
    theirs = pyspark_tuning.CrossValidator(**kwargs).fit(df)
    _compare(ours, theirs, "avgMetrics")
    bad = df.withColumn("fold", df["fold"] + 1)
    with pytest.raises(Exception, match=r"Fold number must be in range \[0, 3\), but got 3"):
        CrossValidator(**kwargs).fit(bad)


def test_vector_input_sub_models_and_save_load(spark, df, tmp_path):
    assembled = VectorAssembler(inputCols=FEATURES, outputCol="features").transform(df)
    est = LogisticRegression()
    grid = ParamGridBuilder().addGrid(est.regParam, [1e-3, 1e-1]).build()
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, seed=2,
                        evaluator=BinaryClassificationEvaluator(), collectSubModels=True)
    model = cv.fit(assembled)
    assert [len(row) for row in model.subModels] == [2, 2]
    cv.save(str(tmp_path / "cv"))
    loaded_cv = CrossValidator.load(str(tmp_path / "cv"))
    assert type(loaded_cv) is CrossValidator and loaded_cv.getNumFolds() == 2
    assert type(pyspark_tuning.CrossValidator.load(str(tmp_path / "cv"))) is \
        pyspark_tuning.CrossValidator  # the folder is pyspark's format
    tvs = TrainValidationSplit(estimator=est, estimatorParamMaps=grid, trainRatio=0.6,
                               evaluator=BinaryClassificationEvaluator())
    tvs.save(str(tmp_path / "tvs"))
    loaded_tvs = TrainValidationSplit.load(str(tmp_path / "tvs"))
    assert type(loaded_tvs) is TrainValidationSplit and loaded_tvs.getTrainRatio() == 0.6
    model.save(str(tmp_path / "model"))
    loaded = pyspark_tuning.CrossValidatorModel.load(str(tmp_path / "model"))
    assert loaded.avgMetrics == model.avgMetrics
    expected = model.transform(assembled).select("probability").toPandas()
    got = loaded.transform(assembled).select("probability").toPandas()
    np.testing.assert_array_equal(np.stack(got["probability"].map(lambda v: v.toArray())),
                                  np.stack(expected["probability"].map(lambda v: v.toArray())))


class _CountingEvaluator(Evaluator):
    """A custom evaluator: the fast path cannot compute it, pyspark's loop must run."""

    def _evaluate(self, dataset):
        return float(dataset.count())

    def isLargerBetter(self):
        return True


def test_other_evaluators_and_estimators_run_pyspark_s_loop(df, caplog):
    est = LogisticRegression(featuresCols=FEATURES)
    grid = ParamGridBuilder().addGrid(est.regParam, [1e-3, 1e-1]).build()
    with caplog.at_level(logging.INFO, logger="sparkml_aiaas.tuning"):
        model = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, seed=3,
                               evaluator=_CountingEvaluator()).fit(df)
    assert any("pyspark's loop" in r.getMessage() for r in caplog.records)
    assert not _fast_path_taken(caplog, "CrossValidator")
    assert sum(model.avgMetrics) > 0


def test_a_fold_whose_training_rows_hold_one_class_fails_with_the_fit_s_error(spark):
    # Fold 0 holds every positive: its training rows (folds 1, 2) have one class.
    frame = pd.DataFrame({"x0": np.arange(60.0), "label": [1.0] * 20 + [0.0] * 40,
                          "fold": [0] * 20 + [1] * 20 + [2] * 20})
    data = spark.createDataFrame(frame)
    est = LogisticRegression(featuresCols=["x0"])
    grid = ParamGridBuilder().addGrid(est.regParam, [0.1, 1.0]).build()
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=3, foldCol="fold",
                        evaluator=BinaryClassificationEvaluator())
    with pytest.raises(Exception, match="one class|single class|only"):
        cv.fit(data)


# -- grouped blocks (Spark-free) ------------------------------------------------------------
def _grouped_batch(X, y, w, group):
    import pyarrow as pa

    arrays = [pa.array(X[:, j]) for j in range(X.shape[1])]
    arrays += [pa.array(y), pa.array(w), pa.array(group, type=pa.int32())]
    names = [f"f{j}" for j in range(X.shape[1])] + ["label", "weight", "group"]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def test_grouped_blocks_hold_each_group_s_rows_in_input_order(tmp_path, monkeypatch):
    import pickle

    from sparkml_aiaas.core.stats import block_stats
    from sparkml_aiaas.engine.block_files import open_block
    from sparkml_aiaas.engine.block_rows import write_grouped_blocks

    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    rng = np.random.default_rng(4)
    X, y, w = rng.normal(size=(90, 3)), rng.integers(0, 2, 90).astype(float), rng.random(90)
    group = rng.integers(0, 3, 90)  # group 3 of 4 gets no row: an empty block
    batches = [_grouped_batch(X[a:b], y[a:b], w[a:b], group[a:b])
               for a, b in ((0, 40), (40, 40), (40, 90))]
    keys = write_grouped_blocks("fit-g", 0, 0, 3, False, batches, groups=4)
    assert [k["group"] for k in keys] == [0, 1, 2, 3]
    for key in keys:
        rows = group == key["group"]
        Xb, yb, wb = open_block(key["path"])
        np.testing.assert_array_equal(Xb, X[rows])
        np.testing.assert_array_equal(yb, y[rows])
        np.testing.assert_array_equal(wb, w[rows])
        assert key["rows"] == rows.sum()
        assert pickle.loads(key["stats"]).count == block_stats(X[rows], y[rows], w[rows]).count


def test_a_group_outside_the_range_fails_the_task_and_leaves_no_files(tmp_path, monkeypatch):
    from sparkml_aiaas.engine.block_rows import write_grouped_blocks
    from sparkml_aiaas.errors import DataValidationError

    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    batch = _grouped_batch(np.ones((3, 2)), np.zeros(3), np.ones(3), np.array([0, 1, 5]))
    with pytest.raises(DataValidationError, match="outside 0..1"):
        write_grouped_blocks("fit-h", 0, 0, 2, False, [batch], groups=2)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []
