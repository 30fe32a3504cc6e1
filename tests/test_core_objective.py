"""pyspark.ml's objective per family (core/objective.py) through fit_glm, on numpy passes:
the least-squares label scaling with every optimizer, huber's ½, MLlib's constant-label and
multinomial rules, and the one-class refusal.  No Spark (tests/test_mllib_parity.py compares
with pyspark.ml itself)."""

from functools import reduce

import numpy as np
import pytest
from sklearn.linear_model import HuberRegressor

from sparkml_aiaas.core.glm import (StochasticSettings, fit_fingerprint, fit_glm,
                                    validate_training_stats)
from sparkml_aiaas.core.losses import LOSSES, loss_gradient_sums
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.objective import (NORMAL_SOLVER_MAX_FEATURES, constant_label,
                                          objective_scales)
from sparkml_aiaas.core.stats import BlockStats, block_stats, merge_stats, single_class_message
from sparkml_aiaas.core.stochastic import (average_rounds, block_rng, local_round, merge_rounds,
                                           round_sums, sample_rows)
from sparkml_aiaas.errors import DataValidationError

SQUARED, HUBER = LOSSES["squared"], LOSSES["huber"]
NAMES = ["x0", "x1", "x2"]


def engine(loss, X, y, w, n_chunks=3):
    """``(data_pass, local_rounds, stats)`` over numpy chunks, as the Spark engine does it."""
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
            parts.append(loss_gradient_sums(loss, Xs, ys, ws, coef, intercept, extra,
                                            with_hessian=with_hessian))
        return reduce(merge, parts)

    def local_rounds(spec, x, state):
        parts = [round_sums(*local_round(spec, X[s], y[s], w[s], x, state, index))
                 for index, s in enumerate(chunks)]
        return average_rounds(reduce(merge_rounds, parts))

    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return data_pass, local_rounds, stats


def regression_data(n=240, seed=3, weighted=True):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 3))
    X = Z * [0.5, 4.0, 25.0] + [1.0, -3.0, 10.0]
    y = 12.0 * (Z @ [1.0, -0.5, 0.3]) + 7.0 + 2.0 * rng.normal(size=n)  # std(y) ≈ 15
    w = rng.uniform(0.3, 3.0, size=n) if weighted else np.ones(n)
    return X, y, w


def mllib_ridge(X, y, w, reg, standardization, fit_intercept):
    """The closed form of MLlib's least squares with an L2 penalty — its
    WeightedLeastSquares: population standard deviations, the L2 part divided by σ_y."""
    W = w.sum()
    mx, my = w @ X / W, w @ y / W
    p = np.sqrt(w @ (X - mx) ** 2 / W) if standardization else np.ones(X.shape[1])
    sy = np.sqrt(w @ (y - my) ** 2 / W)
    Xc, yc = (X - mx, y - my) if fit_intercept else (X, y)
    A = Xc.T @ (w[:, None] * Xc) / W + reg / sy * np.diag(p * p)
    coef = np.linalg.solve(A, Xc.T @ (w * yc) / W)
    return coef, (my - mx @ coef if fit_intercept else 0.0)


# --------------------------------------------------------------------------- statistics
def test_label_moments_merge_like_the_whole_and_both_variances():
    X, y, w = regression_data()
    whole = block_stats(X, y, w)
    parts = reduce(merge_stats, [block_stats(X[a:b], y[a:b], w[a:b])
                                 for a, b in ((0, 7), (7, 100), (100, 240))])
    W = w.sum()
    mean = w @ y / W
    assert parts.label_m2 == pytest.approx(whole.label_m2, rel=1e-12)
    assert parts.label_mean == pytest.approx(mean, rel=1e-14)
    assert parts.label_std(population=True) == pytest.approx(
        np.sqrt(w @ (y - mean) ** 2 / W), rel=1e-12)
    assert parts.label_std() == pytest.approx(
        np.sqrt(w @ (y - mean) ** 2 / (W - w @ w / W)), rel=1e-12)
    np.testing.assert_allclose(parts.std(population=True),
                               np.sqrt(w @ (X - w @ X / W) ** 2 / W), rtol=1e-12)


def test_objective_scales_follow_mllib_solver_choice():
    X, y, w = regression_data()
    stats = block_stats(X, y, w)
    squared = objective_scales("squared", stats)
    np.testing.assert_array_equal(squared.feature_std, stats.std(population=True))
    assert squared.l2_scale == 1.0 / stats.label_std(population=True)
    for name in ("huber", "logistic", "multinomial", "hinge"):
        scales = objective_scales(name, stats)
        np.testing.assert_array_equal(scales.feature_std, stats.std())
        assert scales.l2_scale == 1.0
    # Beyond WeightedLeastSquares' 4096 features MLlib's "auto" runs L-BFGS: unbiased.
    wide = BlockStats.empty(NORMAL_SOLVER_MAX_FEATURES + 1)
    wide.weight_sum, wide.weight_sq_sum, wide.label_sum, wide.label_m2 = 4.0, 4.0, 2.0, 3.0
    wide.m2 = np.ones(NORMAL_SOLVER_MAX_FEATURES + 1)
    scales = objective_scales("squared", wide)
    np.testing.assert_array_equal(scales.feature_std, wide.std())
    assert scales.l2_scale == pytest.approx(1.0 / np.sqrt(3.0 / 3.0))


# --------------------------------------------------------------------------- least squares
@pytest.mark.parametrize("standardization", [True, False])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_least_squares_match_mllib_closed_form(standardization, fit_intercept):
    X, y, w = regression_data()
    data_pass, _, stats = engine(SQUARED, X, y, w)
    fit = fit_glm(data_pass, stats, loss=SQUARED, reg_param=2.0, standardization=standardization,
                  fit_intercept=fit_intercept, tol=1e-15, max_iter=2000)
    coef, intercept = mllib_ridge(X, y, w, 2.0, standardization, fit_intercept)
    np.testing.assert_allclose(fit.coef[:, 0], coef, rtol=1e-7)
    assert fit.intercept[0] == pytest.approx(intercept, rel=1e-7, abs=1e-9)


OPTIMIZERS = {"lbfgs": {}, "newton": {}, "gd": {"max_iter": 20000},
              "gd-bb": {"step_rule": "barzilai_borwein"}}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_reaches_the_label_scaled_minimum(name):
    X, y, w = regression_data()
    data_pass, _, stats = engine(SQUARED, X, y, w)
    options = dict(dict(max_iter=5000), **OPTIMIZERS[name])
    fit = fit_glm(data_pass, stats, loss=SQUARED, reg_param=2.0, optimizer=name.split("-")[0],
                  tol=1e-15, **options)
    coef, intercept = mllib_ridge(X, y, w, 2.0, True, True)
    np.testing.assert_allclose(fit.coef[:, 0], coef, rtol=1e-5)
    assert fit.intercept[0] == pytest.approx(intercept, rel=1e-5)


def _scaled_objective(X, y, w, coef, intercept, stats, reg):
    """MLlib's least-squares objective on the original scale (standardization=True)."""
    r = X @ coef + intercept - y
    s = stats.std(population=True)
    return (0.5 * w @ (r * r) / w.sum()
            + 0.5 * reg / stats.label_std(population=True) * np.sum((s * coef) ** 2))


@pytest.mark.parametrize("rule,step,local_steps", [("adam", 0.05, 1), ("sgd", 0.3, 4)])
def test_mini_batch_optimizers_minimize_the_same_objective(rule, step, local_steps):
    X, y, w = regression_data()
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # keep plain step sizes stable
    data_pass, local_rounds, stats = engine(SQUARED, X, y, w)
    coef, intercept = mllib_ridge(X, y, w, 2.0, True, True)
    optimum = _scaled_objective(X, y, w, coef, intercept, stats, 2.0)
    settings = StochasticSettings(mini_batch_fraction=1.0, local_steps=local_steps, seed=1)
    fit = fit_glm(data_pass, stats, loss=SQUARED, reg_param=2.0, optimizer=rule, step_size=step,
                  max_iter=3000, tol=0.0, stochastic=settings, local_rounds=local_rounds)
    value = _scaled_objective(X, y, w, fit.coef[:, 0], fit.intercept[0], stats, 2.0)
    assert value == pytest.approx(optimum, rel=1e-4)


def test_l1_part_is_not_label_scaled():
    # Pure L1: MLlib's effective L1 regParam/σ_y in scaled space is regParam on the original
    # scale, so the lasso is sklearn's Lasso(alpha = regParam) whatever σ_y is.
    from sklearn.linear_model import Lasso

    X, y, _ = regression_data(weighted=False)
    data_pass, _, stats = engine(SQUARED, X, y, np.ones(len(y)))
    fit = fit_glm(data_pass, stats, loss=SQUARED, reg_param=1.5, elastic_net_param=1.0,
                  standardization=False, tol=1e-15, max_iter=5000)
    lasso = Lasso(alpha=1.5, tol=1e-14, max_iter=1_000_000).fit(X, y)
    np.testing.assert_allclose(fit.coef[:, 0], lasso.coef_, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- huber
def test_huber_is_half_the_sklearn_objective():
    X, y, w = regression_data()
    y[:10] += 80.0  # outliers
    data_pass, _, stats = engine(HUBER, X, y, w)
    fit = fit_glm(data_pass, stats, loss=HUBER, reg_param=0.2, standardization=False,
                  tol=1e-15, max_iter=5000)
    # MLlib: ½·mean_w(σ + H(r/σ)σ) + ½·reg‖w‖²  =  sklearn's Σw(…) + α‖w‖² / (2Σw), α = Σw·reg.
    ref = HuberRegressor(epsilon=1.35, alpha=w.sum() * 0.2, tol=1e-12, max_iter=100_000)
    ref.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(fit.coef[:, 0], ref.coef_, rtol=1e-4)
    assert fit.intercept[0] == pytest.approx(ref.intercept_, abs=1e-3)  # |y| ~ 15 here
    assert np.exp(fit.extra[0]) == pytest.approx(ref.scale_, rel=1e-4)

    def sklearn_objective(coef, intercept, sigma):
        z = np.abs(y - X @ coef - intercept) / sigma
        H = np.where(z <= 1.35, z * z, 2.7 * z - 1.35**2)
        return w @ (sigma + H * sigma) + w.sum() * 0.2 * coef @ coef

    # where they differ, ours is the lower of the two on sklearn's own objective
    assert (sklearn_objective(fit.coef[:, 0], fit.intercept[0], np.exp(fit.extra[0]))
            <= sklearn_objective(ref.coef_, ref.intercept_, ref.scale_))
    assert objective_scales("huber", stats).l2_scale == 1.0  # huber's label is not scaled


# --------------------------------------------------------------------------- constant label
@pytest.mark.parametrize("loss", [SQUARED, HUBER], ids=["squared", "huber"])
def test_constant_label_gives_mllib_untrained_model(loss):
    X, _, w = regression_data()
    y = np.full(len(w), 4.25)
    data_pass, _, stats = engine(loss, X, y, w)
    fit = fit_glm(data_pass, stats, loss=loss, reg_param=0.3)
    np.testing.assert_array_equal(fit.coef, 0.0)
    assert fit.intercept[0] == 4.25
    assert fit.result.converged and fit.result.n_iter == 0 and fit.result.n_passes == 0
    assert "label is constant (4.25)" in fit.result.message
    if loss is HUBER:
        assert np.exp(fit.extra[0]) == 1.0  # MLlib reports scale 1
    zero = fit_glm(*engine(loss, X, np.zeros(len(w)), w)[::2], loss=loss, fit_intercept=False,
                   reg_param=0.3)
    assert not zero.coef.any() and zero.intercept[0] == 0.0
    with pytest.raises(DataValidationError, match=r"label is constant \(4.25\) and "
                                                  r"fitIntercept is false.*regParam=0"):
        fit_glm(data_pass, stats, loss=loss, reg_param=0.3, fit_intercept=False)
    # unregularized, MLlib fits it as usual (no scaling needed)
    plain = fit_glm(data_pass, stats, loss=loss, fit_intercept=False, tol=1e-14, max_iter=2000)
    assert plain.coef.any() and plain.result.n_iter > 0


def test_constant_label_rule_is_for_regression_only():
    stats = block_stats(np.ones((4, 1)), np.ones(4), np.ones(4))
    for name in ("logistic", "hinge", "multinomial"):
        assert constant_label(name, stats, True, 0.1) is None


# --------------------------------------------------------------------------- multinomial
@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_multinomial_model_is_centered_as_mllib(reg):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3))
    y = np.argmax(X @ rng.normal(size=(3, 3)) + rng.gumbel(size=(300, 3)), axis=1).astype(float)
    loss = LOSSES["multinomial"]
    data_pass, _, stats = engine(loss, X, y, np.ones(300))
    fit = fit_glm(data_pass, stats, loss=loss, n_outputs=3, reg_param=reg, optimizer="newton",
                  tol=1e-14, max_iter=100)
    assert abs(fit.intercept.sum()) < 1e-12
    np.testing.assert_allclose(fit.coef.sum(axis=1), 0.0, atol=1e-9)


# --------------------------------------------------------------------------- one class
@pytest.mark.parametrize("name", ["logistic", "hinge", "multinomial"])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_one_class_training_data_is_refused(name, label):
    X = np.random.default_rng(0).normal(size=(30, 3))
    stats = block_stats(X, np.full(30, label), np.ones(30))
    with pytest.raises(DataValidationError) as error:
        validate_training_stats(stats, LOSSES[name], NAMES, "y")
    assert str(error.value) == single_class_message("y", label, 30, "training")
    validate_training_stats(stats, LOSSES[name], NAMES, "y", role="validation")  # allowed
    validate_training_stats(stats, SQUARED, NAMES, "y")  # a constant regression label is not


def test_fingerprint_depends_on_the_label_spread():
    X, y, w = regression_data()
    a = block_stats(X, y, w)
    b = block_stats(X, y + (y - y.mean()) * 0.5, w)  # same sums, different spread
    b.label_sum = a.label_sum
    assert fit_fingerprint(a, {"k": 1}) != fit_fingerprint(b, {"k": 1})
