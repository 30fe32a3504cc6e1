"""Parameter space, penalties, optimizers and fit_glm on numpy data passes: no Spark."""

from functools import reduce

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize
from sklearn.linear_model import ElasticNet as SkElasticNet
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge

from sparkml_aiaas.core.glm import fit_glm, initial_intercept, validate_training_stats
from sparkml_aiaas.core.losses import LOSSES, loss_gradient_sums
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.optimizers import (
    gradient_descent,
    lbfgs,
    minimize_objective,
    relative_change,
)
from sparkml_aiaas.core.regularizers import ElasticNet, elastic_net
from sparkml_aiaas.core.standardization import ParameterSpace
from sparkml_aiaas.core.stats import block_stats, merge_stats
from sparkml_aiaas.errors import DataValidationError

LOGISTIC = LOSSES["logistic"]
SQUARED = LOSSES["squared"]


# --------------------------------------------------------------------------- helpers
def numpy_pass(loss, X, y, w=None, n_chunks=3):
    """``(data_pass, stats)`` summed over consecutive chunks, as the engine sums partitions."""
    w = np.ones(len(y)) if w is None else w
    bounds = np.linspace(0, len(y), n_chunks + 1).astype(int)
    chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def data_pass(coef, intercept, extra=None, with_hessian=False):
        return reduce(merge, [loss_gradient_sums(loss, X[s], y[s], w[s], coef, intercept, extra,
                                                 with_hessian=with_hessian)
                              for s in chunks])

    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return data_pass, stats


def standardized_data(n=400, d=5, seed=0, kind="logistic"):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    X = Z + 0.3 * Z[:, [0]]  # mild correlation
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    true = np.linspace(1.0, -1.0, d)
    true[-1] = 0.0  # a feature with no signal
    m = X @ true + 0.3
    if kind == "logistic":
        y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-m))).astype(float)
    else:
        y = m + 0.5 * rng.normal(size=n)
    return X, y


def fit_numpy(loss, X, y, w=None, **kwargs):
    data_pass, stats = numpy_pass(loss, X, y, w)
    validate_training_stats(stats, loss, [f"x{i}" for i in range(X.shape[1])], "label")
    return fit_glm(data_pass, stats, loss=loss, **kwargs)


# --------------------------------------------------------------------------- parameter space
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_parameter_space_round_trip(fit_intercept):
    rng = np.random.default_rng(1)
    mean, std = rng.normal(size=4), rng.uniform(0.2, 5.0, size=4)
    space = ParameterSpace.build(mean, std, 1, fit_intercept)
    assert space.n_vars == 4 + (1 if fit_intercept else 0)
    coef = rng.normal(size=(4, 1))
    intercept = np.array([0.7]) if fit_intercept else np.zeros(1)
    theta = space.from_model(coef, intercept)
    coef2, intercept2 = space.to_model(theta)
    np.testing.assert_allclose(coef2, coef, rtol=1e-14)
    np.testing.assert_allclose(intercept2, intercept, rtol=1e-14, atol=1e-15)
    theta2 = rng.normal(size=space.n_vars)
    np.testing.assert_allclose(space.from_model(*space.to_model(theta2)), theta2, rtol=1e-13)
    # the change of variables: β_j = coef_j·s_j and b = intercept + mean·coef
    np.testing.assert_allclose(theta[:4], coef[:, 0] * std, rtol=1e-15)
    if fit_intercept:
        assert theta[4] == pytest.approx(0.7 + mean @ coef[:, 0])


def test_parameter_space_pins_constant_features():
    space = ParameterSpace.build(np.array([1.0, 2.0]), np.array([0.0, 2.0]), 1, True)
    coef, _ = space.to_model(np.array([5.0, 4.0, 1.0]))
    assert coef[0, 0] == 0.0 and coef[1, 0] == 2.0
    g = space.gradient_to_vars(np.array([3.0, 1.0, 0.5]))
    assert g[0] == 0.0


@pytest.mark.parametrize("loss", [LOGISTIC, SQUARED], ids=lambda l: l.name)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_gradient_to_vars_matches_finite_differences(loss, fit_intercept):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3)) * [1.0, 4.0, 0.3] + [2.0, -1.0, 0.5]
    y = (rng.uniform(size=60) < 0.5).astype(float)
    w = rng.uniform(0.5, 2.0, size=60)
    data_pass, stats = numpy_pass(loss, X, y, w)
    space = ParameterSpace.build(stats.mean, stats.std(), 1, fit_intercept)

    def objective_value(theta):
        return data_pass(*space.to_model(theta)).mean()[0]

    theta = rng.normal(scale=0.5, size=space.n_vars)
    analytic = space.gradient_to_vars(data_pass(*space.to_model(theta)).mean()[1])
    h = 1e-6
    central = np.array([(objective_value(theta + h * e) - objective_value(theta - h * e)) / (2 * h)
                        for e in np.eye(space.n_vars)])
    np.testing.assert_allclose(analytic, central, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(analytic, approx_fprime(theta, objective_value, 1e-7),
                               rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- penalty
def test_elastic_net_weights():
    space = ParameterSpace.build(np.zeros(3), np.array([2.0, 0.5, 0.0]), 1, True)
    std_pen = elastic_net(space, 0.1, 0.25, standardization=True)
    np.testing.assert_allclose(std_pen.l2, [0.075, 0.075, 0.0, 0.0])
    np.testing.assert_allclose(std_pen.l1, [0.025, 0.025, 0.0, 0.0])
    raw_pen = elastic_net(space, 0.1, 0.25, standardization=False)
    np.testing.assert_allclose(raw_pen.l2, [0.075 / 4, 0.075 * 4, 0.0, 0.0])
    np.testing.assert_allclose(raw_pen.l1, [0.025 / 2, 0.025 * 2, 0.0, 0.0])
    assert std_pen.has_l1 and not elastic_net(space, 0.1, 0.0, True).has_l1
    assert not elastic_net(space, 0.0, 1.0, True).has_l1


def test_elastic_net_smooth_and_prox():
    pen = ElasticNet(l2=np.array([2.0, 0.0, 1.0]), l1=np.array([0.5, 0.0, 1.0]))
    theta = np.array([1.0, -3.0, -0.2])
    value, grad = pen.smooth(theta)
    assert value == pytest.approx(0.5 * (2.0 * 1.0 + 1.0 * 0.04))
    np.testing.assert_allclose(grad, [2.0, 0.0, -0.2])
    assert pen.l1_value(theta) == pytest.approx(0.5 + 0.2)
    # soft thresholding by step·l1; the unpenalized variable is untouched
    np.testing.assert_allclose(pen.prox(theta, 1.0), [0.5, -3.0, 0.0])
    np.testing.assert_allclose(pen.prox(theta, 0.1), [0.95, -3.0, -0.1])
    assert pen.prox(theta, 1.0)[2] == 0.0
    no_l1 = ElasticNet(l2=np.ones(3), l1=np.zeros(3))
    assert no_l1.prox(theta, 10.0) is theta


# --------------------------------------------------------------------------- optimizers
def _quadratic(seed=3, d=6):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(d, d))
    A = M @ M.T / d + np.eye(d)
    b = rng.normal(size=d)

    def fun(x):
        return 0.5 * x @ A @ x - b @ x, A @ x - b

    return fun, A, b


def test_gradient_descent_and_lbfgs_on_quadratic():
    fun, A, b = _quadratic()
    exact = np.linalg.solve(A, b)
    scipy_x = minimize(fun, np.zeros(6), jac=True, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12}).x
    calls = []
    gd = gradient_descent(fun, np.zeros(6), step_size=1.0, max_iter=5000, tol=1e-15,
                          callback=lambda it, value: calls.append((it, value)))
    lb = lbfgs(fun, np.zeros(6), max_iter=500, tol=1e-15)
    for result in (gd, lb):
        np.testing.assert_allclose(result.x, exact, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(result.x, scipy_x, rtol=1e-5, atol=1e-6)
        assert result.converged
        assert result.n_passes >= result.n_iter + 1
        assert len(result.history) == result.n_iter + 1
        assert result.fun == pytest.approx(fun(exact)[0], rel=1e-10)
        assert np.all(np.diff(result.history) <= 1e-12)
    assert [it for it, _ in calls] == list(range(1, gd.n_iter + 1))
    assert calls[-1][1] == gd.fun


def test_gradient_descent_backtracks_from_huge_step():
    fun, A, b = _quadratic(seed=4)
    result = gradient_descent(fun, np.zeros(6), step_size=1e6, max_iter=5000, tol=1e-15)
    assert result.converged
    np.testing.assert_allclose(result.x, np.linalg.solve(A, b), rtol=1e-6, atol=1e-7)
    assert np.all(np.diff(result.history) <= 1e-12)
    assert result.n_passes > result.n_iter + 1  # halvings cost passes


def test_gradient_descent_l1_prox_matches_soft_threshold():
    # f = ½‖x − c‖² + λ‖x‖₁ has the closed-form minimizer soft(c, λ)
    c = np.array([3.0, -0.5, 0.2, -2.0])
    lam = 0.6
    pen = ElasticNet(l2=np.zeros(4), l1=np.full(4, lam))
    result = gradient_descent(lambda x: (0.5 * np.sum((x - c) ** 2), x - c), np.zeros(4),
                              penalty=pen, max_iter=100, tol=1e-14)
    np.testing.assert_allclose(result.x, [2.4, 0.0, 0.0, -1.4], atol=1e-12)
    assert result.x[1] == 0.0 and result.x[2] == 0.0
    assert result.fun == pytest.approx(0.5 * (0.36 + 0.25 + 0.04 + 0.36) + lam * 3.8)


def test_gradient_descent_rejects_bad_step():
    fun, _, _ = _quadratic()
    with pytest.raises(ValueError, match="step_size"):
        gradient_descent(fun, np.zeros(6), step_size=0.0)


def test_optimizers_respect_max_iter():
    fun, _, _ = _quadratic()
    for opt in ("gd", "lbfgs"):
        pen = ElasticNet(np.zeros(6), np.zeros(6))
        result = minimize_objective(opt, fun, np.zeros(6), penalty=pen, max_iter=2, tol=0.0)
        assert result.n_iter == 2 and not result.converged
        zero = minimize_objective(opt, fun, np.ones(6), penalty=pen, max_iter=0, tol=0.0)
        assert zero.n_iter == 0 and not zero.converged
        np.testing.assert_array_equal(zero.x, np.ones(6))
        assert zero.n_passes == 1


def test_lbfgs_does_not_repeat_the_first_pass():
    fun, _, _ = _quadratic()
    seen = []

    def counting(x):
        seen.append(np.array(x))
        return fun(x)

    result = lbfgs(counting, np.zeros(6), max_iter=50, tol=1e-12)
    assert result.n_passes == len(seen)
    assert not any(np.array_equal(s, np.zeros(6)) for s in seen[1:])


def _logistic_objective(X, y, reg):
    def fun(theta):
        m = X @ theta[:-1] + theta[-1]
        p = 1.0 / (1.0 + np.exp(-m))
        value = np.mean(np.logaddexp(0.0, m) - y * m) + 0.5 * reg * theta[:-1] @ theta[:-1]
        g = np.append(X.T @ (p - y) / len(y) + reg * theta[:-1], np.mean(p - y))
        return value, g

    return fun


def test_gd_and_lbfgs_on_logistic_regression_match_scipy():
    X, y = standardized_data(n=300, d=4, seed=5)
    fun = _logistic_objective(X, y, 0.01)
    ref = minimize(fun, np.zeros(5), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000}).x
    pen = ElasticNet(np.zeros(5), np.zeros(5))
    gd = minimize_objective("gd", fun, np.zeros(5), penalty=pen, max_iter=20000, tol=1e-15)
    lb = minimize_objective("lbfgs", fun, np.zeros(5), penalty=pen, max_iter=1000, tol=1e-15)
    np.testing.assert_allclose(gd.x, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lb.x, ref, rtol=1e-5, atol=1e-6)


def test_minimize_objective_errors():
    fun, _, _ = _quadratic()
    l1 = ElasticNet(np.zeros(6), np.full(6, 0.1))
    with pytest.raises(ValueError, match="'newton' does not support an L1 penalty.*'lbfgs'"):
        minimize_objective("newton", fun, np.zeros(6), penalty=l1, max_iter=10, tol=1e-6)
    no_l1 = ElasticNet(np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match="'newton' needs a Hessian pass"):
        minimize_objective("newton", fun, np.zeros(6), penalty=no_l1, max_iter=10, tol=1e-6)
    with pytest.raises(ValueError, match="unknown optimizer 'bfgs'"):
        minimize_objective("bfgs", fun, np.zeros(6), penalty=l1, max_iter=10, tol=1e-6)


def test_lbfgs_with_l1_runs_owlqn_to_the_soft_threshold():
    # ½‖x − c‖² + λ‖x‖₁ has the closed-form minimizer soft-threshold(c, λ).
    c = np.array([2.0, 0.3, -0.05, -1.0])
    penalty = ElasticNet(np.zeros(4), np.full(4, 0.5))
    result = minimize_objective("lbfgs", lambda x: (0.5 * float((x - c) @ (x - c)), x - c),
                                np.zeros(4), penalty=penalty, max_iter=50, tol=1e-14)
    np.testing.assert_allclose(result.x, [1.5, 0.0, 0.0, -0.5], atol=1e-9)
    assert result.x[1] == 0.0 and result.x[2] == 0.0


def test_relative_change():
    assert relative_change(10.0, 9.0) == pytest.approx(0.1)
    assert relative_change(0.1, 0.05) == pytest.approx(0.05)  # denominators floor at 1


# --------------------------------------------------------------------------- fit_glm
@pytest.mark.parametrize("optimizer", ["lbfgs", "gd"])
def test_fit_glm_logistic_matches_sklearn(optimizer):
    X, y = standardized_data(n=400, d=5, seed=6)
    n, reg = len(y), 0.01
    fit = fit_numpy(LOGISTIC, X, y, reg_param=reg, standardization=False, optimizer=optimizer,
                    tol=1e-14, max_iter=20000)
    sk = LogisticRegression(C=1.0 / (n * reg), tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_[0], rtol=1e-4, atol=1e-6)
    assert fit.intercept[0] == pytest.approx(sk.intercept_[0], rel=1e-4, abs=1e-6)
    assert fit.coef.shape == (5, 1) and fit.intercept.shape == (1,)


def test_fit_glm_standardization_penalizes_scaled_coefficients():
    # standardization=True on raw features = sklearn on X / std(X, ddof=1), rescaled back
    X, y = standardized_data(n=300, d=4, seed=7)
    X = X * [0.5, 2.0, 10.0, 1.0] + [1.0, -3.0, 0.0, 5.0]
    n, reg = len(y), 0.02
    fit = fit_numpy(LOGISTIC, X, y, reg_param=reg, standardization=True, tol=1e-14, max_iter=1000)
    s = X.std(axis=0, ddof=1)
    sk = LogisticRegression(C=1.0 / (n * reg), tol=1e-12, max_iter=10000).fit(X / s, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_[0] / s, rtol=1e-4, atol=1e-6)
    assert fit.intercept[0] == pytest.approx(sk.intercept_[0], rel=1e-4, abs=1e-6)


def test_fit_glm_unregularized_is_invariant_to_standardization():
    X, y = standardized_data(n=300, d=3, seed=8)
    X = X * [0.1, 3.0, 1.0]
    a = fit_numpy(LOGISTIC, X, y, standardization=True, tol=1e-14, max_iter=1000)
    b = fit_numpy(LOGISTIC, X, y, standardization=False, tol=1e-14, max_iter=1000)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-5)
    np.testing.assert_allclose(a.intercept, b.intercept, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fit_glm_squared_matches_ridge(fit_intercept):
    X, y = standardized_data(n=300, d=5, seed=9, kind="squared")
    n, reg = len(y), 0.05
    fit = fit_numpy(SQUARED, X, y, reg_param=reg, standardization=False, tol=1e-14,
                    max_iter=1000, fit_intercept=fit_intercept)
    # MLlib's least squares divide the L2 part by the label's (population) standard
    # deviation: ½ mean r² + reg/(2σ_y)‖w‖², i.e. Ridge's ‖r‖² + α‖w‖² with α = n·reg/σ_y.
    sk = Ridge(alpha=n * reg / y.std(), fit_intercept=fit_intercept, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_, rtol=1e-6, atol=1e-8)
    assert fit.intercept[0] == pytest.approx(sk.intercept_ if fit_intercept else 0.0, abs=1e-7)


def test_fit_glm_squared_unregularized_matches_least_squares():
    X, y = standardized_data(n=200, d=4, seed=10, kind="squared")
    X = X * [1.0, 5.0, 0.2, 1.0] + 3.0
    fit = fit_numpy(SQUARED, X, y, tol=1e-15, max_iter=1000)
    sk = LinearRegression().fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_, rtol=1e-6, atol=1e-8)
    assert fit.intercept[0] == pytest.approx(sk.intercept_, rel=1e-6)


def test_fit_glm_weights_equal_row_duplication():
    X, y = standardized_data(n=150, d=3, seed=11)
    w = np.random.default_rng(11).integers(1, 4, size=150).astype(float)
    weighted = fit_numpy(LOGISTIC, X, y, w, reg_param=0.01, standardization=False, tol=1e-14)
    rows = np.repeat(np.arange(150), w.astype(int))
    duplicated = fit_numpy(LOGISTIC, X[rows], y[rows], reg_param=0.01, standardization=False,
                           tol=1e-14)
    np.testing.assert_allclose(weighted.coef, duplicated.coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(weighted.intercept, duplicated.intercept, rtol=1e-6, atol=1e-9)


def test_fit_glm_l1_lasso_gives_exact_zeros():
    X, y = standardized_data(n=300, d=6, seed=12, kind="squared")
    reg = 0.1
    fit = fit_numpy(SQUARED, X, y, reg_param=reg, elastic_net_param=1.0, standardization=False,
                    optimizer="gd", tol=1e-15, max_iter=20000)
    sk = Lasso(alpha=reg, tol=1e-12, max_iter=100000).fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_, atol=1e-6)
    assert set(np.flatnonzero(fit.coef[:, 0] == 0.0)) == set(np.flatnonzero(sk.coef_ == 0.0))
    assert (fit.coef[:, 0] == 0.0).any()


def test_fit_glm_elastic_net_matches_sklearn():
    X, y = standardized_data(n=300, d=5, seed=13, kind="squared")
    reg, alpha = 0.1, 0.5
    fit = fit_numpy(SQUARED, X, y, reg_param=reg, elastic_net_param=alpha, standardization=False,
                    optimizer="gd", tol=1e-15, max_iter=20000)
    # sklearn: ½ mean r² + a·ρ‖w‖₁ + a(1−ρ)/2‖w‖²; ours: L1 reg·α, L2 reg(1−α)/σ_y.
    l1, l2 = reg * alpha, reg * (1 - alpha) / y.std()
    sk = SkElasticNet(alpha=l1 + l2, l1_ratio=l1 / (l1 + l2), tol=1e-12,
                      max_iter=100000).fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_, atol=1e-6)
    assert fit.intercept[0] == pytest.approx(sk.intercept_, abs=1e-6)


def test_fit_glm_logistic_l1_matches_sklearn_saga():
    X, y = standardized_data(n=400, d=6, seed=14)
    n, reg = len(y), 0.03
    fit = fit_numpy(LOGISTIC, X, y, reg_param=reg, elastic_net_param=1.0, standardization=False,
                    optimizer="gd", tol=1e-15, max_iter=50000)
    sk = LogisticRegression(C=1.0 / (n * reg), l1_ratio=1.0, solver="saga", tol=1e-10,
                            max_iter=100000).fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], sk.coef_[0], atol=1e-4)
    zeros = fit.coef[:, 0] == 0.0
    assert zeros.any() and not zeros.all()
    np.testing.assert_array_equal(zeros, np.abs(sk.coef_[0]) < 1e-6)


def test_fit_glm_constant_feature_gets_zero_coefficient():
    X, y = standardized_data(n=200, d=3, seed=15)
    X[:, 1] = 4.0
    for optimizer in ("lbfgs", "gd"):
        fit = fit_numpy(LOGISTIC, X, y, reg_param=0.01, optimizer=optimizer, tol=1e-10,
                        max_iter=2000)
        assert fit.coef[1, 0] == 0.0
        assert np.all(fit.coef[[0, 2], 0] != 0.0)


def test_fit_glm_history_and_callback():
    X, y = standardized_data(n=200, d=3, seed=16)
    seen = []
    fit = fit_numpy(LOGISTIC, X, y, reg_param=0.01, tol=1e-10,
                    callback=lambda it, value: seen.append(value))
    history = fit.result.history
    assert fit.result.converged
    assert len(history) == fit.result.n_iter + 1 == len(seen) + 1
    assert history[1:] == seen
    assert np.all(np.diff(history) <= 0)
    assert history[-1] == pytest.approx(fit.result.fun)


def test_initial_intercept():
    X = np.zeros((4, 1))
    stats = block_stats(X, np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4))
    assert initial_intercept(LOGISTIC, stats)[0] == pytest.approx(np.log(3.0))
    assert initial_intercept(SQUARED, stats)[0] == pytest.approx(0.75)
    all_ones = block_stats(X, np.ones(4), np.ones(4))
    assert np.isfinite(initial_intercept(LOGISTIC, all_ones)[0])


# --------------------------------------------------------------------------- validation
NAMES = ["age", "income", "score"]


def _stats(X, y, w=None, bad=0):
    w = np.ones(len(y)) if w is None else np.asarray(w, float)
    return block_stats(np.asarray(X, float), np.asarray(y, float), w, bad)


def test_validate_accepts_good_data():
    X, y = standardized_data(n=20, d=3)
    validate_training_stats(_stats(X, y), LOGISTIC, NAMES, "label")
    validate_training_stats(_stats(X, y * 3.5), SQUARED, NAMES, "label")


def test_validate_empty():
    with pytest.raises(DataValidationError, match="empty"):
        validate_training_stats(_stats(np.empty((0, 3)), np.empty(0)), LOGISTIC, NAMES, "label")


def test_validate_nan_feature_names_column_and_row_count():
    X, y = standardized_data(n=30, d=3)
    X[[1, 4, 9], 1] = np.nan
    X[2, 2] = np.inf
    with pytest.raises(DataValidationError, match=r"'income' \(3 rows\), 'score' \(1 rows\)"):
        validate_training_stats(_stats(X, y), LOGISTIC, NAMES, "label")


def test_validate_binary_labels():
    X, y = standardized_data(n=30, d=3)
    y[[0, 5]] = [2.0, -1.0]
    with pytest.raises(DataValidationError, match="'label' must hold 0 or 1.*found -1, 2"):
        validate_training_stats(_stats(X, y), LOGISTIC, NAMES, "label")
    many = np.arange(100, dtype=float)
    with pytest.raises(DataValidationError, match="more than 64 distinct values"):
        validate_training_stats(_stats(np.zeros((100, 3)), many), LOGISTIC, NAMES, "label")
    # squared loss takes any finite label
    validate_training_stats(_stats(np.zeros((100, 3)), many), SQUARED, NAMES, "label")


def test_validate_nonfinite_label():
    X, y = standardized_data(n=30, d=3)
    y[3] = np.nan
    with pytest.raises(DataValidationError, match="label column 'y' contains NaN.* in 1 rows"):
        validate_training_stats(_stats(X, y), LOGISTIC, NAMES, "y")


def test_validate_weights():
    X, y = standardized_data(n=30, d=3)
    w = np.ones(30)
    w[[0, 1]] = -0.5
    with pytest.raises(DataValidationError, match="weight column 'w' has 2 negative values"):
        validate_training_stats(_stats(X, y, w), LOGISTIC, NAMES, "label", "w")
    w = np.ones(30)
    w[7] = np.inf
    with pytest.raises(DataValidationError, match="weight column 'w' contains NaN.* in 1 rows"):
        validate_training_stats(_stats(X, y, w), LOGISTIC, NAMES, "label", "w")
    with pytest.raises(DataValidationError, match="sum to zero"):
        validate_training_stats(_stats(X, y, np.zeros(30)), LOGISTIC, NAMES, "label", "w")


def test_validate_bad_vector_rows():
    X, y = standardized_data(n=30, d=3)
    with pytest.raises(DataValidationError, match="4 rows have a null feature vector"):
        validate_training_stats(_stats(X, y, bad=4), LOGISTIC, NAMES, "label")


def test_validate_reports_every_problem():
    X, y = standardized_data(n=30, d=3)
    X[0, 0] = np.nan
    y[1] = 5.0
    with pytest.raises(DataValidationError, match="'age' \\(1 rows\\).*found 5"):
        validate_training_stats(_stats(X, y), LOGISTIC, NAMES, "label")
