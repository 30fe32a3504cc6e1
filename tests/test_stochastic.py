"""Mini-batch optimizers (sgd, momentum, nesterov, adam, rmsprop, adagrad) and local SGD."""

from functools import reduce

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.core.first_order import RULES
from sparkml_aiaas.core.glm import StochasticSettings, fit_glm
from sparkml_aiaas.core.losses import LOSSES, loss_gradient_sums
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.stats import block_stats, merge_stats
from sparkml_aiaas.core.stochastic import (block_rng, local_round, merge_rounds, round_sums,
                                           sample_rows, average_rounds)

LOGISTIC = LOSSES["logistic"]
STEPS = {"sgd": 1.0, "momentum": 0.1, "nesterov": 0.1, "adam": 0.02, "rmsprop": 0.005,
         "adagrad": 0.5}


def _data(n=400, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ np.linspace(1, -1, d) + 0.3)))).astype(float)
    return X, y, np.ones(n)


def _numpy_engine(X, y, w, n_chunks=2):
    """The engine's contract on numpy chunks: sampled passes and local rounds."""
    bounds = np.linspace(0, len(y), n_chunks + 1).astype(int)
    chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def data_pass(coef, intercept, extra=None, with_hessian=False, sample=None):
        parts = []
        for index, s in enumerate(chunks):
            Xs, ys, ws = X[s], y[s], w[s]
            if sample is not None:
                fraction, seed, iteration = sample
                rows = sample_rows(len(ys), fraction, block_rng(seed, iteration, index))
                if rows is not None:
                    Xs, ys, ws = Xs[rows], ys[rows], ws[rows]
            parts.append(loss_gradient_sums(LOGISTIC, Xs, ys, ws, coef, intercept, extra))
        return reduce(merge, parts)

    def local_rounds(spec, x, state):
        parts = [round_sums(*local_round(spec, X[s], y[s], w[s], x, state, index))
                 for index, s in enumerate(chunks)]
        return average_rounds(reduce(merge_rounds, parts))

    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return data_pass, local_rounds, stats


@pytest.fixture(scope="module")
def problem():
    X, y, w = _data()
    data_pass, local_rounds, stats = _numpy_engine(X, y, w)
    optimum = fit_glm(data_pass, stats, loss=LOGISTIC, reg_param=0.01, tol=1e-14, max_iter=500)
    return data_pass, local_rounds, stats, optimum


@pytest.mark.parametrize("rule", RULES)
def test_full_batch_first_order_methods_reach_the_optimum_loss(problem, rule):
    data_pass, local_rounds, stats, optimum = problem
    fit = fit_glm(data_pass, stats, loss=LOGISTIC, reg_param=0.01, optimizer=rule,
                  step_size=STEPS[rule], max_iter=3000, tol=1e-10,
                  stochastic=StochasticSettings(mini_batch_fraction=1.0))
    # history holds the objective at the start of each step; re-evaluate at the end.
    final = _objective(data_pass, stats, fit)
    assert final == pytest.approx(optimum.result.fun, abs=1e-4)


def _objective(data_pass, stats, fit):
    sums = data_pass(fit.coef, fit.intercept)
    mean_loss = sums.loss / sums.weight
    # the penalty as fit_glm applies it (standardization=True)
    beta = fit.coef[:, 0] * stats.std()
    return mean_loss + 0.5 * 0.01 * float(beta @ beta)


def test_minibatch_sgd_and_local_sgd_get_close_and_are_deterministic(problem):
    data_pass, local_rounds, stats, optimum = problem
    settings = StochasticSettings(mini_batch_fraction=0.3, local_steps=1, seed=5)
    fit = fit_glm(data_pass, stats, loss=LOGISTIC, reg_param=0.01, optimizer="adam",
                  step_size=0.02, max_iter=600, tol=0.0, stochastic=settings)
    again = fit_glm(data_pass, stats, loss=LOGISTIC, reg_param=0.01, optimizer="adam",
                    step_size=0.02, max_iter=600, tol=0.0, stochastic=settings)
    np.testing.assert_array_equal(fit.coef, again.coef)  # same seed, same samples
    assert _objective(data_pass, stats, fit) == pytest.approx(optimum.result.fun, abs=5e-3)

    local = StochasticSettings(mini_batch_fraction=0.25, local_steps=8, seed=5)
    fit_local = fit_glm(data_pass, stats, loss=LOGISTIC, reg_param=0.01, optimizer="sgd",
                        step_size=0.5, max_iter=150, tol=0.0, stochastic=local,
                        local_rounds=local_rounds)
    assert fit_local.result.n_passes == 150  # one job per round of 8 local steps
    assert _objective(data_pass, stats, fit_local) == pytest.approx(optimum.result.fun, abs=5e-3)


def test_sampling_is_a_pure_function_of_seed_iteration_partition():
    a = sample_rows(1000, 0.1, block_rng(1, 2, 3))
    b = sample_rows(1000, 0.1, block_rng(1, 2, 3))
    c = sample_rows(1000, 0.1, block_rng(1, 3, 3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 50 < len(a) < 150
    assert sample_rows(10, 1.0, block_rng(0, 0, 0)) is None


def test_spark_minibatch_and_local_sgd(spark):
    from sparkml_aiaas.errors import ConfigError
    from sparkml_aiaas.models import LogisticRegression

    X, y, _ = _data(n=600)
    pdf = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    pdf["label"] = y
    df = spark.createDataFrame(pdf).cache()
    cols = ["a", "b", "c", "d"]
    exact = LogisticRegression(featuresCols=cols, regParam=0.01, tol=1e-12).fit(df)
    # localSteps=1: exact mini-batch steps (the default, 0, passes over each block per job).
    adam = LogisticRegression(featuresCols=cols, regParam=0.01, optimizer="adam", stepSize=0.05,
                              miniBatchFraction=0.5, localSteps=1, maxIter=150, tol=0.0,
                              seed=3).fit(df)
    local = LogisticRegression(featuresCols=cols, regParam=0.01, optimizer="momentum",
                               stepSize=0.05, miniBatchFraction=0.2, localSteps=5, maxIter=60,
                               tol=0.0, seed=3).fit(df)
    def mean_log_loss(model):
        m = X @ model.coefficients + model.intercept
        return float(np.mean(np.logaddexp(0, m) - y * m))

    for model in (adam, local):
        np.testing.assert_allclose(model.coefficients, exact.coefficients, atol=0.1)
        assert mean_log_loss(model) == pytest.approx(mean_log_loss(exact), abs=2e-3)
    assert local.summary.numPasses == 60
    again = LogisticRegression(featuresCols=cols, regParam=0.01, optimizer="momentum",
                               stepSize=0.05, miniBatchFraction=0.2, localSteps=5, maxIter=60,
                               tol=0.0, seed=3).fit(df)
    np.testing.assert_array_equal(again.coefficients, local.coefficients)
    with pytest.raises(ConfigError, match="miniBatchFraction must be in"):
        LogisticRegression(featuresCols=cols, optimizer="sgd", miniBatchFraction=0.0).fit(df)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_one_pass_rounds_stop_by_tol_near_the_optimum(problem, rule):
    """The defaults of the mini-batch optimizers (issue 15): ``localSteps`` 0 makes a job one
    pass over each block in batches of miniBatchFraction of its rows, each rule takes its own
    step (DEFAULT_STEPS) when stepSize is unset, and the fit stops once the objective has not
    improved by tol for nIterNoChange iterations."""
    data_pass, local_rounds, _, optimum = problem
    settings = StochasticSettings(mini_batch_fraction=0.1, local_steps=0, seed=1,
                                  n_iter_no_change=10, default_step=True)
    fit = fit_glm(data_pass, problem[2], loss=LOGISTIC, reg_param=0.01, optimizer=rule,
                  step_size=1.0, max_iter=200, tol=1e-6, stochastic=settings,
                  local_rounds=local_rounds)
    assert fit.result.converged and fit.result.n_iter < 200, fit.result.message
    assert "consecutive iterations" in fit.result.message
    objective = _penalized_log_loss(problem, fit)
    assert objective == pytest.approx(_penalized_log_loss(problem, optimum), rel=0.03)


def _penalized_log_loss(problem, fit):
    """Mean log-loss + the standardized L2 penalty (regParam 0.01) at a fit's coefficients."""
    data_pass, _, stats, _ = problem
    sums = data_pass(fit.coef, fit.intercept)
    std = stats.std()
    return sums.loss / sums.weight + 0.005 * float(np.sum((fit.coef.ravel() * std) ** 2))


def test_one_pass_local_round_visits_each_row_once():
    from sparkml_aiaas.core.first_order import RuleSettings, init_state
    from sparkml_aiaas.core.regularizers import elastic_net
    from sparkml_aiaas.core.standardization import ParameterSpace
    from sparkml_aiaas.core.stochastic import RoundSpec

    X, y, w = _data(n=95)
    stats = block_stats(X, y, w)
    space = ParameterSpace.build(stats.mean, stats.std(), 1, fit_intercept=True)
    spec = RoundSpec(LOGISTIC, space, elastic_net(space, 0.0, 0.0, True), "sgd",
                     RuleSettings(), 0.1, 0, 0.2, 0, 1)
    x0 = np.zeros(space.n_vars)
    _, state, used, _ = local_round(spec, X, y, w, x0, init_state("sgd", x0.size), 0)
    assert used == 95 and int(state["t"]) == 5  # batches of round(0.2·95) = 19 rows
