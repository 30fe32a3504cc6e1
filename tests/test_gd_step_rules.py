"""Step-size rules of full-batch gd (backtracking, Barzilai–Borwein, schedule) and the step
params of the estimators (stepRule, stepSchedule, stepDecay): numpy first, then Spark."""

import os
from functools import reduce

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import Lasso
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.first_order import scheduled_step
from sparkml_aiaas.core.glm import StochasticSettings, fit_glm
from sparkml_aiaas.core.losses import LOSSES, loss_gradient_sums
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.optimizers import (BB_STEP_MAX, BB_STEP_MIN, GDState,
                                           barzilai_borwein_step, gd_iterate, gd_start,
                                           gradient_descent, minimize_objective)
from sparkml_aiaas.core.regularizers import ElasticNet
from sparkml_aiaas.core.stats import block_stats, merge_stats


# --------------------------------------------------------------------------- problems
def ill_conditioned(kind, n=400, d=10, cond=1e3, reg=1e-3, seed=0):
    """``fun(theta) -> (value, gradient)`` of a logistic or least-squares problem whose feature
    scales spread over sqrt(cond) (Hessian condition number ≈ cond); theta = (w, b)."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(0.0, np.log10(np.sqrt(cond)), d)
    X = rng.normal(size=(n, d)) * scales
    w_true = rng.normal(size=d) / scales
    m = X @ w_true + 0.3
    if kind == "logistic":
        y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-m))).astype(float)

        def fun(theta):
            margin = X @ theta[:-1] + theta[-1]
            p = 0.5 * (1.0 + np.tanh(0.5 * margin))  # overflow-free sigmoid
            value = np.mean(np.logaddexp(0.0, margin) - y * margin)
            r = (p - y) / n
            grad = np.append(X.T @ r, r.sum())
            return value + 0.5 * reg * theta[:-1] @ theta[:-1], grad + np.append(reg * theta[:-1], 0)
    else:
        y = m + 0.1 * rng.normal(size=n)

        def fun(theta):
            r = X @ theta[:-1] + theta[-1] - y
            value = 0.5 * np.mean(r * r) + 0.5 * reg * theta[:-1] @ theta[:-1]
            return value, np.append(X.T @ r / n + reg * theta[:-1], r.mean())
    return fun, X, y


def no_penalty(n):
    return ElasticNet(np.zeros(n), np.zeros(n))


def scipy_optimum(fun, n):
    return minimize(fun, np.zeros(n), jac=True, method="L-BFGS-B",
                    options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 100000})


def passes_to_reach(fun, n, target, step_rule, penalty=None, max_iter=20000):
    """Run gd; return (result, passes made when the objective first came within 1e-6 of
    ``target``, or None)."""
    calls = {"n": 0, "first": None}

    def counted(theta):
        calls["n"] += 1
        return fun(theta)

    def on_iteration(_, value):
        if calls["first"] is None and (value - target) / abs(target) <= 1e-6:
            calls["first"] = calls["n"]

    result = minimize_objective("gd", counted, np.zeros(n), penalty=penalty or no_penalty(n),
                                max_iter=max_iter, tol=1e-13, step_rule=step_rule,
                                callback=on_iteration)
    assert result.n_passes == calls["n"]
    return result, calls["first"]


# --------------------------------------------------------------------------- Barzilai–Borwein
@pytest.mark.parametrize("kind", ["logistic", "squared"])
def test_bb_reaches_the_lbfgsb_optimum_in_far_fewer_passes(kind):
    fun, X, _ = ill_conditioned(kind)
    n = X.shape[1] + 1
    ref = scipy_optimum(fun, n)
    assert ref.success
    bb, bb_first = passes_to_reach(fun, n, ref.fun, "barzilai_borwein")
    bt, bt_first = passes_to_reach(fun, n, ref.fun, "backtracking")
    assert bb.converged and bt.converged
    for result in (bb, bt):
        assert abs(result.fun - ref.fun) / abs(ref.fun) <= 1e-6
    np.testing.assert_allclose(bb.x, ref.x, rtol=1e-3, atol=1e-4)
    # Ill-conditioned: backtracking settles on a ~1/L step; BB adapts it every iteration.
    assert bb_first is not None and bt_first is not None
    assert 3 * bb_first < bt_first, (bb_first, bt_first)
    assert bb.n_passes < bt.n_passes
    # The backtracking safeguard: the objective never increases.
    assert np.all(np.diff(bb.history) <= 1e-12 * abs(bb.history[0]))


def test_proximal_bb_with_l1_matches_sklearn_lasso():
    fun, X, y = ill_conditioned("squared", cond=1e2, reg=0.0, seed=3)
    d, alpha = X.shape[1], 0.01
    penalty = ElasticNet(np.zeros(d + 1), np.append(np.full(d, alpha), 0.0))
    lasso = Lasso(alpha=alpha, tol=1e-14, max_iter=1000000).fit(X, y)
    sk_theta = np.append(lasso.coef_, lasso.intercept_)
    sk_total = fun(sk_theta)[0] + penalty.l1_value(sk_theta)
    bb, bb_first = passes_to_reach(fun, d + 1, sk_total, "barzilai_borwein", penalty)
    bt, bt_first = passes_to_reach(fun, d + 1, sk_total, "backtracking", penalty)
    assert bb.converged
    assert abs(bb.fun - sk_total) / sk_total <= 1e-6
    np.testing.assert_allclose(bb.x, sk_theta, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bb.x[:d] == 0.0, lasso.coef_ == 0.0)  # the same support
    assert bb_first is not None and bt_first is not None and bb_first < bt_first


def test_bb_step_formula_and_safeguards():
    s, y = np.array([1.0, 2.0]), np.array([0.5, 0.5])
    assert barzilai_borwein_step(s, y, fallback=7.0) == pytest.approx(5.0 / 1.5)
    assert barzilai_borwein_step(s, -y, fallback=7.0) == 7.0  # no positive curvature
    assert barzilai_borwein_step(np.zeros(2), y, fallback=7.0) == 7.0  # did not move
    assert barzilai_borwein_step(s, 1e-20 * y, fallback=7.0) == BB_STEP_MAX
    assert barzilai_borwein_step(1e-12 * s, y, fallback=7.0) == BB_STEP_MIN


def test_bb_trial_step_is_the_bb_step_of_the_previous_move():
    fun, X, _ = ill_conditioned("logistic", cond=1e2)
    n = X.shape[1] + 1
    state = gd_start(fun, np.zeros(n), 1.0)
    for _ in range(20):
        new = gd_iterate(fun, state, step_rule="barzilai_borwein")
        s, y = new.x - state.x, new.g - state.g
        assert new.step == min(max(float(s @ s) / float(s @ y), BB_STEP_MIN), BB_STEP_MAX)
        assert new.f <= state.f
        state = new


def test_bb_on_a_huge_first_step_still_decreases():
    fun, X, _ = ill_conditioned("squared", cond=1e2)
    n = X.shape[1] + 1
    result = gradient_descent(fun, np.zeros(n), step_size=1e8, max_iter=5000, tol=1e-14,
                              step_rule="barzilai_borwein")
    assert result.converged
    assert np.all(np.diff(result.history) <= 1e-12 * abs(result.history[0]))
    assert result.fun == pytest.approx(scipy_optimum(fun, n).fun, rel=1e-8)


# --------------------------------------------------------------------------- schedule
def _expected_step(base, schedule, t, decay):
    """The schedules written out independently of scheduled_step."""
    if schedule == "constant":
        return base
    if schedule == "inverse_time":
        return base / (1.0 + decay * t)
    return base * decay ** (t // 10)


@pytest.mark.parametrize("schedule, decay", [("constant", 0.0), ("inverse_time", 0.3),
                                             ("step_decay", 0.5)])
@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_schedule_takes_exactly_the_scheduled_steps(schedule, decay, l1):
    fun, X, _ = ill_conditioned("logistic", cond=10.0)
    n = X.shape[1] + 1
    penalty = ElasticNet(np.zeros(n), np.append(np.full(n - 1, l1), 0.0))
    base = 0.3
    state = gd_start(fun, np.zeros(n), base, penalty)
    states = [state]
    for t in range(35):
        new = gd_iterate(fun, state, penalty, step_rule="schedule", base_step=base,
                         schedule=schedule, decay=decay)
        step = _expected_step(base, schedule, t, decay)
        assert new.step == step == scheduled_step(base, schedule, t, decay)
        # exactly one proximal step of that size, no line search (one pass)
        np.testing.assert_array_equal(new.x, penalty.prox(state.x - step * state.g, step))
        assert new.n_evals == state.n_evals + 1 and new.iteration == t + 1
        state = new
        states.append(state)
    # gradient_descent runs the very same iterations
    seen = []
    result = gradient_descent(fun, np.zeros(n), step_size=base, max_iter=35, tol=0.0,
                              penalty=penalty, step_rule="schedule", schedule=schedule,
                              decay=decay, callback=lambda it, value: seen.append(value))
    np.testing.assert_array_equal(result.x, state.x)
    assert result.n_passes == 36 and result.n_iter == 35
    assert seen == [s.total for s in states[1:]]


def test_schedule_has_no_line_search_and_reports_divergence():
    fun, X, _ = ill_conditioned("squared", cond=1e2)
    n = X.shape[1] + 1
    L = np.linalg.eigvalsh(np.cov(np.column_stack([X, np.ones(len(X))]).T, bias=True)
                           + np.outer(np.append(X.mean(0), 1), np.append(X.mean(0), 1))).max()
    # a constant step of 3/L overshoots: the objective goes up (backtracking would refuse)
    result = gradient_descent(fun, np.zeros(n), step_size=3.0 / L, max_iter=5, tol=0.0,
                              step_rule="schedule")
    assert result.history[-1] > result.history[0]
    assert result.n_passes == 6
    with pytest.raises(ValueError, match="stepRule 'schedule' diverged at iteration"), \
            np.errstate(over="ignore", invalid="ignore"):
        gradient_descent(fun, np.zeros(n), step_size=3.0 / L, max_iter=100000, tol=0.0,
                         step_rule="schedule")
    # a decaying schedule from the same step settles
    settled = gradient_descent(fun, np.zeros(n), step_size=3.0 / L, max_iter=3000, tol=0.0,
                               step_rule="schedule", schedule="inverse_time", decay=1.0)
    assert np.isfinite(settled.fun) and settled.fun < result.history[0]


def test_unknown_rule_or_schedule_is_a_clear_error():
    fun, X, _ = ill_conditioned("squared", cond=10.0)
    n = X.shape[1] + 1
    with pytest.raises(ValueError, match=r"unknown step rule 'armijo'; expected one of "
                                         r"\['backtracking', 'barzilai_borwein', 'schedule'\]"):
        gradient_descent(fun, np.zeros(n), step_rule="armijo")
    with pytest.raises(ValueError, match=r"unknown step schedule 'cosine'; expected one of "
                                         r"\['constant', 'inverse_time', 'step_decay'\]"):
        gradient_descent(fun, np.zeros(n), step_rule="schedule", schedule="cosine")


# --------------------------------------------------------------------------- checkpoints
class Killed(Exception):
    pass


@pytest.mark.parametrize("step_rule, l1", [("barzilai_borwein", 0.0), ("barzilai_borwein", 0.02),
                                           ("schedule", 0.02)])
def test_resume_mid_run_is_bit_identical(tmp_path, step_rule, l1):
    fun, X, _ = ill_conditioned("logistic", cond=1e3)
    n = X.shape[1] + 1
    penalty = ElasticNet(np.zeros(n), np.append(np.full(n - 1, l1), 0.0))
    args = dict(penalty=penalty, max_iter=60, tol=1e-14, step_size=0.05, step_rule=step_rule,
                step_schedule="inverse_time", step_decay=0.1)
    reference = minimize_objective("gd", fun, np.zeros(n), **args)
    assert reference.n_iter == 60

    calls = {"n": 0}

    def dying(theta):
        calls["n"] += 1
        if calls["n"] == 45:
            raise Killed()
        return fun(theta)

    checkpoint = FileCheckpoint(str(tmp_path), "fit", interval=4)
    with pytest.raises(Killed):
        minimize_objective("gd", dying, np.zeros(n), checkpoint=checkpoint, **args)
    assert checkpoint.saves >= 3 and os.path.exists(checkpoint.path)
    with np.load(checkpoint.path) as saved:
        state = GDState.from_arrays(saved)
        assert str(saved["method"]) == f"gd-{step_rule}"
    assert 0 < state.iteration < 60  # it died mid-run
    resumed_calls = {"n": 0}

    def counted(theta):
        resumed_calls["n"] += 1
        return fun(theta)

    resumed = minimize_objective("gd", counted, np.zeros(n),
                                 checkpoint=FileCheckpoint(str(tmp_path), "fit", interval=4),
                                 **args)
    np.testing.assert_array_equal(resumed.x, reference.x)
    assert resumed.history == reference.history
    assert resumed.n_iter == reference.n_iter and resumed.n_passes == reference.n_passes
    assert resumed_calls["n"] < reference.n_passes  # it really resumed
    assert not os.path.exists(checkpoint.path)


def test_a_checkpoint_of_another_rule_is_not_resumed(tmp_path):
    fun, X, _ = ill_conditioned("logistic", cond=1e2)
    n = X.shape[1] + 1
    args = dict(penalty=no_penalty(n), max_iter=30, tol=0.0)
    checkpoint = FileCheckpoint(str(tmp_path), "fit", interval=5)
    backtracking = minimize_objective("gd", fun, np.zeros(n), **args)
    # leave a backtracking checkpoint behind, as a killed run would
    state = gd_start(fun, np.zeros(n), 1.0, None)
    for _ in range(10):
        state = gd_iterate(fun, state)
    checkpoint.save({**state.to_arrays(), "history": np.zeros(11), "method": np.asarray("gd")})
    bb = minimize_objective("gd", fun, np.zeros(n), step_rule="barzilai_borwein",
                            checkpoint=checkpoint, **args)
    fresh = minimize_objective("gd", fun, np.zeros(n), step_rule="barzilai_borwein", **args)
    np.testing.assert_array_equal(bb.x, fresh.x)
    assert bb.history == fresh.history
    assert not np.array_equal(bb.x, backtracking.x)


# --------------------------------------------------------------------------- fit_glm wiring
def _numpy_pass(loss, X, y, n_chunks=3):
    w = np.ones(len(y))
    bounds = np.linspace(0, len(y), n_chunks + 1).astype(int)
    chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def data_pass(coef, intercept, extra=None, with_hessian=False, sample=None):
        return reduce(merge, [loss_gradient_sums(loss, X[s], y[s], w[s], coef, intercept, extra,
                                                 with_hessian=with_hessian) for s in chunks])

    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return data_pass, stats


def test_fit_glm_passes_the_rule_to_gd_only():
    _, X, y = ill_conditioned("logistic", cond=1e2, n=300, d=4)
    data_pass, stats = _numpy_pass(LOSSES["logistic"], X, y)
    common = dict(loss=LOSSES["logistic"], reg_param=0.01, max_iter=8, tol=0.0)
    bt = fit_glm(data_pass, stats, optimizer="gd", **common)
    bb = fit_glm(data_pass, stats, optimizer="gd", step_rule="barzilai_borwein", **common)
    sched = fit_glm(data_pass, stats, optimizer="gd", step_rule="schedule",
                    step_schedule="inverse_time", step_decay=0.5, step_size=0.5, **common)
    assert not np.array_equal(bt.coef, bb.coef) and not np.array_equal(bt.coef, sched.coef)
    assert sched.result.n_passes == 9  # no line search
    lbfgs = fit_glm(data_pass, stats, optimizer="lbfgs", **common)
    lbfgs_bb = fit_glm(data_pass, stats, optimizer="lbfgs", step_rule="barzilai_borwein",
                       step_schedule="step_decay", step_decay=0.5, **common)
    np.testing.assert_array_equal(lbfgs.coef, lbfgs_bb.coef)  # lbfgs ignores them
    # the mini-batch rules take their schedule from StochasticSettings
    const = fit_glm(data_pass, stats, optimizer="sgd", **common)
    inv = fit_glm(data_pass, stats, optimizer="sgd",
                  stochastic=StochasticSettings(schedule="inverse_time", decay=0.5), **common)
    assert not np.array_equal(const.coef, inv.coef)


# --------------------------------------------------------------------------- estimators
COLS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def lr_data(spark):
    rng = np.random.default_rng(11)
    Z = rng.normal(size=(400, 4))
    X = Z + 0.5 * Z[:, [0]]
    pdf = pd.DataFrame(X, columns=COLS)
    m = X @ [1.0, -1.0, 0.5, 0.0] + 0.2
    pdf["label"] = (rng.uniform(size=400) < 1 / (1 + np.exp(-m))).astype(float)
    frame = spark.createDataFrame(pdf).cache()
    frame.count()
    yield pdf, frame
    frame.unpersist()


def test_logistic_regression_bb_matches_sklearn(lr_data):
    from sparkml_aiaas.models import LogisticRegression

    pdf, frame = lr_data
    reg = 0.01
    model = LogisticRegression(featuresCols=COLS, optimizer="gd", stepRule="barzilai_borwein",
                               regParam=reg, standardization=False, tol=1e-12,
                               maxIter=500).fit(frame)
    sk = SkLogisticRegression(C=1.0 / (len(pdf) * reg), tol=1e-12, max_iter=10000)
    sk.fit(pdf[COLS].to_numpy(), pdf["label"].to_numpy())
    assert model.summary.converged
    np.testing.assert_allclose(model.coefficients, sk.coef_[0], rtol=1e-4, atol=1e-6)
    assert model.intercept == pytest.approx(sk.intercept_[0], rel=1e-4, abs=1e-6)
    assert model.getStepRule() == "barzilai_borwein"


def test_estimator_schedule_params_reach_gd_and_sgd(lr_data):
    from sparkml_aiaas.models import LogisticRegression

    pdf, frame = lr_data
    X, y = pdf[COLS].to_numpy(float), pdf["label"].to_numpy(float)
    data_pass, stats = _numpy_pass(LOSSES["logistic"], X, y)
    common = dict(regParam=0.01, maxIter=6, tol=0.0, stepSize=0.8, stepSchedule="step_decay",
                  stepDecay=0.5)
    for optimizer, rule in (("gd", "schedule"), ("sgd", "backtracking")):
        model = LogisticRegression(featuresCols=COLS, optimizer=optimizer, stepRule=rule,
                                   **common).fit(frame)
        ref = fit_glm(data_pass, stats, loss=LOSSES["logistic"], reg_param=0.01, max_iter=6,
                      tol=0.0, step_size=0.8, optimizer=optimizer, step_rule=rule,
                      step_schedule="step_decay", step_decay=0.5,
                      stochastic=StochasticSettings(schedule="step_decay", decay=0.5))
        np.testing.assert_allclose(model.coefficients, ref.coef[:, 0], rtol=1e-10, atol=1e-12)
        assert model.summary.totalIterations == 6
        assert model.summary.numPasses == (7 if optimizer == "gd" else 6)


def test_stochastic_settings_carry_the_schedule():
    from sparkml_aiaas.models import LinearRegression

    settings = LinearRegression(stepSchedule="inverse_time", stepDecay=0.25).stochastic_settings()
    assert settings.schedule == "inverse_time" and settings.decay == 0.25
    default = LinearRegression().stochastic_settings()
    assert default.schedule == "constant" and default.decay == 0.0


@pytest.mark.parametrize("estimator", ["LogisticRegression", "LinearRegression", "LinearSVC"])
@pytest.mark.parametrize("params, match", [
    (dict(stepRule="armijo"),
     r"param stepRule must be one of \['backtracking', 'barzilai_borwein', 'schedule'\], "
     r"got 'armijo'"),
    (dict(stepSchedule="cosine"),
     r"param stepSchedule must be one of \['constant', 'inverse_time', 'step_decay'\], "
     r"got 'cosine'"),
    (dict(stepDecay=-0.1), r"param stepDecay must be finite and >= 0, got -0.1"),
    (dict(stepDecay=float("nan")), r"param stepDecay must be finite and >= 0, got nan"),
    (dict(stepSchedule="step_decay", stepDecay=1.5),
     r"param stepDecay must be in \(0, 1\] with stepSchedule 'step_decay', got 1.5"),
    (dict(stepSchedule="step_decay"),
     r"param stepDecay must be in \(0, 1\] with stepSchedule 'step_decay', got 0.0"),
])
def test_bad_step_params_raise_before_any_spark_job(spark, monkeypatch, estimator, params, match):
    import sparkml_aiaas.models as models
    from sparkml_aiaas.engine import ResidentBlocks
    from sparkml_aiaas.errors import ConfigError

    def no_build(*args, **kwargs):
        raise AssertionError("the blocks must not be built for invalid params")

    monkeypatch.setattr(ResidentBlocks, "build", no_build)
    frame = spark.createDataFrame(pd.DataFrame({"a": [0.0, 1.0], "label": [0.0, 1.0]}))
    with pytest.raises(ConfigError, match=match):
        getattr(models, estimator)(featuresCols=["a"], optimizer="gd", **params).fit(frame)


def test_step_params_round_trip_save_load_and_yaml(spark, tmp_path):
    from sparkml_aiaas.config import TrainJobConfig, load_config
    from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression

    for cls in (LogisticRegression, LinearRegression, LinearSVC):
        est = cls(featuresCols=COLS, optimizer="gd", stepRule="schedule",
                  stepSchedule="inverse_time", stepDecay=0.3)
        path = str(tmp_path / cls.__name__)
        est.save(path)
        loaded = cls.load(path)
        assert (loaded.getStepRule(), loaded.getStepSchedule(), loaded.getStepDecay()) == \
            ("schedule", "inverse_time", 0.3)
        assert cls().getStepRule() == "backtracking"
        assert cls().getStepSchedule() == "constant" and cls().getStepDecay() == 0.0

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(TrainJobConfig, os.path.join(root, "conf", "train.yaml"), [
        "model.params.optimizer=gd", "model.params.step_rule=barzilai_borwein",
        "model.params.step_schedule=step_decay", "model.params.step_decay=0.5"])
    params = config.model.spark_params()
    assert params["stepRule"] == "barzilai_borwein"
    assert params["stepSchedule"] == "step_decay" and params["stepDecay"] == 0.5
    est = LogisticRegression(**params)
    assert est.getStepRule() == "barzilai_borwein" and est.getStepDecay() == 0.5
    est.validate_params()
