"""Early stopping on a validation set (validationIndicatorCol, patience): the monitor, every
optimizer through fit_glm on numpy passes, checkpoint/resume, then the estimators on Spark."""

import os
from functools import reduce

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.early_stopping import EarlyStopping, EarlyStoppingState
from sparkml_aiaas.core.glm import fit_glm
from sparkml_aiaas.core.losses import LOSSES, loss_gradient_sums
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.optimizers import minimize_objective
from sparkml_aiaas.core.regularizers import ElasticNet
from sparkml_aiaas.core.stats import block_stats, merge_stats

LOGISTIC = LOSSES["logistic"]
N_TRAIN, N_VALID, D = 100, 300, 25
REG = 1e-6
COLS = [f"x{i}" for i in range(D)]


def overfitting_data(seed=5):
    """Few training rows, many noise features: the training loss keeps falling while the
    validation loss turns up after a few iterations."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_TRAIN + N_VALID, D))
    m = 2.0 * X[:, 0] - 1.5 * X[:, 1] + X[:, 2]
    y = (rng.uniform(size=len(m)) < 1.0 / (1.0 + np.exp(-m))).astype(float)
    return X, y


def numpy_pass(X, y, n_chunks=3):
    w = np.ones(len(y))
    bounds = np.linspace(0, len(y), n_chunks + 1).astype(int)
    chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def data_pass(coef, intercept, extra=None, with_hessian=False, sample=None):
        return reduce(merge, [loss_gradient_sums(LOGISTIC, X[s], y[s], w[s], coef, intercept,
                                                 extra, with_hessian=with_hessian)
                              for s in chunks])

    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return data_pass, stats


def mean_log_loss(X, y, coef, intercept):
    m = X @ coef + intercept
    return float(np.mean(np.logaddexp(0.0, m) - y * m))


@pytest.fixture(scope="module")
def problem():
    X, y = overfitting_data()
    train_pass, stats = numpy_pass(X[:N_TRAIN], y[:N_TRAIN])
    valid_pass, _ = numpy_pass(X[N_TRAIN:], y[N_TRAIN:])
    return X, y, train_pass, stats, valid_pass


# --------------------------------------------------------------------------- the monitor
def test_monitor_counts_patience_from_the_best_iteration():
    values = iter([5.0, 4.0, 4.0, 3.9, 4.5, 5.0, 6.0])
    monitor = EarlyStopping(lambda x: next(values), patience=2)
    monitor.start(np.zeros(2))
    x = np.zeros(2)
    stops = []
    for iteration in range(1, 6):
        x[:] = iteration  # the loop may reuse its buffer: the monitor must copy
        stops.append(monitor.update(iteration, x))
    assert stops == [False, False, False, False, True]
    assert monitor.history == [5.0, 4.0, 4.0, 3.9, 4.5, 5.0]
    assert monitor.best_iteration == 3  # the tie at iteration 2 is no improvement
    np.testing.assert_array_equal(monitor.best_x, [3.0, 3.0])
    assert monitor.stopped_early
    assert "not improved for 2 iterations (best 3.9 at iteration 3)" in monitor.message


def test_monitor_state_round_trips_exactly_and_rejects_bad_input():
    monitor = EarlyStopping(lambda x: float(np.sum(x ** 2)) + 0.1, patience=3)
    monitor.start(np.array([1.0, -2.0]))
    monitor.update(1, np.array([0.5, 1.0 / 3.0]))
    monitor.update(2, np.array([0.7, 0.1]))
    arrays = monitor.to_arrays()
    assert all(key.startswith("validation__") for key in arrays)
    assert EarlyStopping.in_checkpoint(arrays) and not EarlyStopping.in_checkpoint({"x": 1})
    restored = EarlyStopping(monitor.evaluate, patience=3)
    restored.restore({**arrays, "x": np.zeros(3)})  # a checkpoint carries solver keys too
    assert restored.state == monitor.state
    assert isinstance(restored.state, EarlyStoppingState)
    with pytest.raises(ValueError, match="patience must be >= 1, got 0"):
        EarlyStopping(lambda x: 0.0, patience=0)
    with pytest.raises(ValueError, match="validation loss is not finite at iteration 0"):
        EarlyStopping(lambda x: float("nan")).start(np.zeros(1))
    with pytest.raises(RuntimeError, match="start"):
        EarlyStopping(lambda x: 0.0).update(1, np.zeros(1))


# --------------------------------------------------------------------------- fit_glm
OPTIMIZERS = {
    "lbfgs": dict(optimizer="lbfgs"),
    "gd-backtracking": dict(optimizer="gd"),
    "gd-barzilai_borwein": dict(optimizer="gd", step_rule="barzilai_borwein"),
    "newton": dict(optimizer="newton"),
    "sgd": dict(optimizer="sgd", step_size=0.5),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_stops_early_and_returns_the_best_iteration(problem, name):
    X, y, train_pass, stats, valid_pass = problem
    common = dict(loss=LOGISTIC, reg_param=REG, tol=1e-9, **OPTIMIZERS[name])
    fit = fit_glm(train_pass, stats, max_iter=200, validation_pass=valid_pass, patience=5,
                  **common)
    best, n_iter = fit.best_iteration, fit.result.n_iter
    history = np.array(fit.validation_history)
    assert fit.stopped_early and "early stopping" in fit.result.message
    assert not fit.result.converged
    assert best < n_iter < 200 and n_iter == best + 5
    assert len(history) == n_iter + 1
    assert int(np.argmin(history)) == best
    assert history[-1] > history[best]  # it did overfit
    # the validation loss is the plain mean log-loss of the held-out rows at the returned model
    assert history[best] == pytest.approx(
        mean_log_loss(X[N_TRAIN:], y[N_TRAIN:], fit.coef[:, 0], fit.intercept[0]), rel=1e-12)
    assert fit.result.fun == fit.result.history[best]
    # the returned model is exactly a fresh fit stopped at the best iteration, with or
    # without the monitor (the validation rows never enter the training passes)
    for fresh in (fit_glm(train_pass, stats, max_iter=best, **common),
                  fit_glm(train_pass, stats, max_iter=best, validation_pass=valid_pass,
                          patience=5, **common)):
        np.testing.assert_array_equal(fresh.coef, fit.coef)
        np.testing.assert_array_equal(fresh.intercept, fit.intercept)
        assert fresh.result.n_iter == best
    # and the last entry is the validation loss of the last iterate
    last = fit_glm(train_pass, stats, max_iter=n_iter, **common)
    assert history[-1] == pytest.approx(
        mean_log_loss(X[N_TRAIN:], y[N_TRAIN:], last.coef[:, 0], last.intercept[0]), rel=1e-12)


def test_without_validation_nothing_changes(problem):
    _, _, train_pass, stats, _ = problem
    fit = fit_glm(train_pass, stats, loss=LOGISTIC, reg_param=REG, max_iter=12, tol=1e-9)
    assert fit.validation_history == [] and fit.best_iteration is None
    assert not fit.stopped_early and fit.result.n_iter == 12


def test_patience_longer_than_the_run_keeps_the_best_not_the_last(problem):
    _, _, train_pass, stats, valid_pass = problem
    fit = fit_glm(train_pass, stats, loss=LOGISTIC, reg_param=REG, max_iter=7, tol=1e-9,
                  validation_pass=valid_pass, patience=50)
    assert fit.result.n_iter == 7 and not fit.stopped_early
    assert fit.best_iteration < 7
    best = fit_glm(train_pass, stats, loss=LOGISTIC, reg_param=REG, tol=1e-9,
                   max_iter=fit.best_iteration)
    np.testing.assert_array_equal(fit.coef, best.coef)


# --------------------------------------------------------------------------- checkpoints
class Killed(Exception):
    pass


@pytest.mark.parametrize("optimizer, step_rule", [("lbfgs", "backtracking"),
                                                  ("gd", "barzilai_borwein")])
def test_resume_with_early_stopping_is_bit_identical(problem, tmp_path, optimizer, step_rule):
    _, _, train_pass, stats, valid_pass = problem
    args = dict(loss=LOGISTIC, reg_param=REG, tol=1e-9, max_iter=200, optimizer=optimizer,
                step_rule=step_rule, validation_pass=valid_pass, patience=8)
    reference = fit_glm(train_pass, stats, **args)
    assert reference.stopped_early and reference.result.n_iter > 8

    calls = {"n": 0}

    def dying_pass(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:
            raise Killed()
        return train_pass(*a, **k)

    checkpoint = FileCheckpoint(str(tmp_path), "fit", interval=2)
    with pytest.raises(Killed):
        fit_glm(dying_pass, stats, checkpoint=checkpoint, **args)
    with np.load(checkpoint.path) as saved:
        assert "validation__history" in saved.files and "validation__best_x" in saved.files
        saved_iteration = int(saved["iteration"])
        assert 0 < saved_iteration < reference.result.n_iter
        assert len(saved["validation__history"]) == saved_iteration + 1

    valid_calls = {"n": 0}

    def counted_valid(*a, **k):
        valid_calls["n"] += 1
        return valid_pass(*a, **k)

    resumed = fit_glm(train_pass, stats, checkpoint=FileCheckpoint(str(tmp_path), "fit", 2),
                      **{**args, "validation_pass": counted_valid})
    np.testing.assert_array_equal(resumed.coef, reference.coef)
    np.testing.assert_array_equal(resumed.intercept, reference.intercept)
    assert resumed.validation_history == reference.validation_history
    assert resumed.best_iteration == reference.best_iteration
    assert resumed.stopped_early and resumed.result.n_iter == reference.result.n_iter
    assert resumed.result.history == reference.result.history
    # the restored history was not recomputed: only the iterations after the checkpoint
    assert valid_calls["n"] == reference.result.n_iter - saved_iteration
    assert not os.path.exists(checkpoint.path)


def test_a_checkpoint_saved_without_a_monitor_is_not_resumed_with_one(problem, tmp_path):
    _, _, train_pass, stats, valid_pass = problem
    args = dict(loss=LOGISTIC, reg_param=REG, tol=1e-9, max_iter=4)
    checkpoint = FileCheckpoint(str(tmp_path), "fit", interval=1)
    calls = {"n": 0}

    def dying_pass(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed()
        return train_pass(*a, **k)

    with pytest.raises(Killed):
        fit_glm(dying_pass, stats, checkpoint=checkpoint, **args)
    assert os.path.exists(checkpoint.path)
    monitored = fit_glm(train_pass, stats, checkpoint=checkpoint, validation_pass=valid_pass,
                        patience=50, **args)
    fresh = fit_glm(train_pass, stats, validation_pass=valid_pass, patience=50, **args)
    assert monitored.validation_history == fresh.validation_history
    assert len(monitored.validation_history) == 5
    np.testing.assert_array_equal(monitored.coef, fresh.coef)


def test_minimize_objective_with_monitor_on_a_quadratic():
    # smooth f with its minimum at 2; the "validation" loss has its minimum at 1
    fun = lambda x: (float(np.sum((x - 2.0) ** 2)), 2.0 * (x - 2.0))  # noqa: E731
    monitor = EarlyStopping(lambda x: float(np.sum((x - 1.0) ** 2)), patience=3)
    result = minimize_objective("gd", fun, np.zeros(1), penalty=ElasticNet(np.zeros(1),
                                np.zeros(1)), max_iter=100, tol=0.0, step_size=0.1,
                                monitor=monitor)
    # x_t = 2 − 2·0.8^t passes 1 between t = 3 (0.976) and t = 4 (1.181)
    assert monitor.best_iteration == 3 and result.n_iter == 6
    np.testing.assert_allclose(monitor.best_x, [2.0 - 2.0 * 0.8 ** 3], rtol=1e-14)
    np.testing.assert_allclose(result.x, [2.0 - 2.0 * 0.8 ** 6], rtol=1e-14)  # the last one


# --------------------------------------------------------------------------- Spark
@pytest.fixture(scope="module")
def es_data(spark):
    X, y = overfitting_data()
    pdf = pd.DataFrame(X, columns=COLS)
    pdf["label"] = y
    pdf["is_val"] = np.arange(len(y)) >= N_TRAIN
    pdf["id"] = np.arange(len(y))
    frame = spark.createDataFrame(pdf).cache()
    frame.count()
    yield X, y, frame
    frame.unpersist()


ES_PARAMS = dict(featuresCols=COLS, regParam=REG, tol=1e-9, maxIter=100, numPartitions=2,
                 validationIndicatorCol="is_val", patience=4)


def _install_cleanup_spy(monkeypatch):
    """Record each ResidentBlocks.cleanup with the block folders of that fit."""
    from sparkml_aiaas.engine import ResidentBlocks

    records = []
    original = ResidentBlocks.cleanup

    def spy(self):
        paths = [row["path"] for row in self.keys.collect()] if self._keys_built else []
        records.append({"fit_id": self.fit_id, "paths": paths,
                        "existed": [os.path.isdir(p) for p in paths]})
        original(self)

    monkeypatch.setattr(ResidentBlocks, "cleanup", spy)
    return records


@pytest.fixture
def cleanup_spy(monkeypatch):
    return _install_cleanup_spy(monkeypatch)


def _assert_all_blocks_removed(spark, records, expected):
    from sparkml_aiaas.engine.block_files import local_root

    root = spark.sparkContext.parallelize([0], 1).map(lambda _: local_root()).collect()[0]
    assert len(records) == expected
    assert len({r["fit_id"] for r in records}) == expected
    for record in records:
        assert all(record["existed"])
        assert not any(os.path.exists(p) for p in record["paths"])
        assert not os.path.exists(os.path.join(root, record["fit_id"]))


@pytest.fixture(scope="module")
def es_fit(es_data):
    """The early-stopping fit, and the block cleanups it ran."""
    from sparkml_aiaas.models import LogisticRegression

    with pytest.MonkeyPatch.context() as monkeypatch:
        records = _install_cleanup_spy(monkeypatch)
        model = LogisticRegression(**ES_PARAMS).fit(es_data[2])
    return model, records


@pytest.fixture(scope="module")
def es_model(es_fit):
    return es_fit[0]


def test_estimator_stops_early_on_the_validation_rows(spark, es_data, es_fit):
    X, y, _ = es_data
    model, cleanups = es_fit
    _assert_all_blocks_removed(spark, cleanups, expected=2)  # training and validation blocks
    s = model.summary
    assert s.stoppedEarly and s.totalIterations < 100
    assert s.bestIteration < s.totalIterations == s.bestIteration + 4
    assert len(s.validationLossHistory) == s.totalIterations + 1
    assert len(s.objectiveHistory) == s.totalIterations + 1
    assert int(np.argmin(s.validationLossHistory)) == s.bestIteration
    assert s.numRows == N_TRAIN and s.numValidationRows == N_VALID
    assert s.validationLossHistory[s.bestIteration] == pytest.approx(
        mean_log_loss(X[N_TRAIN:], y[N_TRAIN:], model.coefficients, model.intercept), rel=1e-10)
    assert s.objectiveHistory[-1] < s.objectiveHistory[s.bestIteration]  # training went on


def test_estimator_returns_the_best_iteration_and_never_trains_on_validation_rows(
        es_data, es_model):
    from pyspark.sql import functions as F

    from sparkml_aiaas.models import LogisticRegression

    X, y, frame = es_data
    best = es_model.summary.bestIteration
    fresh = LogisticRegression(**{**ES_PARAMS, "maxIter": best}).fit(frame)
    np.testing.assert_array_equal(fresh.coefficients, es_model.coefficients)
    assert fresh.intercept == es_model.intercept
    assert fresh.summary.totalIterations == best
    train_only = {k: v for k, v in ES_PARAMS.items()
                  if k not in ("validationIndicatorCol", "patience")}
    alone = LogisticRegression(**{**train_only, "maxIter": best}).fit(
        frame.filter(~F.col("is_val")))
    assert alone.summary.numRows == N_TRAIN
    np.testing.assert_allclose(alone.coefficients, es_model.coefficients, rtol=1e-12,
                               atol=1e-14)
    assert alone.intercept == pytest.approx(es_model.intercept, rel=1e-12, abs=1e-14)
    # and it differs from a fit that does train on every row
    everything = LogisticRegression(**{**train_only, "maxIter": best}).fit(frame)
    assert np.max(np.abs(everything.coefficients - es_model.coefficients)) > 1e-3


def test_summary_and_params_survive_save_load(spark, es_model, tmp_path):
    from sparkml_aiaas.config import TrainJobConfig, load_config
    from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression
    from sparkml_aiaas.models.linear import LogisticRegressionModel

    path = str(tmp_path / "model")
    es_model.write().save(path)
    loaded = LogisticRegressionModel.load(path)
    assert loaded.summary == es_model.summary
    assert loaded.getValidationIndicatorCol() == "is_val" and loaded.getPatience() == 4
    np.testing.assert_array_equal(loaded.coefficients, es_model.coefficients)
    for cls in (LogisticRegression, LinearRegression, LinearSVC):
        default = cls()
        assert default.getPatience() == 5 and default.validation_col() is None
        assert not default.isDefined(default.validationIndicatorCol)
        est_path = str(tmp_path / cls.__name__)
        cls(featuresCols=COLS, validationIndicatorCol="held_out", patience=7).save(est_path)
        est = cls.load(est_path)
        assert est.getValidationIndicatorCol() == "held_out" and est.getPatience() == 7
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(TrainJobConfig, os.path.join(root, "conf", "train.yaml"), [
        "model.params.validation_indicator_col=is_val", "model.params.patience=3"])
    params = config.model.spark_params()
    assert params["validationIndicatorCol"] == "is_val" and params["patience"] == 3
    est = LogisticRegression(**params)
    assert est.validation_col() == "is_val" and est.getPatience() == 3


@pytest.mark.parametrize("case, change, match", [
    ("missing column", lambda f: f.drop("is_val"),
     r"validationIndicatorCol 'is_val' is not in the data; available columns"),
    ("integer column", lambda f: f.withColumn("is_val", f["is_val"].cast("int")),
     r"validationIndicatorCol 'is_val' must be a boolean column \(true = validation row\), "
     r"but its type is int"),
    ("string column", lambda f: f.withColumn("is_val", f["is_val"].cast("string")),
     r"must be a boolean column .* but its type is string"),
])
def test_bad_indicator_column_fails_before_any_spark_job(es_data, monkeypatch, case, change,
                                                         match):
    from sparkml_aiaas.engine import ResidentBlocks
    from sparkml_aiaas.errors import DataValidationError
    from sparkml_aiaas.models import LogisticRegression

    def no_build(*args, **kwargs):
        raise AssertionError("the blocks must not be built for a bad indicator column")

    monkeypatch.setattr(ResidentBlocks, "build", no_build)
    with pytest.raises(DataValidationError, match=match):
        LogisticRegression(**ES_PARAMS).fit(change(es_data[2]))


@pytest.mark.parametrize("case, expression, match, builds", [
    ("all validation", "true",
     r"validationIndicatorCol 'is_val' is true for every row: no rows are left to train on", 1),
    ("no validation", "false",
     r"validationIndicatorCol 'is_val' is not true for any row: the validation set is empty", 2),
    ("nan in a validation row", "id >= 100",
     r"invalid validation data: features contain NaN, infinity or null in 'x3' \(1 rows\)", 2),
])
def test_empty_or_invalid_side_is_refused_and_cleaned_up(spark, es_data, cleanup_spy, case,
                                                         expression, match, builds):
    from pyspark.sql import functions as F

    from sparkml_aiaas.errors import DataValidationError
    from sparkml_aiaas.models import LogisticRegression

    frame = es_data[2].withColumn("is_val", F.expr(expression))
    if case.startswith("nan"):
        frame = frame.withColumn(
            "x3", F.when(F.col("id") == 250, F.lit(float("nan"))).otherwise(F.col("x3")))
    with pytest.raises(DataValidationError, match=match):
        LogisticRegression(**ES_PARAMS).fit(frame)
    _assert_all_blocks_removed(spark, cleanup_spy, expected=builds)


def test_bad_patience_is_a_config_error(es_data):
    from sparkml_aiaas.errors import ConfigError
    from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression

    for cls in (LogisticRegression, LinearRegression, LinearSVC):
        with pytest.raises(ConfigError, match=r"param patience must be >= 1, got 0"):
            cls(**{**ES_PARAMS, "patience": 0}).fit(es_data[2])


def test_estimator_resumes_a_killed_early_stopping_fit(es_data, es_model, tmp_path, monkeypatch):
    from sparkml_aiaas.engine import loop
    from sparkml_aiaas.models import LogisticRegression

    frame = es_data[2]
    ckpt = str(tmp_path / "ckpt")
    params = dict(ES_PARAMS, checkpointDir=ckpt, checkpointInterval=2)
    original_call = loop.DistributedDataPass.__call__
    passes = {"n": 0}

    def dying_call(self, *args, **kwargs):
        passes["n"] += 1
        if passes["n"] == 11:  # training and validation passes alternate: mid-run
            raise KeyboardInterrupt("killed")
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(loop.DistributedDataPass, "__call__", dying_call)
    with pytest.raises(KeyboardInterrupt):
        LogisticRegression(**params).fit(frame)
    monkeypatch.setattr(loop.DistributedDataPass, "__call__", original_call)
    assert len(os.listdir(ckpt)) == 1

    resumed = LogisticRegression(**params).fit(frame)
    np.testing.assert_array_equal(resumed.coefficients, es_model.coefficients)
    assert resumed.intercept == es_model.intercept
    for name in ("validationLossHistory", "bestIteration", "stoppedEarly", "objectiveHistory",
                 "totalIterations"):
        assert getattr(resumed.summary, name) == getattr(es_model.summary, name), name
    assert resumed.summary.numPasses < es_model.summary.numPasses  # it really resumed
    assert os.listdir(ckpt) == []
